"""Where the demo's model and clips come from, in order: GRIDWATCH_ASSETS, the shared
assets beside the repository, a local cache, or a download from pinned public addresses
checked against their sha256. Without any of them the demo says what is missing and runs
the model-free motion backend on a scene it draws itself."""

from __future__ import annotations

import hashlib
import logging
import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

REPOSITORY = Path(__file__).resolve().parents[2]
CACHE = Path.home() / ".cache" / "gridwatch" / "assets"
MODEL_FILE = "yolox_nano_416x416_coco80.onnx"
# Pinned: the commit in the address, the bytes by their hash (see the model profiles).
PINNED = {
    f"models/{MODEL_FILE}": (
        "https://raw.githubusercontent.com/Kazuhito00/YOLOX-ONNX-TFLite-Sample/"
        "0f785c070ce8da070aeaeef46c0da7904ff7012e/model/yolox_nano.onnx",
        "695e750a5d5754bb5a8d5325643b59282191a7e7a564e435a415fd3c578eab14",
    ),
    "video/car-detection.mp4": (
        "https://raw.githubusercontent.com/intel-iot-devkit/sample-videos/"
        "e9ab59cac368a61f7741a2373d7e79607c2f5e44/car-detection.mp4",
        "d31e0ebf194cc16e50eea784e7c3b0b1bb7976a4fb9b3fec26cb92a6704cca34",
    ),
    "video/one-by-one-person-detection.mp4": (
        "https://raw.githubusercontent.com/intel-iot-devkit/sample-videos/"
        "294517a8d149759972f9a0501accde274e469ba5/one-by-one-person-detection.mp4",
        "a5964aa259099a482a8b360ffc2c57b5a30f84d5919236a4dad01f8e929ac07c",
    ),
}


@dataclass(frozen=True)
class DemoAssets:
    models: Path | None  # None: the motion backend
    clips: dict[str, Path]
    source: str
    missing: list[str]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _complete(root: Path) -> bool:
    return all((root / name).is_file() for name in PINNED)


def _download(root: Path) -> list[str]:
    """Fetch what is missing into the cache; what could not be fetched, and why."""
    problems = []
    for name, (url, sha256) in PINNED.items():
        target = root / name
        if target.is_file() and _sha256(target) == sha256:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(target.suffix + ".part")
        try:
            with urllib.request.urlopen(url, timeout=30) as response, partial.open("wb") as out:  # noqa: S310 - pinned https
                while block := response.read(1 << 20):
                    out.write(block)
        except OSError as exc:
            problems.append(f"{name}: cannot download {url}: {exc}")
            partial.unlink(missing_ok=True)
            continue
        if _sha256(partial) != sha256:
            problems.append(f"{name}: the download's sha256 differs from the pinned one")
            partial.unlink()
            continue
        partial.replace(target)
    return problems


def find_assets(allow_download: bool = True) -> DemoAssets:
    candidates = []
    if os.environ.get("GRIDWATCH_ASSETS"):
        candidates.append(("GRIDWATCH_ASSETS", Path(os.environ["GRIDWATCH_ASSETS"])))
    candidates += [("shared assets", REPOSITORY.parent / "shared" / "assets"), ("cache", CACHE)]
    for label, root in candidates:
        if _complete(root):
            return DemoAssets(root / "models", _clips(root), f"{label} ({root})", [])
    missing = _download(CACHE) if allow_download else [f"{n}: not found" for n in PINNED]
    if _complete(CACHE):
        return DemoAssets(CACHE / "models", _clips(CACHE), f"downloaded ({CACHE})", [])
    return DemoAssets(None, {}, "none", missing)


def _clips(root: Path) -> dict[str, Path]:
    return {p.name: p for p in sorted((root / "video").glob("*.mp4"))}


def draw_scene(path: Path, seconds: int = 20, fps: int = 10) -> Path:
    """A test scene for the motion backend: a grey yard crossed by moving shapes."""
    import cv2
    import numpy as np

    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fourcc = cv2.VideoWriter.fourcc(*"MJPG")
    writer = cv2.VideoWriter(str(path), fourcc, fps, (640, 360))
    for frame_index in range(seconds * fps):
        frame = np.full((360, 640, 3), 90, np.uint8)
        x = (frame_index * 9) % 700 - 60
        cv2.rectangle(frame, (x, 150), (x + 60, 260), (40, 160, 220), -1)
        cv2.circle(frame, (640 - x, 90), 25, (220, 220, 220), -1)
        writer.write(frame)
    writer.release()
    return path
