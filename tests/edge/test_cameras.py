"""Cameras against a real RTSP server on loopback: reading, a server that goes away and
comes back, a wrong path, a camera that never answers; the other cameras keep running."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

import cv2
import numpy as np
import pytest

from edge.analyzer import Analyzer
from edge.camera import (
    CameraReader,
    Frame,
    StreamState,
    open_capture,
    sample_phase,
    with_credentials,
)
from edge.errors import CameraError
from edge.events import EmittedEvent, EventFactory, SequenceCounter
from edge.pipeline import CameraPipeline, wall_clock
from protocols.config import CameraConfig, PublishSettings
from protocols.enums import EventKind, EventPhase
from tests.edge.conftest import RtspFactory
from tests.support.ports import free_port, wait_until

FAST_RETRY = {"timeout_s": 2.0, "backoff_initial_s": 0.1, "backoff_max_s": 0.5}


@pytest.fixture
def silent_camera() -> Iterator[str]:
    """A TCP port that accepts connections and never says a word (a hung camera)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"rtsp://127.0.0.1:{server.getsockname()[1]}/cam1"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


class Collected:
    def __init__(self) -> None:
        self.frames: list[Frame] = []
        self.states: list[tuple[StreamState, str]] = []
        self.events: list[EmittedEvent] = []
        self.lock = threading.Lock()

    def on_sample(self, frame: Frame) -> None:
        with self.lock:
            self.frames.append(frame)

    def on_state(self, camera_id: str, state: StreamState, reason: str) -> None:
        with self.lock:
            self.states.append((state, reason))

    def sink(self, events: list[EmittedEvent]) -> None:
        with self.lock:
            self.events.extend(events)

    def count(self) -> int:
        with self.lock:
            return len(self.frames)


def test_reader_samples_a_real_rtsp_stream(rtsp_factory: RtspFactory, car_clip: Path) -> None:
    server = rtsp_factory([car_clip])
    got = Collected()
    reader = CameraReader(
        "cam1", server.url(1), sample_fps=5, on_sample=got.on_sample, on_state=got.on_state
    ).start()
    try:
        wait_until(lambda: got.count() >= 10, 20, "10 sampled frames")
    finally:
        reader.stop()
    assert got.states[0][0] is StreamState.CONNECTED
    assert got.frames[0].image.shape == (432, 768, 3)
    assert (reader.width, reader.height) == (768, 432)
    # The clip runs at 12.5 fps and every frame is decoded; 5 a second are sampled.
    span = got.frames[-1].timestamp - got.frames[0].timestamp
    assert 4.0 <= (len(got.frames) - 1) / span <= 6.5
    assert reader.input_rate.total >= len(got.frames) * 2


def test_a_boxs_cameras_are_sampled_at_spread_phases() -> None:
    # 32 cameras named as a box names them: their samples spread over the interval instead
    # of all falling on the instant the box started (bursts for the workers, then nothing).
    phases = sorted(sample_phase(f"cam{i:02d}") for i in range(32))
    assert all(0 <= p < 1 for p in phases)
    assert len(set(phases)) >= 28
    largest_gap = max(b - a for a, b in zip([phases[-1] - 1, *phases], phases, strict=False))
    assert largest_gap < 0.25


def test_a_readers_first_sample_waits_for_its_phase(car_clip: Path) -> None:
    got = Collected()
    camera_id = max((f"cam{i}" for i in range(50)), key=sample_phase)  # a late phase
    reader = CameraReader(camera_id, f"file://{car_clip}", sample_fps=1, on_sample=got.on_sample)
    reader.start()
    try:
        wait_until(lambda: got.count() >= 1, 20, "a sampled frame")
    finally:
        reader.stop()
    # Files are paced at their own rate (12.5 fps): the first sample is the frame at the
    # camera's phase within its one-second interval, not the first frame.
    assert got.frames[0].index >= int(sample_phase(camera_id) * 12.5)


def test_a_file_camera_can_start_part_way_into_its_clip(car_clip: Path) -> None:
    # Load tests play one clip on many cameras from different points of it.
    got = Collected()
    reader = CameraReader(
        "cam1", f"file://{car_clip}", sample_fps=5, on_sample=got.on_sample, start_frame=100
    )
    reader.start()
    try:
        # Paced from where it starts: no wait for the 8 s of clip before frame 100.
        wait_until(lambda: got.count() >= 1, 2, "a sampled frame")
    finally:
        reader.stop()
    first = got.frames[0]  # the reader's first decoded frame is index 1
    capture = cv2.VideoCapture(str(car_clip))
    for _ in range(100 + first.index - 1):
        capture.grab()
    expected = capture.read()[1]
    capture.release()
    assert np.array_equal(first.image, expected)


def test_wrong_path_names_the_camera_and_the_reason(
    rtsp_factory: RtspFactory, car_clip: Path
) -> None:
    server = rtsp_factory([car_clip])
    with pytest.raises(CameraError) as caught:
        open_capture("gate-cam", f"rtsp://127.0.0.1:{server.port}/no-such-stream", 5.0)
    assert caught.value.camera_id == "gate-cam"
    assert "wrong path" in caught.value.reason


