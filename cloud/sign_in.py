"""Sign-in that cannot be hammered: failures counted per account and per source address in
PostgreSQL (every `serve` instance sees the same counts), a growing lockout once either
passes its allowance, answered 429 with Retry-After before any password is hashed; and the
hashing itself in a small worker pool, never on the event loop that carries the alert
streams and timers (16 concurrent bogus sign-ins slowed every other request 70-fold).

The answer for an unknown user is the same as for a wrong password, lockout included: the
account counted is the name asked for, whether it exists or not."""

from __future__ import annotations

import asyncio
import ipaddress
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from cloud.auth import verify_password
from cloud.errors import TooManyRequests


@dataclass(frozen=True)
class Allowance:
    """Failures allowed, each within `window` of the last, before a lockout of `first_lock`
    that doubles with each failure after it, up to `longest`: an attack that goes on keeps
    its lockout growing; a quiet `window` starts afresh."""

    failures: int
    window: timedelta
    first_lock: timedelta
    longest: timedelta

    def lock(self, failures: int) -> timedelta | None:
        beyond = failures - self.failures
        if beyond < 0:
            return None
        lock: timedelta = self.first_lock * (2 ** min(beyond, 20))
        return min(lock, self.longest)


ACCOUNT = Allowance(5, timedelta(minutes=15), timedelta(seconds=30), timedelta(hours=1))
# A county office signs in from behind one address: more room, the same growth.
ADDRESS = Allowance(30, timedelta(minutes=15), timedelta(minutes=1), timedelta(hours=1))

# A hash takes a core for a sixth of a second (releasing the GIL): one at a time leaves the
# rest of the box to the API; a few more wait, off the event loop; beyond them a sign-in
# is answered "try again in a second" without hashing (many addresses at once, each within
# its allowance, would otherwise queue the whole box's time behind them). One address has
# one sign-in hashing or waiting at a time: a client firing many at once from one address
# does not take every place in the queue from the people signing in elsewhere.
_hashing = ThreadPoolExecutor(max_workers=1, thread_name_prefix="password-hash")
MAX_WAITING = 4
_waiting: set[str] = set()  # the addresses with a sign-in hashing or waiting


def refuse_if_busy(address: str) -> str:
    """Before anything else, no query made: TooManyRequests when no password could be
    hashed for this address now (the queue full, or one of its own in it). Returns the
    address's key (a /64 is one client here too)."""
    key = address_key(address)
    if len(_waiting) >= MAX_WAITING or key in _waiting:
        raise TooManyRequests("too many sign-ins at once: try again shortly", retry_after_s=1)
    return key


async def check_password(password_hash: str | None, password: str, address: str) -> bool:
    address = refuse_if_busy(address)  # again: the queries before may have let others in
    _waiting.add(address)
    try:
        ok: bool = await asyncio.get_running_loop().run_in_executor(
            _hashing, verify_password, password_hash, password
        )
    finally:
        _waiting.discard(address)
    return ok


def _keys(username: str, address: str) -> list[tuple[str, Allowance]]:
    return [(account_key(username), ACCOUNT), (address_key(address), ADDRESS)]


# Forget a key's failures, and so its lock: a success, a new password, a reactivation, an
# admin's unlock. Returns the failures forgotten.
FORGET_SQL = "DELETE FROM sign_in_failures WHERE key = %s RETURNING failures"


def address_key(address: str) -> str:
    """The failures row of a source address: an IPv6 client's /64 (one host is given a
    whole /64 and may take any address in it), an IPv4 one as itself, however written."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return f"address:{address[:64]}"  # not an address (a test client's name)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if isinstance(ip, ipaddress.IPv6Address):
        return f"address:{ipaddress.IPv6Network((ip, 64), strict=False)}"
    return f"address:{ip}"


def account_key(username: str) -> str:
    """The failures row of the account asked for (case folded, bounded)."""
    return f"account:{username.lower()[:128]}"


async def locked_for(
    conn: AsyncConnection, username: str, address: str, now: datetime
) -> int | None:
    """Seconds until a locked account or address may try again, else None."""
    keys = [key for key, _ in _keys(username, address)]
    cur = await conn.execute(
        "SELECT max(locked_until) FROM sign_in_failures WHERE key = ANY(%s) AND locked_until > %s",
        (keys, now),
    )
    row = await cur.fetchone()
    if row is None or row[0] is None:
        return None
    until: datetime = row[0]
    return max(1, math.ceil((until - now).total_seconds()))


async def failed(
    conn: AsyncConnection, username: str, address: str, unit_code: str, now: datetime
) -> int | None:
    """Count a failure for the account and the address; a lockout that begins is audited.
    Returns the seconds of a lockout begun now."""
    locked: int | None = None
    async with conn.transaction():
        # Names tried once and never again (a spray of made-up accounts) do not pile up.
        await conn.execute(
            "DELETE FROM sign_in_failures WHERE key IN (SELECT key FROM sign_in_failures "
            "WHERE last_failure < %s AND coalesce(locked_until, '-infinity') < %s LIMIT 100)",
            (now - timedelta(days=1), now),
        )
        for key, allowance in _keys(username, address):
            cur = await conn.execute(
                "INSERT INTO sign_in_failures (key, failures, last_failure) VALUES (%(key)s, 1, "
                "%(now)s) ON CONFLICT (key) DO UPDATE SET failures = CASE "
                "WHEN sign_in_failures.last_failure < %(now)s - %(window)s THEN 1 "
                "ELSE sign_in_failures.failures + 1 END, last_failure = %(now)s "
                "RETURNING failures",
                {"key": key, "now": now, "window": allowance.window},
            )
            row = await cur.fetchone()
            failures = row[0] if row else 1
            lock = allowance.lock(failures)
            if lock is None:
                continue
            await conn.execute(
                "UPDATE sign_in_failures SET locked_until = %s WHERE key = %s", (now + lock, key)
            )
            locked = max(locked or 0, math.ceil(lock.total_seconds()))
            kind, _, name = key.partition(":")
            await conn.execute(
                "INSERT INTO audit_log (actor, role, action, target_type, target_id, unit_code, "
                "remote_addr, detail) VALUES (%s, '', 'sign_in.lockout', %s, %s, %s, %s, %s)",
                (
                    f"sign-in:{username[:64]}",
                    kind,
                    name,
                    unit_code if kind == "account" else "",
                    address,
                    Jsonb({"failures": failures, "locked_s": lock.total_seconds()}),
                ),
            )
    return locked


async def succeeded(conn: AsyncConnection, username: str) -> None:
    """The account starts afresh; the address keeps its count (others may share it)."""
    await conn.execute(FORGET_SQL, (account_key(username),))
