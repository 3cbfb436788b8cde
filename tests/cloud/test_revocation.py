"""Access that ends when it should, on the real service: a deactivated user's token, or one
from before a password change, stops within seconds, and so does their live alert stream;
the browser's stream takes its token as a subprotocol, and no token reaches the logs."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import psycopg
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from cloud.access import Principal, Role
from cloud.api.deps import TOKEN_VERSION_TTL_S
from cloud.api.routes.alerts import STREAM_CHECK_S
from cloud.auth import issue_access_token
from cloud.tiers import Level
from tests.cloud.county_fixtures import County, county_database
from tests.support.cloud import ServeProcess, gridwatch_cloud, serving
from tests.support.county import COUNTY, TEST_JWT_SECRET
from tests.support.mosquitto import MosquittoBroker
from tests.support.ports import wait_until

# Generous: what is promised is TOKEN_VERSION_TTL_S for a request, that and STREAM_CHECK_S
# for a stream; the deadline only keeps a broken build from waiting forever.
DEADLINE_S = 10 * (TOKEN_VERSION_TTL_S + STREAM_CHECK_S)


@pytest.fixture(scope="module")
def county(postgres_admin_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[County]:
    yield from county_database(postgres_admin_url, tmp_path_factory.mktemp("revocation"))


@pytest.fixture(scope="module")
def serve(
    county: County, broker: MosquittoBroker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServeProcess]:
    yield from serving(
        tmp_path_factory.mktemp("serve"), county.url, broker.url, CLOUD_JWT_SECRET=TEST_JWT_SECRET
    )


def me(serve: ServeProcess, token: str) -> int:
    return httpx.get(
        f"{serve.base}/auth/me", headers={"Authorization": f"Bearer {token}"}, timeout=10
    ).status_code


def set_active(serve: ServeProcess, admin: str, username: str, active: bool) -> httpx.Response:
    verb = "reactivate" if active else "deactivate"
    return httpx.post(
        f"{serve.base}/org/users/{username}/{verb}",
        headers={"Authorization": f"Bearer {admin}"},
        timeout=10,
    )


async def stream_until_closed(serve: ServeProcess, token: str, then: object) -> int | None:
    """Open the alert stream as the browser does (token as a subprotocol), run `then`, and
    return the close code the service ends it with."""
    url = f"ws://127.0.0.1:{serve.port}/api/v1/alerts/ws"
    async with connect(url, subprotocols=["gridwatch.bearer", token]) as socket:  # type: ignore[list-item]
        assert socket.subprotocol == "gridwatch.bearer"
        await asyncio.to_thread(then)  # type: ignore[arg-type]
        try:
            async with asyncio.timeout(DEADLINE_S):
                async for _ in socket:
                    pass
        except ConnectionClosed as exc:
            return exc.rcvd.code if exc.rcvd else None
        return socket.close_code


def test_a_deactivated_users_token_and_stream_stop_and_come_back_on_reactivation(
    serve: ServeProcess, county: County
) -> None:
    admin = serve.sign_in("admin", county.passwords["admin"])
    token = serve.sign_in("worker", county.passwords["worker"])
    assert me(serve, token) == 200

    def deactivate() -> None:
        assert set_active(serve, admin, "worker", active=False).status_code == 200

    code = asyncio.run(stream_until_closed(serve, token, deactivate))
    assert code == 4401  # the stream said: sign in again
    wait_until(lambda: me(serve, token) == 401, DEADLINE_S, "the token refused")
    refused = httpx.post(
        f"{serve.base}/auth/token",
        data={"username": "worker", "password": county.passwords["worker"]},
        timeout=10,
    )
    assert refused.status_code == 401
    assert set_active(serve, admin, "worker", active=True).status_code == 200
    assert me(serve, token) == 401  # the old token stays revoked
    fresh = serve.sign_in("worker", county.passwords["worker"])
    assert me(serve, fresh) == 200


def test_nobody_deactivates_themselves(serve: ServeProcess, county: County) -> None:
    admin = serve.sign_in("admin", county.passwords["admin"])
    refused = set_active(serve, admin, "admin", active=False)
    assert refused.status_code == 409
    assert me(serve, admin) == 200


def test_a_town_operator_cannot_deactivate_outside_the_town(
    serve: ServeProcess, county: County
) -> None:
    town = serve.sign_in("town-op", county.passwords["town-op"])
    assert set_active(serve, town, "other-town-op", active=False).status_code in (403, 404)
    assert set_active(serve, town, "county-op", active=False).status_code in (403, 404)


def test_a_password_change_revokes_the_old_token(
    serve: ServeProcess, county: County, tmp_path: Path
) -> None:
    token = serve.sign_in("village-op", county.passwords["village-op"])
    assert me(serve, token) == 200
    changed = gridwatch_cloud(county.url, "org", "passwd", "village-op")
    password = changed.stdout.split()[-1]
    wait_until(lambda: me(serve, token) == 401, DEADLINE_S, "the old token refused")
    assert me(serve, serve.sign_in("village-op", password)) == 200


def test_no_token_reaches_the_service_log(serve: ServeProcess, county: County) -> None:
    token = serve.sign_in("county-op", county.passwords["county-op"])
    # A client that puts a token in the URL anyway: the line is logged, the token is not.
    httpx.get(f"{serve.base}/auth/me?access_token={token}", timeout=10)
    httpx.get(f"{serve.base}/events", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    log = serve.log()
    assert "/auth/me?access_token=[redacted]" in log
    assert token not in log
    assert token.split(".")[2] not in log  # not even its signature


def rotated(url: str) -> str:
    """Rotate now, whatever the age of the key in use (the test cannot wait an hour)."""
    done = gridwatch_cloud(url, "keys", "rotate", "--force")
    return done.stdout.split()[2]  # "signing key <name> in use; ..."


def signed_by_another_instance(url: str, kid: str) -> str:
    """A token another instance, already signing with the newest key, gave out."""
    with psycopg.connect(url) as conn:
        [secret] = conn.execute(
            "SELECT secret FROM signing_keys WHERE name = %s", (kid,)
        ).fetchone()
    principal = Principal("county-op", Role.COUNTY_OPERATOR, COUNTY, Level.COUNTY)
    return issue_access_token(principal, key=bytes(secret), kid=kid, lifetime_s=600)


def test_rotating_the_signing_key_signs_nobody_out_and_drops_the_key_before(
    county: County, broker: MosquittoBroker, tmp_path: Path
) -> None:
    serve = ServeProcess(tmp_path / "keys", county.url, broker.url, ingest=False).start_listening()
    try:
        before = serve.sign_in("county-op", county.passwords["county-op"])
        # Twice within a token's lifetime would sign people out: refused unless forced.
        refused = gridwatch_cloud(county.url, "keys", "rotate", check=False)
        first = rotated(county.url)
        assert me(serve, before) == 200  # signed with the key before: still good
        newer = signed_by_another_instance(county.url, first)
        # A key it does not know makes the instance look again (at most every second).
        wait_until(lambda: me(serve, newer) == 200, DEADLINE_S, "the new key taken up")
        second = rotated(county.url)
        newest = signed_by_another_instance(county.url, second)
        wait_until(lambda: me(serve, newest) == 200, DEADLINE_S, "the newest key taken up")
        assert me(serve, newer) == 200
        assert me(serve, before) == 401  # two keys ago: dropped
    finally:
        serve.stop()
    assert refused.returncode == 2
    assert "signs out whoever holds a token of the key before it" in refused.stderr


def test_a_revoked_users_event_stream_ends_saying_so(serve: ServeProcess, county: County) -> None:
    admin = serve.sign_in("admin", county.passwords["admin"])
    token = serve.sign_in("worker-2", county.passwords["worker-2"])
    seen: list[str] = []
    with httpx.stream(
        "GET",
        f"{serve.base}/alerts/stream",
        headers={"Authorization": f"Bearer {token}"},
        timeout=DEADLINE_S,
    ) as stream:
        assert stream.status_code == 200
        lines = stream.iter_lines()
        seen.append(next(lines))  # the stream's opening comment: it is live
        assert set_active(serve, admin, "worker-2", active=False).status_code == 200
        seen += list(lines)  # until the service ends it
    set_active(serve, admin, "worker-2", active=True)
    assert "event: signed_out" in seen
    assert any("token revoked" in line for line in seen)
