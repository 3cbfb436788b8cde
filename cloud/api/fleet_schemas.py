"""Request and response bodies of the fleet API: nodes, cameras, config drift, commands."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, JsonValue, WithJsonSchema, field_validator

from cloud.api.deps import Moment
from cloud.org_files import CameraRow
from protocols.base import Integer
from protocols.config import NodeConfig
from protocols.enums import CommandName, Tier
from protocols.identifiers import ORG_CODE_PATTERN, NodeId
from protocols.nesting import FREE_FORM_DEPTH
from protocols.passwords import HASH_PATTERN

Liveness = Literal["online", "offline", "unknown"]


class NodeSummary(BaseModel):
    """A node as the fleet list shows it: who it is, whether it lives, how it does."""

    node_id: str
    name: str | None
    unit_code: str | None
    unit_name: str | None
    tier: str | None
    balena_uuid: str | None
    status: Liveness = Field(
        description="offline: its state says so (last will) or nothing heard for "
        "`missed_heartbeats` intervals; unknown: registered, never heard."
    )
    last_seen_at: datetime | None
    status_since: datetime | None
    changes: int = Field(description="Online/offline changes within the flapping window.")
    flapping: bool
    cameras_connected: int | None
    cameras_total: int | None
    cpu_percent: float | None
    temperature_c: float | None
    disk_used_bytes: int | None
    disk_total_bytes: int | None
    outbox_depth: int | None
    outbox_oldest_age_s: float | None
    dropped_events: int | None
    dropped_snapshots: int | None
    agent_version: str | None
    config_version: int | None
    model_profile: str | None
    inference_p95_ms: float | None
    uptime_s: float | None
    problems: list[str] = Field(description="Open work orders of the node, by category.")


class FleetOverview(BaseModel):
    unit_code: str | None
    generated_at: datetime
    nodes: int
    online: int
    offline: int
    unknown: int
    flapping: int
    cameras: int
    cameras_connected: int
    outbox_depth: int
    problems: dict[str, int] = Field(description="Open fleet work orders by category.")
    worst: list[NodeSummary] = Field(description="The worst nodes first (at most 20).")


class UnitSummary(BaseModel):
    code: str
    name: str
    level: str
    own: bool = Field(
        default=False,
        description="The unit asked about itself, with only what is its own (its cases and "
        "boxes, not its children's): the rows then add up to the unit's figures.",
    )
    open_cases: int = Field(description="Open cases there (a technician: open work orders).")
    overdue_cases: int = Field(
        description="Of those, the ones that missed a deadline, as `overdue` in /cases/stats."
    )
    nodes: int
    nodes_offline: int
    nodes_with_problems: int


class CameraOut(BaseModel):
    camera_id: str
    name: str | None
    unit_code: str | None
    stream_url: str | None
    lon: float | None
    lat: float | None
    stream_status: str | None = Field(description="As the node last reported it.")
    input_fps: float | None
    analysed_fps: float | None
    last_frame_age_s: float | None
    reconnects: int | None
    problems: list[str] | None


class DesiredOut(BaseModel):
    version: int
    issued_at: datetime
    issued_by: str
    published_at: datetime | None


class ReportedOut(BaseModel):
    version: int
    status: str
    running_version: int | None
    errors: list[dict[str, Any]]
    reported_at: datetime


class ConfigDrift(BaseModel):
    """Desired against reported: "desired v12, reported v11 since 3 h", or the rejection."""

    state: Literal["in_sync", "pending", "rejected", "unknown"]
    desired: DesiredOut | None
    reported: ReportedOut | None
    behind_since: datetime | None = Field(
        description="Since when the node has not run the desired version."
    )


class SuspensionOut(BaseModel):
    """The box shut out of the broker for what it sent (its outbox keeps its events)."""

    since: datetime
    until: datetime
    reason: str
    suspended_by: str


class NodeDetail(NodeSummary):
    cameras: list[CameraOut]
    config: ConfigDrift
    memory_used_bytes: int | None
    memory_total_bytes: int | None
    suspension: SuspensionOut | None = Field(
        default=None, description="While the box is suspended (an operator may lift it)."
    )


class HealthHour(BaseModel):
    bucket: datetime
    samples: int
    cpu_avg: float | None
    cpu_max: float
    memory_used_max: int
    disk_used_max: int
    disk_total_max: int
    temperature_max: float | None
    outbox_depth_max: int
    outbox_age_max: float | None
    cameras_connected_min: int
    cameras_total_max: int


class DesiredConfigIn(NodeConfig):
    """A node's whole desired config. The service numbers the version and stamps the time;
    `node_id` comes from the path."""

    model_config = ConfigDict(**{**NodeConfig.model_config, "extra": "forbid"})

    node_id: NodeId | None = None  # type: ignore[assignment]
    version: Integer | None = Field(default=None, description="Ignored: the service numbers it.")  # type: ignore[assignment]
    issued_at: Moment | None = None  # type: ignore[assignment]


class DesiredConfigOut(BaseModel):
    version: int
    issued_at: datetime
    issued_by: str
    published_at: datetime | None
    config: dict[str, Any] = Field(description="Camera passwords are not shown.")


# Free-form JSON as a command on the wire may carry it (protocols.commands.CommandRequest):
# FREE_FORM_DEPTH levels of arrays and objects in each argument, numbers in 64 bits, texts
# of 4096 characters. A value the wire refused answered 500, after the command was made.
_NUMBER_RANGE = (-(2**63), 2**64 - 1)
_SCALARS: list[dict[str, Any]] = [
    {"type": "string", "maxLength": 4096},
    {"type": "number", "minimum": _NUMBER_RANGE[0], "maximum": _NUMBER_RANGE[1]},
    {"type": "boolean"},
    {"type": "null"},
]


def _free_form_schema(levels: int) -> dict[str, Any]:
    if levels == 0:
        return {"anyOf": _SCALARS}
    inner = _free_form_schema(levels - 1)
    containers = [
        {"type": "array", "items": inner},
        {"type": "object", "additionalProperties": inner},
    ]
    return {"anyOf": [*_SCALARS, *containers]}


def _levels(value: JsonValue) -> int:
    """Arrays and objects nested in `value`, checking its numbers on the way."""
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        return 1 + max(map(_levels, value), default=0)
    if isinstance(value, int | float) and not isinstance(value, bool):
        # A float is compared as a schema validator compares it, in floats: 2^64 - 1 is 2^64.
        low, high = _NUMBER_RANGE if isinstance(value, int) else map(float, _NUMBER_RANGE)
        if not low <= value <= high:
            raise ValueError("a number beyond 64 bits")
    return 0


class CommandIn(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, str_max_length=4096)

    command: CommandName
    args: Annotated[
        dict[str, JsonValue],
        WithJsonSchema(
            {
                "type": "object",
                "maxProperties": 32,
                "additionalProperties": _free_form_schema(FREE_FORM_DEPTH),
            }
        ),
    ] = Field(default_factory=dict, max_length=32)

    @field_validator("args")
    @classmethod
    def _wire_json(cls, args: dict[str, JsonValue]) -> dict[str, JsonValue]:
        if any(_levels(value) > FREE_FORM_DEPTH for value in args.values()):
            raise ValueError(f"an argument may nest {FREE_FORM_DEPTH} levels, no more")
        return args


class CommandOut(BaseModel):
    request_id: UUID
    node_id: str
    command: str
    args: dict[str, Any]
    issued_at: datetime
    expires_at: datetime
    issued_by: str
    status: Literal["pending", "ok", "error", "expired"]
    data: dict[str, Any] | None
    error: str | None
    responded_at: datetime | None


class CameraIn(CameraRow):
    """A camera of the node being registered (its node comes from the path)."""

    node_id: str | None = None  # type: ignore[assignment]
    # JSON numbers here (a sheet's cells are text, and read as numbers there).
    lon: Annotated[float, Field(strict=True, ge=-180, le=180)] | None = None
    lat: Annotated[float, Field(strict=True, ge=-90, le=90)] | None = None


class NodeRegistrationIn(BaseModel):
    """A node and its whole camera list, as provisioning registers them."""

    model_config = ConfigDict(extra="forbid")

    unit_code: str = Field(pattern=ORG_CODE_PATTERN, description="The village or town it serves.")
    tier: Tier
    name: str | None = Field(default=None, max_length=128)
    balena_uuid: str | None = Field(default=None, pattern=r"^[0-9a-f]{7,62}$")
    cameras: list[CameraIn] = Field(default_factory=list, max_length=128)


class NodeRegistrationOut(BaseModel):
    node_id: str
    unit_code: str
    tier: str
    name: str | None
    balena_uuid: str | None
    cameras: int


class CredentialsOut(BaseModel):
    """Shown once: the service keeps only the password's hash."""

    node_id: str
    username: str
    password: str
    pending: bool = Field(
        description="A rotation's next password: give it to the box beside the current one, "
        "then activate it."
    )


class PasswordHashIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    password_hash: str = Field(
        pattern=HASH_PATTERN, description="Mosquitto `$7$` (PBKDF2-SHA512), never a password."
    )


class Check(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128, examples=["camera cam01"])
    passed: bool = Field(strict=True)
    detail: str = Field(default="", max_length=2000)


class CommissioningIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    checked_at: Moment
    checks: list[Check] = Field(min_length=1, max_length=256)


class CommissioningOut(BaseModel):
    id: int
    node_id: str
    checked_at: datetime
    passed: bool
    checks: list[Check]
    recorded_by: str
    recorded_at: datetime
