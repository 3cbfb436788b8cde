"""Motion gating and camera tamper checks on real frames."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import cv2
import numpy as np
import pytest

from edge.camera import Frame, read_file_samples
from edge.events import EventFactory, SequenceCounter
from edge.motion import MotionGate
from edge.pipeline import CameraPipeline, media_clock
from edge.tamper import TamperMonitor
from protocols.config import CameraConfig, PublishSettings
from protocols.enums import EventKind, EventPhase, TamperReason
from tests.edge.conftest import read_frame


def frames_of(clip: Path, start: int, stop: int) -> Iterator[np.ndarray]:
    capture = cv2.VideoCapture(str(clip))
    capture.set(cv2.CAP_PROP_POS_FRAMES, start)
    for _ in range(stop - start):
        ok, frame = capture.read()
        if not ok:
            break
        yield frame
    capture.release()


def test_empty_lane_settles_and_a_car_opens_the_gate(car_clip: Path) -> None:
    gate = MotionGate()
    quiet = [gate.update(frame).fraction for frame in frames_of(car_clip, 0, 50)]
    assert max(quiet[-20:]) < 0.002  # an empty lane costs no detection
    car = gate.update(read_frame(car_clip, 80))
    assert car.fraction > 0.01
    assert car.boxes
    x1, y1, x2, y2 = max(car.boxes, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]))
    assert 0.2 < (x1 + x2) / 2 < 0.6  # the white car is left of centre, in the upper half
    assert (y1 + y2) / 2 < 0.6


def test_a_mask_hides_motion_inside_it(car_clip: Path) -> None:
    everything = [(0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)]
    gate = MotionGate(masks=[everything])
    for frame in frames_of(car_clip, 0, 50):
        gate.update(frame)
    assert gate.update(read_frame(car_clip, 80)).fraction == 0.0


def run_tamper(
    frames: list[np.ndarray], fps: float = 5.0
) -> list[tuple[float, TamperReason, bool]]:
    monitor = TamperMonitor()
    gate = MotionGate()
    changes = []
    for i, frame in enumerate(frames):
        t = i / fps
        grey = gate.update(frame).grey
        changes += [(t, reason, started) for reason, started in monitor.update(grey, t)]
    return changes


def test_frozen_image_is_reported_after_its_hold_time(car_clip: Path) -> None:
    still = read_frame(car_clip, 10)
    live = list(frames_of(car_clip, 0, 60))
    changes = run_tamper(live + [still] * 125 + live)
    frozen = [(t, started) for t, reason, started in changes if reason is TamperReason.FROZEN]
    assert [s for _, s in frozen] == [True, False]
    start_t = frozen[0][0]
    assert 12 + 20 <= start_t <= 12 + 21  # 60 live frames at 5 fps, then 20 s of the same


def test_covered_lens_is_reported_and_clears(car_clip: Path) -> None:
    live = list(frames_of(car_clip, 0, 60))
    black = np.zeros_like(live[0])
    changes = run_tamper(live + [black + np.uint8(i % 2) for i in range(60)] + live)
    covered = [(t, started) for t, reason, started in changes if reason is TamperReason.COVERED]
    assert [s for _, s in covered] == [True, False]


def test_turned_camera_is_a_scene_change(car_clip: Path, person_clip: Path) -> None:
    lane = list(frames_of(car_clip, 0, 100))  # 20 s: learn the view
    turned = list(frames_of(person_clip, 0, 75))  # 15 s of another view
    changes = run_tamper(lane + turned + lane)
    scene = [(t, started) for t, reason, started in changes if reason is TamperReason.SCENE_CHANGE]
    assert [s for _, s in scene] == [True, False]
    assert 20 + 10 <= scene[0][0] <= 20 + 13  # the hold time, plus ~2 s of view averaging


@pytest.mark.parametrize("clip_name", ["car_clip", "person_clip"])
def test_ordinary_scenes_raise_no_tamper(clip_name: str, request: pytest.FixtureRequest) -> None:
    clip: Path = request.getfixturevalue(clip_name)
    frames = [f.image for f in read_file_samples(clip, 5.0)]
    assert run_tamper(frames) == []


def test_tamper_becomes_a_camera_tamper_event_thread(car_clip: Path) -> None:
    camera = CameraConfig(camera_id="cam1", name="lane", url="file:///lane.mp4")
    publish = PublishSettings()
    factory = EventFactory(
        "node-1",
        next_seq=SequenceCounter(),
        to_datetime=media_clock(datetime(2026, 1, 1, tzinfo=UTC)),
        publish=publish,
    )
    pipeline = CameraPipeline(
        camera, detector=None, factory=factory, publish=publish, timezone=ZoneInfo("Asia/Shanghai")
    )
    black = np.zeros((432, 768, 3), np.uint8)
    frames = list(frames_of(car_clip, 0, 30)) + [black] * 60 + list(frames_of(car_clip, 0, 10))
    events = []
    for i, image in enumerate(frames):
        events += pipeline.process(Frame("cam1", image, i / 5.0, i, 0.0))
    tamper = [e.event for e in events if e.event.kind is EventKind.CAMERA_TAMPER]
    assert [e.phase for e in tamper] == [EventPhase.START, EventPhase.END]
    assert tamper[0].tamper is TamperReason.COVERED
    assert tamper[0].thread_id == tamper[1].thread_id
    assert tamper[0].snapshots  # the black frame itself, as evidence
