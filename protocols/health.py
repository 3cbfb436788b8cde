"""What a node says about itself: its connection state (also its last will) and its health."""

from __future__ import annotations

from typing import Annotated, Self
from uuid import UUID

from pydantic import AfterValidator, Field, model_validator

from protocols.base import PastDatetime, Payload, WireModel
from protocols.enums import NodeStatus, StateReason, StreamStatus
from protocols.identifiers import CameraId, NodeId, Sha256

_MAX_COUNT = 2**63 - 1
# Seconds a box can report as an age or an uptime: a century and more.
_MAX_SECONDS = 1e10
# Latencies in milliseconds: eleven days.
_MAX_MS = 1e9


def _measured(value: float) -> float:
    """A figure to a millionth: what is smaller is nothing to a reader, and a 4-byte real
    cannot hold it (1e-50 made the county's database refuse the report)."""
    return round(value, 6)


Figure = Annotated[float, AfterValidator(_measured)]


class NodeState(Payload):
    """Retained on `state`. Online on every connect; the same topic carries the last will."""

    node_id: NodeId
    status: NodeStatus
    reason: StateReason
    sent_at: PastDatetime = Field(
        description="When the node sent it; for the last will, when the will was registered."
    )
    agent_version: str | None = Field(default=None, max_length=64)
    boot_id: UUID | None = Field(
        default=None, description="Changes on every agent start, so restarts are visible."
    )

    @model_validator(mode="after")
    def _reason_matches_status(self) -> Self:
        online = self.status is NodeStatus.ONLINE
        if online != (self.reason is StateReason.CONNECTED):
            raise ValueError(
                f"reason {self.reason.value!r} does not fit status {self.status.value!r}"
            )
        return self


# A camera connected for at least this share of a report's interval counts online.
ONLINE_FRACTION = 0.5


class CameraHealth(WireModel):
    camera_id: CameraId
    status: StreamStatus
    input_fps: Figure = Field(ge=0, le=1000, description="Frames decoded per second.")
    analysed_fps: Figure = Field(ge=0, le=1000, description="Frames analysed per second.")
    last_frame_age_s: Figure | None = Field(
        default=None,
        ge=0,
        le=_MAX_SECONDS,
        description="Seconds since the newest frame; null before the first.",
    )
    reconnects: int = Field(ge=0, le=_MAX_COUNT, description="Reconnects since agent start.")
    connected_fraction: Figure | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Share of the time since the previous report that the stream was "
        "connected (null from edges that do not say): what the interval saw, where `status` "
        "is the instant of the report.",
    )
    width: int | None = Field(default=None, ge=1, le=16384)
    height: int | None = Field(default=None, ge=1, le=16384)

    @property
    def online(self) -> bool:
        """Whether the report counts the camera online: connected for ONLINE_FRACTION of
        the interval, when the edge says (a stream that reconnected just before a report
        read offline at that instant); else by its state at the report."""
        if self.connected_fraction is not None:
            return self.connected_fraction >= ONLINE_FRACTION
        return self.status is StreamStatus.CONNECTED


class InferenceHealth(WireModel):
    model_profile: str = Field(max_length=64)
    model_sha256: Sha256 | None = None
    latency_p50_ms: Figure = Field(ge=0, le=_MAX_MS)
    latency_p95_ms: Figure = Field(ge=0, le=_MAX_MS)
    inferences: int = Field(ge=0, le=_MAX_COUNT, description="Inferences since agent start.")


class OutboxHealth(WireModel):
    depth: int = Field(
        ge=0,
        le=_MAX_COUNT,
        description="Entries kept: not yet taken by the broker, or events not yet receipted.",
    )
    oldest_age_s: Figure | None = Field(default=None, ge=0, le=_MAX_SECONDS)
    bytes: int = Field(ge=0, le=_MAX_COUNT)
    budget_bytes: int = Field(ge=0, le=_MAX_COUNT)
    unreceipted: int = Field(
        default=0,
        ge=0,
        le=_MAX_COUNT,
        description="Of them, events the broker took that no receipt has named yet.",
    )
    unreceipted_oldest_age_s: Figure | None = Field(
        default=None,
        ge=0,
        le=_MAX_SECONDS,
        description="How long the oldest of those has waited for one.",
    )


class DropCounts(WireModel):
    """Everything the node dropped, counted since it was installed: never silent."""

    events: int = Field(default=0, ge=0, le=_MAX_COUNT)
    snapshots: int = Field(default=0, ge=0, le=_MAX_COUNT)
    health: int = Field(default=0, ge=0, le=_MAX_COUNT)
    frames: int = Field(default=0, ge=0, le=_MAX_COUNT, description="Frames skipped by overload.")


class NodeHealth(Payload):
    """Published every `publish.health_interval_s` seconds on `health`."""

    node_id: NodeId
    sent_at: PastDatetime
    uptime_s: Figure = Field(ge=0, le=_MAX_SECONDS)
    cpu_percent: Figure = Field(ge=0, le=100, description="Whole-box CPU use, 0..100.")
    memory_used_bytes: int = Field(ge=0, le=_MAX_COUNT)
    memory_total_bytes: int = Field(ge=0, le=_MAX_COUNT)
    disk_used_bytes: int = Field(ge=0, le=_MAX_COUNT)
    disk_total_bytes: int = Field(ge=0, le=_MAX_COUNT)
    temperature_c: Figure | None = Field(default=None, ge=-60, le=150)
    cameras: list[CameraHealth] = Field(default_factory=list, max_length=256)
    inference: InferenceHealth | None = None
    outbox: OutboxHealth
    dropped: DropCounts = Field(default_factory=DropCounts)
    agent_version: str = Field(max_length=64)
    config_version: int | None = Field(default=None, ge=1)
    last_seq: int | None = Field(
        default=None,
        ge=0,
        le=2**63 - 1,
        description="The highest event `seq` the node has given out: events up to it that "
        "the county lacks are missing, even if the node sends nothing more.",
    )
