"""The rules of one camera: filter tracks per rule, evaluate, and keep the event threads."""

from __future__ import annotations

from datetime import datetime

from edge.rules.evaluators import (
    CrowdEvaluator,
    Evaluator,
    FrameView,
    IntrusionEvaluator,
    LineCrossingEvaluator,
    LoiteringEvaluator,
    MotionEvaluator,
    ObjectEvaluator,
)
from edge.rules.observations import EventDraft
from edge.rules.schedule import is_active
from edge.rules.threads import ThreadBook
from edge.tracking import Track
from protocols.config import (
    CrowdRule,
    IntrusionRule,
    LineCrossingRule,
    LoiteringRule,
    MotionRule,
    ObjectRule,
    Rule,
)
from protocols.enums import EventKind

# How long an object may go unseen before its thread ends (detector misses, occlusion).
OBJECT_END_GRACE_S = 2.0
MOTION_END_GRACE_S = 5.0


def _build(rule: Rule, update_interval_s: float) -> Evaluator:
    def book(kind: EventKind, end_grace_s: float, cooldown_s: float | None = None) -> ThreadBook:
        return ThreadBook(
            kind,
            rule.severity,
            rule_id=rule.rule_id,
            update_interval_s=update_interval_s,
            end_grace_s=end_grace_s,
            cooldown_s=rule.cooldown_s if cooldown_s is None else cooldown_s,
        )

    match rule:
        case IntrusionRule():
            return IntrusionEvaluator(rule, book(EventKind.INTRUSION, OBJECT_END_GRACE_S))
        case LoiteringRule():
            return LoiteringEvaluator(rule, book(EventKind.LOITERING, OBJECT_END_GRACE_S))
        case ObjectRule():
            return ObjectEvaluator(rule, book(EventKind.OBJECT, OBJECT_END_GRACE_S))
        case CrowdRule():
            grace = max(5.0, rule.min_duration_s / 2)
            return CrowdEvaluator(rule, book(EventKind.CROWD, grace))
        case LineCrossingRule():
            # Every crossing counts: no cooldown between two people crossing one after another.
            return LineCrossingEvaluator(rule, book(EventKind.LINE_CROSSING, 0.0, 0.0))
        case MotionRule():
            return MotionEvaluator(rule, book(EventKind.MOTION, MOTION_END_GRACE_S))
    raise AssertionError(rule)


class RuleEngine:
    def __init__(self, rules: list[Rule], *, update_interval_s: float) -> None:
        self.rules = rules
        self._evaluators = [(rule, _build(rule, update_interval_s)) for rule in rules]

    @property
    def needs_objects(self) -> bool:
        """Whether any rule needs detections (motion rules alone do not)."""
        return any(not isinstance(rule, MotionRule) for rule in self.rules)

    def needs_objects_at(self, local: datetime) -> bool:
        """Whether a rule needing detections is in its schedule now (a night-only river
        bank camera runs no detection by day)."""
        return any(
            not isinstance(rule, MotionRule) and is_active(rule.schedule, local)
            for rule in self.rules
        )

    @property
    def open_threads(self) -> int:
        return sum(len(evaluator.book) for _, evaluator in self._evaluators)

    def _accepts(self, rule: Rule, track: Track, view: FrameView) -> bool:
        if track.label not in rule.classes or track.score < rule.min_score:
            return False
        x1, y1, x2, y2 = track.xyxy
        return (x2 - x1) * (y2 - y1) >= rule.min_box_area * view.width * view.height

    def evaluate(self, view: FrameView, local: datetime, *, detected: bool) -> list[EventDraft]:
        """Drafts for one analysed frame. Without detection (`detected` False) only motion
        rules are evaluated: the absence of tracks then means nothing."""
        drafts: list[EventDraft] = []
        for rule, evaluator in self._evaluators:
            if not is_active(rule.schedule, local):
                drafts += evaluator.book.end_all(view.t)
                continue
            if isinstance(rule, MotionRule):
                drafts += evaluator.evaluate(view)
            elif detected:
                tracks = [tr for tr in view.tracks if self._accepts(rule, tr, view)]
                filtered = FrameView(
                    view.t, view.width, view.height, tracks, view.motion_fraction, view.motion_box
                )
                drafts += evaluator.evaluate(filtered)
        return drafts

    def end_all(self, t: float) -> list[EventDraft]:
        """End every open thread (camera lost, shutdown, end of file)."""
        return [d for _, evaluator in self._evaluators for d in evaluator.book.end_all(t)]
