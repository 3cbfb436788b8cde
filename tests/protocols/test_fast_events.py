"""Ingest's fast event decoder against the protocol's model: the same constraints, the same
verdicts, the same values. The protocol is the contract; the fast path may only refuse
what the protocol accepts (the protocol's path then decides), never the other way round."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocols import InvalidPayload, decode_message, encode
from protocols.enums import EventPhase
from protocols.events import DetectionEvent
from protocols.fast_events import FastDetectionEvent, decode_event_fast
from protocols.topics import events_topic
from tests.factories import make_detection_event
from tests.protocols.strategies import detection_events, json_scalars

NOW = datetime(2026, 1, 1, tzinfo=UTC)  # after every time the strategies draw


# ---- the schemas, field by field ---------------------------------------------------------

# Words about a field that constrain nothing.
_PROSE = {"title", "description", "examples"}


def constraints(schema: dict[str, Any]) -> dict[str, Any]:
    """A JSON Schema reduced to what it accepts: references resolved, prose dropped, each
    library's spelling of the same rule made one."""
    defs = schema.get("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, list):
            return [walk(item) for item in node]
        if not isinstance(node, dict):
            return node
        if "$ref" in node:
            return walk(defs[node["$ref"].rsplit("/", 1)[1]])
        out = {k: walk(v) for k, v in node.items() if k not in _PROSE}
        if "pattern" in out:
            # msgspec searches with Python's re, where only \Z ends the text.
            out["pattern"] = out["pattern"].replace(r"\Z", "$")
            # The protocol's cap on every string; a pattern bounds these already.
            if out.get("maxLength") == 4096:
                del out["maxLength"]
        if "const" in out:
            out["enum"] = [out.pop("const")]
        if "enum" in out:  # the values say the type
            out["enum"] = sorted(out["enum"])
            out.pop("type", None)
        if out.get("default") == []:  # a default_factory on one side, a literal on the other
            del out["default"]
        if out.get("type") == "object":
            # The fast path refuses unknown fields (they go the protocol's way, which
            # ignores them): a deliberate difference, tested below.
            out.pop("additionalProperties", None)
            out.pop("required", None)
            out["required"] = sorted(node.get("required", []))
        return out

    root = schema
    if "$ref" in schema:
        root = defs[schema["$ref"].rsplit("/", 1)[1]]
    return walk(root)


def test_the_fast_decoder_states_every_constraint_of_the_protocol() -> None:
    protocol = constraints(DetectionEvent.model_json_schema(mode="validation"))
    fast = constraints(msgspec.json.schema(FastDetectionEvent))
    assert sorted(fast["properties"]) == sorted(protocol["properties"])
    for name, rule in protocol["properties"].items():
        assert fast["properties"][name] == rule, name
    assert fast["required"] == protocol["required"]


# ---- verdicts and values -------------------------------------------------------------------


def protocol_verdict(topic: str, raw: bytes) -> DetectionEvent | None:
    try:
        _, decoded = decode_message(topic, raw, now=NOW)
    except InvalidPayload:
        return None
    assert isinstance(decoded, DetectionEvent)
    return decoded


def same_values(fast: FastDetectionEvent, protocol: DetectionEvent) -> None:
    """Field by field, as Python values (times compared as instants)."""
    kept = (uuid.UUID, datetime)
    assert msgspec.to_builtins(fast, builtin_types=kept) == protocol.model_dump()


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(detection_events())
def test_what_the_protocol_encodes_the_fast_path_takes_with_the_same_values(
    event: DetectionEvent,
) -> None:
    topic = events_topic(event.node_id)
    fast = decode_event_fast(topic, encode(event), NOW)
    if b"\\u" in encode(event):
        assert fast is None  # escapes go the protocol's way
        return
    assert fast is not None
    same_values(fast, event)


# Values that one parser or the other might take differently: lax forms, edge forms of
# times and ids, out-of-range numbers, newlines after a pattern's last character.
_TRICKY: list[Any] = [
    "5",
    5.0,
    True,
    None,
    [],
    {},
    -1,
    2**63,
    1e308,
    0.5,
    1,
    "",
    "cam01\n",
    "qx-node\n",
    "0" * 64 + "\n",
    "image/jpeg\n",
    "intrusion",
    "INTRUSION",
    "start",
    "2025-06-01T08:30:00Z",
    "2025-06-01T08:30:00+08:00",
    "2025-06-01t08:30:00z",
    "2025-06-01 08:30:00Z",
    "2025-06-01T08:30:00",
    "2025-06-01T08:30:00.1234567Z",
    "2025-06-01T08:30:00+0800",
    "2025-06-01T23:59:60Z",
    "2025-06-01",
    "2027-01-01T00:00:00Z",
    1748766600,
    "01a217fd-1e68-73b7-9ecd-7556224ff6fc",
    "01a217fd1e6873b79ecd7556224ff6fc",
    "{01a217fd-1e68-73b7-9ecd-7556224ff6fc}",
    "urn:uuid:01a217fd-1e68-73b7-9ecd-7556224ff6fc",
    "01A217FD-1E68-73B7-9ECD-7556224FF6FC",
    "01a217fd-1e68-43b7-9ecd-7556224ff6fc",
    "01a217fd-1e68-73b7-cecd-7556224ff6fc",  # version 7, not the RFC 4122 variant
    {"x": 0.9, "y": 0.1, "w": 0.2, "h": 0.1},
    {"x": 0.1, "y": 0.9, "w": 0.1, "h": 0.2},
    {"x": 0.1, "y": 0.1, "w": 0.0, "h": 0.1},
    [{"variant": "frame", "size_bytes": 1, "sha256": "a" * 64, "width": 1, "height": 1}] * 2,
    [{"variant": "frame", "size_bytes": 0, "sha256": "a" * 64, "width": 1, "height": 1}],
    {"profile": "p" * 65},
]
_FIELDS = [*DetectionEvent.model_fields, "bbox.x", "bbox.w", "model.sha256", "snapshots.0.width"]


def mutated(base: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """`base` with the field at `path` (dots, list indexes) set to `value`; unchanged when
    an earlier change left no such place."""
    out = json.loads(json.dumps(base))
    target: Any = out
    *parents, last = path.split(".")
    for key in parents:
        if isinstance(target, dict) and isinstance(target.get(key), dict | list):
            target = target[key]
        elif isinstance(target, list) and key.isdigit() and int(key) < len(target):
            target = target[int(key)]
        else:
            return out
    if isinstance(target, dict):
        target[last] = value
    elif isinstance(target, list) and last.isdigit() and int(last) < len(target):
        target[int(last)] = value
    return out


def base_events() -> list[DetectionEvent]:
    """A start and an update with every optional field set (a crowd's start needs its
    count)."""
    start = make_detection_event(
        node_id="qx-fast",
        seq=1,
        observed_at=NOW,
        kind="crowd",
        direction="in",
        dwell_s=3.5,
        count=2,
    )
    update = start.model_copy(
        update={
            "event_id": uuid.UUID("01a217fd-2000-7000-8000-000000000001"),
            "phase": EventPhase.UPDATE,
        }
    )
    return [start, update]


def assert_fast_within_protocol(raw: bytes, topic: str) -> None:
    fast = decode_event_fast(topic, raw, NOW)
    protocol = protocol_verdict(topic, raw)
    if fast is not None:
        assert protocol is not None, raw
        same_values(fast, protocol)


@pytest.mark.parametrize("base", base_events(), ids=["start", "update"])
def test_no_single_tricky_field_gets_past_the_fast_path_alone(base: DetectionEvent) -> None:
    """Every field set to every tricky value, one at a time."""
    payload = orjson.loads(encode(base))
    topic = events_topic(base.node_id)
    for path in _FIELDS:
        for value in _TRICKY:
            assert_fast_within_protocol(json.dumps(mutated(payload, path, value)).encode(), topic)


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(
    detection_events(),
    st.lists(st.tuples(st.sampled_from(_FIELDS), st.sampled_from(_TRICKY) | json_scalars)),
)
def test_the_fast_path_accepts_nothing_the_protocol_refuses(
    event: DetectionEvent, changes: list[tuple[str, Any]]
) -> None:
    payload = orjson.loads(encode(event))
    for path, value in changes:
        payload = mutated(payload, path, value)
    # json, not orjson: it writes what orjson refuses (1e308 as is, lone surrogates).
    assert_fast_within_protocol(json.dumps(payload).encode(), events_topic(event.node_id))


@pytest.mark.parametrize(
    "raw",
    [
        b'{"a": 1} trailing',
        b"\xef\xbb\xbf{}",
        b"[1]",
        b'{"seq": 1, "seq": -1}',
        b'{"seq": -1, "seq": 1}',
        b'{"label": "ok\\u0000"}',
        b'{"label": "\\ud800"}',
        b'{"dwell_s": 1e400}',
        b'{"score": NaN}',
    ],
)
def test_edge_forms_of_json_get_the_protocols_verdict(raw: bytes) -> None:
    base = orjson.loads(encode(make_detection_event(node_id="qx-fast", seq=1, observed_at=NOW)))
    # Splice the edge form into a valid event: its fields first, the case's after.
    body = orjson.dumps(base)[:-1]
    if raw.startswith(b"{"):
        raw = body + b"," + raw[1:]
    assert_fast_within_protocol(raw, events_topic("qx-fast"))


def test_an_unknown_field_is_left_to_the_protocol_however_deep() -> None:
    """A newer edge's field: the fast path does not take it (the protocol ignores it, or
    refuses it when it nests deeper than events may), and never recurses into it."""
    body = orjson.dumps(
        orjson.loads(encode(make_detection_event(node_id="qx-fast", seq=1, observed_at=NOW)))
    )[:-1]
    topic = events_topic("qx-fast")
    newer = body + b',"newer_field":[1,{"a":2}]}'
    assert decode_event_fast(topic, newer, NOW) is None
    assert protocol_verdict(topic, newer) is not None
    for deep in (b"[" * 5000 + b"]" * 5000, b"[" * 100_000, b'{"a":' * 3000 + b"1" + b"}" * 3000):
        raw = body + b',"newer_field":' + deep + b"}"
        assert decode_event_fast(topic, raw, NOW) is None
        assert protocol_verdict(topic, raw) is None
    for not_utf8 in (b',"newer_field":"\xff\xfe"}', b',"label":"\xc3"}'):
        raw = body + not_utf8
        assert decode_event_fast(topic, raw, NOW) is None
        assert protocol_verdict(topic, raw) is None


def test_a_topic_for_another_node_or_channel_is_left_to_the_protocol() -> None:
    event = make_detection_event(node_id="qx-fast", seq=1, observed_at=NOW)
    raw = encode(event)
    assert decode_event_fast(events_topic("qx-fast"), raw, NOW) is not None
    assert decode_event_fast(events_topic("qx-other"), raw, NOW) is None
    assert decode_event_fast("gw/v1/nodes/qx-fast/telemetry", raw, NOW) is None
    assert decode_event_fast("not/a/topic", raw, NOW) is None


def test_an_event_too_far_ahead_is_left_to_the_protocol() -> None:
    event = make_detection_event(node_id="qx-fast", seq=1, observed_at=NOW)
    topic = events_topic("qx-fast")
    assert decode_event_fast(topic, encode(event), NOW - timedelta(seconds=299)) is not None
    assert decode_event_fast(topic, encode(event), NOW - timedelta(seconds=301)) is None
