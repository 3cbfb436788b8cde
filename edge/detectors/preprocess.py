"""Frame → input tensor, as a model profile describes; and the way back for boxes."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from firmware_configs.models import InputSpec

_INTERPOLATION = {"linear": cv2.INTER_LINEAR, "area": cv2.INTER_AREA}


@dataclass(frozen=True)
class Placement:
    """Where the frame sits in the input: input = frame * (sx, sy) + (pad_x, pad_y)."""

    sx: float
    sy: float
    pad_x: float
    pad_y: float
    width: int  # of the original frame
    height: int

    def to_frame(self, xyxy: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Boxes in input pixels → boxes in frame pixels, clipped to the frame."""
        out = np.empty_like(xyxy)
        out[:, 0] = (xyxy[:, 0] - self.pad_x) / self.sx
        out[:, 2] = (xyxy[:, 2] - self.pad_x) / self.sx
        out[:, 1] = (xyxy[:, 1] - self.pad_y) / self.sy
        out[:, 3] = (xyxy[:, 3] - self.pad_y) / self.sy
        np.clip(out[:, 0::2], 0, self.width, out=out[:, 0::2])
        np.clip(out[:, 1::2], 0, self.height, out=out[:, 1::2])
        return out


class Preprocessor:
    """Builds the NCHW float32 tensor; thread-safe (no shared buffers)."""

    def __init__(self, spec: InputSpec) -> None:
        self.spec = spec
        self._interpolation = _INTERPOLATION[spec.interpolation]
        mean = np.asarray(spec.mean, np.float32)
        std = np.asarray(spec.std, np.float32)
        # One multiply-add per pixel: x * scale / std - mean / std.
        self._gain = (spec.scale / std).reshape(3, 1, 1).astype(np.float32)
        self._offset = (-mean / std).reshape(3, 1, 1).astype(np.float32)
        self._identity = bool(np.all(self._gain == 1.0) and np.all(self._offset == 0.0))

    def place(self, width: int, height: int) -> Placement:
        spec = self.spec
        if spec.resize == "stretch":
            return Placement(spec.width / width, spec.height / height, 0.0, 0.0, width, height)
        ratio = min(spec.width / width, spec.height / height)
        new_w, new_h = int(width * ratio), int(height * ratio)
        if spec.resize == "letterbox_center":
            pad_x, pad_y = (spec.width - new_w) // 2, (spec.height - new_h) // 2
        else:
            pad_x = pad_y = 0
        return Placement(ratio, ratio, float(pad_x), float(pad_y), width, height)

    def __call__(
        self, frame: npt.NDArray[np.uint8], out: npt.NDArray[np.float32] | None = None
    ) -> tuple[npt.NDArray[np.float32], Placement]:
        """Return a (3, H, W) tensor (written into `out` when given) and its placement."""
        spec = self.spec
        height, width = frame.shape[:2]
        placement = self.place(width, height)
        if spec.resize == "stretch":
            canvas = cv2.resize(frame, (spec.width, spec.height), interpolation=self._interpolation)
        else:
            new_w, new_h = int(width * placement.sx), int(height * placement.sy)
            canvas = np.full((spec.height, spec.width, 3), spec.pad_value, np.uint8)
            x0, y0 = int(placement.pad_x), int(placement.pad_y)
            canvas[y0 : y0 + new_h, x0 : x0 + new_w] = cv2.resize(
                frame, (new_w, new_h), interpolation=self._interpolation
            )
        if spec.channel_order == "rgb":
            canvas = canvas[:, :, ::-1]
        tensor = out if out is not None else np.empty((3, spec.height, spec.width), np.float32)
        tensor[...] = canvas.transpose(2, 0, 1)
        if not self._identity:
            tensor *= self._gain
            tensor += self._offset
        return tensor, placement
