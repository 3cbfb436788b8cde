"""Fixtures for edge tests: frames from the asset clips, detectors, RTSP cameras."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from edge.detectors.onnx import OnnxDetector
from firmware_configs.models import load_model_profile
from tests.support.rtsp import RtspServer, rtsp_server_script

Image = npt.NDArray[np.uint8]


def read_frame(path: Path, index: int) -> Image:
    capture = cv2.VideoCapture(str(path))
    capture.set(cv2.CAP_PROP_POS_FRAMES, index)
    ok, frame = capture.read()
    capture.release()
    assert ok, f"cannot read frame {index} of {path}"
    return frame


def load_asset(assets_dir: Path, key: str) -> Image:
    """An image, or `video/clip.mp4#frame=N`, from the assets."""
    if "#frame=" in key:
        path, index = key.split("#frame=")
        return read_frame(assets_dir / path, int(index))
    image = cv2.imread(str(assets_dir / key))
    assert image is not None, key
    return image


@pytest.fixture(scope="session")
def detector_for(assets_dir: Path) -> Callable[..., OnnxDetector]:
    """A shared detector for a profile, its threshold, and changes to its input spec."""
    cache: dict[tuple[object, ...], OnnxDetector] = {}

    def build(profile: str, threshold: float | None = None, **input_spec: object) -> OnnxDetector:
        key = (profile, threshold, *sorted(input_spec.items()))
        if key not in cache:
            spec = load_model_profile(profile)
            if input_spec:
                spec = spec.model_copy(update={"input": spec.input.model_copy(update=input_spec)})
            cache[key] = OnnxDetector(
                spec, assets_dir / "models" / spec.file, score_threshold=threshold
            )
        return cache[key]

    return build


@pytest.fixture(scope="session")
def car_clip(assets_dir: Path) -> Path:
    return assets_dir / "video" / "car-detection.mp4"


@pytest.fixture(scope="session")
def person_clip(assets_dir: Path) -> Path:
    return assets_dir / "video" / "one-by-one-person-detection.mp4"


RtspFactory = Callable[..., RtspServer]


@pytest.fixture
def rtsp_factory(assets_dir: Path) -> Iterator[RtspFactory]:
    started: list[RtspServer] = []

    def start(clips: list[Path], port: int | None = None) -> RtspServer:
        server = RtspServer(rtsp_server_script(assets_dir), clips, port).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
