"""Rule evaluation on tracks made by hand: the thread mechanics and each rule's conditions."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from edge.rules import RuleEngine
from edge.rules.evaluators import FrameView
from edge.rules.schedule import is_active
from edge.tracking import Track
from protocols.config import (
    CrowdRule,
    IntrusionRule,
    LineCrossingRule,
    LoiteringRule,
    ObjectRule,
    Rule,
    TimeWindow,
)
from protocols.enums import CrossingDirection, EventPhase

W, H = 1000, 1000
NOON = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
LEFT_HALF = [(0.0, 0.0), (0.5, 0.0), (0.5, 1.0), (0.0, 1.0)]


def person(
    track_id: int,
    x: float,
    y: float,
    *,
    score: float = 0.9,
    size: float = 0.1,
    label: str = "person",
) -> Track:
    """A box whose bottom centre stands at (x, y) in frame fractions."""
    half = size * W / 2
    return Track(track_id, (x * W - half, y * H - 2 * half, x * W + half, y * H), score, label)


class Scene:
    def __init__(self, *rules: Rule, update_interval_s: float = 10.0) -> None:
        self.engine = RuleEngine(list(rules), update_interval_s=update_interval_s)
        self.events: list[tuple[float, EventPhase, object]] = []

    def at(self, t: float, *tracks: Track, local: datetime = NOON, detected: bool = True):  # type: ignore[no-untyped-def]
        drafts = self.engine.evaluate(FrameView(t, W, H, list(tracks)), local, detected=detected)
        self.events += [(d.t, d.phase, d) for d in drafts]
        return drafts

    def phases(self) -> list[EventPhase]:
        return [phase for _, phase, _ in self.events]


def test_intrusion_is_one_thread_with_bounded_updates() -> None:
    scene = Scene(IntrusionRule(rule_id="zone", zone=LEFT_HALF), update_interval_s=2.0)
    for step in range(20):  # 4 s inside at 5 fps
        scene.at(step * 0.2, person(1, 0.25, 0.5))
    for step in range(20, 40):  # then gone
        scene.at(step * 0.2)
    assert scene.phases() == [EventPhase.START, EventPhase.UPDATE, EventPhase.END]
    thread_ids = {d.thread_id for _, _, d in scene.events}  # type: ignore[attr-defined]
    assert len(thread_ids) == 1


def test_a_brief_detector_miss_does_not_split_the_thread() -> None:
    scene = Scene(IntrusionRule(rule_id="zone", zone=LEFT_HALF))
    scene.at(0.0, person(1, 0.25, 0.5))
    scene.at(0.2)  # missed for one frame
    scene.at(0.4, person(1, 0.25, 0.5))
    scene.at(5.0)
    assert scene.phases() == [EventPhase.START, EventPhase.END]


def test_outside_the_zone_nothing_happens() -> None:
    scene = Scene(IntrusionRule(rule_id="zone", zone=LEFT_HALF))
    for step in range(10):
        scene.at(step * 0.2, person(1, 0.75, 0.5))
    assert scene.events == []


def test_class_score_and_size_filters() -> None:
    rule = IntrusionRule(
        rule_id="zone", zone=LEFT_HALF, classes=["person"], min_score=0.6, min_box_area=0.02
    )
    scene = Scene(rule)
    scene.at(0.0, person(1, 0.25, 0.5, label="dog"))
    scene.at(0.2, person(2, 0.25, 0.5, score=0.5))
    scene.at(0.4, person(3, 0.25, 0.5, size=0.15))  # 0.15 x 0.15 > 0.02: counts
    scene.at(0.6, person(4, 0.25, 0.5, size=0.1))  # 0.1 x 0.1 < 0.02: too small
    started = [
        d.observation.track_id
        for _, p, d in scene.events  # type: ignore[attr-defined]
        if p is EventPhase.START
    ]
    assert started == [3]


def test_reacquired_object_continues_instead_of_a_new_thread() -> None:
    scene = Scene(IntrusionRule(rule_id="zone", zone=LEFT_HALF, cooldown_s=0))
    for step in range(5):
        scene.at(step * 0.2, person(1, 0.25, 0.5))
    scene.at(3.2)  # ends after the grace period
    scene.at(3.4, person(7, 0.25, 0.5))  # same place, new id: a tracker id switch
    assert scene.phases() == [EventPhase.START, EventPhase.END]
    scene.at(9.0, person(8, 0.25, 0.5))  # later: a new situation
    assert scene.phases()[-1] is EventPhase.START


def test_cooldown_keeps_the_same_track_quiet() -> None:
    scene = Scene(IntrusionRule(rule_id="zone", zone=LEFT_HALF, cooldown_s=30))
    scene.at(0.0, person(1, 0.25, 0.5))
    scene.at(3.0, person(1, 0.75, 0.5))  # left the zone
    scene.at(6.0, person(1, 0.25, 0.2))  # back in, other place, within the cooldown
    scene.at(40.0, person(1, 0.25, 0.5))  # back in after the cooldown
    assert scene.phases() == [EventPhase.START, EventPhase.END, EventPhase.START]


def test_loitering_starts_after_the_dwell_and_reports_it() -> None:
    scene = Scene(LoiteringRule(rule_id="loiter", zone=LEFT_HALF, dwell_s=10))
    for step in range(0, 61):
        scene.at(step * 0.25, person(1, 0.25, 0.5))
    start = next(d for _, p, d in scene.events if p is EventPhase.START)  # type: ignore[misc]
    assert start.t == pytest.approx(10.0)
    assert start.observation.dwell_s == pytest.approx(10.0)


def test_crowd_needs_the_count_for_the_duration_and_ends_with_hysteresis() -> None:
    rule = CrowdRule(rule_id="crowd", zone=LEFT_HALF, min_count=3, min_duration_s=5)
    scene = Scene(rule)
    crowd = [person(i, 0.1 + 0.1 * i, 0.5) for i in range(4)]
    for step in range(0, 40):
        scene.at(step * 0.5, *crowd)
    start = next(d for _, p, d in scene.events if p is EventPhase.START)  # type: ignore[misc]
    assert start.t == pytest.approx(5.0)
    assert start.observation.count == 4
    scene.at(20.0, *crowd[:2])  # below the count: not ended at once
    assert scene.phases()[-1] is not EventPhase.END
    scene.at(26.0, *crowd[:2])
    assert scene.phases()[-1] is EventPhase.END


def test_object_rule_can_require_a_stationary_object() -> None:
    rule = ObjectRule(
        rule_id="parked", zone=LEFT_HALF, classes=["car"], min_duration_s=5, stationary=True
    )
    scene = Scene(rule)
    for step in range(0, 40):  # a car driving through the zone never "parks"
        scene.at(step * 0.2, person(1, 0.05 + step * 0.01, 0.5, label="car"))
    assert scene.events == []
    for step in range(0, 40):  # a car standing still for 8 s
        scene.at(10 + step * 0.2, person(2, 0.3, 0.5, label="car"))
    assert scene.phases() == [EventPhase.START]


def test_line_crossing_counts_each_direction_once_with_jitter_on_the_line() -> None:
    line = LineCrossingRule(rule_id="gate", line=((0.0, 0.5), (1.0, 0.5)))
    scene = Scene(line)
    ys = [0.3, 0.4, 0.499, 0.501, 0.499, 0.501, 0.6, 0.7, 0.6, 0.4, 0.3]
    for step, y in enumerate(ys):
        scene.at(step * 0.2, person(1, 0.5, y))
    starts = [d for _, p, d in scene.events if p is EventPhase.START]  # type: ignore[misc]
    assert [d.observation.direction for d in starts] == [
        CrossingDirection.IN,
        CrossingDirection.OUT,
    ]
    assert [d.observation.count for d in starts] == [1, 2]
    assert scene.phases() == [EventPhase.START, EventPhase.END] * 2


def test_line_crossing_beside_the_segment_does_not_count() -> None:
    scene = Scene(LineCrossingRule(rule_id="gate", line=((0.0, 0.5), (0.4, 0.5))))
    for step, y in enumerate([0.3, 0.4, 0.6, 0.7]):
        scene.at(step * 0.2, person(1, 0.8, y))  # passes x=0.8: past the line's end
    assert scene.events == []


def test_schedule_wraps_midnight_on_the_day_it_started() -> None:
    night = [TimeWindow(days=[5], start="19:00", end="06:30")]  # Friday night
    friday_late = datetime(2026, 11, 27, 23, 0)
    saturday_early = datetime(2026, 11, 28, 5, 0)
    saturday_late = datetime(2026, 11, 28, 23, 0)
    friday_noon = datetime(2026, 11, 27, 12, 0)
    assert is_active(night, friday_late)
    assert is_active(night, saturday_early)
    assert not is_active(night, saturday_late)
    assert not is_active(night, friday_noon)
    assert is_active([], friday_noon)


def test_a_thread_ends_when_its_schedule_ends() -> None:
    rule = IntrusionRule(
        rule_id="night", zone=LEFT_HALF, schedule=[TimeWindow(start="19:00", end="06:30")]
    )
    scene = Scene(rule)
    scene.at(0.0, person(1, 0.25, 0.5), local=datetime(2026, 11, 25, 6, 29))
    scene.at(120.0, person(1, 0.25, 0.5), local=datetime(2026, 11, 25, 6, 31))
    assert scene.phases() == [EventPhase.START, EventPhase.END]


def test_without_detection_absence_means_nothing() -> None:
    scene = Scene(IntrusionRule(rule_id="zone", zone=LEFT_HALF))
    scene.at(0.0, person(1, 0.25, 0.5))
    scene.at(10.0, detected=False)
    assert scene.phases() == [EventPhase.START]
