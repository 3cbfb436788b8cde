"""Alerts from the cloud to grid apps, screens and other systems; CAP-compatible."""

from __future__ import annotations

from typing import Self
from uuid import UUID

from pydantic import Field, model_validator

from protocols.base import Payload, UtcDatetime, WireModel
from protocols.enums import (
    AlertKind,
    AlertMsgType,
    CapCertainty,
    CapSeverity,
    CapUrgency,
    CaseState,
    Severity,
)
from protocols.identifiers import CameraId, NodeId, OrgCode


class OrgPath(WireModel):
    """Where in the tree: county, then town, village and grid as deep as known."""

    county: OrgCode
    town: OrgCode | None = None
    village: OrgCode | None = None
    grid: OrgCode | None = None

    @model_validator(mode="after")
    def _no_gaps(self) -> Self:
        if self.grid is not None and self.village is None:
            raise ValueError("grid needs its village")
        if self.village is not None and self.town is None:
            raise ValueError("village needs its town")
        return self


class Alert(Payload):
    """On `gw/v1/alerts/<county>/<town>/<village>/<grid>/<kind>`; also rendered as CAP 1.2."""

    alert_id: UUID
    sent_at: UtcDatetime
    msg_type: AlertMsgType
    references: list[UUID] = Field(
        default_factory=list,
        max_length=64,
        description="Earlier alert ids this one updates or cancels.",
    )
    kind: AlertKind
    org: OrgPath
    severity: Severity
    urgency: CapUrgency
    cap_severity: CapSeverity
    certainty: CapCertainty
    headline_zh: str = Field(min_length=1, max_length=160, examples=["双峰村3号网格 发现人员闯入"])
    headline_en: str = Field(min_length=1, max_length=160)
    description_zh: str | None = Field(default=None, max_length=2000)
    description_en: str | None = Field(default=None, max_length=2000)
    case_id: UUID | None = None
    case_state: CaseState | None = None
    event_id: UUID | None = None
    node_id: NodeId | None = None
    camera_id: CameraId | None = None
    snapshot_url: str | None = Field(default=None, max_length=1024, pattern=r"^https?://")

    @model_validator(mode="after")
    def _references_for_updates(self) -> Self:
        if self.msg_type is not AlertMsgType.ALERT and not self.references:
            raise ValueError(f"msg_type {self.msg_type.value!r} needs references")
        if self.case_state is not None and self.case_id is None:
            raise ValueError("case_state needs case_id")
        return self
