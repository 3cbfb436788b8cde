"""One realistic example of every message, used in the JSON Schemas, AsyncAPI and README.

The place is a village grid of Qu County (渠县, 511725), Sichuan.
"""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID

from protocols.alerts import Alert, OrgPath
from protocols.base import Payload
from protocols.commands import CommandRequest, CommandResponse
from protocols.config import (
    CameraConfig,
    ConfigReport,
    CrowdRule,
    IntrusionRule,
    LineCrossingRule,
    ModelSpec,
    NodeConfig,
    TimeWindow,
)
from protocols.enums import (
    AlertKind,
    AlertMsgType,
    CapCertainty,
    CapSeverity,
    CapUrgency,
    CaseState,
    ConfigStatus,
    EventKind,
    EventPhase,
    NodeStatus,
    ReplyStatus,
    Severity,
    SnapshotVariant,
    StateReason,
    StreamStatus,
    Tier,
)
from protocols.events import DetectionEvent, ModelRef, Reading, Snapshot, Telemetry
from protocols.geometry import BBox
from protocols.health import CameraHealth, InferenceHealth, NodeHealth, NodeState, OutboxHealth
from protocols.receipts import Receipt

NODE_ID = "qx-tuxi-shuangfeng-01"
AT = datetime(2026, 11, 25, 8, 30, 0, tzinfo=UTC)
EVENT_ID = UUID("01a211d3-73b8-7cfb-9c56-2dbaf68e978b")
TELEMETRY_ID = UUID("01a2142b-89b2-7072-b645-d7fd38ef15cf")
REQUEST_ID = UUID("01a2142b-89b3-7126-a8da-02aa657a9f76")
BOOT_ID = UUID("01a2142b-89b4-76e6-baeb-26dce8813332")
ALERT_ID = UUID("01a2142b-89b5-7c10-8767-99af33cc068e")
CASE_ID = UUID("01a2142b-89b6-7be2-b8e1-42d3f2c51fe7")
MODEL_SHA256 = "695e750a5d5754bb5a8d5325643b59282191a7e7a564e435a415fd3c578eab14"
ORG = OrgPath(county="511725", town="511725106", village="511725106201", grid="511725106201003")

NODE_STATE = NodeState(
    node_id=NODE_ID,
    status=NodeStatus.ONLINE,
    reason=StateReason.CONNECTED,
    sent_at=AT,
    agent_version="0.1.0",
    boot_id=BOOT_ID,
)

NODE_HEALTH = NodeHealth(
    node_id=NODE_ID,
    sent_at=AT,
    uptime_s=86_400.0,
    cpu_percent=41.5,
    memory_used_bytes=1_400_000_000,
    memory_total_bytes=4_000_000_000,
    disk_used_bytes=9_800_000_000,
    disk_total_bytes=32_000_000_000,
    temperature_c=52.0,
    cameras=[
        CameraHealth(
            camera_id="cam01",
            status=StreamStatus.CONNECTED,
            input_fps=25.0,
            analysed_fps=5.0,
            last_frame_age_s=0.04,
            reconnects=2,
            width=704,
            height=576,
        )
    ],
    inference=InferenceHealth(
        model_profile="yolox_nano_416",
        model_sha256=MODEL_SHA256,
        latency_p50_ms=12.6,
        latency_p95_ms=15.9,
        inferences=1_204_311,
    ),
    outbox=OutboxHealth(depth=0, oldest_age_s=None, bytes=0, budget_bytes=1_073_741_824),
    agent_version="0.1.0",
    config_version=12,
)

DETECTION_EVENT = DetectionEvent(
    event_id=EVENT_ID,
    thread_id=EVENT_ID,
    seq=48_213,
    node_id=NODE_ID,
    camera_id="cam01",
    observed_at=AT,
    kind=EventKind.INTRUSION,
    phase=EventPhase.START,
    severity=Severity.HIGH,
    rule_id="river_bank_night",
    label="person",
    score=0.82,
    bbox=BBox(x=0.41, y=0.32, w=0.08, h=0.31),
    track_id=17,
    zone="river_bank",
    snapshots=[
        Snapshot(
            variant=SnapshotVariant.FRAME,
            size_bytes=61_544,
            width=1280,
            height=720,
            sha256="9f2c4a6e0b1d3f5a7c9e1b3d5f7a9c1e3b5d7f9a1c3e5b7d9f1a3c5e7b9d1f3a",
        ),
    ],
    model=ModelRef(profile="yolox_nano_416", sha256=MODEL_SHA256),
)

