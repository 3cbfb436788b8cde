"""Hypothesis strategies that build every wire message from valid parts."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from uuid import UUID

from hypothesis import strategies as st

from protocols import enums
from protocols.alerts import Alert, OrgPath
from protocols.commands import CommandRequest, CommandResponse
from protocols.config import (
    CameraConfig,
    ConfigFieldError,
    ConfigReport,
    CrowdRule,
    IntrusionRule,
    LineCrossingRule,
    LoiteringRule,
    ModelSpec,
    MotionRule,
    NodeConfig,
    ObjectRule,
    PublishSettings,
    TimeWindow,
)
from protocols.events import (
    MAX_DWELL_S,
    DetectionEvent,
    ModelRef,
    Reading,
    Snapshot,
    Telemetry,
)
from protocols.geometry import BBox
from protocols.health import (
    CameraHealth,
    DropCounts,
    InferenceHealth,
    NodeHealth,
    NodeState,
    OutboxHealth,
)
from protocols.identifiers import (
    CAMERA_ID_PATTERN,
    EVENT_ID_TIME_TOLERANCE,
    NODE_ID_PATTERN,
    ORG_CODE_PATTERN,
    SHA256_PATTERN,
    TOKEN_PATTERN,
)
from protocols.receipts import Receipt

node_ids = st.from_regex(NODE_ID_PATTERN, fullmatch=True)
camera_ids = st.from_regex(CAMERA_ID_PATTERN, fullmatch=True)
org_codes = st.from_regex(ORG_CODE_PATTERN, fullmatch=True)
tokens = st.from_regex(TOKEN_PATTERN, fullmatch=True)
sha256s = st.from_regex(SHA256_PATTERN, fullmatch=True)
uuids = st.uuids()


def wire_text(**sizes: int) -> st.SearchStrategy[str]:
    """Any text the wire carries: everything but NUL (U+0000), which it refuses."""
    return st.text(st.characters(codec="utf-8", exclude_characters="\x00"), **sizes)


short_text = wire_text(max_size=64)
fractions = st.floats(min_value=0.0, max_value=1.0)
counts = st.integers(min_value=0, max_value=2**63 - 1)
non_negative = st.floats(min_value=0.0, max_value=1e9)


@st.composite
def uuid7s(draw: st.DrawFn) -> UUID:
    value = draw(st.integers(min_value=0, max_value=2**128 - 1))
    # Set version 7 and the RFC 4122 variant on random bits.
    value = (value & ~(0xF << 76)) | (7 << 76)
    value = (value & ~(0x3 << 62)) | (0x2 << 62)
    return UUID(int=value)


_ZONES = st.sampled_from([UTC, timezone(timedelta(hours=8)), timezone(timedelta(hours=-5))])
# Received timestamps must not lie in the future; generate them before 2026.
past_times = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2025, 12, 31), timezones=_ZONES
)
any_times = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31), timezones=_ZONES
)


@st.composite
def bboxes(draw: st.DrawFn) -> BBox:
    x = draw(st.floats(min_value=0.0, max_value=0.99))
    y = draw(st.floats(min_value=0.0, max_value=0.99))
    w = draw(st.floats(min_value=1e-4, max_value=1.0 - x))
    h = draw(st.floats(min_value=1e-4, max_value=1.0 - y))
    return BBox(x=x, y=y, w=w, h=h)


@st.composite
def polygons(draw: st.DrawFn) -> list[tuple[float, float]]:
    """Convex polygons: points on a circle at increasing angles are never self-intersecting."""
    n = draw(st.integers(min_value=3, max_value=10))
    cx = draw(st.floats(min_value=0.25, max_value=0.75))
    cy = draw(st.floats(min_value=0.25, max_value=0.75))
    r = draw(st.floats(min_value=0.05, max_value=0.24))
    turn = draw(st.floats(min_value=0.0, max_value=2 * math.pi))
    return [
        (
            cx + r * math.cos(turn + 2 * math.pi * i / n),
            cy + r * math.sin(turn + 2 * math.pi * i / n),
        )
        for i in range(n)
    ]


@st.composite
def lines(draw: st.DrawFn) -> tuple[tuple[float, float], tuple[float, float]]:
    a = (draw(fractions), draw(fractions))
    b = draw(st.tuples(fractions, fractions).filter(lambda p: p != a))
    return (a, b)


json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**53), 2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    short_text,
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(short_text, inner, max_size=4),
    max_leaves=12,
)

node_states = st.builds(
    NodeState,
    node_id=node_ids,
    status=st.just(enums.NodeStatus.ONLINE),
    reason=st.just(enums.StateReason.CONNECTED),
    sent_at=past_times,
    agent_version=st.none() | short_text,
    boot_id=st.none() | uuids,
) | st.builds(
    NodeState,
    node_id=node_ids,
    status=st.just(enums.NodeStatus.OFFLINE),
    reason=st.sampled_from([enums.StateReason.CLEAN_SHUTDOWN, enums.StateReason.CONNECTION_LOST]),
    sent_at=past_times,
)

node_healths = st.builds(
    NodeHealth,
    node_id=node_ids,
    sent_at=past_times,
    uptime_s=non_negative,
    cpu_percent=st.floats(0, 100),
    memory_used_bytes=counts,
    memory_total_bytes=counts,
    disk_used_bytes=counts,
    disk_total_bytes=counts,
    temperature_c=st.none() | st.floats(-60, 150),
    cameras=st.lists(
        st.builds(
            CameraHealth,
            camera_id=camera_ids,
            status=st.sampled_from(enums.StreamStatus),
            input_fps=st.floats(0, 1000),
            analysed_fps=st.floats(0, 1000),
            last_frame_age_s=st.none() | non_negative,
            reconnects=counts,
            width=st.none() | st.integers(1, 16384),
            height=st.none() | st.integers(1, 16384),
        ),
        max_size=4,
    ),
    inference=st.none()
    | st.builds(
        InferenceHealth,
        model_profile=short_text,
        model_sha256=st.none() | sha256s,
        latency_p50_ms=non_negative,
        latency_p95_ms=non_negative,
        inferences=counts,
    ),
    outbox=st.builds(
        OutboxHealth,
        depth=counts,
        oldest_age_s=st.none() | non_negative,
        bytes=counts,
        budget_bytes=counts,
    ),
    dropped=st.builds(DropCounts, events=counts, snapshots=counts, health=counts, frames=counts),
    agent_version=short_text,
    config_version=st.none() | st.integers(1, 2**31 - 1),
)

snapshots = st.builds(
    Snapshot,
    variant=st.sampled_from(enums.SnapshotVariant),
    size_bytes=st.integers(1, 2 * 1024 * 1024),
    sha256=sha256s,
    width=st.integers(1, 16384),
    height=st.integers(1, 16384),
)


@st.composite
def uuid7s_near(draw: st.DrawFn, when: datetime) -> UUID:
    """A UUIDv7 whose time lies within the event id tolerance of `when`."""
    limit_ms = int(EVENT_ID_TIME_TOLERANCE.total_seconds() * 1000) - 1
    millis = int(when.timestamp() * 1000) + draw(st.integers(-limit_ms, limit_ms))
    value = draw(uuid7s())
    return UUID(int=(value.int & ((1 << 80) - 1)) | (max(millis, 0) << 80))


@st.composite
def detection_events(draw: st.DrawFn) -> DetectionEvent:
    observed_at = draw(past_times)
    event_id = draw(uuid7s_near(observed_at))
    phase = draw(st.sampled_from(enums.EventPhase))
    thread_id = event_id if phase is enums.EventPhase.START else draw(uuid7s())
    kind = draw(st.sampled_from(enums.EventKind))
    snaps = draw(st.lists(snapshots, max_size=2, unique_by=lambda s: s.variant))
    return DetectionEvent(
        event_id=event_id,
        thread_id=thread_id,
        seq=draw(counts),
        node_id=draw(node_ids),
        camera_id=draw(camera_ids),
        observed_at=observed_at,
        kind=kind,
        phase=phase,
        severity=draw(st.sampled_from(enums.Severity)),
        rule_id=draw(st.none() | tokens),
        label=draw(st.none() | short_text),
        score=draw(st.none() | fractions),
        bbox=draw(st.none() | bboxes()),
        track_id=draw(st.none() | counts),
        zone=draw(st.none() | short_text),
        direction=draw(st.sampled_from(enums.CrossingDirection)),
        dwell_s=draw(st.floats(min_value=0.0, max_value=MAX_DWELL_S)),
        count=draw(st.integers(0, 100_000)),
        tamper=draw(st.sampled_from(enums.TamperReason)),
        snapshots=snaps,
        model=draw(st.none() | st.builds(ModelRef, profile=short_text, sha256=st.none() | sha256s)),
    )


telemetries = st.builds(
    Telemetry,
    telemetry_id=uuid7s(),
    node_id=node_ids,
    sensor_id=camera_ids,
    observed_at=past_times,
    readings=st.lists(
        st.builds(
            Reading,
            quantity=tokens,
            value=st.floats(allow_nan=False, allow_infinity=False),
            unit=wire_text(max_size=16),
        ),
        min_size=1,
        max_size=4,
    ),
)

hhmm = st.builds(lambda h, m: f"{h:02d}:{m:02d}", st.integers(0, 23), st.integers(0, 59))
time_windows = (
    st.tuples(
        st.lists(st.integers(1, 7), min_size=1, max_size=7, unique=True),
        hhmm,
        hhmm,
    )
    .filter(lambda t: t[1] != t[2])
    .map(lambda t: TimeWindow(days=t[0], start=t[1], end=t[2]))
)

_rule_common: dict[str, Any] = {
    "rule_id": tokens,
    "min_score": fractions,
    "severity": st.sampled_from(enums.Severity),
    "schedule": st.lists(time_windows, max_size=2),
    "cooldown_s": st.floats(0, 86_400),
    "classes": st.lists(wire_text(min_size=1, max_size=16), min_size=1, max_size=3),
}
rules = st.one_of(
    st.builds(IntrusionRule, zone=polygons(), **_rule_common),
    st.builds(
        LineCrossingRule,
        line=lines(),
        direction=st.sampled_from(["in", "out", "both"]),
        **_rule_common,
    ),
    st.builds(LoiteringRule, zone=polygons(), dwell_s=st.floats(1, 86_400), **_rule_common),
    st.builds(CrowdRule, zone=polygons(), min_count=st.integers(2, 10_000), **_rule_common),
    st.builds(ObjectRule, zone=st.none() | polygons(), stationary=st.booleans(), **_rule_common),
    st.builds(
        MotionRule,
        zone=st.none() | polygons(),
        min_area=fractions,
        **{k: v for k, v in _rule_common.items() if k != "classes"},
    ),
)

camera_configs = st.builds(
    CameraConfig,
    camera_id=camera_ids,
    name=wire_text(min_size=1, max_size=32),
    url=st.sampled_from(
        [
            "rtsp://192.168.1.64:554/Streaming/Channels/102",
            "rtsp://10.0.0.8/cam/realmonitor?channel=1&subtype=1",
            "file:///data/clip.mp4",
        ]
    ),
    username=st.none() | wire_text(max_size=16),
    password=st.none() | wire_text(max_size=16),
    grid_code=st.none() | org_codes,
    detect_fps=st.floats(0.1, 30),
    masks=st.lists(polygons(), max_size=2),
    rules=st.lists(rules, max_size=3, unique_by=lambda r: r.rule_id),
)

node_configs = st.builds(
    NodeConfig,
    node_id=node_ids,
    version=st.integers(1, 2**31 - 1),
    issued_at=any_times,
    tier=st.sampled_from(enums.Tier),
    timezone=st.sampled_from(["Asia/Shanghai", "UTC", "Asia/Urumqi"]),
    model=st.builds(
        ModelSpec,
        backend=st.sampled_from(["onnx", "motion"]),
        sha256=st.none() | sha256s,
        threads=st.integers(1, 16),
    ),
    publish=st.builds(PublishSettings, health_interval_s=st.floats(5, 3600)),
    cameras=st.lists(camera_configs, max_size=3, unique_by=lambda c: c.camera_id),
)

config_reports = st.builds(
    ConfigReport,
    node_id=node_ids,
    version=st.integers(1, 2**31 - 1),
    status=st.just(enums.ConfigStatus.APPLIED),
    reported_at=past_times,
    running_version=st.none() | st.integers(1, 2**31 - 1),
    errors=st.just([]),
) | st.builds(
    ConfigReport,
    node_id=node_ids,
    version=st.integers(1, 2**31 - 1),
    status=st.just(enums.ConfigStatus.REJECTED),
    reported_at=past_times,
    errors=st.lists(
        st.builds(ConfigFieldError, field=short_text, message=short_text), min_size=1, max_size=3
    ),
)


@st.composite
def command_requests(draw: st.DrawFn) -> CommandRequest:
    issued_at = draw(any_times)
    expires_at = draw(st.none() | st.just(issued_at + timedelta(minutes=5)))
    return CommandRequest(
        request_id=draw(uuids),
        node_id=draw(node_ids),
        command=draw(tokens),
        args=draw(st.dictionaries(short_text, json_values, max_size=4)),
        issued_at=issued_at,
        expires_at=expires_at,
    )


command_responses = st.builds(
    CommandResponse,
    request_id=uuids,
    node_id=node_ids,
    status=st.just(enums.ReplyStatus.OK),
    data=st.none() | st.dictionaries(short_text, json_values, max_size=4),
    responded_at=past_times,
) | st.builds(
    CommandResponse,
    request_id=uuids,
    node_id=node_ids,
    status=st.just(enums.ReplyStatus.ERROR),
    error=wire_text(min_size=1, max_size=64),
    responded_at=past_times,
)


seq_ranges = st.tuples(counts, counts).map(lambda r: (min(r), max(r)))
receipts = st.builds(
    Receipt,
    node_id=node_ids,
    sent_at=any_times,
    seqs=st.lists(seq_ranges, min_size=1, max_size=8),
)


@st.composite
def org_paths(draw: st.DrawFn) -> OrgPath:
    depth = draw(st.integers(0, 3))
    codes = [draw(org_codes) for _ in range(depth)] + [None] * (3 - depth)
    return OrgPath(county=draw(org_codes), town=codes[0], village=codes[1], grid=codes[2])


@st.composite
def alerts(draw: st.DrawFn) -> Alert:
    msg_type = draw(st.sampled_from(enums.AlertMsgType))
    refs = draw(
        st.lists(uuids, min_size=0 if msg_type is enums.AlertMsgType.ALERT else 1, max_size=3)
    )
    case_id = draw(st.none() | uuids)
    return Alert(
        alert_id=draw(uuids),
        sent_at=draw(any_times),
        msg_type=msg_type,
        references=refs,
        kind=draw(st.sampled_from(enums.AlertKind)),
        org=draw(org_paths()),
        severity=draw(st.sampled_from(enums.Severity)),
        urgency=draw(st.sampled_from(enums.CapUrgency)),
        cap_severity=draw(st.sampled_from(enums.CapSeverity)),
        certainty=draw(st.sampled_from(enums.CapCertainty)),
        headline_zh=draw(wire_text(min_size=1, max_size=40)),
        headline_en=draw(wire_text(min_size=1, max_size=40)),
        case_id=case_id,
        case_state=None if case_id is None else draw(st.sampled_from(enums.CaseState)),
        event_id=draw(st.none() | uuids),
        node_id=draw(st.none() | node_ids),
        camera_id=draw(st.none() | camera_ids),
        snapshot_url=draw(st.none() | st.just("https://gridwatch.example.cn/s/1.jpg")),
    )


STRATEGIES: dict[type, st.SearchStrategy[Any]] = {
    NodeState: node_states,
    NodeHealth: node_healths,
    DetectionEvent: detection_events(),
    Telemetry: telemetries,
    NodeConfig: node_configs,
    ConfigReport: config_reports,
    CommandRequest: command_requests(),
    CommandResponse: command_responses,
    Receipt: receipts,
    Alert: alerts(),
}
