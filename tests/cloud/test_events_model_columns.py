"""Migration 0015 on a database that holds events stored before it: their snapshot list and
model survive the change of columns, on plain PostgreSQL and on TimescaleDB with the events
compressed."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from psycopg.types.json import Jsonb

from cloud.db import migrate as migrate_module
from cloud.db.migrate import migrate
from cloud.db.timeseries import use_timescale
from tests.factories import make_detection_event
from tests.support.postgres import fresh_database
from tests.support.timescale import timescale_dir, timescale_server

BEFORE = "0015"
STORED_AT = datetime(2026, 10, 1, 8, tzinfo=UTC)


@pytest.fixture
def plain_url(postgres_admin_url: str) -> Iterator[str]:
    with fresh_database(postgres_admin_url, prefix="gridwatch_test_0015") as url:
        yield url


@pytest.fixture
def own_timescale_url(assets_dir: Path, tmp_path: Path) -> Iterator[str]:
    """A TimescaleDB endpoint of its own: the shared one is migrated already."""
    with timescale_server(timescale_dir(assets_dir), tmp_path) as url:
        yield url


def migrate_before(
    conn: psycopg.Connection, timescale: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    everything = migrate_module.migrations
    with monkeypatch.context() as patch:
        patch.setattr(
            migrate_module,
            "migrations",
            lambda ts: [m for m in everything(ts) if m.version < BEFORE],
        )
        migrate(conn, timescale=timescale, timezone="Asia/Shanghai")


def check_migrated(url: str, timescale: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    with_all = make_detection_event(node_id="qx-mig", seq=0, observed_at=STORED_AT)
    bare = make_detection_event(
        node_id="qx-mig",
        seq=1,
        observed_at=STORED_AT + timedelta(seconds=1),
        snapshots=[],
        model=None,
    )
    assert with_all.model is not None
    assert with_all.snapshots
    with psycopg.connect(url, autocommit=True) as conn:
        assert use_timescale(conn, "on" if timescale else "off") is timescale
        migrate_before(conn, timescale, monkeypatch)
        for event in (with_all, bare):
            conn.execute(
                "INSERT INTO events (observed_at, event_id, thread_id, node_id, seq, camera_id, "
                "kind, phase, severity, snapshots, model) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    event.observed_at,
                    event.event_id,
                    event.thread_id,
                    event.node_id,
                    event.seq,
                    event.camera_id,
                    event.kind.value,
                    event.phase.value,
                    event.severity.value,
                    Jsonb([s.model_dump(mode="json") for s in event.snapshots])
                    if event.snapshots
                    else None,
                    Jsonb(event.model.model_dump(mode="json")) if event.model else None,
                ),
            )
        if timescale:
            chunks = conn.execute(
                "SELECT compress_chunk(c) FROM show_chunks('events') AS c"
            ).fetchall()
            assert chunks
        assert migrate(conn, timescale=timescale, timezone="Asia/Shanghai") == [
            m.version for m in migrate_module.migrations(timescale) if m.version >= BEFORE
        ]
        rows = conn.execute(
            "SELECT seq, snapshots, model_profile, model_sha256 FROM events ORDER BY seq"
        ).fetchall()
        columns = {
            r[0]
            for r in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'events'"
            )
        }
    assert rows == [
        (
            0,
            [s.model_dump(mode="json") for s in with_all.snapshots],
            with_all.model.profile,
            with_all.model.sha256,
        ),
        (1, None, None, None),
    ]
    assert "model" not in columns


def test_plain_postgresql_keeps_stored_snapshot_lists_and_models(
    plain_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    check_migrated(plain_url, False, monkeypatch)


def test_timescaledb_keeps_them_in_compressed_chunks(
    own_timescale_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    check_migrated(own_timescale_url, True, monkeypatch)
