"""The technician's tool: run one camera's rules on a file or stream, print events as JSON
lines, and optionally write an annotated video and the snapshots, to tune zones on site."""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO
from zoneinfo import ZoneInfo

import cv2
import numpy as np
import numpy.typing as npt

from edge.camera import CameraReader, Frame, file_info, is_file_source, read_file_samples
from edge.detectors.base import Detector
from edge.events import EmittedEvent, EventFactory, SequenceCounter
from edge.pipeline import CameraPipeline, media_clock, wall_clock
from firmware_configs.rules import RuleSet
from protocols import encode
from protocols.config import (
    CameraConfig,
    LineCrossingRule,
    ModelSpec,
    PublishSettings,
)
from protocols.events import ModelRef

CAMERA_ID = "cam01"
NODE_ID = "technician"


class EventWriter:
    """Prints events as JSON lines and saves their snapshots when an output folder is set."""

    def __init__(self, stream: TextIO, out_dir: Path | None) -> None:
        self.stream = stream
        self.out_dir = out_dir
        self.count = 0

    def __call__(self, events: list[EmittedEvent]) -> None:
        for emitted in events:
            self.count += 1
            self.stream.write(encode(emitted.event).decode() + "\n")
            if self.out_dir is not None:
                for variant, data in emitted.snapshots.items():
                    name = f"{emitted.event.event_id}_{variant.value}.jpg"
                    (self.out_dir / name).write_bytes(data)
        self.stream.flush()


def annotate(image: npt.NDArray[np.uint8], pipeline: CameraPipeline) -> npt.NDArray[np.uint8]:
    """Zones, lines and tracks drawn on a copy of the frame."""
    out = image.copy()
    height, width = out.shape[:2]

    def px(points: Iterable[tuple[float, float]]) -> npt.NDArray[np.int32]:
        return np.array([[x * width, y * height] for x, y in points], np.int32)

    for mask in pipeline.camera.masks:
        cv2.polylines(out, [px(mask)], True, (128, 128, 128), 1)
    for rule in pipeline.camera.rules:
        if isinstance(rule, LineCrossingRule):
            a, b = px(rule.line)
            cv2.arrowedLine(
                out, tuple(int(v) for v in a), tuple(int(v) for v in b), (255, 200, 0), 2
            )
        elif getattr(rule, "zone", None) is not None:
            cv2.polylines(out, [px(rule.zone)], True, (0, 200, 255), 2)  # type: ignore[attr-defined]
    for track in pipeline.last_tracks:
        x1, y1, x2, y2 = (int(v) for v in track.xyxy)
        cv2.rectangle(out, (x1, y1), (x2, y2), (0, 255, 0), 2)
        cv2.putText(
            out,
            f"{track.track_id} {track.label} {track.score:.2f}",
            (x1, max(12, y1 - 4)),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.45,
            (0, 255, 0),
            1,
        )
    return out


def build_pipeline(
    rule_set: RuleSet,
    detector: Detector | None,
    *,
    fps: float,
    to_datetime: Callable[[float], datetime],
    model: ModelSpec,
    timezone: str = "Asia/Shanghai",
) -> CameraPipeline:
    camera = CameraConfig(
        camera_id=CAMERA_ID,
        name="technician",
        url="file:///source",
        detect_fps=fps,
        rules=rule_set.rules,
        masks=rule_set.masks,
    )
    publish = PublishSettings()
    ref = ModelRef(profile=model.profile, sha256=detector.sha256) if detector else None
    factory = EventFactory(
        NODE_ID, next_seq=SequenceCounter(), to_datetime=to_datetime, publish=publish, model=ref
    )
    return CameraPipeline(
        camera, detector=detector, factory=factory, publish=publish, timezone=ZoneInfo(timezone)
    )


def run_file(
    source: str,
    pipeline: CameraPipeline,
    writer: EventWriter,
    *,
    video_path: Path | None,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Analyse every sampled frame of a file; returns the number of frames analysed."""
    _, _, width, height = file_info(source)
    video = None
    if video_path is not None:
        # OpenCV's bundled FFmpeg has no H.264 encoder; mp4v plays everywhere that matters.
        video = cv2.VideoWriter(
            str(video_path),
            cv2.VideoWriter.fourcc(*"mp4v"),
            pipeline.camera.detect_fps,
            (width, height),
        )
    analysed = 0
    last_t = 0.0
    try:
        for frame in read_file_samples(source, pipeline.camera.detect_fps, CAMERA_ID):
            writer(pipeline.process(frame))
            if video is not None:
                video.write(annotate(frame.image, pipeline))
            analysed += 1
            last_t = frame.timestamp
            if progress is not None:
                progress(frame.index)
        writer(pipeline.finish(last_t + 1.0 / pipeline.camera.detect_fps))
    finally:
        if video is not None:
            video.release()
    return analysed


def run_stream(
    source: str,
    pipeline: CameraPipeline,
    writer: EventWriter,
    *,
    duration_s: float | None,
    video_path: Path | None,
) -> int:
    """Analyse a live stream until Ctrl-C or `duration_s`; returns frames analysed."""
    done = threading.Event()
    lock = threading.Lock()
    video: list[cv2.VideoWriter] = []
    analysed = [0]

    def on_sample(frame: Frame) -> None:
        with lock:
            writer(pipeline.process(frame))
            analysed[0] += 1
            if video_path is not None:
                if not video:
                    height, width = frame.image.shape[:2]
                    video.append(
                        cv2.VideoWriter(
                            str(video_path),
                            cv2.VideoWriter.fourcc(*"mp4v"),
                            pipeline.camera.detect_fps,
                            (width, height),
                        )
                    )
                video[0].write(annotate(frame.image, pipeline))

    def on_state(camera_id: str, state: object, reason: str) -> None:
        sys.stderr.write(f"camera {camera_id}: {state} {reason}\n")

    reader = CameraReader(
        CAMERA_ID,
        source,
        sample_fps=pipeline.camera.detect_fps,
        on_sample=on_sample,
        on_state=on_state,
    )  # type: ignore[arg-type]
    previous = signal.signal(signal.SIGINT, lambda *_: done.set())
    try:
        reader.start()
        done.wait(duration_s)
    finally:
        signal.signal(signal.SIGINT, previous)
        reader.stop()
        with lock:
            writer(pipeline.finish(time.time()))
            for writer_ in video:
                writer_.release()
    return analysed[0]


def clock_for(source: str) -> Callable[[float], datetime]:
    if is_file_source(source):
        # Offline: media time from a start just far enough back that the file ends now.
        frames, fps, _, _ = file_info(source)
        start = datetime.now(UTC).timestamp() - frames / fps
        return media_clock(datetime.fromtimestamp(start, UTC))
    return wall_clock()
