"""Sign-in that cannot be hammered, on two real `serve` instances sharing one database:
failures counted per account and per address wherever they land, a growing lockout answered
429 with Retry-After, the same answer for an unknown user, every lockout audited."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx2 as httpx
import psycopg
import pytest

from cloud.auth import hash_password
from cloud.errors import TooManyRequests
from cloud.sign_in import ACCOUNT, ADDRESS, address_key, check_password
from tests.cloud.county_fixtures import County, county_database
from tests.support.cloud import ServeProcess, gridwatch_cloud
from tests.support.county import TEST_JWT_SECRET
from tests.support.mosquitto import MosquittoBroker


@pytest.fixture(scope="module")
def county(postgres_admin_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[County]:
    yield from county_database(postgres_admin_url, tmp_path_factory.mktemp("sign-in"))


@pytest.fixture(scope="module")
def instances(
    county: County, broker: MosquittoBroker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[ServeProcess]]:
    processes = [
        ServeProcess(
            tmp_path_factory.mktemp(f"serve{i}"),
            county.url,
            broker.url,
            ingest=False,
            CLOUD_JWT_SECRET=TEST_JWT_SECRET,
        ).start_listening()
        for i in range(2)
    ]
    yield processes
    for process in processes:
        process.stop()


@pytest.fixture(autouse=True)
def afresh(county: County) -> None:
    """Each test starts with no failures counted (they all come from 127.0.0.1)."""
    with psycopg.connect(county.url, autocommit=True) as conn:
        conn.execute("DELETE FROM sign_in_failures")


def attempt(serve: ServeProcess, username: str, password: str) -> httpx.Response:
    return httpx.post(
        f"{serve.base}/auth/token", data={"username": username, "password": password}, timeout=30
    )


def test_an_account_locks_after_its_allowance_on_any_instance_and_the_lock_grows(
    instances: list[ServeProcess], county: County
) -> None:
    answers = [
        attempt(instances[i % 2], "town-op", "wrong").status_code for i in range(ACCOUNT.failures)
    ]
    locked = attempt(instances[0], "town-op", county.passwords["town-op"])  # right, too late
    with psycopg.connect(county.url, autocommit=True) as conn:
        conn.execute("UPDATE sign_in_failures SET locked_until = now() WHERE key LIKE 'account:%'")
        again = attempt(instances[1], "town-op", "wrong")  # the lock over: one more failure
        [unit] = conn.execute("SELECT unit_code FROM users WHERE username = 'town-op'").fetchone()
        audited = conn.execute(
            "SELECT target_type, target_id, unit_code, remote_addr FROM audit_log "
            "WHERE action = 'sign_in.lockout' ORDER BY id"
        ).fetchall()
    assert answers == [401] * (ACCOUNT.failures - 1) + [429]
    assert locked.status_code == 429
    assert int(locked.headers["retry-after"]) <= ACCOUNT.first_lock.total_seconds()
    assert again.status_code == 429
    assert int(again.headers["retry-after"]) > ACCOUNT.first_lock.total_seconds()  # it grows
    assert audited[-2:] == [("account", "town-op", unit, "127.0.0.1")] * 2
    other = attempt(instances[0], "village-op", county.passwords["village-op"])
    assert other.status_code == 200  # another account is not touched
    assert other.headers["cache-control"] == "no-store"


def test_an_unknown_user_gets_the_same_answers(instances: list[ServeProcess]) -> None:
    known = [attempt(instances[0], "town-op", "wrong") for _ in range(ACCOUNT.failures)]
    unknown = [attempt(instances[1], "nobody-here", "wrong") for _ in range(ACCOUNT.failures)]
    assert [r.status_code for r in known] == [r.status_code for r in unknown]
    assert known[0].json() == unknown[0].json()


def test_an_address_locks_after_its_allowance_across_accounts(
    instances: list[ServeProcess], county: County
) -> None:
    codes = [
        attempt(instances[i % 2], f"sprayed-{i}", "wrong").status_code
        for i in range(ADDRESS.failures)
    ]
    assert codes == [401] * (ADDRESS.failures - 1) + [429]
    refused = attempt(instances[0], "county-op", county.passwords["county-op"])
    assert refused.status_code == 429
    # An admin lifts it (the office behind the address, or an attack that has ended).
    unlocked = gridwatch_cloud(county.url, "org", "unlock-address", "127.0.0.1")
    assert unlocked.stdout.strip() == f"127.0.0.1: {ADDRESS.failures} failed sign-ins forgotten"
    let_in = attempt(instances[1], "county-op", county.passwords["county-op"])
    assert let_in.status_code == 200
    with psycopg.connect(county.url) as conn:
        audited = conn.execute(
            "SELECT target_id FROM audit_log WHERE action = 'sign_in.unlock'"
        ).fetchall()
    assert audited == [("127.0.0.1",)]


def test_a_new_password_lifts_the_accounts_lock(
    instances: list[ServeProcess], county: County
) -> None:
    for _ in range(ACCOUNT.failures):
        attempt(instances[0], "village-op", "wrong")
    assert attempt(instances[0], "village-op", "wrong").status_code == 429
    changed = gridwatch_cloud(county.url, "org", "passwd", "village-op")
    assert attempt(instances[1], "village-op", changed.stdout.split()[-1]).status_code == 200


def test_one_address_has_one_sign_in_hashing_at_a_time() -> None:
    """Sixteen at once from one address took every place in the queue: the people signing
    in from elsewhere were told to try again."""
    digest = hash_password("right horse battery staple")

    async def at_once() -> list[bool | BaseException]:
        return await asyncio.gather(
            check_password(digest, "guess", "203.0.113.9"),
            check_password(digest, "guess", "203.0.113.9"),
            check_password(digest, "right horse battery staple", "198.51.100.7"),
            return_exceptions=True,
        )

    first, second, elsewhere = asyncio.run(at_once())
    assert first is False
    assert isinstance(second, TooManyRequests)
    assert elsewhere is True


def test_an_ipv6_client_is_its_slash_64_however_it_writes_it() -> None:
    """40 failures from addresses of one /64 never locked it: each counted on its own."""
    assert address_key("2001:db8:1:2::1") == address_key("2001:db8:1:2:ffff::9")
    assert address_key("2001:0db8:0001:0002:0000:0000:0000:0001") == address_key("2001:db8:1:2::1")
    assert address_key("2001:db8:1:2::1") != address_key("2001:db8:1:3::1")
    assert address_key("::ffff:10.2.0.1") == address_key("10.2.0.1")
    assert address_key("10.2.0.1") != address_key("10.2.0.2")
