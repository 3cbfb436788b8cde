"""Desired configuration pushed to a node, and the node's report of what it applied."""

from __future__ import annotations

import re
import zoneinfo
from typing import Annotated, Literal, Self

from pydantic import Field, SecretStr, field_serializer, field_validator, model_validator

from protocols.base import JSON_WHOLE, Integer, PastDatetime, Payload, UtcDatetime, WireModel
from protocols.enums import ConfigStatus, Severity, Tier
from protocols.geometry import Fraction, Line, Polygon
from protocols.identifiers import CameraId, NodeId, OrgCode, Sha256, Token

_HHMM = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"


# Config versions are PostgreSQL integers on the county's side.
MAX_CONFIG_VERSION = 2**31 - 1


class TimeWindow(WireModel):
    """A weekly window in the node's local time zone; `end` before `start` wraps midnight."""

    days: list[Annotated[int, Field(ge=1, le=7), JSON_WHOLE]] = Field(
        default=[1, 2, 3, 4, 5, 6, 7],
        min_length=1,
        max_length=7,
        description="ISO weekdays, 1 = Monday.",
    )
    start: str = Field(pattern=_HHMM, examples=["18:00"])
    end: str = Field(pattern=_HHMM, examples=["07:00"])

    @model_validator(mode="after")
    def _not_empty(self) -> Self:
        if self.start == self.end:
            raise ValueError("start and end are the same time: the window is empty")
        return self


class _RuleBase(WireModel):
    rule_id: Token
    classes: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        default=["person"],
        min_length=1,
        max_length=80,
        description="Detector labels the rule reacts to.",
    )
    min_score: float = Field(strict=True, default=0.5, ge=0.0, le=1.0)
    min_box_area: Fraction = Field(
        default=0.0, description="Smallest box area, as a fraction of the frame, that counts."
    )
    cooldown_s: float = Field(
        strict=True,
        default=30.0,
        ge=0,
        le=86_400,
        description="After a thread ends, how long the same rule stays quiet.",
    )
    severity: Severity = Severity.MEDIUM
    schedule: list[TimeWindow] = Field(
        default_factory=list, max_length=16, description="Active windows; empty = always."
    )
    anchor: Literal["bottom_center", "center"] = Field(
        default="bottom_center",
        description=(
            "The point of a box tested against zones and lines: where a person stands "
            "(bottom_center), or the middle of the box (center, for views from above)."
        ),
    )


class IntrusionRule(_RuleBase):
    """An object of the classes enters the zone (during the schedule)."""

    type: Literal["intrusion"] = "intrusion"
    zone: Polygon
    min_duration_s: float = Field(strict=True, default=0.0, ge=0, le=3600)


class LineCrossingRule(_RuleBase):
    """An object crosses the line in the given direction; crossings are counted."""

    type: Literal["line_crossing"] = "line_crossing"
    line: Line
    direction: Literal["in", "out", "both"] = "both"


class LoiteringRule(_RuleBase):
    """An object stays in the zone longer than `dwell_s`."""

    type: Literal["loitering"] = "loitering"
    zone: Polygon
    dwell_s: float = Field(strict=True, ge=1, le=86_400)


class CrowdRule(_RuleBase):
    """At least `min_count` objects are in the zone for at least `min_duration_s`."""

    type: Literal["crowd"] = "crowd"
    zone: Polygon
    min_count: Integer = Field(ge=2, le=10_000)
    min_duration_s: float = Field(strict=True, default=10.0, ge=0, le=3600)


class ObjectRule(_RuleBase):
    """An object of the classes is present, e.g. a vehicle parked in a fire lane."""

    type: Literal["object"] = "object"
    zone: Polygon | None = None
    min_duration_s: float = Field(strict=True, default=0.0, ge=0, le=86_400)
    stationary: bool = Field(
        default=False, strict=True, description="Only objects that do not move count."
    )


class MotionRule(_RuleBase):
    """Motion in the zone; needs no model, so it also runs on a box without one."""

    type: Literal["motion"] = "motion"
    classes: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        default=["motion"], min_length=1, max_length=1
    )
    zone: Polygon | None = None
    min_area: Fraction = Field(default=0.005, description="Moving area as a fraction of the frame.")


Rule = Annotated[
    IntrusionRule | LineCrossingRule | LoiteringRule | CrowdRule | ObjectRule | MotionRule,
    Field(discriminator="type"),
]

# One definition for every place a camera's stream URL is written down.
URL_CREDENTIALS = re.compile(r"^[a-z][a-z0-9+.-]*://[^/@]*@", re.IGNORECASE)
STREAM_URL_PATTERN = r"^(rtsp|rtsps|http|https|file)://"


