"""Runs the cameras of a box: one reader thread per camera, a small pool of analysis workers
shared by all cameras, and a ticker for timers. No queue grows: each camera holds at most
one frame waiting for analysis, and a newer frame replaces it (counted as skipped)."""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from edge.camera import CameraReader, Frame, StreamState
from edge.events import EmittedEvent
from edge.pipeline import CameraPipeline

logger = logging.getLogger(__name__)

Sink = Callable[[list[EmittedEvent]], None]


@dataclass
class _Slot:
    pipeline: CameraPipeline
    # A pipeline is driven by a worker, the ticker and its reader's state changes; this
    # keeps them one at a time.
    guard: threading.Lock = field(default_factory=threading.Lock)
    reader: CameraReader | None = None
    pending: Frame | None = None
    busy: bool = False
    queued: bool = False
    skipped: int = 0


class Analyzer:
    def __init__(
        self,
        sink: Sink,
        *,
        workers: int | None = None,
        tick_s: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.sink = sink
        self.clock = clock
        self.tick_s = tick_s
        self._slots: dict[str, _Slot] = {}
        self._lock = threading.Lock()
        self._ready: queue.Queue[str | None] = queue.Queue()
        self._stop = threading.Event()
        count = workers or max(1, os.cpu_count() or 1)
        self._workers = [
            threading.Thread(target=self._work, name=f"analysis-{i}", daemon=True)
            for i in range(count)
        ]
        self._ticker = threading.Thread(target=self._tick, name="analysis-ticker", daemon=True)

    def add_camera(self, pipeline: CameraPipeline, **reader_options: object) -> None:
        camera = pipeline.camera
        slot = _Slot(pipeline)
        with self._lock:
            self._slots[camera.camera_id] = slot
        if not camera.enabled:
            return
        url = reader_options.pop("url", camera.url)
        slot.reader = CameraReader(
            camera.camera_id,
            str(url),
            sample_fps=camera.detect_fps,
            on_sample=self._on_sample,
            on_state=self._on_state,
            **reader_options,  # type: ignore[arg-type]
        )
        if self._workers[0].is_alive():
            slot.reader.start()

    def remove_camera(self, camera_id: str) -> None:
        """Stop a camera a new config changed or removed, ending all its open threads."""
        with self._lock:
            slot = self._slots.pop(camera_id, None)
        if slot is None:
            return
        if slot.reader is not None:
            slot.reader.stop()
        with slot.guard:
            self._emit(slot.pipeline.finish(self.clock(), replaced=True))

    def with_pipeline(self, camera_id: str, action: Callable[[CameraPipeline], object]) -> object:
        """Run `action` on a camera's pipeline while no worker uses it."""
        with self._lock:
            slot = self._slots.get(camera_id)
        if slot is None:
            raise KeyError(f"no camera {camera_id!r} on this node")
        with slot.guard:
            return action(slot.pipeline)

    def restart_camera(self, camera_id: str) -> None:
        """Reopen a camera's stream (a fresh reader; the pipeline keeps its state)."""
        with self._lock:
            slot = self._slots.get(camera_id)
        if slot is None:
            raise KeyError(f"no camera {camera_id!r} on this node")
        if slot.reader is None:
            return
        slot.reader.stop()
        slot.reader = slot.reader.fresh()
        slot.reader.start()

    def cameras(self) -> dict[str, tuple[CameraPipeline, CameraReader | None, int]]:
        with self._lock:
            return {cid: (s.pipeline, s.reader, s.skipped) for cid, s in self._slots.items()}

    def start(self) -> Analyzer:
        for worker in self._workers:
            worker.start()
        self._ticker.start()
        with self._lock:
            readers = [s.reader for s in self._slots.values() if s.reader is not None]
        for reader in readers:
            reader.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop readers and workers, then end every open event thread."""
        with self._lock:
            slots = list(self._slots.values())
        for slot in slots:
            if slot.reader is not None:
                slot.reader.stop(timeout_s)
        self._stop.set()
        for _ in self._workers:
            self._ready.put(None)
        for worker in self._workers:
            worker.join(timeout_s)
        self._ticker.join(timeout_s)
        now = self.clock()
        for slot in slots:
            with slot.guard:
                self._emit(slot.pipeline.finish(now))

    # ---- reader callbacks (reader threads): record and signal only ------------------------

    def _on_sample(self, frame: Frame) -> None:
        with self._lock:
            slot = self._slots.get(frame.camera_id)
            if slot is None:
                return
            if slot.pending is not None:
                slot.skipped += 1  # analysis is behind: the newer frame wins
            slot.pending = frame
            if slot.busy or slot.queued:
                return
            slot.queued = True
        self._ready.put(frame.camera_id)

    def _on_state(self, camera_id: str, state: StreamState, reason: str) -> None:
        with self._lock:
            slot = self._slots.get(camera_id)
        if slot is not None:
            with slot.guard:
                self._emit(slot.pipeline.stream_changed(state, self.clock()))

    # ---- workers ---------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            camera_id = self._ready.get()
            if camera_id is None:
                return
            with self._lock:
                slot = self._slots.get(camera_id)
                if slot is None or slot.pending is None:
                    if slot is not None:
                        slot.queued = False
                    continue
                frame, slot.pending = slot.pending, None
                slot.busy, slot.queued = True, False
            try:
                with slot.guard:
                    self._emit(slot.pipeline.process(frame))
            except Exception:  # one camera's failure never stops the others
                logger.exception("analysis failed camera_id=%s", camera_id)
            finally:
                with self._lock:
                    slot.busy = False
                    again = slot.pending is not None and not slot.queued
                    if again:
                        slot.queued = True
                if again:
                    self._ready.put(camera_id)

    def _tick(self) -> None:
        while not self._stop.wait(self.tick_s):
            now = self.clock()
            with self._lock:
                slots = list(self._slots.values())
            for slot in slots:
                try:
                    with slot.guard:
                        self._emit(slot.pipeline.tick(now))
                except Exception:
                    logger.exception("timer failed camera_id=%s", slot.pipeline.camera.camera_id)

    def _emit(self, events: list[EmittedEvent]) -> None:
        if events:
            self.sink(events)
