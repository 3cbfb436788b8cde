"""A migrated database holding the small test county, its people (with passwords) and
cameras; and a signed-in API client per person."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg
from fastapi.testclient import TestClient

from cloud.access import Principal, Role
from cloud.db.schema import prepare_database
from cloud.ingest.writer import Batch, BatchWriter
from cloud.org_import import OrgFiles, import_org
from cloud.settings import CloudSettings
from cloud.snapshots import LocalSnapshotStore
from cloud.tiers import Level
from protocols.events import DetectionEvent
from protocols.fast_events import to_fast
from tests.support.county import COUNTY, OTHER_NODE, VILLAGE_NODE, write_small_county

__all__ = ["OTHER_NODE", "VILLAGE_NODE", "County", "app_settings", "county_database", "signed_in"]
from tests.support.postgres import fresh_database


@dataclass
class County:
    url: str
    passwords: dict[str, str]
    snapshots: Path

    def write(self, events: list[DetectionEvent], at: datetime) -> None:
        """Store events as ingest does (routing into cases included), in one transaction."""
        self.write_batch(Batch(events=[(to_fast(e), at) for e in events]))

    def write_batch(self, batch: Batch) -> None:
        writer = BatchWriter(
            timescale=False,
            store=LocalSnapshotStore(self.snapshots),
            timezone=ZoneInfo("Asia/Shanghai"),
        )
        with psycopg.connect(self.url, autocommit=True) as conn, conn.transaction():
            writer.write(conn, batch)


def county_database(admin_url: str, directory: Path) -> Iterator[County]:
    with fresh_database(admin_url, prefix="gridwatch_test_county") as url:
        files = write_small_county(directory / "county")
        with psycopg.connect(url, autocommit=True) as conn:
            prepare_database(conn, CloudSettings(database_url=url, timescale="off"))
            result = import_org(
                conn,
                OrgFiles(
                    files.units,
                    files.departments,
                    files.staff,
                    files.geometry,
                    files.cameras,
                    files.nodes,
                ),
                Principal("cli:test", Role.COUNTY_ADMIN, COUNTY, Level.COUNTY),
                set_passwords=True,
            )
        yield County(url, result.passwords, directory / "snapshots")


def signed_in(client: TestClient, county: County, username: str) -> dict[str, str]:
    response = client.post(
        "/api/v1/auth/token",
        data={"username": username, "password": county.passwords[username]},
    )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def app_settings(county: County, broker_url: str) -> CloudSettings:
    # The timer loop runs on the real clock; tests drive timers with their own.
    return CloudSettings(
        database_url=county.url,
        broker_url=broker_url,
        snapshot_dir=county.snapshots,
        case_timer_interval_s=600,
    )
