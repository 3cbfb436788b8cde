"""One camera's analysis: motion gate → detection → tracking → rules → events, plus tamper
and offline checks. A pipeline is driven by one worker at a time."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import cv2
import numpy as np

from edge.camera import Frame, StreamState
from edge.detectors.base import Detections, Detector
from edge.events import EmittedEvent, EventFactory
from edge.motion import MotionGate, MotionResult, polygon_mask, watch_mask
from edge.rates import RateMeter
from edge.rules import EventDraft, Observation, RuleEngine
from edge.rules.evaluators import FrameView
from edge.rules.threads import ThreadBook
from edge.tamper import TamperMonitor, TamperSettings
from edge.tracking import Track, Tracker
from protocols.config import CameraConfig, LineCrossingRule, MotionRule, PublishSettings
from protocols.enums import EventKind, Severity

# Motion near a tracked object is that object moving, not something new: within its box
# grown by these shares (an object standing still shifts on the spot; a moving one travels
# up to about half its size between two analysed frames).
STILL_MARGIN = 0.15
MOVING_MARGIN = 0.5
STILL_MAX_SHIFT = 0.1  # centre moved less than this share of the box size: standing still


@dataclass(frozen=True)
class PipelineSettings:
    """When detection runs. New motion where the rules look runs it at once; objects
    already tracked are followed by the tracker with detection every `tracked_interval_s`
    while they move (as DeepStream's inference interval) and every `keepalive_tracked_s`
    while they stand still (the tracker keeps a lost track 2 s); an empty, still scene is
    re-checked every `keepalive_idle_s` (nothing enters a scene without moving)."""

    motion_min_fraction: float = 0.002  # moving share of the frame that counts
    tracked_interval_s: float = 0.4
    keepalive_tracked_s: float = 1.0
    keepalive_idle_s: float = 3.0
    tamper: TamperSettings = field(default_factory=TamperSettings)


def _percentile(values: deque[float], q: float) -> float:
    return float(np.percentile(np.fromiter(values, float), q)) if values else 0.0


class CameraPipeline:
    def __init__(
        self,
        camera: CameraConfig,
        *,
        detector: Detector | None,
        factory: EventFactory,
        publish: PublishSettings,
        timezone: ZoneInfo,
        settings: PipelineSettings | None = None,
    ) -> None:
        self.camera = camera
        self.detector = detector
        self.factory = factory
        self.timezone = timezone
        self.settings = settings or PipelineSettings()
        self.gate = MotionGate(camera.masks)
        self.tamper = TamperMonitor(self.settings.tamper)
        self.engine = RuleEngine(camera.rules, update_interval_s=publish.update_interval_s)
        self.tracker = Tracker(frame_rate=camera.detect_fps)
        self._tamper_book = ThreadBook(
            EventKind.CAMERA_TAMPER,
            Severity.HIGH,
            rule_id=None,
            update_interval_s=publish.update_interval_s,
            end_grace_s=0.0,
        )
        self._offline_book = ThreadBook(
            EventKind.CAMERA_OFFLINE,
            Severity.HIGH,
            rule_id=None,
            update_interval_s=publish.update_interval_s,
            end_grace_s=0.0,
        )
        self._motion_rules = [r for r in camera.rules if isinstance(r, MotionRule)]
        self._zone_masks: dict[str, np.ndarray] = {}
        self._watch: np.ndarray | None = None  # gate-sized; None: the whole frame matters
        self._watch_everywhere = any(
            getattr(rule, "zone", None) is None and not isinstance(rule, LineCrossingRule)
            for rule in camera.rules
            if not isinstance(rule, MotionRule)
        )
        self._motion: MotionResult | None = None
        self._pending: list[EventDraft] = []
        self._last_detect_t = float("-inf")
        self._tracks_seen = False
        self._offline_since: float | None = None
        self.last_tracks: list[Track] = []
        self.last_frame: Frame | None = None
        self._still_tracks: list[Track] = []
        self._frame_size = (1, 1)
        self.analysed = RateMeter()
        self.inference_ms: deque[float] = deque(maxlen=500)
        self.event_latency_ms: deque[float] = deque(maxlen=500)
        self.frame_latency_ms: deque[float] = deque(maxlen=500)  # decoded → analysed
        self.detections_run = 0
        self.frames_analysed = 0

    # ---- analysis ------------------------------------------------------------------------

    def prepare(self, frame: Frame) -> bool:
        """Gate the frame; True when detection should run on it."""
        self._motion = motion = self.gate.update(frame.image)
        for reason, started in self.tamper.update(motion.grey, frame.timestamp):
            obs = Observation(
                tamper=reason, frame_size=(frame.image.shape[1], frame.image.shape[0])
            )
            draft = (
                self._tamper_book.observe(reason, obs, frame.timestamp)
                if started
                else self._tamper_book.end(reason, frame.timestamp)
            )
            if draft:
                self._pending.append(draft)
        self._frame_size = (frame.image.shape[1], frame.image.shape[0])
        if self.detector is None or not self.engine.needs_objects:
            return False
        local = self.factory.to_datetime(frame.timestamp).astimezone(self.timezone)
        if not self.engine.needs_objects_at(local) and self.engine.open_threads == 0:
            return False
        since = frame.timestamp - self._last_detect_t
        if self._new_motion(motion) >= self.settings.motion_min_fraction:
            return True
        if len(self._still_tracks) < len(self.last_tracks):  # some tracked object moves
            return since >= self.settings.tracked_interval_s
        tracked = self._tracks_seen or self.engine.open_threads > 0
        keepalive = self.settings.keepalive_tracked_s if tracked else self.settings.keepalive_idle_s
        return since >= keepalive

    def detect(self, frame: Frame) -> Detections:
        assert self.detector is not None
        started = time.perf_counter()
        detections = self.detector.detect(frame.image)
        self.record_inference((time.perf_counter() - started) * 1000)
        return detections

    def record_inference(self, ms: float) -> None:
        self.inference_ms.append(ms)
        self.detections_run += 1

    def complete(self, frame: Frame, detections: Detections | None) -> list[EmittedEvent]:
        """Track and evaluate rules on a prepared frame; `None` when detection was skipped."""
        assert self._motion is not None, "prepare() first"
        self.last_frame = frame
        height, width = frame.image.shape[:2]
        t = frame.timestamp
        tracks = []
        if detections is not None:
            self._last_detect_t = t
            tracks = self.tracker.update(detections, t)
            self._tracks_seen = bool(tracks)
            self._still_tracks = _still(self.last_tracks, tracks)
            self.last_tracks = tracks
        view = FrameView(
            t,
            width,
            height,
            tracks,
            self._motion_fractions(self._motion),
            self._largest_motion_box(self._motion, width, height),
        )
        local = self.factory.to_datetime(t).astimezone(self.timezone)
        drafts = self._pending + self.engine.evaluate(view, local, detected=detections is not None)
        self._pending = []
        self.frames_analysed += 1
        self.analysed.add()
        events = [self.factory.emit(self.camera.camera_id, d, frame.image) for d in drafts]
        latency = (time.monotonic() - frame.received_monotonic) * 1000
        self.frame_latency_ms.append(latency)
        if events:
            self.event_latency_ms.extend([latency] * len(events))
        return events

    def process(self, frame: Frame) -> list[EmittedEvent]:
        return self.complete(frame, self.detect(frame) if self.prepare(frame) else None)

    def _new_motion(self, motion: MotionResult) -> float:
        """Motion where the rules look that no tracked object explains: not a tree swaying
        outside every zone, not a tracked person shifting on the spot or walking on."""
        height, width = motion.mask.shape
        if self._watch_everywhere:
            region = np.full((height, width), 255, np.uint8)
        else:
            if self._watch is None or self._watch.shape != (height, width):
                rules = [r for r in self.camera.rules if not isinstance(r, MotionRule)]
                zones = [r.zone for r in rules if getattr(r, "zone", None) is not None]  # type: ignore[union-attr]
                lines = [r.line for r in rules if isinstance(r, LineCrossingRule)]
                self._watch = watch_mask(zones, lines, width, height)
            region = self._watch
        if self.last_tracks:
            region = region.copy()
            frame_w, frame_h = self._frame_size
            sx, sy = width / frame_w, height / frame_h
            still = {track.track_id for track in self._still_tracks}
            for track in self.last_tracks:
                x1, y1, x2, y2 = track.xyxy
                margin = STILL_MARGIN if track.track_id in still else MOVING_MARGIN
                mx, my = (x2 - x1) * margin, (y2 - y1) * margin
                cv2.rectangle(
                    region,
                    (int((x1 - mx) * sx), int((y1 - my) * sy)),
                    (int((x2 + mx) * sx), int((y2 + my) * sy)),
                    0,
                    thickness=-1,
                )
        return self.gate.moving_share(motion, region)

    def _motion_fractions(self, motion: MotionResult) -> dict[str, float]:
        fractions = {}
        height, width = motion.mask.shape
        for rule in self._motion_rules:
            if rule.zone is None:
                fractions[rule.rule_id] = motion.fraction
                continue
            key = f"{rule.rule_id}:{width}x{height}"
            if key not in self._zone_masks:
                self._zone_masks[key] = polygon_mask([rule.zone], width, height)
            fractions[rule.rule_id] = self.gate.fraction_in(motion, self._zone_masks[key])
        return fractions

    @staticmethod
    def _largest_motion_box(
        motion: MotionResult, width: int, height: int
    ) -> tuple[float, float, float, float] | None:
        if not motion.boxes:
            return None
        x1, y1, x2, y2 = max(motion.boxes, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]))
        return (x1 * width, y1 * height, x2 * width, y2 * height)

    # ---- stream state and timers ---------------------------------------------------------

    def stream_changed(self, state: StreamState, t: float) -> list[EmittedEvent]:
        if state is StreamState.CONNECTED:
            self._offline_since = None
            draft = self._offline_book.end("offline", t)
            return [self.factory.emit(self.camera.camera_id, draft, None)] if draft else []
        if state is StreamState.OFFLINE and self._offline_since is None:
            self._offline_since = t
        return []

    def tick(self, t: float) -> list[EmittedEvent]:
        """Timers that run without frames: a stream down past its grace period."""
        if self._offline_since is None or self._offline_book.is_open("offline"):
            return []
        if t - self._offline_since < self.camera.offline_grace_s:
            return []
        drafts = self.engine.end_all(t) + self._tamper_book.end_all(t)
        offline = self._offline_book.observe("offline", Observation(), t)
        drafts += [offline] if offline else []
        self._tracks_seen = False
        return [self.factory.emit(self.camera.camera_id, d, None) for d in drafts]

    def finish(self, t: float, *, replaced: bool = False) -> list[EmittedEvent]:
        """End every open thread: shutdown, or the end of a file. A pipeline `replaced` or
        removed by a new config ends its camera's offline thread too: the camera is fixed
        or gone, and its work order closes by that end (it stayed open for good). At a
        shutdown a camera that is offline stays so: the next start says so again."""
        drafts = self.engine.end_all(t) + self._tamper_book.end_all(t)
        if replaced:
            drafts += self._offline_book.end_all(t)
            self._offline_since = None
        return [self.factory.emit(self.camera.camera_id, d, None) for d in drafts]

    def recheck(self, rule_id: str) -> tuple[list[Track], Frame]:
        """Objects of a rule's classes in its zone on the newest frame, detected now: the
        cloud asks this before it closes a case ("is the situation really gone?")."""
        from edge.rules.geometry import Zone, anchor_point

        rule = next((r for r in self.camera.rules if r.rule_id == rule_id), None)
        if rule is None:
            raise KeyError(f"camera {self.camera.camera_id} has no rule {rule_id!r}")
        if self.detector is None or self.last_frame is None:
            raise LookupError(f"camera {self.camera.camera_id} has no frame or no model yet")
        frame = self.last_frame
        found = self.detect(frame)
        height, width = frame.image.shape[:2]
        zone_points = getattr(rule, "zone", None)
        zone = Zone(zone_points) if zone_points is not None else None
        present = []
        for i in range(len(found)):
            box = tuple(float(v) for v in found.xyxy[i])
            label = found.label_of(i)
            if label not in rule.classes or float(found.scores[i]) < rule.min_score:
                continue
            if zone is not None and not zone.contains(
                anchor_point(box, rule.anchor),  # type: ignore[arg-type]
                (width, height),
            ):
                continue
            present.append(Track(-1, box, float(found.scores[i]), label))  # type: ignore[arg-type]
        return present, frame

    def inference_percentiles(self) -> tuple[float, float]:
        return _percentile(self.inference_ms, 50), _percentile(self.inference_ms, 95)


def _still(before: list[Track], now: list[Track]) -> list[Track]:
    """Tracks whose box centre barely moved since the previous detection."""
    previous = {track.track_id: track.xyxy for track in before}
    still = []
    for track in now:
        old = previous.get(track.track_id)
        if old is None:
            continue
        x1, y1, x2, y2 = track.xyxy
        size = max(x2 - x1, y2 - y1, 1.0)
        dx = (x1 + x2 - old[0] - old[2]) / 2
        dy = (y1 + y2 - old[1] - old[3]) / 2
        if (dx * dx + dy * dy) ** 0.5 < STILL_MAX_SHIFT * size:
            still.append(track)
    return still


def media_clock(start: datetime) -> Callable[[float], datetime]:
    """Frame timestamps of an offline file (media seconds) → wall time from `start`."""
    return lambda t: start + timedelta(seconds=t)


def wall_clock() -> Callable[[float], datetime]:
    """Frame timestamps of a live camera (epoch seconds) → UTC datetimes."""
    return lambda t: datetime.fromtimestamp(t, UTC)