def test_silent_camera_times_out_with_its_reason(silent_camera: str) -> None:
    started = time.monotonic()
    with pytest.raises(CameraError) as caught:
        open_capture("hung-cam", silent_camera, 1.5)
    assert time.monotonic() - started < 10  # bounded, whatever the camera does
    assert "no answer" in caught.value.reason


def test_nothing_listening_is_connection_refused() -> None:
    with pytest.raises(CameraError, match="connection refused"):
        open_capture("off-cam", f"rtsp://127.0.0.1:{free_port()}/cam1", 2.0)


def test_credentials_are_percent_encoded_and_never_in_the_redacted_url() -> None:
    from edge.camera import redact

    url = with_credentials("rtsp://192.168.1.64:554/Streaming/Channels/102", "admin", "p@ss:w/rd")
    assert url == "rtsp://admin:p%40ss%3Aw%2Frd@192.168.1.64:554/Streaming/Channels/102"
    assert redact(url) == "rtsp://192.168.1.64:554/Streaming/Channels/102"


def pipeline_for(camera: CameraConfig) -> CameraPipeline:
    publish = PublishSettings()
    factory = EventFactory(
        "node-1", next_seq=SequenceCounter(), to_datetime=wall_clock(), publish=publish
    )
    return CameraPipeline(
        camera, detector=None, factory=factory, publish=publish, timezone=ZoneInfo("Asia/Shanghai")
    )


def test_camera_offline_and_back_while_other_cameras_keep_running(
    rtsp_factory: RtspFactory,
    car_clip: Path,
    person_clip: Path,
    silent_camera: str,
) -> None:
    steady = rtsp_factory([person_clip])  # runs 139 s, longer than this test
    flaky_port = free_port()
    flaky = rtsp_factory([car_clip], port=flaky_port)
    got = Collected()
    analyzer = Analyzer(got.sink, workers=2, tick_s=0.2)
    cameras = {
        "steady": CameraConfig(camera_id="steady", name="steady", url=steady.url(1)),
        "flaky": CameraConfig(
            camera_id="flaky", name="flaky", url=flaky.url(1), offline_grace_s=1.0
        ),
        "wrong": CameraConfig(
            camera_id="wrong", name="wrong", url=f"rtsp://127.0.0.1:{flaky_port}/nothing-here"
        ),
        "silent": CameraConfig(camera_id="silent", name="silent", url=silent_camera),
    }
    for camera in cameras.values():
        analyzer.add_camera(pipeline_for(camera), **FAST_RETRY)
    analyzer.start()
    try:
        state = analyzer.cameras()

        def analysed(camera_id: str) -> int:
            return state[camera_id][0].frames_analysed

        wait_until(
            lambda: analysed("steady") >= 5 and analysed("flaky") >= 5,
            30,
            "both good cameras analysed",
        )
        flaky.stop()  # the camera's link drops
        wait_until(
            lambda: any(e.event.kind is EventKind.CAMERA_OFFLINE for e in list(got.events)),
            30,
            "camera_offline start",
        )
        before = analysed("steady")
        wait_until(lambda: analysed("steady") >= before + 5, 20, "steady still analysed")
        flaky_again = rtsp_factory([car_clip], port=flaky_port)  # back on the same address
        assert flaky_again.port == flaky_port
        wait_until(
            lambda: sum(e.event.kind is EventKind.CAMERA_OFFLINE for e in list(got.events)) >= 2,
            30,
            "camera_offline end",
        )
        reconnected_at = analysed("flaky")
        wait_until(lambda: analysed("flaky") > reconnected_at + 3, 20, "flaky analysed again")
    finally:
        analyzer.stop()
    offline = [e.event for e in got.events if e.event.kind is EventKind.CAMERA_OFFLINE]
    assert [e.phase for e in offline] == [EventPhase.START, EventPhase.END]
    assert {e.camera_id for e in offline} == {"flaky"}
    assert offline[0].thread_id == offline[1].thread_id
    readers = {cid: reader for cid, (_, reader, _) in analyzer.cameras().items()}
    assert readers["flaky"] is not None
    assert readers["flaky"].reconnects >= 1
    for bad in ("wrong", "silent"):
        reader = readers[bad]
        assert reader is not None
        assert reader.state is StreamState.OFFLINE
        assert reader.reconnects >= 1  # retried with backoff, not given up
    assert readers["wrong"].state_reason.endswith("wrong path: the camera has no such stream")
    assert "no answer" in readers["silent"].state_reason


def test_a_camera_replaced_by_a_config_ends_its_offline_thread() -> None:
    """Its work order closes by that end (it stayed open for good); a shutdown does not end
    it: an offline camera is still offline when the box starts again."""
    camera = CameraConfig(camera_id="cam1", name="gate", url="rtsp://127.0.0.1:9/none")

    def offline() -> CameraPipeline:
        pipeline = pipeline_for(camera)
        pipeline.stream_changed(StreamState.OFFLINE, 0.0)
        [started] = pipeline.tick(camera.offline_grace_s + 1)
        assert (started.event.kind, started.event.phase) == (
            EventKind.CAMERA_OFFLINE,
            EventPhase.START,
        )
        return pipeline

    assert [e.event.kind for e in offline().finish(100.0)] == []
    [ended] = offline().finish(100.0, replaced=True)
    assert (ended.event.kind, ended.event.phase) == (EventKind.CAMERA_OFFLINE, EventPhase.END)
