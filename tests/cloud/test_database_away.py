"""The API while its database is away (restarting, failing over, refusing connections):
503 with Retry-After, never a 500, and back by itself when the database is."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient

from cloud.api.errors import UNAVAILABLE_RETRY_S, database_away
from cloud.app import create_app
from tests.cloud.county_fixtures import County, app_settings, county_database, signed_in
from tests.support.mosquitto import MosquittoBroker
from tests.support.ports import wait_until


@pytest.fixture
def county(postgres_admin_url: str, tmp_path: Path) -> Iterator[County]:
    yield from county_database(postgres_admin_url, tmp_path)


def set_reachable(admin_url: str, database: str, reachable: bool) -> None:
    """As a database that goes away looks to its clients: new connections refused, the open
    ones cut."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(
            psycopg.sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS {}").format(
                psycopg.sql.Identifier(database), psycopg.sql.SQL(str(reachable).lower())
            )
        )
        if not reachable:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (database,),
            )


def test_requests_while_the_database_is_away_are_503s(
    county: County, broker: MosquittoBroker, postgres_admin_url: str
) -> None:
    database = psycopg.conninfo.conninfo_to_dict(county.url)["dbname"]
    assert isinstance(database, str)
    with TestClient(create_app(app_settings(county, broker.url))) as client:
        client.headers.update(signed_in(client, county, "county-op"))
        assert client.get("/api/v1/cases").status_code == 200
        set_reachable(postgres_admin_url, database, reachable=False)
        try:
            # The pool's connections were cut; then it cannot make new ones.
            answers = [client.get("/api/v1/cases") for _ in range(2)]
        finally:
            set_reachable(postgres_admin_url, database, reachable=True)
        # Back once the pool has made new connections (it retries with a backoff).
        wait_until(lambda: client.get("/api/v1/cases").status_code == 200, 60, "the API back")
    for answer in answers:
        assert answer.status_code == 503, answer.text
        assert answer.headers["retry-after"] == str(UNAVAILABLE_RETRY_S)
        assert answer.json() == {"detail": "the database is unavailable: try again shortly"}


def test_only_a_database_that_is_away_is_a_503() -> None:
    """A statement timeout or a full disk is a fault to see, not a "try again"."""
    assert database_away(psycopg.OperationalError("connection refused"))  # no SQLSTATE
    assert database_away(psycopg.errors.AdminShutdown())
    assert database_away(psycopg.errors.TooManyConnections())
    assert not database_away(psycopg.errors.QueryCanceled())
    assert not database_away(psycopg.errors.DiskFull())
    assert not database_away(psycopg.errors.DeadlockDetected())