class CameraConfig(WireModel):
    camera_id: CameraId
    name: str = Field(min_length=1, max_length=128, examples=["村委会门口"])
    url: str = Field(
        min_length=1,
        max_length=1024,
        pattern=STREAM_URL_PATTERN,
        description="Stream URL without credentials (they go in username/password).",
        examples=["rtsp://192.168.1.64:554/Streaming/Channels/102"],
    )
    username: str | None = Field(default=None, max_length=128)
    password: SecretStr | None = Field(default=None, max_length=128)
    grid_code: OrgCode | None = Field(default=None, description="The grid the camera watches.")
    enabled: bool = Field(default=True, strict=True)
    detect_fps: float = Field(strict=True, default=5.0, gt=0, le=30)
    offline_grace_s: float = Field(
        strict=True,
        default=60.0,
        ge=0,
        le=86_400,
        description="How long a stream may be down before camera_offline is raised.",
    )
    masks: list[Polygon] = Field(
        default_factory=list,
        max_length=16,
        description="Areas ignored by motion gating and detection (overlays, trees).",
    )
    rules: list[Rule] = Field(default_factory=list, max_length=32)

    @field_validator("url")
    @classmethod
    def _no_credentials_in_url(cls, url: str) -> str:
        if URL_CREDENTIALS.match(url):
            raise ValueError("put credentials in username/password, not in the URL")
        return url

    @field_serializer("password", when_used="json")
    def _reveal_password(self, password: SecretStr | None) -> str | None:
        # The desired-config topic is readable only by its node (ACL) over TLS; the node
        # needs the secret itself. Python reprs and logs still show it masked.
        return None if password is None else password.get_secret_value()

    @model_validator(mode="after")
    def _unique_rule_ids(self) -> Self:
        ids = [rule.rule_id for rule in self.rules]
        if len(ids) != len(set(ids)):
            raise ValueError(f"camera {self.camera_id}: rule ids repeat: {sorted(ids)}")
        return self


class ModelSpec(WireModel):
    """The detection model a node runs: a profile name from firmware_configs, pinned by hash."""

    backend: Literal["onnx", "motion"] = "onnx"
    profile: str = Field(default="yolox_nano_416", max_length=64)
    sha256: Sha256 | None = Field(default=None, description="Refuse a model file that differs.")
    url: str | None = Field(default=None, max_length=1024, pattern=r"^https?://")
    score_threshold: float | None = Field(strict=True, default=None, ge=0.0, le=1.0)
    threads: Integer = Field(default=1, ge=1, le=16, description="onnxruntime intra-op threads.")


class PublishSettings(WireModel):
    health_interval_s: float = Field(strict=True, default=30.0, ge=5, le=3600)
    update_interval_s: float = Field(
        strict=True,
        default=10.0,
        ge=1,
        le=3600,
        description="Least time between updates of one thread.",
    )
    snapshot_quality: Integer = Field(default=80, ge=10, le=100)
    snapshot_max_width: Integer = Field(default=1280, ge=64, le=4096)
    outbox_budget_mb: Integer = Field(default=1024, ge=16, le=1_048_576)


class NodeConfig(Payload):
    """Retained on `config/desired`: everything a node runs. Newer `version` wins."""

    node_id: NodeId
    version: Integer = Field(ge=1, le=MAX_CONFIG_VERSION)
    issued_at: UtcDatetime
    tier: Tier = Tier.VILLAGE
    timezone: str = Field(default="Asia/Shanghai", max_length=64)
    model: ModelSpec = Field(default_factory=ModelSpec)
    publish: PublishSettings = Field(default_factory=PublishSettings)
    cameras: list[CameraConfig] = Field(default_factory=list, max_length=128)

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, name: str) -> str:
        try:
            zoneinfo.ZoneInfo(name)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {name!r}") from exc
        return name

    @model_validator(mode="after")
    def _unique_camera_ids(self) -> Self:
        ids = [camera.camera_id for camera in self.cameras]
        if len(ids) != len(set(ids)):
            raise ValueError(f"camera ids repeat: {sorted(ids)}")
        return self


class ConfigFieldError(WireModel):
    field: str = Field(max_length=256, examples=["cameras.0.rules.1.zone"])
    message: str = Field(max_length=1024)


class ConfigReport(Payload):
    """Retained on `config/reported`: what the node did with a desired config."""

    node_id: NodeId
    version: Integer = Field(ge=1, le=MAX_CONFIG_VERSION)
    status: ConfigStatus
    running_version: Annotated[int, Field(ge=1, le=MAX_CONFIG_VERSION), JSON_WHOLE] | None = Field(
        default=None,
        description="The version the node runs now (the last good one after a rejection).",
    )
    reported_at: PastDatetime
    errors: list[ConfigFieldError] = Field(default_factory=list, max_length=64)

    @model_validator(mode="after")
    def _errors_match_status(self) -> Self:
        if (self.status is ConfigStatus.REJECTED) != bool(self.errors):
            raise ValueError("status 'rejected' needs errors, and 'applied' has none")
        return self
