"""One event id, one event, by the claims in `event_ids`: a copy sent with another time is
found wherever its original lies, also while another process is storing it, and claims
no copy can need are dropped."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg
import pytest

from cloud.ingest.dead_letters import Cause
from cloud.ingest.subscriber import Received
from cloud.ingest.writer import Batch, BatchWriter, WriteResult, prune_event_ids
from cloud.snapshots import LocalSnapshotStore
from protocols import encode
from protocols.events import DetectionEvent
from protocols.fast_events import to_fast
from protocols.identifiers import uuid7_at
from protocols.topics import events_topic
from tests.factories import make_detection_event
from tests.support.ports import wait_until

NODE = "qx-claims"


@pytest.fixture
def writer(tmp_path: Path) -> BatchWriter:
    return BatchWriter(
        timescale=False,
        store=LocalSnapshotStore(tmp_path / "snapshots"),
        timezone=ZoneInfo("Asia/Shanghai"),
    )


def event(seq: int, observed_at: datetime) -> DetectionEvent:
    return make_detection_event(
        node_id=NODE, seq=seq, observed_at=observed_at, event_id=uuid7_at(observed_at)
    )


def write(url: str, writer: BatchWriter, *events: DetectionEvent) -> WriteResult:
    with psycopg.connect(url) as conn, conn.transaction():
        return writer.write(conn, batch(*events))


def batch(*events: DetectionEvent) -> Batch:
    """As decode makes it: each event with the message it came in."""
    now = datetime.now(UTC)
    return Batch(
        events=[(to_fast(e), now) for e in events],
        sources={e.event_id: Received(1, 1, events_topic(NODE), encode(e), now) for e in events},
    )


def stored(url: str, event_id: object) -> list[datetime]:
    with psycopg.connect(url) as conn:
        return [
            row[0]
            for row in conn.execute(
                "SELECT observed_at FROM events WHERE event_id = %s", (event_id,)
            ).fetchall()
        ]


def test_a_copy_with_another_time_is_found_across_a_day_boundary(
    cloud_db: str, writer: BatchWriter
) -> None:
    # 23:50 one day, then the same id at 00:20 the next: two partitions apart.
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    first = event(1, midnight - timedelta(minutes=10))
    moved = first.model_copy(update={"observed_at": midnight + timedelta(minutes=20)})
    assert write(cloud_db, writer, first).events_stored == 1
    conflicting = write(cloud_db, writer, moved)
    redelivered = write(cloud_db, writer, first)
    assert conflicting.events_stored == redelivered.events_stored == 0
    assert [(d.field, d.cause) for d in conflicting.dead] == [("event_id", Cause.CONFLICT)]
    assert (redelivered.events_duplicate, redelivered.dead) == (1, [])
    assert stored(cloud_db, first.event_id) == [first.observed_at]


def test_a_copy_another_process_is_storing_waits_for_it_and_is_not_stored_twice(
    cloud_db: str, writer: BatchWriter, tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    first = event(10, now - timedelta(minutes=30))
    copy = first.model_copy(update={"observed_at": now - timedelta(minutes=5)})
    other = BatchWriter(
        timescale=False,
        store=LocalSnapshotStore(tmp_path / "other"),
        timezone=ZoneInfo("Asia/Shanghai"),
    )
    results: list[WriteResult] = []
    with psycopg.connect(cloud_db) as storing:
        with storing.transaction():
            assert writer.write(storing, batch(first)).events_stored == 1
            # The second process's claim waits for this transaction.
            second = threading.Thread(
                target=lambda: results.append(write(cloud_db, other, copy)), daemon=True
            )
            second.start()
            wait_until(lambda: waiting_for_a_lock(cloud_db), 30, "the copy waiting for the claim")
        second.join(30)
    assert not second.is_alive()
    assert results[0].events_stored == 0
    assert [d.cause for d in results[0].dead] == [Cause.CONFLICT]
    assert stored(cloud_db, first.event_id) == [first.observed_at]


def waiting_for_a_lock(url: str) -> bool:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
        ).fetchone()
    return bool(row and row[0])


def test_claims_no_copy_can_need_are_dropped(cloud_db: str, writer: BatchWriter) -> None:
    now = datetime.now(UTC)
    young = event(20, now - timedelta(days=29))
    old = event(21, now - timedelta(days=32))
    write(cloud_db, writer, young, old)
    with psycopg.connect(cloud_db) as conn, conn.transaction():
        prune_event_ids(conn, max_age=timedelta(days=30), now=now)
        kept = {
            row[0]
            for row in conn.execute(
                "SELECT event_id FROM event_ids WHERE event_id = ANY(%s)",
                ([young.event_id, old.event_id],),
            ).fetchall()
        }
    assert kept == {young.event_id}
