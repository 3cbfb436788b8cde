"""Model outputs → boxes, scores and classes in input pixels, one function per head family.

Each follows the pre/post-processing its model was trained with (see the model profiles).
All are vectorised: a candidate filter first, then work only on the candidates.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from firmware_configs.models import ModelProfile

Array = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Candidates:
    """Boxes (x1, y1, x2, y2) in input pixels, before NMS."""

    xyxy: Array
    scores: Array
    class_ids: npt.NDArray[np.int64]


def _empty() -> Candidates:
    return Candidates(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))


def _grid(width: int, height: int, strides: Sequence[int]) -> tuple[Array, Array, Array]:
    """Cell column, row and stride of every output row, stride by stride, row-major."""
    xs, ys, ss = [], [], []
    for stride in strides:
        nx, ny = width // stride, height // stride
        gy, gx = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
        xs.append(gx.ravel())
        ys.append(gy.ravel())
        ss.append(np.full(nx * ny, stride))
    return (
        np.concatenate(xs).astype(np.float32),
        np.concatenate(ys).astype(np.float32),
        np.concatenate(ss).astype(np.float32),
    )


def expected_output_shapes(
    profile: ModelProfile, num_classes: int, size: tuple[int, int] | None = None
) -> list[tuple[int, ...]]:
    """The output shapes (batch dimension left out) the profile's decoder reads, for an
    input of `size` (width, height; the profile's by default)."""
    w, h = size or (profile.input.width, profile.input.height)
    cells = [(w // s) * (h // s) for s in profile.strides]
    match profile.decoder:
        case "yolox" | "yolov5":
            return [(sum(cells), 5 + num_classes)]
        case "yolov8":
            return [(4 + num_classes, sum(cells))]
        case "fastestdet":
            s = profile.strides[0]
            return [(5 + num_classes, h // s, w // s)]
        case "nanodet_gfl":
            return [(n, num_classes) for n in cells] + [
                (n, 4 * (profile.reg_max + 1)) for n in cells
            ]
    raise AssertionError(profile.decoder)


@dataclass(frozen=True)
class _Grid:
    """Cell column, row and stride of every output row for one input size."""

    gx: Array
    gy: Array
    gs: Array
    cells: list[int]  # rows per stride


class Decoder:
    """Decodes one image's outputs (batch dimension removed) for one profile."""

    def __init__(self, profile: ModelProfile) -> None:
        self.profile = profile
        self.threshold = profile.score_threshold
        self._grids: dict[tuple[int, int], _Grid] = {}
        self._decode: Callable[[list[Array], float, _Grid], Candidates] = {
            "yolox": self._yolox,
            "yolov5": self._yolov5,
            "yolov8": self._yolov8,
            "fastestdet": self._fastestdet,
            "nanodet_gfl": self._nanodet_gfl,
        }[profile.decoder]

    def __call__(
        self,
        outputs: list[Array],
        threshold: float | None = None,
        size: tuple[int, int] | None = None,
    ) -> Candidates:
        """`size` is the input's (width, height) when it is not the profile's (trimmed)."""
        grid = self._grid(size or (self.profile.input.width, self.profile.input.height))
        return self._decode(outputs, self.threshold if threshold is None else threshold, grid)

    def _grid(self, size: tuple[int, int]) -> _Grid:
        grid = self._grids.get(size)
        if grid is None:
            w, h = size
            strides = self.profile.strides
            grid = _Grid(*_grid(w, h, strides), [(w // s) * (h // s) for s in strides])
            self._grids[size] = grid
        return grid

    def _yolox(self, outputs: list[Array], threshold: float, grid: _Grid) -> Candidates:
        out = outputs[0]
        # obj * cls > t needs obj > t (cls <= 1): a cheap first filter.
        rows = np.nonzero(out[:, 4] > threshold)[0]
        if rows.size == 0:
            return _empty()
        cand = out[rows]
        class_scores = cand[:, 5:] * cand[:, 4:5]
        class_ids = class_scores.argmax(axis=1)
        scores = class_scores[np.arange(rows.size), class_ids]
        keep = scores > threshold
        rows, cand, class_ids, scores = rows[keep], cand[keep], class_ids[keep], scores[keep]
        s = grid.gs[rows]
        cx = (cand[:, 0] + grid.gx[rows]) * s
        cy = (cand[:, 1] + grid.gy[rows]) * s
        bw = np.exp(cand[:, 2]) * s
        bh = np.exp(cand[:, 3]) * s
        xyxy = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1)
        return Candidates(
            xyxy.astype(np.float32), scores.astype(np.float32), class_ids.astype(np.int64)
        )

    def _yolov5(self, outputs: list[Array], threshold: float, grid: _Grid) -> Candidates:
        out = outputs[0]  # cx, cy, w, h already in input pixels; obj; class probabilities
        rows = np.nonzero(out[:, 4] > threshold)[0]
        if rows.size == 0:
            return _empty()
        cand = out[rows]
        class_scores = cand[:, 5:] * cand[:, 4:5]
        class_ids = class_scores.argmax(axis=1)
        scores = class_scores[np.arange(rows.size), class_ids]
        keep = scores > threshold
        return _from_cxcywh(cand[keep, :4], scores[keep], class_ids[keep])

    def _yolov8(self, outputs: list[Array], threshold: float, grid: _Grid) -> Candidates:
        out = outputs[0].T  # (N, 4 + C): cx, cy, w, h in input pixels; class scores
        class_scores = out[:, 4:]
        class_ids = class_scores.argmax(axis=1)
        scores = class_scores[np.arange(out.shape[0]), class_ids]
        keep = scores > threshold
        return _from_cxcywh(out[keep, :4], scores[keep], class_ids[keep])

    def _fastestdet(self, outputs: list[Array], threshold: float, grid: _Grid) -> Candidates:
        out = outputs[0]  # (85, ny, nx)
        channels, ny, nx = out.shape
        flat = out.reshape(channels, ny * nx)
        obj = flat[0]
        # score = obj^0.6 * cls^0.4 > t needs obj^0.6 > t (cls <= 1).
        cells = np.nonzero(obj > threshold ** (1 / 0.6))[0]
        if cells.size == 0:
            return _empty()
        cls = flat[5:, cells]
        class_ids = cls.argmax(axis=0)
        scores = obj[cells] ** 0.6 * cls[class_ids, np.arange(cells.size)] ** 0.4
        keep = scores > threshold
        cells, class_ids, scores = cells[keep], class_ids[keep], scores[keep]
        gy, gx = np.divmod(cells, nx)
        reg = flat[1:5, cells]
        cx = (gx + np.tanh(reg[0])) / nx * self.profile.input.width
        cy = (gy + np.tanh(reg[1])) / ny * self.profile.input.height
        bw = 1 / (1 + np.exp(-reg[2])) * self.profile.input.width
        bh = 1 / (1 + np.exp(-reg[3])) * self.profile.input.height
        xyxy = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1)
        return Candidates(
            xyxy.astype(np.float32), scores.astype(np.float32), class_ids.astype(np.int64)
        )

    def _nanodet_gfl(self, outputs: list[Array], threshold: float, grid: _Grid) -> Candidates:
        levels = len(grid.cells)
        cls = np.concatenate(outputs[:levels], axis=0)
        dis = np.concatenate(outputs[levels:], axis=0)
        scores_all = cls.max(axis=1)
        rows = np.nonzero(scores_all > threshold)[0]
        if rows.size == 0:
            return _empty()
        class_ids = cls[rows].argmax(axis=1)
        scores = scores_all[rows]
        bins = self.profile.reg_max + 1
        logits = dis[rows].reshape(rows.size, 4, bins)
        logits = logits - logits.max(axis=2, keepdims=True)
        weights = np.exp(logits)
        weights /= weights.sum(axis=2, keepdims=True)
        s = grid.gs[rows]
        distances = (weights * np.arange(bins, dtype=np.float32)).sum(axis=2) * s[:, None]
        cx = (grid.gx[rows] + 0.5) * s
        cy = (grid.gy[rows] + 0.5) * s
        xyxy = np.stack(
            [
                cx - distances[:, 0],
                cy - distances[:, 1],
                cx + distances[:, 2],
                cy + distances[:, 3],
            ],
            axis=1,
        )
        return Candidates(
            xyxy.astype(np.float32), scores.astype(np.float32), class_ids.astype(np.int64)
        )


def _from_cxcywh(cxcywh: Array, scores: Array, class_ids: npt.NDArray[np.int64]) -> Candidates:
    cx, cy, w, h = cxcywh.T
    xyxy = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    return Candidates(
        xyxy.astype(np.float32), scores.astype(np.float32), class_ids.astype(np.int64)
    )
