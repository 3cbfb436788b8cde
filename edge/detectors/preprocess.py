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
    input_width: int  # of the tensor (smaller than the profile's when padding is trimmed)
    input_height: int

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

    def __init__(self, spec: InputSpec, *, stride: int = 32) -> None:
        self.spec = spec
        self.stride = stride  # what a trimmed input is rounded up to
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
            return Placement(
                spec.width / width,
                spec.height / height,
                0.0,
                0.0,
                width,
                height,
                spec.width,
                spec.height,
            )
        ratio = min(spec.width / width, spec.height / height)
        new_w, new_h = int(width * ratio), int(height * ratio)
        in_w, in_h = spec.width, spec.height
        if spec.trim_padding:
            in_w = min(in_w, -(-new_w // self.stride) * self.stride)
            in_h = min(in_h, -(-new_h // self.stride) * self.stride)
        if spec.resize == "letterbox_center":
            pad_x, pad_y = (in_w - new_w) // 2, (in_h - new_h) // 2
        else:
            pad_x = pad_y = 0
        return Placement(ratio, ratio, float(pad_x), float(pad_y), width, height, in_w, in_h)

    def __call__(
        self, frame: npt.NDArray[np.uint8], out: npt.NDArray[np.float32] | None = None
    ) -> tuple[npt.NDArray[np.float32], Placement]:
        """Return a (3, H, W) tensor (written into `out` when given) and its placement; H
        and W are the placement's input size."""
        spec = self.spec
        height, width = frame.shape[:2]
        placement = self.place(width, height)
        in_w, in_h = placement.input_width, placement.input_height
        if spec.resize == "stretch":
            canvas = cv2.resize(frame, (in_w, in_h), interpolation=self._interpolation)
        else:
            new_w, new_h = int(width * placement.sx), int(height * placement.sy)
            canvas = np.full((in_h, in_w, 3), spec.pad_value, np.uint8)
            x0, y0 = int(placement.pad_x), int(placement.pad_y)
            canvas[y0 : y0 + new_h, x0 : x0 + new_w] = cv2.resize(
                frame, (new_w, new_h), interpolation=self._interpolation
            )
        if spec.channel_order == "rgb":
            canvas = canvas[:, :, ::-1]
        tensor = out if out is not None else np.empty((3, in_h, in_w), np.float32)
        tensor[...] = canvas.transpose(2, 0, 1)
        if not self._identity:
            tensor *= self._gain
            tensor += self._offset
        return tensor, placement
