"""Event drafts → protocols DetectionEvents with ids, sequence numbers and JPEG snapshots."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID

import cv2
import numpy as np
import numpy.typing as npt

from edge.rules.observations import EventDraft, PixelBox
from protocols.config import PublishSettings
from protocols.enums import EventPhase, SnapshotVariant
from protocols.events import DetectionEvent, ModelRef, Snapshot
from protocols.identifiers import uuid7_at

_BOX_COLOUR = (0, 0, 255)  # BGR red
_CROP_MARGIN = 0.15


@dataclass(frozen=True)
class EmittedEvent:
    """An event ready for the outbox: the message and its snapshot JPEGs."""

    event: DetectionEvent
    snapshots: dict[SnapshotVariant, bytes] = field(default_factory=dict)


class SequenceCounter:
    """Per-node event sequence numbers, thread-safe; the agent persists them (outbox)."""

    def __init__(self, start: int = 0) -> None:
        self._next = start
        self._lock = threading.Lock()

    def __call__(self) -> int:
        with self._lock:
            value = self._next
            self._next += 1
            return value


def _encode_jpeg(image: npt.NDArray[np.uint8], quality: int) -> bytes:
    ok, buffer = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buffer.tobytes()


def _snapshot(
    variant: SnapshotVariant, image: npt.NDArray[np.uint8], quality: int
) -> tuple[Snapshot, bytes]:
    data = _encode_jpeg(image, quality)
    height, width = image.shape[:2]
    meta = Snapshot(
        variant=variant,
        size_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        width=width,
        height=height,
    )
    return meta, data


def render_snapshots(
    frame: npt.NDArray[np.uint8], box: PixelBox | None, settings: PublishSettings
) -> dict[SnapshotVariant, tuple[Snapshot, bytes]]:
    """The full frame (box drawn, scaled to the width limit) and a crop of the object."""
    height, width = frame.shape[:2]
    scale = min(1.0, settings.snapshot_max_width / width)
    full = (
        frame
        if scale == 1.0
        else cv2.resize(
            frame, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA
        )
    )
    out = {}
    if box is not None:
        full = full.copy()
        x1, y1, x2, y2 = (round(v * scale) for v in box)
        cv2.rectangle(full, (x1, y1), (x2, y2), _BOX_COLOUR, max(2, full.shape[1] // 400))
        bw, bh = box[2] - box[0], box[3] - box[1]
        cx1 = int(max(0, box[0] - bw * _CROP_MARGIN))
        cy1 = int(max(0, box[1] - bh * _CROP_MARGIN))
        cx2 = int(min(width, box[2] + bw * _CROP_MARGIN))
        cy2 = int(min(height, box[3] + bh * _CROP_MARGIN))
        if cx2 - cx1 >= 8 and cy2 - cy1 >= 8:
            out[SnapshotVariant.CROP] = _snapshot(
                SnapshotVariant.CROP, frame[cy1:cy2, cx1:cx2], settings.snapshot_quality
            )
    out[SnapshotVariant.FRAME] = _snapshot(SnapshotVariant.FRAME, full, settings.snapshot_quality)
    return out


class EventFactory:
    """Makes the node's DetectionEvents: UUIDv7 ids, the node's `seq`, snapshots on start."""

    def __init__(
        self,
        node_id: str,
        *,
        next_seq: Callable[[], int],
        to_datetime: Callable[[float], datetime],
        publish: PublishSettings,
        model: ModelRef | None = None,
    ) -> None:
        self.node_id = node_id
        self.next_seq = next_seq
        self.to_datetime = to_datetime
        self.publish = publish
        self.model = model
        # A situation's id on the wire, by its id in the rules: made at the time its start
        # was observed, as every event id is (the protocol keeps the two within an hour:
        # media time of a recorded clip is not now).
        self._threads: dict[UUID, UUID] = {}

    def emit(
        self, camera_id: str, draft: EventDraft, frame: npt.NDArray[np.uint8] | None
    ) -> EmittedEvent:
        observed_at = self.to_datetime(draft.t)
        event_id = uuid7_at(observed_at)
        if draft.phase is EventPhase.START:
            self._threads[draft.thread_id] = event_id
            thread_id = event_id
        elif draft.phase is EventPhase.END:
            thread_id = self._threads.pop(draft.thread_id, draft.thread_id)
        else:
            thread_id = self._threads.get(draft.thread_id, draft.thread_id)
        obs = draft.observation
        snapshots: dict[SnapshotVariant, tuple[Snapshot, bytes]] = {}
        if draft.phase is EventPhase.START and frame is not None:
            snapshots = render_snapshots(frame, obs.box, self.publish)
        event = DetectionEvent(
            event_id=event_id,
            thread_id=thread_id,
            seq=self.next_seq(),
            node_id=self.node_id,
            camera_id=camera_id,
            observed_at=observed_at,
            kind=draft.kind,
            phase=draft.phase,
            severity=draft.severity,
            rule_id=draft.rule_id,
            label=obs.label,
            score=None if obs.score is None else min(1.0, max(0.0, obs.score)),
            bbox=obs.bbox,
            track_id=obs.track_id,
            direction=obs.direction,
            dwell_s=obs.dwell_s,
            count=obs.count,
            tamper=obs.tamper,
            snapshots=[meta for meta, _ in snapshots.values()],
            model=self.model if obs.label not in (None, "motion") else None,
        )
        return EmittedEvent(event, {variant: data for variant, (_, data) in snapshots.items()})
