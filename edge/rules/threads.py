"""Event threads: one situation is one start, updates at a bounded rate, and one end."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from uuid import UUID

import uuid6

from edge.rules.observations import EventDraft, Observation, PixelBox
from protocols.enums import EventKind, EventPhase, Severity

# A new thread this close (IoU) to one that ended less than REACQUIRE_S ago is the same
# object re-detected under a new track id (a tracker id switch), not a new situation.
SAME_OBJECT_IOU = 0.3
REACQUIRE_S = 3.0


def iou(a: PixelBox, b: PixelBox) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@dataclass
class _Open:
    thread_id: UUID
    started_at: float
    last_seen: float
    last_emitted: float
    last: Observation
    emitted: Observation


@dataclass(frozen=True)
class _Ended:
    key: Hashable
    ended_at: float
    box: PixelBox | None


class ThreadBook:
    """The open threads of one rule (or one camera condition), keyed by object or situation."""

    def __init__(
        self,
        kind: EventKind,
        severity: Severity,
        *,
        rule_id: str | None,
        update_interval_s: float,
        end_grace_s: float,
        cooldown_s: float = 0.0,
    ) -> None:
        self.kind = kind
        self.severity = severity
        self.rule_id = rule_id
        self.update_interval_s = update_interval_s
        self.end_grace_s = end_grace_s
        self.cooldown_s = cooldown_s
        self._open: dict[Hashable, _Open] = {}
        self._ended: list[_Ended] = []

    def __len__(self) -> int:
        return len(self._open)

    def is_open(self, key: Hashable) -> bool:
        return key in self._open

    def _draft(
        self, thread: _Open, phase: EventPhase, t: float, observation: Observation
    ) -> EventDraft:
        return EventDraft(
            thread.thread_id, phase, self.kind, self.severity, t, observation, self.rule_id
        )

    def _cooling(self, key: Hashable, observation: Observation, t: float) -> bool:
        """The same key within the cooldown, or the same object just re-acquired."""
        keep_s = max(self.cooldown_s, REACQUIRE_S)
        self._ended = [e for e in self._ended if t - e.ended_at < keep_s]
        for ended in self._ended:
            if ended.key == key and t - ended.ended_at < self.cooldown_s:
                return True
            if (
                t - ended.ended_at < REACQUIRE_S
                and ended.box is not None
                and observation.box is not None
                and iou(ended.box, observation.box) >= SAME_OBJECT_IOU
            ):
                return True
        return False

    def observe(
        self, key: Hashable, observation: Observation, t: float, *, changed: bool = False
    ) -> EventDraft | None:
        """The situation `key` holds now: start its thread, or update it when due.

        `changed` asks for an update as soon as the rate allows (a count went up), instead
        of only at the update interval.
        """
        thread = self._open.get(key)
        if thread is None:
            if self._cooling(key, observation, t):
                return None
            thread = _Open(UUID(bytes=uuid6.uuid7().bytes), t, t, t, observation, observation)
            self._open[key] = thread
            return self._draft(thread, EventPhase.START, t, observation)
        thread.last_seen, thread.last = t, observation
        since = t - thread.last_emitted
        if since >= self.update_interval_s or (changed and since >= 1.0):
            thread.last_emitted, thread.emitted = t, observation
            return self._draft(thread, EventPhase.UPDATE, t, observation)
        return None

    def end(self, key: Hashable, t: float) -> EventDraft | None:
        thread = self._open.pop(key, None)
        if thread is None:
            return None
        self._ended.append(_Ended(key, t, thread.last.box))
        return self._draft(thread, EventPhase.END, t, thread.last)

    def end_missing(self, present: set[Hashable], t: float) -> list[EventDraft]:
        """End threads whose situation has not held for the end grace period."""
        drafts = []
        for key in [
            k
            for k, th in self._open.items()
            if k not in present and t - th.last_seen >= self.end_grace_s
        ]:
            draft = self.end(key, t)
            if draft is not None:
                drafts.append(draft)
        return drafts

    def end_all(self, t: float) -> list[EventDraft]:
        return [d for key in list(self._open) if (d := self.end(key, t)) is not None]
