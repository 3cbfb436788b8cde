"""The case timers live in the database: a service killed before a deadline escalates the
case when it comes back, on the real clock, through real processes."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx2 as httpx
import psycopg
import pytest

from tests.cloud.county_fixtures import County, county_database
from tests.support.county import GRID, TOWN
from tests.support.mosquitto import MosquittoBroker
from tests.support.ports import free_port, is_listening, wait_until
from tests.support.processes import GridwatchProcess

RULES = """\
deadlines:
  low: {ack_s: 2, resolve_s: 60}
  medium: {ack_s: 2, resolve_s: 60}
  high: {ack_s: 2, resolve_s: 60}
  critical: {ack_s: 2, resolve_s: 60}
"""


@pytest.fixture(scope="module")
def county(postgres_admin_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[County]:
    yield from county_database(postgres_admin_url, tmp_path_factory.mktemp("timers"))


class Service(GridwatchProcess):
    def __init__(self, directory: Path, county: County, broker_url: str) -> None:
        self.port = free_port()
        (directory / "rules.yaml").write_text(RULES)
        env = {
            **os.environ,
            "CLOUD_DATABASE_URL": county.url,
            "CLOUD_BROKER_URL": broker_url,
            "CLOUD_PORT": str(self.port),
            "CLOUD_DATA_DIR": str(directory),
            "CLOUD_CASE_RULES_FILE": str(directory / "rules.yaml"),
            "CLOUD_CASE_TIMER_INTERVAL_S": "0.2",
        }
        super().__init__(["cloud", "serve", "--no-ingest"], directory / "serve.log", env)

    def start_listening(self) -> Service:
        self.start()
        wait_until(lambda: is_listening(self.port), 60, "the service listening")
        return self


def test_a_deadline_missed_while_the_service_was_down_escalates_on_return(
    county: County, broker: MosquittoBroker, tmp_path: Path
) -> None:
    service = Service(tmp_path, county, broker.url).start_listening()
    try:
        base = f"http://127.0.0.1:{service.port}/api/v1"
        login = httpx.post(
            f"{base}/auth/token",
            data={"username": "worker", "password": county.passwords["worker"]},
            timeout=10,
        )
        headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
        case = httpx.post(
            f"{base}/cases",
            json={"category": "dispute", "title": "邻里纠纷 · a dispute over a wall"},
            headers=headers,
            timeout=10,
        ).json()
        service.kill()  # a power cut at the county centre, before the deadline

        due = datetime.fromisoformat(case["ack_due_at"])
        wait_until(lambda: datetime.now(UTC) > due, 30, "the deadline to pass")

        def responsible() -> str:
            with psycopg.connect(county.url) as conn:
                row = conn.execute(
                    "SELECT responsible_unit_code FROM cases WHERE case_id = %s",
                    (case["case_id"],),
                ).fetchone()
            assert row is not None
            return str(row[0])

        assert responsible() == GRID  # nothing moved while the service was down
        service.start_listening()
        wait_until(lambda: responsible() != GRID, 30, "the escalation after the restart")
        assert responsible() == TOWN
        assert service.stop() == 0
    finally:
        service.kill()
