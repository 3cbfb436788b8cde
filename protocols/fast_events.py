"""Detection events decoded in C, for a receiver that takes tens of thousands a second: the
`DetectionEvent` contract restated for msgspec.

Through the pydantic model an event cost the cloud's ingest about 12 µs (JSON, validation,
four model objects); msgspec parses and checks the same fields into slotted structs in about
5, and the structs cost less to keep and to free: ingest's CPU per event draining a backlog
fell from 30–33 to 19–20 µs.

`DetectionEvent` stays the contract and the only source of error messages. This module is
a faster way to *accept* what it accepts, nothing more:

- A payload the fast path does not take (a failed check, a lax form such as "5" for 5, any
  `\\u` escape, a topic that is not a node's events) is for `decode_message`, which refuses
  it naming the field, or accepts it; `to_fast` turns an accepted one into this form through
  the canonical encoding.
- Every constraint of the model is restated below with the model's own constants, and the
  checks msgspec cannot state (UUID version, time in the past, the model validators) follow
  the decode. `tests/protocols/test_fast_events.py` holds the two to the same verdicts and
  values, and compares their JSON Schemas field by field, so a field added to the model and
  not here fails the tests.

Fields the model ignores (a newer edge's additions) are not taken here: such an event
goes the protocol's way. That also bounds how deeply msgspec recurses by the structs' own
nesting, whatever the bytes hold (skipping an unknown field recursed into it: a few
kilobytes of nested arrays raised RecursionError), so this path needs no depth check;
`decode` checks depth before parsing.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Final, Literal

import msgspec
from msgspec import Meta, Struct

from protocols.base import DEFAULT_MAX_FUTURE_SKEW_S, SCHEMA_VERSION
from protocols.catalog import CHANNELS
from protocols.codec import encode
from protocols.enums import (
    CrossingDirection,
    EventKind,
    EventPhase,
    Severity,
    SnapshotVariant,
    TamperReason,
)
from protocols.errors import InvalidTopic
from protocols.events import (
    MAX_DWELL_S,
    MAX_SEQ,
    MAX_SNAPSHOT_BYTES,
    REQUIRED_ON_START,
    DetectionEvent,
)
from protocols.geometry import EDGE_TOLERANCE
from protocols.identifiers import (
    CAMERA_ID_PATTERN,
    EVENT_ID_TIME_TOLERANCE,
    NODE_ID_PATTERN,
    SHA256_PATTERN,
    TOKEN_PATTERN,
)
from protocols.topics import Channel, NodeTopic, parse_topic


def _whole(pattern: str) -> str:
    """A protocol pattern for msgspec, which searches with Python's `re`: there `$` also
    matches before a final newline, where the protocol's regex engine does not."""
    return pattern.removesuffix("$") + r"\Z"


_NodeId = Annotated[str, Meta(pattern=_whole(NODE_ID_PATTERN))]
_CameraId = Annotated[str, Meta(pattern=_whole(CAMERA_ID_PATTERN))]
_Token = Annotated[str, Meta(pattern=_whole(TOKEN_PATTERN))]
_Sha256 = Annotated[str, Meta(pattern=_whole(SHA256_PATTERN))]
_Fraction = Annotated[float, Meta(ge=0.0, le=1.0)]
_Extent = Annotated[float, Meta(gt=0.0, le=1.0)]
_Pixels = Annotated[int, Meta(ge=1, le=16384)]
_Text64 = Annotated[str, Meta(max_length=64)]


class FastBBox(Struct, frozen=True, forbid_unknown_fields=True):
    x: _Fraction
    y: _Fraction
    w: _Extent
    h: _Extent


class FastSnapshot(Struct, frozen=True, forbid_unknown_fields=True):
    variant: SnapshotVariant
    size_bytes: Annotated[int, Meta(ge=1, le=MAX_SNAPSHOT_BYTES)]
    sha256: _Sha256
    width: _Pixels
    height: _Pixels
    content_type: Annotated[str, Meta(pattern=r"^image/jpeg\Z")] = "image/jpeg"


class FastModelRef(Struct, frozen=True, forbid_unknown_fields=True):
    profile: _Text64
    sha256: _Sha256 | None = None


