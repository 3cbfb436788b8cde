"""What rules see (observations of objects) and what they produce (event drafts)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from uuid import UUID

from protocols.enums import CrossingDirection, EventKind, EventPhase, Severity, TamperReason
from protocols.geometry import BBox

PixelBox = tuple[float, float, float, float]


@dataclass(frozen=True)
class Observation:
    """One object (or one situation) as a rule saw it in one frame."""

    label: str | None = None
    score: float | None = None
    box: PixelBox | None = None  # x1, y1, x2, y2 in pixels
    frame_size: tuple[int, int] | None = None  # width, height
    track_id: int | None = None
    dwell_s: float | None = None
    count: int | None = None
    direction: CrossingDirection | None = None
    tamper: TamperReason | None = None

    @property
    def bbox(self) -> BBox | None:
        """The box as frame fractions, clipped into the frame."""
        if self.box is None or self.frame_size is None:
            return None
        width, height = self.frame_size
        x1, y1, x2, y2 = self.box
        x1, x2 = max(0.0, min(x1, width)) / width, max(0.0, min(x2, width)) / width
        y1, y2 = max(0.0, min(y1, height)) / height, max(0.0, min(y2, height)) / height
        if x2 - x1 <= 0 or y2 - y1 <= 0:
            return None
        return BBox(x=x1, y=y1, w=min(x2 - x1, 1.0 - x1), h=min(y2 - y1, 1.0 - y1))

    def with_(self, **changes: object) -> Observation:
        return replace(self, **changes)  # type: ignore[arg-type]


@dataclass(frozen=True)
class EventDraft:
    """An event before it has an id, a sequence number and snapshots."""

    thread_id: UUID
    phase: EventPhase
    kind: EventKind
    severity: Severity
    t: float
    observation: Observation
    rule_id: str | None = None
