"""Build the detector a node's ModelSpec asks for. The `motion` backend needs no model."""

from __future__ import annotations

from pathlib import Path

from edge.detectors.base import Detector
from edge.errors import ModelError
from edge.model_store import find_model
from firmware_configs.errors import FirmwareConfigError
from firmware_configs.models import load_model_profile
from protocols.config import ModelSpec


def create_detector(spec: ModelSpec, cache_dir: Path | None = None) -> Detector | None:
    """The shared detector of the box, or None for the model-free motion backend."""
    match spec.backend:
        case "motion":
            return None
        case "onnx":
            from edge.detectors.onnx import OnnxDetector  # onnxruntime is imported there only

            try:
                profile = load_model_profile(spec.profile)
            except FirmwareConfigError as exc:
                raise ModelError(spec.profile, str(exc)) from exc
            if spec.sha256 is not None and spec.sha256 != profile.sha256:
                raise ModelError(
                    spec.profile,
                    f"config pins sha256 {spec.sha256}, the profile describes {profile.sha256}",
                )
            return OnnxDetector(
                profile,
                find_model(profile, cache_dir),
                threads=spec.threads,
                score_threshold=spec.score_threshold,
            )
    raise AssertionError(spec.backend)
