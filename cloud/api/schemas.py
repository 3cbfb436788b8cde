"""Response bodies of the API (requests are validated by FastAPI from the signatures)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, field_validator


class ErrorOut(BaseModel):
    """Every refusal but a validation error (422): a short, stable reason."""

    detail: str = Field(examples=["wrong username or password"])


class EventOut(BaseModel):
    event_id: UUID
    thread_id: UUID
    observed_at: datetime
    received_at: datetime
    node_id: str
    seq: int
    camera_id: str
    unit_code: str = Field(description="The grid (or unit) the camera watches; '' if unknown.")
    kind: str
    phase: str
    severity: str
    rule_id: str | None = None
    label: str | None = None
    score: float | None = None
    bbox: list[float] | None = Field(default=None, description="x, y, w, h as frame fractions.")
    track_id: int | None = None
    zone: str | None = None
    direction: str | None = None
    dwell_s: float | None = None
    count: int | None = None
    tamper: str | None = None
    snapshots: list[dict[str, Any]] = Field(default_factory=list)
    snapshot_urls: dict[str, str] = Field(default_factory=dict)

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "event_id": "01a211d3-73b8-7cfb-9c56-2dbaf68e978b",
                    "thread_id": "01a211d3-73b8-7cfb-9c56-2dbaf68e978b",
                    "observed_at": "2026-11-25T08:30:00Z",
                    "received_at": "2026-11-25T08:30:00.120Z",
                    "node_id": "qx-tuxi-shuangfeng-01",
                    "seq": 48213,
                    "camera_id": "cam01",
                    "unit_code": "511725106201003",
                    "kind": "intrusion",
                    "phase": "start",
                    "severity": "high",
                    "rule_id": "river_bank_night",
                    "label": "person",
                    "score": 0.82,
                    "bbox": [0.41, 0.32, 0.08, 0.31],
                    "snapshot_urls": {
                        "frame": "/api/v1/events/01a211d3-73b8-7cfb-9c56-2dbaf68e978b/snapshots/"
                        "frame"
                    },
                }
            ]
        }
    }


class EventPage(BaseModel):
    items: list[EventOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page.")


class CountPoint(BaseModel):
    bucket: datetime
    kind: str
    events: int


class NodeStateOut(BaseModel):
    node_id: str
    status: str
    reason: str
    sent_at: datetime
    received_at: datetime
    agent_version: str | None
    boot_id: UUID | None


class HealthPoint(BaseModel):
    sent_at: datetime
    cpu_percent: float
    memory_used_bytes: int
    disk_used_bytes: int
    disk_total_bytes: int
    temperature_c: float | None
    outbox_depth: int
    outbox_oldest_age_s: float | None
    dropped_events: int
    dropped_snapshots: int
    cameras_connected: int
    cameras_total: int
    config_version: int | None
    agent_version: str


class DeadLetterOut(BaseModel):
    id: int
    received_at: datetime = Field(description="When the message first came.")
    last_received_at: datetime = Field(description="When it last came (a redelivery).")
    deliveries: int = Field(description="How often it came; one row per distinct message.")
    topic: str
    node_id: str | None
    field: str
    reason: str
    cause: str = Field(
        description="invalid, too_old, conflict (an event id stored with other content), "
        "crash (it killed or hung a decoder), error, database, flood (beyond its box's "
        "share with its parking full), ahead (a time further ahead than clock skew allows: "
        "the box sends it again, and it is taken once its time has come)."
    )
    size_bytes: int
    sha256: str = Field(description="Of the whole payload, which is not kept.")
    payload_preview: str = Field(description="The first 256 bytes, as text where possible.")


class GapOut(BaseModel):
    id: int
    node_id: str
    first_seq: int
    last_seq: int
    detected_at: datetime
    closed_at: datetime | None
    written_off_by: str | None = Field(description="Who closed it by hand, if anyone did.")
    write_off_reason: str | None


class GapsWrittenOff(BaseModel):
    gaps: int = Field(description="Gaps closed.")
    events: int = Field(description="Events they held: no longer counted as missing.")


class GapWriteOffIn(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt field is an error, not ignored

    reason: str = Field(
        min_length=4,
        max_length=500,
        examples=["box firmware 2.3.1 reset its sequence counter; events before it are lost"],
    )

    @field_validator("reason")
    @classmethod
    def _storable(cls, value: str) -> str:
        # PostgreSQL text holds neither NUL nor a lone surrogate.
        if "\x00" in value or _unencodable(value):
            raise ValueError("must be text without NUL characters or lone surrogates")
        if len(value.strip()) < 4:
            raise ValueError("must say why, in at least 4 characters besides spaces")
        return value.strip()


def _unencodable(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False
