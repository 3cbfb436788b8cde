"""The keys that sign access tokens, and their rotation without signing anybody out.

The newest key signs; it and the one before it are accepted, each named in a token's `kid`
header. Keys live in the database (`gridwatch cloud keys rotate` adds one and drops those
older than the previous), shared by every instance: an instance takes up a new key within
RELOAD_S for signing, and at once for checking (a token naming a key it does not know makes
it look, at most every LOOK_AGAIN_S). Or they come from the settings: CLOUD_JWT_SECRET
signs, CLOUD_JWT_PREVIOUS_SECRET is still accepted, each named by its own hash.

Rotate no more often than an access token lives (CLOUD_ACCESS_TOKEN_S): a token signed two
keys ago is refused."""

from __future__ import annotations

import hashlib
import secrets
import time
from typing import Any

import psycopg
from psycopg import AsyncConnection

from cloud.settings import CloudSettings

RELOAD_S = 60.0
LOOK_AGAIN_S = 1.0
# The name of the key made before keys had names of their own (tokens without a `kid`
# were signed with it, or with the configured secret).
FIRST_KEY = "access"
KEPT = 2


def settings_key_id(secret: bytes) -> str:
    """A configured secret's name: its hash, so the name changes when the secret does."""
    return "s-" + hashlib.sha256(secret).hexdigest()[:16]


class SigningKeys:
    def __init__(self, settings: CloudSettings) -> None:
        self.configured = settings.jwt_secret is not None
        self.keys: dict[str, bytes] = {}  # newest first
        self.loaded_at = float("-inf")
        if settings.jwt_secret is not None:
            current = settings.jwt_secret.get_secret_value().encode()
            self.keys[settings_key_id(current)] = current
            if settings.jwt_previous_secret is not None:
                previous = settings.jwt_previous_secret.get_secret_value().encode()
                self.keys[settings_key_id(previous)] = previous

    async def load(self, conn: AsyncConnection) -> None:
        """The database's keys (the first made by whichever instance starts first)."""
        if self.configured:
            return
        await conn.execute(
            "INSERT INTO signing_keys (name, secret) SELECT %s, %s "
            "WHERE NOT EXISTS (SELECT 1 FROM signing_keys)",
            (FIRST_KEY, secrets.token_bytes(32)),
        )
        cur = await conn.execute(
            "SELECT name, secret FROM signing_keys ORDER BY created_at DESC, name DESC LIMIT %s",
            (KEPT,),
        )
        self.keys = {str(name): bytes(secret) for name, secret in await cur.fetchall()}
        self.loaded_at = time.monotonic()

    async def signing(self, app: Any) -> tuple[str, bytes]:
        """The key to sign with now, and its name."""
        if time.monotonic() - self.loaded_at > RELOAD_S:
            await self._reload(app)
        kid = next(iter(self.keys))
        return kid, self.keys[kid]

    async def checking(self, app: Any, kid: str | None) -> bytes | None:
        """The key a token names (none named: the newest, as before keys had names)."""
        if time.monotonic() - self.loaded_at > RELOAD_S:
            await self._reload(app)  # a key rotated out stops being accepted here too
        if kid is None:
            return self.keys.get(FIRST_KEY) or next(iter(self.keys.values()))
        key = self.keys.get(kid)
        if key is None and time.monotonic() - self.loaded_at > LOOK_AGAIN_S:
            await self._reload(app)  # another instance may sign with a newer one already
            key = self.keys.get(kid)
        return key

    async def _reload(self, app: Any) -> None:
        if self.configured:
            return
        async with app.state.pool.connection() as conn:
            await self.load(conn)


def newest_key_age_s(conn: psycopg.Connection) -> float | None:
    """How long the key signing now has been (None: no key made yet)."""
    row = conn.execute(
        "SELECT extract(epoch FROM now() - max(created_at)) FROM signing_keys"
    ).fetchone()
    return None if row is None or row[0] is None else float(row[0])


def rotate(conn: psycopg.Connection) -> tuple[str, list[str]]:
    """A new signing key; the keys older than the one before it are dropped. Returns the
    new key's name and the names dropped."""
    name = f"k-{int(time.time())}-{secrets.token_hex(4)}"
    with conn.transaction():
        conn.execute(
            "INSERT INTO signing_keys (name, secret, created_at) VALUES (%s, %s, "
            "greatest(now(), (SELECT max(created_at) FROM signing_keys) "
            "+ interval '1 microsecond'))",
            (name, secrets.token_bytes(32)),
        )
        dropped = [
            str(r[0])
            for r in conn.execute(
                "DELETE FROM signing_keys WHERE name NOT IN (SELECT name FROM signing_keys "
                "ORDER BY created_at DESC, name DESC LIMIT %s) RETURNING name",
                (KEPT,),
            ).fetchall()
        ]
    return name, dropped
