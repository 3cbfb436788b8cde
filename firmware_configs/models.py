"""Model profiles: how to feed an ONNX detection model and read its output, as data.

One YAML file per model under `models/`; the edge's detector is built from a profile, so a
new model of a known family needs a file, not code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, model_validator

from firmware_configs.files import load_named, yaml_names
from protocols.identifiers import SHA256_PATTERN

MODELS_DIR = Path(__file__).resolve().parent / "models"
LABELS_DIR = MODELS_DIR / "labels"

Decoder = Literal["fastestdet", "yolox", "nanodet_gfl", "yolov5", "yolov8"]
# Decoders that place boxes on the grid themselves, so the graph's output is the same at any
# input size (YOLOv5/v8 exports usually bake their grid into the graph at one size).
GRID_OUTSIDE_GRAPH = frozenset({"yolox", "nanodet_gfl"})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InputSpec(_Strict):
    """The tensor the model takes: NCHW float32 of this size, made from a BGR frame."""

    width: int = Field(ge=16, le=4096)
    height: int = Field(ge=16, le=4096)
    channel_order: Literal["bgr", "rgb"] = Field(
        default="bgr", description="Order the model expects; frames arrive as BGR."
    )
    resize: Literal["stretch", "letterbox_top_left", "letterbox_center"] = Field(
        description="stretch ignores the aspect ratio; letterbox keeps it and pads."
    )
    interpolation: Literal["linear", "area"] = "linear"
    pad_value: float = Field(default=114.0, ge=0, le=255)
    scale: float = Field(default=1.0, gt=0, description="Pixels are multiplied by this first.")
    mean: tuple[float, float, float] = Field(
        default=(0.0, 0.0, 0.0), description="Subtracted per channel, in channel_order."
    )
    std: tuple[float, float, float] = Field(
        default=(1.0, 1.0, 1.0), description="Divided per channel, in channel_order."
    )
    trim_padding: bool = Field(
        default=False,
        description=(
            "Letterbox only: feed the letterboxed frame cut to the next multiple of the "
            "largest stride instead of the whole square (a 16:9 frame in 416x416 becomes "
            "416x256). The model sees the same picture with less padding to run over. Only "
            "for graphs that take any such size and whose grid is decoded outside the graph; "
            "the detector checks this when it loads."
        ),
    )

    @model_validator(mode="after")
    def _trim_needs_letterbox(self) -> Self:
        if self.trim_padding and self.resize == "stretch":
            raise ValueError("trim_padding needs a letterbox resize: stretch has no padding")
        return self


class ModelProfile(_Strict):
    """Everything the edge needs to run one detection model."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$", examples=["yolox_nano_416"])
    description: str = Field(max_length=500)
    file: str = Field(pattern=r"^[A-Za-z0-9._-]+\.onnx$", description="File name in the cache.")
    sha256: Annotated[str, Field(pattern=SHA256_PATTERN)]
    size_bytes: int = Field(gt=0)
    url: HttpUrl | None = Field(default=None, description="Pinned download address.")
    licence: str = Field(max_length=200)
    input: InputSpec
    decoder: Decoder
    strides: list[int] = Field(default=[8, 16, 32], min_length=1, max_length=5)
    reg_max: int = Field(default=7, ge=1, le=32, description="nanodet_gfl: bins per side - 1.")
    labels: str = Field(description="Label list file under models/labels, without .txt.")
    score_threshold: float = Field(ge=0.0, le=1.0)
    nms_iou: float = Field(ge=0.0, le=1.0)
    class_agnostic_nms: bool = False
    max_detections: int = Field(default=100, ge=1, le=1000)

    @model_validator(mode="after")
    def _labels_exist(self) -> Self:
        if not (LABELS_DIR / f"{self.labels}.txt").is_file():
            raise ValueError(f"labels {self.labels!r}: no file models/labels/{self.labels}.txt")
        return self

    @model_validator(mode="after")
    def _trim_fits_decoder(self) -> Self:
        if not self.input.trim_padding:
            return self
        if self.decoder not in GRID_OUTSIDE_GRAPH:
            raise ValueError(
                f"input.trim_padding: decoder {self.decoder!r} reads boxes the graph placed on "
                f"its own fixed grid; only {sorted(GRID_OUTSIDE_GRAPH)} can take another size"
            )
        stride = max(self.strides)
        if self.input.width % stride or self.input.height % stride:
            raise ValueError(
                f"input.trim_padding: {self.input.width}x{self.input.height} is not a "
                f"multiple of the largest stride {stride}"
            )
        return self

    def class_names(self) -> list[str]:
        return read_labels(self.labels)


def read_labels(name: str) -> list[str]:
    path = LABELS_DIR / f"{name}.txt"
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def load_model_profile(name_or_path: str | Path) -> ModelProfile:
    """A profile by name (models/<name>.yaml) or by path; errors name the file and field."""
    return load_named(name_or_path, MODELS_DIR, ModelProfile, "model profile")


def model_profile_names() -> list[str]:
    return yaml_names(MODELS_DIR)
