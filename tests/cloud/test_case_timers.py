"""The case timers live in the database: a service killed before a deadline escalates the
case when it comes back, on the real clock, through real processes."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx2 as httpx
import psycopg
import pytest

from cloud.cases.rule_sets import SETUP, set_rules
from cloud.cases.rules import load_rules
from tests.cloud.county_fixtures import County, county_database
from tests.support.cloud import ServeProcess
from tests.support.county import GRID, TOWN
from tests.support.mosquitto import MosquittoBroker
from tests.support.ports import wait_until

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


def test_a_deadline_missed_while_the_service_was_down_escalates_on_return(
    county: County, broker: MosquittoBroker, tmp_path: Path
) -> None:
    (tmp_path / "rules.yaml").write_text(RULES)
    with psycopg.connect(county.url, autocommit=True) as conn:
        set_rules(conn, load_rules(tmp_path / "rules.yaml"), principal=SETUP, reason="short")
    service = ServeProcess(
        tmp_path,
        county.url,
        broker.url,
        ingest=False,
        CLOUD_CASE_TIMER_INTERVAL_S="0.2",
    ).start_listening()
    try:
        headers = {
            "Authorization": f"Bearer {service.sign_in('worker', county.passwords['worker'])}"
        }
        case = httpx.post(
            f"{service.base}/cases",
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