class FastDetectionEvent(Struct, frozen=True, forbid_unknown_fields=True):
    """A `DetectionEvent` as ingest stores it: the same fields, names and values."""

    event_id: uuid.UUID
    thread_id: uuid.UUID
    seq: Annotated[int, Meta(ge=0, le=MAX_SEQ)]
    node_id: _NodeId
    camera_id: _CameraId
    observed_at: Annotated[datetime, Meta(tz=True)]
    kind: EventKind
    phase: EventPhase
    severity: Severity = Severity.MEDIUM
    rule_id: _Token | None = None
    label: _Text64 | None = None
    score: _Fraction | None = None
    bbox: FastBBox | None = None
    track_id: Annotated[int, Meta(ge=0, le=MAX_SEQ)] | None = None
    zone: _Text64 | None = None
    direction: CrossingDirection | None = None
    dwell_s: Annotated[float, Meta(ge=0.0, le=MAX_DWELL_S)] | None = None
    count: Annotated[int, Meta(ge=0, le=100_000)] | None = None
    tamper: TamperReason | None = None
    snapshots: Annotated[list[FastSnapshot], Meta(max_length=4)] = []
    model: FastModelRef | None = None
    schema_version: Literal[1] = SCHEMA_VERSION


_DECODER: Final = msgspec.json.Decoder(FastDetectionEvent)
_MAX_BYTES: Final = CHANNELS[Channel.EVENTS].max_bytes
_SKEW: Final = timedelta(seconds=DEFAULT_MAX_FUTURE_SKEW_S)
_ID_TOLERANCE_US: Final = EVENT_ID_TIME_TOLERANCE // timedelta(microseconds=1)
_ID_TOLERANCE_S: Final = _ID_TOLERANCE_US / 1e6
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)
# A time with more than six digits of a second: msgspec rounds it to the microsecond, the
# protocol truncates. (A two-digit number with seven decimals after a colon matches too,
# and only takes the slower path.)
_SUB_MICROSECOND: Final = re.compile(rb":\d\d\.\d{7}")


def decode_event_fast(topic: str, raw: bytes, received_at: datetime) -> FastDetectionEvent | None:
    """The event on a node's `events` topic if it passes every check of `DetectionEvent`
    (with the default clock skew), else None: the caller then decodes it the protocol's
    way, which accepts it or says what is wrong."""
    try:
        parts = parse_topic(topic)  # cached: the other channels leave before any scan
    except InvalidTopic:
        return None
    if not isinstance(parts, NodeTopic) or parts.channel is not Channel.EVENTS:
        return None
    if len(raw) > _MAX_BYTES or b"\\u" in raw or _SUB_MICROSECOND.search(raw):
        return None  # escapes (NUL, lone surrogates) are judged by the protocol's path
    try:
        if not raw.isascii():
            raw.decode()  # msgspec checks only the strings it keeps
        event = _DECODER.decode(raw)
    except (UnicodeDecodeError, msgspec.DecodeError):
        return None
    if not (
        parts.node_id == event.node_id
        and _passes_validators(event)
        and event.observed_at <= received_at + _SKEW
    ):
        return None
    return event


def _is_uuid7(value: int) -> bool:
    """UUID.version == 7 (the RFC 4122 variant, version 7) on the integer: the property is
    Python code, about 0.35 µs a call."""
    return (value >> 76) & 0xF == 7 and (value >> 62) & 0x3 == 0b10


def _passes_validators(event: FastDetectionEvent) -> bool:
    """What msgspec's constraints cannot say: the ids' UUID version and the models'
    validators (`DetectionEvent._thread_and_kind_fields`, `BBox._inside_frame`)."""
    event_id = event.event_id.int
    if not (_is_uuid7(event_id) and _is_uuid7(event.thread_id.int)):
        return False
    # In float seconds first (two C calls): exact, in whole microseconds as the model counts
    # (a float timestamp rounds), only within a second of the bound.
    if abs((event_id >> 80) / 1000 - event.observed_at.timestamp()) > _ID_TOLERANCE_S - 1:
        observed_us = (event.observed_at - _EPOCH) // _MICROSECOND
        if abs((event_id >> 80) * 1000 - observed_us) > _ID_TOLERANCE_US:
            return False
    if event.phase is EventPhase.START:
        if event.thread_id != event.event_id:
            return False
        required = REQUIRED_ON_START.get(event.kind)
        if required and getattr(event, required) is None:
            return False
    snapshots = event.snapshots
    if len(snapshots) > 1 and len({s.variant for s in snapshots}) != len(snapshots):
        return False
    box = event.bbox
    return box is None or (
        box.x + box.w <= 1.0 + EDGE_TOLERANCE and box.y + box.h <= 1.0 + EDGE_TOLERANCE
    )


def to_fast(event: DetectionEvent) -> FastDetectionEvent:
    """A protocol-checked event in ingest's form, through the canonical encoding."""
    return _DECODER.decode(encode(event))
