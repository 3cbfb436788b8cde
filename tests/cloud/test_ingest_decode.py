"""Ingest's decoding of a batch: events in the fast form, whichever path accepted them, and
refusals as dead letters in the protocol's words."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import orjson
import psycopg
import pytest

from cloud.ingest.decode import decode_batch
from cloud.ingest.subscriber import Received
from cloud.ingest.writer import Batch, BatchWriter
from cloud.snapshots import LocalSnapshotStore
from protocols import encode
from protocols.fast_events import decode_event_fast, to_fast
from protocols.topics import events_topic, health_topic
from tests.factories import make_detection_event, make_node_health

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def received(topic: str, raw: bytes) -> Received:
    return Received(1, 1, topic, raw, NOW)


def test_ingest_stores_a_form_the_protocol_accepts_and_dead_letters_a_refusal() -> None:
    event = make_detection_event(node_id="qx-fast", seq=7, observed_at=NOW)
    topic = events_topic("qx-fast")
    other_form = orjson.loads(encode(event)) | {"score": 1, "newer_field": [1, 2]}
    refused = orjson.loads(encode(event)) | {"camera_id": "cam01\n"}
    assert decode_event_fast(topic, orjson.dumps(other_form), NOW) is None
    batch = decode_batch(
        [received(topic, orjson.dumps(other_form)), received(topic, orjson.dumps(refused))]
    )
    assert [e for e, _ in batch.events] == [to_fast(event.model_copy(update={"score": 1.0}))]
    assert [(d.field, d.reason) for d in batch.dead] == [
        ("camera_id", "String should match pattern '^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$'")
    ]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("seq", "7"),
        ("seq", True),
        ("seq", 7.0),
        ("score", "0.8"),
        ("score", True),
        ("count", True),
        ("observed_at", 1764547200),
        ("schema_version", True),
        ("schema_version", 1.0),
    ],
)
def test_types_are_as_strict_as_the_published_schema(field: str, value: object) -> None:
    """No string-to-number, bool-to-int or number-to-time coercion, on either path."""
    event = make_detection_event(node_id="qx-strict", seq=7, observed_at=NOW, kind="crowd", count=3)
    raw = orjson.dumps(orjson.loads(encode(event)) | {field: value})
    topic = events_topic("qx-strict")
    assert decode_event_fast(topic, raw, NOW) is None
    batch = decode_batch([received(topic, raw)])
    assert batch.events == []
    [dead] = batch.dead
    assert dead.field == field


def test_a_second_copy_in_a_batch_is_counted_and_a_different_one_is_a_dead_letter() -> None:
    event = make_detection_event(node_id="qx-twice", seq=1, observed_at=NOW)
    topic = events_topic("qx-twice")
    other = event.model_copy(update={"label": "someone else"})
    batch = decode_batch([received(topic, encode(event))] * 3 + [received(topic, encode(other))])
    assert [e.event_id for e, _ in batch.events] == [event.event_id]
    assert batch.duplicates == 2
    [dead] = batch.dead
    assert (dead.field, dead.cause.value) == ("event_id", "conflict")
    assert dead.payload == encode(other)
    assert len(batch) == 4


def test_an_event_older_than_the_limit_is_a_dead_letter() -> None:
    topic = events_topic("qx-old")
    old = make_detection_event(node_id="qx-old", seq=1, observed_at=NOW - timedelta(days=31))
    fresh = make_detection_event(node_id="qx-old", seq=2, observed_at=NOW - timedelta(days=29))
    year_one = orjson.loads(encode(fresh)) | {"observed_at": "0001-01-01T00:00:00Z"}
    batch = decode_batch(
        [
            received(topic, encode(old)),
            received(topic, encode(fresh)),
            received(topic, orjson.dumps(year_one)),
        ],
        max_age=timedelta(days=30),
    )
    assert [e.seq for e, _ in batch.events] == [2]
    assert [(d.field, d.cause.value) for d in batch.dead] == [
        ("observed_at", "too_old"),
        ("DetectionEvent", "invalid"),  # year 1: its id was made in 2026, not then
    ]


def test_health_figures_a_database_real_cannot_hold_are_rounded_or_refused_by_name(
    cloud_db: str, tmp_path: Path
) -> None:
    """1e-50 CPU passed the schema and then failed the database's 4-byte real (a dead
    letter naming no field, the whole batch stored again one by one)."""
    health = make_node_health(node_id="qx-tiny-figures", sent_at=NOW - timedelta(seconds=1))
    tiny = orjson.loads(encode(health))
    tiny["cpu_percent"] = 1e-50
    tiny["temperature_c"] = -1e-45
    huge = orjson.loads(encode(health)) | {"uptime_s": 1e39}
    topic = health_topic(health.node_id)
    batch = decode_batch([received(topic, orjson.dumps(tiny)), received(topic, orjson.dumps(huge))])
    assert [(d.field, "less than or equal" in d.reason) for d in batch.dead] == [("uptime_s", True)]
    [(report, raw, at)] = batch.health
    assert report.cpu_percent == 0.0
    writer = BatchWriter(
        timescale=False, store=LocalSnapshotStore(tmp_path), timezone=ZoneInfo("Asia/Shanghai")
    )
    with psycopg.connect(cloud_db, autocommit=True) as conn, conn.transaction():
        writer.write(conn, Batch(health=[(report, raw, at)]))
        stored = conn.execute(
            "SELECT cpu_percent FROM node_health WHERE node_id = 'qx-tiny-figures'"
        ).fetchone()
    assert stored == (0.0,)
