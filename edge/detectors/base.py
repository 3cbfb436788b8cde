"""What every detector returns and promises."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Detections:
    """N detections in pixels of the frame they came from (x1, y1, x2, y2)."""

    xyxy: FloatArray  # (N, 4)
    scores: FloatArray  # (N,)
    class_ids: IntArray  # (N,)
    labels: tuple[str, ...] = field(default=())  # label per class id

    @classmethod
    def empty(cls, labels: tuple[str, ...] = ()) -> Detections:
        return cls(
            np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64), labels
        )

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def label_of(self, index: int) -> str:
        return self.labels[int(self.class_ids[index])]


class Detector(Protocol):
    """A detector turns a BGR frame into detections. Implementations are thread-safe."""

    name: str
    labels: tuple[str, ...]
    sha256: str | None

    def detect(self, frame: npt.NDArray[np.uint8]) -> Detections: ...

    def detect_batch(self, frames: list[npt.NDArray[np.uint8]]) -> list[Detections]: ...
