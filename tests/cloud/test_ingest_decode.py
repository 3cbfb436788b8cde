"""Ingest's decoding of a batch: events in the fast form, whichever path accepted them, and
refusals as dead letters in the protocol's words."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson

from cloud.ingest.decode import decode_batch
from cloud.ingest.subscriber import Received
from protocols import encode
from protocols.fast_events import decode_event_fast, to_fast
from protocols.topics import events_topic
from tests.factories import make_detection_event

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def received(topic: str, raw: bytes) -> Received:
    return Received(1, 1, topic, raw, NOW)


def test_ingest_stores_a_lax_form_the_protocol_accepts_and_dead_letters_a_refusal() -> None:
    event = make_detection_event(node_id="qx-fast", seq=7, observed_at=NOW)
    topic = events_topic("qx-fast")
    lax = orjson.loads(encode(event)) | {"seq": "7", "score": 1}
    refused = orjson.loads(encode(event)) | {"camera_id": "cam01\n"}
    assert decode_event_fast(topic, orjson.dumps(lax), NOW) is None
    batch = decode_batch(
        [received(topic, orjson.dumps(lax)), received(topic, orjson.dumps(refused))]
    )
    assert [e for e, _ in batch.events] == [to_fast(event.model_copy(update={"score": 1.0}))]
    assert [(d.field, d.reason) for d in batch.dead] == [
        ("camera_id", "String should match pattern '^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$'")
    ]
