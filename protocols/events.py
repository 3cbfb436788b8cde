"""What a node observes: detection events with their snapshots, and sensor telemetry."""

from __future__ import annotations

from typing import Self

from pydantic import Field, model_validator

from protocols.base import PastDatetime, Payload, WireModel
from protocols.enums import (
    CrossingDirection,
    EventKind,
    EventPhase,
    Severity,
    SnapshotVariant,
    TamperReason,
)
from protocols.geometry import BBox
from protocols.identifiers import (
    EVENT_ID_TIME_TOLERANCE,
    CameraId,
    NodeId,
    Sha256,
    Token,
    Uuid7,
    uuid7_time,
)

MAX_SNAPSHOT_BYTES = 2 * 1024 * 1024
MAX_SEQ = 2**63 - 1
MAX_DWELL_S = 365 * 86_400


class Snapshot(WireModel):
    """Metadata of a JPEG sent as raw bytes on `snapshots/<event_id>/<variant>`."""

    variant: SnapshotVariant
    content_type: str = Field(default="image/jpeg", pattern=r"^image/jpeg$")
    size_bytes: int = Field(ge=1, le=MAX_SNAPSHOT_BYTES)
    sha256: Sha256
    width: int = Field(ge=1, le=16384)
    height: int = Field(ge=1, le=16384)


class ModelRef(WireModel):
    """The detection model that produced an event."""

    profile: str = Field(max_length=64, examples=["yolox_nano_416"])
    sha256: Sha256 | None = None


# The field each kind must carry on its start message.
REQUIRED_ON_START = {
    EventKind.LINE_CROSSING: "direction",
    EventKind.LOITERING: "dwell_s",
    EventKind.CROWD: "count",
    EventKind.CAMERA_TAMPER: "tamper",
}


class DetectionEvent(Payload):
    """One message of one situation's thread (start, updates, end) on `events`."""

    event_id: Uuid7 = Field(
        description="Unique per message; the cloud stores each id once. Made when the event "
        "is observed: its time lies within an hour of `observed_at`."
    )
    thread_id: Uuid7 = Field(description="event_id of the thread's start message.")
    seq: int = Field(ge=0, le=MAX_SEQ, description="Per-node sequence; gaps mean lost events.")
    node_id: NodeId
    camera_id: CameraId
    observed_at: PastDatetime
    kind: EventKind
    phase: EventPhase
    severity: Severity = Severity.MEDIUM
    rule_id: Token | None = Field(default=None, description="The rule that raised it.")
    label: str | None = Field(default=None, max_length=64, examples=["person"])
    score: float | None = Field(default=None, ge=0.0, le=1.0)
    bbox: BBox | None = None
    track_id: int | None = Field(default=None, ge=0, le=MAX_SEQ)
    zone: str | None = Field(default=None, max_length=64)
    direction: CrossingDirection | None = None
    # At most a year: the stored value is a 4-byte float, which holds no more than 3.4e38.
    dwell_s: float | None = Field(default=None, ge=0, le=MAX_DWELL_S)
    count: int | None = Field(default=None, ge=0, le=100_000)
    tamper: TamperReason | None = None
    snapshots: list[Snapshot] = Field(default_factory=list, max_length=4)
    model: ModelRef | None = None

    @model_validator(mode="after")
    def _thread_and_kind_fields(self) -> Self:
        if self.phase is EventPhase.START and self.thread_id != self.event_id:
            raise ValueError("a start event must have thread_id equal to event_id")
        required = REQUIRED_ON_START.get(self.kind)
        if required and self.phase is EventPhase.START and getattr(self, required) is None:
            raise ValueError(f"kind {self.kind.value!r} needs {required!r} on its start event")
        if len({s.variant for s in self.snapshots}) != len(self.snapshots):
            raise ValueError("snapshots repeat a variant")
        made = uuid7_time(self.event_id)
        if abs(made - self.observed_at) > EVENT_ID_TIME_TOLERANCE:
            raise ValueError(
                f"event_id was made at {made.isoformat()}, more than "
                f"{EVENT_ID_TIME_TOLERANCE.total_seconds():g} s from observed_at"
            )
        return self


class Reading(WireModel):
    quantity: Token = Field(examples=["water_level"])
    value: float
    unit: str = Field(max_length=16, examples=["m"])


class Telemetry(Payload):
    """Sensor readings (a river water level, rainfall) on `telemetry`."""

    telemetry_id: Uuid7
    node_id: NodeId
    sensor_id: CameraId = Field(description="Sensor id, unique within its node.")
    observed_at: PastDatetime
    readings: list[Reading] = Field(min_length=1, max_length=64)
