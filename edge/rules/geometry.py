"""Where an object is relative to zones and lines, in pixels of its frame."""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

from edge.rules.observations import PixelBox
from protocols.geometry import Point, segments_cross

# Hysteresis for line crossing: closer than this (frame fraction) keeps the previous side.
LINE_DEAD_BAND = 0.004


def anchor(box: PixelBox) -> tuple[float, float]:
    """The point that stands for an object: bottom centre, where it touches the ground."""
    x1, _, x2, y2 = box
    return ((x1 + x2) / 2.0, y2)


def anchor_point(box: PixelBox, kind: str) -> tuple[float, float]:
    """The point a rule tests: `bottom_center` (default) or `center`."""
    return centre(box) if kind == "center" else anchor(box)


def centre(box: PixelBox) -> tuple[float, float]:
    x1, y1, x2, y2 = box
    return ((x1 + x2) / 2.0, (y1 + y2) / 2.0)


class Zone:
    """A polygon in frame fractions, tested in pixels for one frame size."""

    def __init__(self, polygon: list[Point]) -> None:
        self.polygon = polygon
        self._size: tuple[int, int] | None = None
        self._contour: npt.NDArray[np.float32] | None = None

    def _pixels(self, width: int, height: int) -> npt.NDArray[np.float32]:
        if self._size != (width, height) or self._contour is None:
            self._size = (width, height)
            self._contour = np.array(
                [[x * width, y * height] for x, y in self.polygon], np.float32
            ).reshape(-1, 1, 2)
        return self._contour

    def contains(self, point: tuple[float, float], size: tuple[int, int]) -> bool:
        """Whether `point` (pixels) lies in the zone on a frame of `size` (width, height)."""
        return cv2.pointPolygonTest(self._pixels(*size), point, False) >= 0


def side_of_line(
    line: tuple[Point, Point], point: tuple[float, float], width: int, height: int
) -> int:
    """-1 on the left of A→B as drawn on the image, +1 on the right, 0 on the line."""
    (ax, ay), (bx, by) = line
    px, py = point[0] / width, point[1] / height
    cross = (bx - ax) * (py - ay) - (by - ay) * (px - ax)
    length = ((bx - ax) ** 2 + (by - ay) ** 2) ** 0.5
    if abs(cross) / length < LINE_DEAD_BAND:
        return 0
    return 1 if cross > 0 else -1


def crosses_segment(
    line: tuple[Point, Point],
    start: tuple[float, float],
    end: tuple[float, float],
    width: int,
    height: int,
) -> bool:
    """Whether the move start→end (pixels) passes through the line segment itself."""
    a = (start[0] / width, start[1] / height)
    b = (end[0] / width, end[1] / height)
    return segments_cross(line[0], line[1], a, b)
