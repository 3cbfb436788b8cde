"""Errors of the edge agent; each names the camera, model or rule it is about."""

from __future__ import annotations


class EdgeError(Exception):
    """Base class for edge errors."""


class CameraError(EdgeError):
    """A camera cannot be opened or read."""

    def __init__(self, camera_id: str, reason: str) -> None:
        self.camera_id = camera_id
        self.reason = reason
        super().__init__(f"camera {camera_id}: {reason}")


class ModelError(EdgeError):
    """A detection model that cannot be used: missing, wrong checksum, wrong shape."""

    def __init__(self, model: str, reason: str) -> None:
        self.model = model
        self.reason = reason
        super().__init__(f"model {model}: {reason}")


class ModelChecksumError(ModelError):
    """The model file's sha256 differs from its profile's."""


class RuleError(EdgeError):
    """A rule that cannot be evaluated on its camera."""

    def __init__(self, camera_id: str, rule_id: str, reason: str) -> None:
        self.camera_id = camera_id
        self.rule_id = rule_id
        super().__init__(f"camera {camera_id} rule {rule_id}: {reason}")
