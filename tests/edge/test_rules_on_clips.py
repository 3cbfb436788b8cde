"""Rules fire on the real clips where they should: one thread per object, not per frame."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from edge.camera import read_file_samples
from edge.detect_tool import build_pipeline
from edge.detectors.onnx import OnnxDetector
from edge.events import EmittedEvent
from edge.pipeline import media_clock
from firmware_configs.rules import RuleSet, load_rule_set
from protocols import decode, encode
from protocols.config import IntrusionRule, LineCrossingRule, LoiteringRule, ModelSpec
from protocols.enums import CrossingDirection, EventKind, EventPhase
from protocols.events import DetectionEvent

START = datetime(2026, 1, 1, tzinfo=UTC)
CAR_CLIP_FPS = 12.5
# Frame windows in which each car of car-detection.mp4 is in view, read off the clip by eye.
CARS = {
    "white, going up": (56, 110),
    "grey, going down": (184, 236),
    "red, going up": (190, 240),
    "white, going down": (318, 348),
}


def run_clip(
    clip: Path, rule_set: RuleSet, detector: OnnxDetector | None, fps: float = 5.0
) -> list[EmittedEvent]:
    pipeline = build_pipeline(
        rule_set, detector, fps=fps, to_datetime=media_clock(START), model=ModelSpec()
    )
    events: list[EmittedEvent] = []
    last = 0.0
    for frame in read_file_samples(clip, fps):
        events += pipeline.process(frame)
        last = frame.timestamp
    return events + pipeline.finish(last + 1 / fps)


def threads(events: list[EmittedEvent]) -> dict[object, list[DetectionEvent]]:
    by_thread: dict[object, list[DetectionEvent]] = defaultdict(list)
    for emitted in events:
        by_thread[emitted.event.thread_id].append(emitted.event)
    return by_thread


def frame_of(event: DetectionEvent) -> float:
    return (event.observed_at - START).total_seconds() * CAR_CLIP_FPS


@pytest.fixture(scope="module")
def lane_events(car_clip: Path, detector_for: Callable[..., OnnxDetector]) -> list[EmittedEvent]:
    return run_clip(
        car_clip, load_rule_set("overhead_vehicle_lane"), detector_for("yolox_nano_416")
    )


def test_lane_zone_gives_one_intrusion_thread_per_car(lane_events: list[EmittedEvent]) -> None:
    events = lane_events
    by_thread = threads(events)
    assert len(by_thread) == len(CARS)
    starts = []
    for messages in by_thread.values():
        phases = [m.phase for m in messages]
        assert phases[0] is EventPhase.START
        assert phases[-1] is EventPhase.END
        assert phases.count(EventPhase.START) == 1
        assert phases.count(EventPhase.END) == 1
        assert all(m.kind is EventKind.INTRUSION for m in messages)
        starts.append(frame_of(messages[0]))
    # Each car's window holds exactly the starts of its own thread (the grey and the red
    # car pass at the same time: two starts in their shared window).
    assert sum(56 <= s <= 110 for s in starts) == 1
    assert sum(184 <= s <= 240 for s in starts) == 2
    assert sum(318 <= s <= 348 for s in starts) == 1


def test_start_events_carry_decodable_snapshots(lane_events: list[EmittedEvent]) -> None:
    starts = [e for e in lane_events if e.event.phase is EventPhase.START]
    assert starts
    for emitted in starts:
        assert decode(DetectionEvent, encode(emitted.event)) == emitted.event
        metas = {s.variant: s for s in emitted.event.snapshots}
        assert set(metas) == set(emitted.snapshots)
        for variant, data in emitted.snapshots.items():
            assert data[:3] == b"\xff\xd8\xff"
            assert metas[variant].sha256 == hashlib.sha256(data).hexdigest()
            assert metas[variant].size_bytes == len(data)


def test_line_across_the_lane_counts_each_car_once_in_its_direction(
    car_clip: Path,
    detector_for: Callable[..., OnnxDetector],
) -> None:
    line = LineCrossingRule(
        rule_id="lane_line",
        line=((0.0, 0.5), (1.0, 0.5)),
        classes=["car", "truck", "bus", "cell phone", "suitcase"],
        min_score=0.4,
        anchor="center",
    )
    events = run_clip(car_clip, RuleSet(rules=[line]), detector_for("yolox_nano_416"))
    starts = [e.event for e in events if e.event.phase is EventPhase.START]
    directions = sorted(e.direction for e in starts if e.direction is not None)
    # Going up crosses from the right-hand side of A→B (below it) to its left: "out".
    assert directions == [
        CrossingDirection.IN,
        CrossingDirection.IN,
        CrossingDirection.OUT,
        CrossingDirection.OUT,
    ]
    assert max(e.count or 0 for e in starts) == 4


def test_loitering_at_the_table_gives_one_thread_per_person(
    person_clip: Path,
    detector_for: Callable[..., OnnxDetector],
) -> None:
    rule = LoiteringRule(
        rule_id="at_table", dwell_s=5, zone=[(0.4, 0.3), (0.85, 0.3), (0.85, 1.0), (0.4, 1.0)]
    )
    events = run_clip(person_clip, RuleSet(rules=[rule]), detector_for("yolox_nano_416"))
    by_thread = threads(events)
    assert len(by_thread) == 6  # six people come to the table one after another
    for messages in by_thread.values():
        assert messages[0].dwell_s is not None
        assert messages[0].dwell_s >= 5
        assert messages[-1].phase is EventPhase.END
        assert messages[-1].dwell_s is not None
        assert messages[-1].dwell_s > messages[0].dwell_s


@pytest.mark.parametrize(
    "preset",
    [
        "river_bank_night",
        "school_gate_after_hours",
        "fire_lane_parking",
        "market_crowd",
        "overhead_vehicle_lane",
        "motion_only",
    ],
)
def test_presets_are_valid(preset: str) -> None:
    assert load_rule_set(preset).rules


def test_recheck_tells_whether_the_situation_is_still_there(
    person_clip: Path,
    detector_for: Callable[..., OnnxDetector],
) -> None:
    from edge.camera import Frame
    from tests.edge.conftest import read_frame

    rule = IntrusionRule(rule_id="table", zone=[(0.4, 0.3), (0.85, 0.3), (0.85, 1.0), (0.4, 1.0)])
    pipeline = build_pipeline(
        RuleSet(rules=[rule]),
        detector_for("yolox_nano_416"),
        fps=5,
        to_datetime=media_clock(START),
        model=ModelSpec(),
    )
    with pytest.raises(LookupError):
        pipeline.recheck("table")  # no frame yet
    pipeline.process(Frame("cam01", read_frame(person_clip, 240), 48.0, 240, 0.0))
    present, frame = pipeline.recheck("table")
    assert [t.label for t in present] == ["person"]
    assert frame.index == 240
    pipeline.process(Frame("cam01", read_frame(person_clip, 5), 49.0, 5, 0.0))  # empty room
    assert pipeline.recheck("table")[0] == []
    with pytest.raises(KeyError):
        pipeline.recheck("no_such_rule")