TELEMETRY = Telemetry(
    telemetry_id=TELEMETRY_ID,
    node_id=NODE_ID,
    sensor_id="river_gauge",
    observed_at=AT,
    readings=[Reading(quantity="water_level", value=3.42, unit="m")],
)

NODE_CONFIG = NodeConfig(
    node_id=NODE_ID,
    version=12,
    issued_at=AT,
    tier=Tier.VILLAGE,
    model=ModelSpec(profile="yolox_nano_416", sha256=MODEL_SHA256),
    cameras=[
        CameraConfig(
            camera_id="cam01",
            name="双峰村河堤",
            grid_code="511725106201003",
            url="rtsp://192.168.1.64:554/Streaming/Channels/102",
            username="gridwatch",
            rules=[
                IntrusionRule(
                    rule_id="river_bank_night",
                    severity=Severity.HIGH,
                    zone=[(0.30, 0.25), (0.95, 0.25), (0.95, 0.98), (0.30, 0.98)],
                    schedule=[TimeWindow(start="19:00", end="06:30")],
                ),
                LineCrossingRule(
                    rule_id="bridge_count",
                    classes=["person", "bicycle"],
                    line=((0.1, 0.6), (0.9, 0.6)),
                    severity=Severity.LOW,
                ),
                CrowdRule(
                    rule_id="square_crowd",
                    min_count=20,
                    min_duration_s=60,
                    zone=[(0.0, 0.0), (0.3, 0.0), (0.3, 0.5), (0.0, 0.5)],
                ),
            ],
        ),
    ],
)

CONFIG_REPORT = ConfigReport(
    node_id=NODE_ID,
    version=12,
    status=ConfigStatus.APPLIED,
    running_version=12,
    reported_at=AT,
)

COMMAND_REQUEST = CommandRequest(
    request_id=REQUEST_ID,
    node_id=NODE_ID,
    command="recheck_zone",
    args={"camera_id": "cam01", "rule_id": "river_bank_night"},
    issued_at=AT,
    expires_at=datetime(2026, 11, 25, 8, 35, 0, tzinfo=UTC),
)

COMMAND_RESPONSE = CommandResponse(
    request_id=REQUEST_ID,
    node_id=NODE_ID,
    status=ReplyStatus.OK,
    data={"present": False, "objects": 0},
    responded_at=AT,
)

RECEIPT = Receipt(node_id=NODE_ID, sent_at=AT, seqs=[(1041, 1187), (1190, 1190)])

ALERT = Alert(
    alert_id=ALERT_ID,
    sent_at=AT,
    msg_type=AlertMsgType.ALERT,
    kind=AlertKind.INTRUSION,
    org=ORG,
    severity=Severity.HIGH,
    urgency=CapUrgency.IMMEDIATE,
    cap_severity=CapSeverity.SEVERE,
    certainty=CapCertainty.OBSERVED,
    headline_zh="双峰村3号网格：河堤夜间有人闯入",
    headline_en="Shuangfeng grid 3: person on the river bank at night",
    case_id=CASE_ID,
    case_state=CaseState.INTAKE,
    event_id=EVENT_ID,
    node_id=NODE_ID,
    camera_id="cam01",
    snapshot_url=f"https://gridwatch.example.cn/api/v1/events/{EVENT_ID}/snapshots/frame",
)

EXAMPLES: dict[type[Payload], Payload] = {
    type(example): example
    for example in (
        NODE_STATE,
        NODE_HEALTH,
        DETECTION_EVENT,
        TELEMETRY,
        NODE_CONFIG,
        CONFIG_REPORT,
        COMMAND_REQUEST,
        COMMAND_RESPONSE,
        RECEIPT,
        ALERT,
    )
}
