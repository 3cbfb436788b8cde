"""One evaluator per rule type. Each sees the tracks of one analysed frame (already
filtered by the rule's classes, score and size) and returns event drafts."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from edge.rules.geometry import Zone, anchor_point, centre, crosses_segment, side_of_line
from edge.rules.observations import EventDraft, Observation
from edge.rules.threads import ThreadBook
from edge.tracking import Track
from protocols.config import (
    CrowdRule,
    IntrusionRule,
    LineCrossingRule,
    LoiteringRule,
    MotionRule,
    ObjectRule,
)
from protocols.enums import CrossingDirection

STATIONARY_MAX_MOVE = 0.02  # frame diagonal fractions an object may drift and be "stationary"


@dataclass(frozen=True)
class FrameView:
    """What one analysed frame offers the rules."""

    t: float
    width: int
    height: int
    tracks: list[Track]
    motion_fraction: dict[str, float] = field(default_factory=dict)  # per rule id
    motion_box: tuple[float, float, float, float] | None = None  # pixels, largest moving blob

    @property
    def size(self) -> tuple[int, int]:
        return (self.width, self.height)


def observe_track(track: Track, view: FrameView, **extra: object) -> Observation:
    return Observation(
        label=track.label,
        score=track.score,
        box=track.xyxy,
        frame_size=(view.width, view.height),
        track_id=track.track_id,
        **extra,
    )  # type: ignore[arg-type]


class _Presence:
    """When each track was first and last seen satisfying a condition."""

    def __init__(self, grace_s: float) -> None:
        self.grace_s = grace_s
        self.first: dict[int, float] = {}
        self.last: dict[int, float] = {}

    def update(self, present: list[int], t: float) -> None:
        for track_id in present:
            self.first.setdefault(track_id, t)
            self.last[track_id] = t
        for track_id in [k for k, seen in self.last.items() if t - seen > self.grace_s]:
            del self.first[track_id], self.last[track_id]

    def held_s(self, track_id: int, t: float) -> float:
        return t - self.first.get(track_id, t)


class IntrusionEvaluator:
    def __init__(self, rule: IntrusionRule, book: ThreadBook) -> None:
        self.rule, self.book, self.zone = rule, book, Zone(rule.zone)
        self.presence = _Presence(book.end_grace_s)

    def evaluate(self, view: FrameView) -> list[EventDraft]:
        inside = [
            tr
            for tr in view.tracks
            if self.zone.contains(anchor_point(tr.xyxy, self.rule.anchor), view.size)
        ]
        self.presence.update([tr.track_id for tr in inside], view.t)
        drafts = [
            d
            for tr in inside
            if self.presence.held_s(tr.track_id, view.t) >= self.rule.min_duration_s
            and (d := self.book.observe(tr.track_id, observe_track(tr, view), view.t))
        ]
        return drafts + self.book.end_missing({tr.track_id for tr in inside}, view.t)


class LoiteringEvaluator:
    def __init__(self, rule: LoiteringRule, book: ThreadBook) -> None:
        self.rule, self.book, self.zone = rule, book, Zone(rule.zone)
        self.presence = _Presence(book.end_grace_s)

    def evaluate(self, view: FrameView) -> list[EventDraft]:
        inside = [
            tr
            for tr in view.tracks
            if self.zone.contains(anchor_point(tr.xyxy, self.rule.anchor), view.size)
        ]
        self.presence.update([tr.track_id for tr in inside], view.t)
        drafts = []
        for tr in inside:
            dwell = self.presence.held_s(tr.track_id, view.t)
            if dwell >= self.rule.dwell_s or self.book.is_open(tr.track_id):
                draft = self.book.observe(
                    tr.track_id, observe_track(tr, view, dwell_s=dwell), view.t
                )
                if draft:
                    drafts.append(draft)
        return drafts + self.book.end_missing({tr.track_id for tr in inside}, view.t)


class ObjectEvaluator:
    def __init__(self, rule: ObjectRule, book: ThreadBook) -> None:
        self.rule, self.book = rule, book
        self.zone = Zone(rule.zone) if rule.zone is not None else None
        self.presence = _Presence(book.end_grace_s)
        self.positions: dict[int, deque[tuple[float, float, float]]] = {}

    def _stationary(self, track: Track, view: FrameView) -> bool:
        history = self.positions.setdefault(track.track_id, deque())
        x, y = centre(track.xyxy)
        history.append((view.t, x / view.width, y / view.height))
        while history and view.t - history[0][0] > max(self.rule.min_duration_s, 1.0):
            history.popleft()
        xs = [p[1] for p in history]
        ys = [p[2] for p in history]
        return max(xs) - min(xs) <= STATIONARY_MAX_MOVE and max(ys) - min(ys) <= STATIONARY_MAX_MOVE

    def evaluate(self, view: FrameView) -> list[EventDraft]:
        zone = self.zone
        present = [
            tr
            for tr in view.tracks
            if zone is None or zone.contains(anchor_point(tr.xyxy, self.rule.anchor), view.size)
        ]
        if self.rule.stationary:
            present = [tr for tr in present if self._stationary(tr, view)]
        self.presence.update([tr.track_id for tr in present], view.t)
        for track_id in [k for k in self.positions if k not in self.presence.last]:
            del self.positions[track_id]
        drafts = []
        for tr in present:
            held = self.presence.held_s(tr.track_id, view.t)
            if held >= self.rule.min_duration_s:
                draft = self.book.observe(
                    tr.track_id, observe_track(tr, view, dwell_s=held), view.t
                )
                if draft:
                    drafts.append(draft)
        return drafts + self.book.end_missing({tr.track_id for tr in present}, view.t)


class CrowdEvaluator:
    KEY = "crowd"

    def __init__(self, rule: CrowdRule, book: ThreadBook) -> None:
        self.rule, self.book, self.zone = rule, book, Zone(rule.zone)
        self.since: float | None = None
        self.last_count = 0

    def evaluate(self, view: FrameView) -> list[EventDraft]:
        inside = [
            tr
            for tr in view.tracks
            if self.zone.contains(anchor_point(tr.xyxy, self.rule.anchor), view.size)
        ]
        count = len(inside)
        if count < self.rule.min_count:
            self.since = None
            return self.book.end_missing(set(), view.t)
        self.since = view.t if self.since is None else self.since
        if view.t - self.since < self.rule.min_duration_s and not self.book.is_open(self.KEY):
            return []
        xs1, ys1, xs2, ys2 = zip(*(tr.xyxy for tr in inside), strict=True)
        observation = Observation(
            label=self.rule.classes[0],
            count=count,
            box=(min(xs1), min(ys1), max(xs2), max(ys2)),
            frame_size=(view.width, view.height),
            score=max(tr.score for tr in inside),
        )
        changed = count != self.last_count
        self.last_count = count
        draft = self.book.observe(self.KEY, observation, view.t, changed=changed)
        return [draft] if draft else []


class LineCrossingEvaluator:
    def __init__(self, rule: LineCrossingRule, book: ThreadBook) -> None:
        self.rule, self.book = rule, book
        self.sides: dict[int, tuple[int, tuple[float, float], float]] = {}
        self.counts = {CrossingDirection.IN: 0, CrossingDirection.OUT: 0}

    def evaluate(self, view: FrameView) -> list[EventDraft]:
        drafts: list[EventDraft] = []
        for tr in view.tracks:
            point = anchor_point(tr.xyxy, self.rule.anchor)
            side = side_of_line(self.rule.line, point, view.width, view.height)
            previous = self.sides.get(tr.track_id)
            if side != 0:
                self.sides[tr.track_id] = (side, point, view.t)
            if previous is None or side == 0 or side == previous[0]:
                continue
            if not crosses_segment(self.rule.line, previous[1], point, view.width, view.height):
                continue
            direction = CrossingDirection.IN if side > 0 else CrossingDirection.OUT
            self.counts[direction] += 1
            if self.rule.direction not in ("both", direction.value):
                continue
            count = (
                sum(self.counts.values())
                if self.rule.direction == "both"
                else self.counts[direction]
            )
            observation = observe_track(tr, view, direction=direction, count=count)
            key = (tr.track_id, self.counts[direction])
            # A crossing is an instant: its thread starts and ends in the same frame.
            drafts += [
                d
                for d in (self.book.observe(key, observation, view.t), self.book.end(key, view.t))
                if d
            ]
        for track_id in [k for k, (_, _, seen) in self.sides.items() if view.t - seen > 10.0]:
            del self.sides[track_id]
        return drafts


class MotionEvaluator:
    KEY = "motion"

    def __init__(self, rule: MotionRule, book: ThreadBook) -> None:
        self.rule, self.book = rule, book

    def evaluate(self, view: FrameView) -> list[EventDraft]:
        fraction = view.motion_fraction.get(self.rule.rule_id, 0.0)
        if fraction < self.rule.min_area:
            return self.book.end_missing(set(), view.t)
        observation = Observation(
            label="motion",
            score=min(1.0, fraction),
            box=view.motion_box,
            frame_size=(view.width, view.height),
        )
        draft = self.book.observe(self.KEY, observation, view.t)
        return [draft] if draft else []


Evaluator = (
    IntrusionEvaluator
    | LoiteringEvaluator
    | ObjectEvaluator
    | CrowdEvaluator
    | LineCrossingEvaluator
    | MotionEvaluator
)
