"""Request and response bodies of the cases API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from cloud.cases.workflow import CaseAction
from protocols.base import JSON_WHOLE
from protocols.enums import CaseState, Severity
from protocols.identifiers import ORG_CODE_PATTERN

_CASE_EXAMPLE: dict[str, Any] = {
    "case_id": "01a211d3-73b8-7cfb-9c56-2dbaf68e978b",
    "source": "camera",
    "category": "intrusion",
    "severity": "high",
    "state": "intake",
    "title": "intrusion · qx-tuxi-shuangfeng-01/cam01",
    "unit_code": "511725106201003",
    "responsible_unit_code": "511725106201003",
    "supervision_level": 0,
    "event_count": 3,
    "opened_at": "2026-11-25T08:30:01Z",
    "ack_due_at": "2026-11-25T08:45:01Z",
    "resolve_due_at": "2026-11-25T16:30:01Z",
}


class CaseOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [dict(_CASE_EXAMPLE)]})

    case_id: UUID
    source: str = Field(description="camera, fleet (a work order), report or operator.")
    category: str
    severity: Severity
    state: CaseState
    title: str
    description: str
    unit_code: str = Field(description="Where it happened.")
    responsible_unit_code: str = Field(description="The tier that must act now.")
    supervision_level: int
    escalations: int
    node_id: str | None
    camera_id: str | None
    first_event_id: UUID | None
    event_count: int
    first_event_at: datetime | None
    last_event_at: datetime | None
    location: dict[str, Any] | None
    reporter: str | None
    assignee: str | None
    opened_at: datetime
    ack_due_at: datetime | None
    resolve_due_at: datetime | None
    acknowledged_at: datetime | None
    dispatched_at: datetime | None
    resolved_at: datetime | None
    closed_at: datetime | None
    close_reason: str | None
    false_alarm: bool
    suppressed_events: int = Field(
        description="Situations of its camera and kind that opened no case in the cooldown "
        "after it was dismissed as a false alarm."
    )
    satisfaction: int | None
    updated_at: datetime
    version: int


class CasePage(BaseModel):
    items: list[CaseOut]
    next_cursor: str | None = Field(description="Pass back as `cursor`; null on the last page.")


class HistoryEntry(BaseModel):
    id: int
    at: datetime
    actor: str
    action: str
    from_state: str | None
    to_state: str | None
    detail: dict[str, Any]


class Assignment(BaseModel):
    assignee_type: str
    code: str
    dispatched_at: datetime
    dispatched_by: str
    resolved_at: datetime | None
    resolved_by: str | None


class CaseThread(BaseModel):
    thread_id: UUID
    first_event_id: UUID
    observed_at: datetime


class CaseCheck(BaseModel):
    """A recheck of the zone by the camera's node: the "after" beside the case's "before"."""

    request_id: UUID
    camera_id: str
    rule_id: str
    requested_at: datetime
    requested_by: str
    sent_at: datetime | None = Field(description="When the broker took the command.")
    send_error: str | None
    status: str | None = Field(description="ok or error once the node answered; null before.")
    data: dict[str, Any] | None = Field(description="The node's answer: present, objects, labels.")
    error: str | None
    responded_at: datetime | None
    snapshot_url: str | None


class CasePhoto(BaseModel):
    photo_id: UUID
    uploaded_by: str
    uploaded_at: datetime
    content_type: str
    size_bytes: int
    url: str


class CaseDetail(CaseOut):
    assignments: list[Assignment]
    history: list[HistoryEntry]
    threads: list[CaseThread] = Field(description="The detections (edge situations) merged in.")
    checks: list[CaseCheck]
    photos: list[CasePhoto]
    before_snapshot_url: str | None = Field(description="The first detection's snapshot.")


class CaseActionIn(BaseModel):
    """One step of the loop; which fields an action needs is in its description."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"action": "acknowledge"},
                {"action": "dismiss", "reason": "a shadow of a tree, not a person"},
                {"action": "dispatch", "departments": ["police", "emergency"]},
                {"action": "resolve", "comment": "the gate is locked again", "photos": []},
                {"action": "close", "satisfaction": 5},
            ]
        },
    )

    action: CaseAction
    comment: str | None = Field(default=None, max_length=2000)
    category: str | None = Field(default=None, max_length=48, description="confirm")
    severity: Severity | None = Field(default=None, description="confirm")
    reason: str | None = Field(
        default=None,
        max_length=500,
        description="dismiss: why it is a false alarm (kept for tuning the camera).",
    )
    unit_code: str | None = Field(
        default=None, pattern=ORG_CODE_PATTERN, description="dispatch: the handling unit."
    )
    departments: list[str] = Field(
        default_factory=list, max_length=10, description="dispatch: departments for joint handling."
    )
    satisfaction: Annotated[int, Field(ge=1, le=5), JSON_WHOLE] | None = Field(
        default=None, description="close"
    )
    photos: list[UUID] = Field(
        default_factory=list,
        max_length=20,
        description="Photos uploaded to this case (POST /cases/{id}/photos) that this step shows.",
    )


class GeoPoint(BaseModel):
    """A GeoJSON Point in longitude and latitude (WGS 84): anything else was stored as sent,
    3 MB strings and 70-level nestings included."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["Point"]
    coordinates: tuple[
        Annotated[float, Field(strict=True, ge=-180, le=180, allow_inf_nan=False)],
        Annotated[float, Field(strict=True, ge=-90, le=90, allow_inf_nan=False)],
    ]


class CaseIn(BaseModel):
    """A grid worker's report (or an operator's case)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "category": "safety_hazard",
                    "severity": "medium",
                    "title": "桥栏杆损坏 · broken bridge railing",
                    "unit_code": "511725106201003",
                    "location": {"type": "Point", "coordinates": [106.97, 30.84]},
                }
            ]
        },
    )

    category: str = Field(max_length=48)
    severity: Severity = Severity.MEDIUM
    title: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=4000)
    unit_code: str | None = Field(
        default=None, pattern=ORG_CODE_PATTERN, description="Default: the reporter's unit."
    )
    location: GeoPoint | None = Field(default=None, description="A GeoJSON Point.")
