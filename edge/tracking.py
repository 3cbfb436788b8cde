"""Stable track ids across frames with ByteTrack from Roboflow's `trackers` library.

`trackers` declares the GUI build of OpenCV as a dependency, which fights the headless
build over the `cv2` package; it is installed with `--no-deps` and its real dependencies
are listed in gridwatch's edge extra (see the README).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import supervision as sv
from trackers import ByteTrackTracker

from edge.detectors.base import Detections


@dataclass(frozen=True)
class Track:
    track_id: int
    xyxy: tuple[float, float, float, float]  # pixels
    score: float
    label: str


class Tracker:
    """One per camera. Frames may arrive irregularly (motion gating), so updates carry
    their timestamp and the Kalman filter predicts over the real gap."""

    def __init__(
        self,
        frame_rate: float,
        *,
        lost_track_s: float = 2.0,
        activation_score: float = 0.4,
        high_score: float = 0.5,
        min_consecutive: int = 2,
    ) -> None:
        self._tracker = ByteTrackTracker(
            lost_track_buffer=max(1, round(lost_track_s * 30)),  # counted in 30 fps frames
            frame_rate=frame_rate,
            track_activation_threshold=activation_score,
            minimum_consecutive_frames=min_consecutive,
            high_conf_det_threshold=high_score,
        )

    def update(self, detections: Detections, timestamp: float) -> list[Track]:
        """Tracks seen in this frame; detections not yet confirmed as a track are left out."""
        detections = merge_across_classes(detections)
        if len(detections):
            sv_detections = sv.Detections(
                xyxy=detections.xyxy.astype(np.float32),
                confidence=detections.scores.astype(np.float32),
                class_id=detections.class_ids.astype(int),
            )
        else:
            sv_detections = sv.Detections.empty()
        tracked = self._tracker.update(sv_detections, timestamp=timestamp)
        if tracked.tracker_id is None or tracked.class_id is None or tracked.confidence is None:
            return []
        return [
            Track(
                int(track_id),
                (float(x1), float(y1), float(x2), float(y2)),
                float(score),
                detections.labels[int(class_id)] if detections.labels else str(class_id),
            )
            for (x1, y1, x2, y2), track_id, score, class_id in zip(
                tracked.xyxy, tracked.tracker_id, tracked.confidence, tracked.class_id, strict=True
            )
            if track_id >= 0
        ]


# Nano models often give one object two labels (an overhead car: "cell phone" and "bus");
# one object must be one track, so boxes this similar are merged whatever their class.
CROSS_CLASS_IOU = 0.7


def merge_across_classes(detections: Detections) -> Detections:
    if len(detections) < 2:
        return detections
    xyxy = detections.xyxy
    xywh = np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1)
    keep = np.asarray(
        cv2.dnn.NMSBoxes(xywh, detections.scores, 0.0, CROSS_CLASS_IOU), np.int64
    ).ravel()
    if keep.size == len(detections):
        return detections
    keep.sort()
    return Detections(
        xyxy[keep], detections.scores[keep], detections.class_ids[keep], detections.labels
    )
