"""Geometry in frame fractions: boxes, points, lines and polygons, valid at any resolution."""

from __future__ import annotations

from typing import Annotated, Self

from pydantic import AfterValidator, Field, model_validator

from protocols.base import WireModel

# Rounding in the edge's pixel→fraction conversion may put x + w a hair above 1.
EDGE_TOLERANCE = 1e-6

Fraction = Annotated[
    float, Field(strict=True, ge=0.0, le=1.0, description="A fraction of the frame, 0..1.")
]


class BBox(WireModel):
    """Bounding box as fractions of the frame: left, top, width, height."""

    x: Fraction
    y: Fraction
    w: float = Field(gt=0.0, le=1.0)
    h: float = Field(gt=0.0, le=1.0)

    @model_validator(mode="after")
    def _inside_frame(self) -> Self:
        if self.x + self.w > 1.0 + EDGE_TOLERANCE:
            raise ValueError(f"x + w = {self.x + self.w:g} lies outside the frame [0, 1]")
        if self.y + self.h > 1.0 + EDGE_TOLERANCE:
            raise ValueError(f"y + h = {self.y + self.h:g} lies outside the frame [0, 1]")
        return self


Point = tuple[Fraction, Fraction]
"""(x, y) as fractions of the frame."""


def _cross(o: Point, a: Point, b: Point) -> float:
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])


def segments_cross(p1: Point, p2: Point, q1: Point, q2: Point) -> bool:
    """True when the closed segments p1p2 and q1q2 share a point."""
    d1, d2 = _cross(q1, q2, p1), _cross(q1, q2, p2)
    d3, d4 = _cross(p1, p2, q1), _cross(p1, p2, q2)
    if ((d1 > 0) != (d2 > 0)) and ((d3 > 0) != (d4 > 0)) and 0 not in (d1, d2, d3, d4):
        return True

    def on_segment(a: Point, b: Point, c: Point) -> bool:
        return min(a[0], b[0]) <= c[0] <= max(a[0], b[0]) and min(a[1], b[1]) <= c[1] <= max(
            a[1], b[1]
        )

    return (
        (d1 == 0 and on_segment(q1, q2, p1))
        or (d2 == 0 and on_segment(q1, q2, p2))
        or (d3 == 0 and on_segment(p1, p2, q1))
        or (d4 == 0 and on_segment(p1, p2, q2))
    )


def polygon_area(points: list[Point]) -> float:
    """Unsigned area (shoelace) in squared frame fractions."""
    total = 0.0
    for i, (x1, y1) in enumerate(points):
        x2, y2 = points[(i + 1) % len(points)]
        total += x1 * y2 - x2 * y1
    return abs(total) / 2.0


def _check_polygon(points: list[Point]) -> list[Point]:
    n = len(points)
    if len(set(points)) != n:
        raise ValueError("polygon repeats a vertex")
    edges = [(points[i], points[(i + 1) % n]) for i in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            if j == i + 1 or (i == 0 and j == n - 1):
                continue  # neighbouring edges share a vertex by construction
            if segments_cross(*edges[i], *edges[j]):
                raise ValueError(f"polygon is self-intersecting (edges {i} and {j} cross)")
    if polygon_area(points) < 1e-6:
        raise ValueError("polygon has no area")
    return points


Polygon = Annotated[
    list[Point],
    Field(
        min_length=3,
        max_length=64,
        description="Simple polygon: 3-64 (x, y) vertices in frame fractions, in order.",
    ),
    AfterValidator(_check_polygon),
]


def _check_line(points: tuple[Point, Point]) -> tuple[Point, Point]:
    if points[0] == points[1]:
        raise ValueError("line endpoints are the same point")
    return points


Line = Annotated[
    tuple[Point, Point],
    AfterValidator(_check_line),
    Field(
        description=(
            "Directed line A→B in frame fractions; crossing it from its left-hand side to its"
            " right-hand side, as drawn on the image, is `in`."
        )
    ),
]
