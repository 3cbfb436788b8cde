"""Detection with onnxruntime, driven by a model profile. The only module importing it."""

from __future__ import annotations

import hashlib
import logging
import threading
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from edge.detectors.base import Detections
from edge.detectors.decoders import Candidates, Decoder, expected_output_shapes
from edge.detectors.preprocess import Placement, Preprocessor
from edge.errors import ModelChecksumError, ModelError
from firmware_configs.models import ModelProfile

logger = logging.getLogger(__name__)

_CHUNK = 1024 * 1024


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _dims(shape: list[int | str | None]) -> tuple[int | None, ...]:
    return tuple(d if isinstance(d, int) else None for d in shape)


class OnnxDetector:
    """One inference session per model, shared by every camera of the box.

    onnxruntime's `run` is thread-safe, so camera workers call `detect` concurrently; each
    run uses `threads` intra-op threads (one is the best throughput on a multi-camera box).
    """

    def __init__(
        self,
        profile: ModelProfile,
        model_path: Path,
        *,
        threads: int = 1,
        score_threshold: float | None = None,
        verify: bool = True,
    ) -> None:
        self.name = profile.name
        self.profile = profile
        if not model_path.is_file():
            raise ModelError(profile.name, f"file {model_path} not found")
        if verify:
            actual = file_sha256(model_path)
            if actual != profile.sha256:
                raise ModelChecksumError(
                    profile.name,
                    f"{model_path} has sha256 {actual}, the profile pins {profile.sha256}",
                )
        self.sha256: str | None = profile.sha256
        self.labels = tuple(profile.class_names())
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3  # old exporters list weights as inputs: 200 warnings
        try:
            self._session = ort.InferenceSession(
                str(model_path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            raise ModelError(profile.name, f"onnxruntime cannot load {model_path}: {exc}") from exc
        self._input = self._session.get_inputs()[0]
        self._output_names = [o.name for o in self._session.get_outputs()]
        self._check_shapes()
        batch = _dims(self._input.shape)[0]
        self.max_batch = 1 if batch == 1 else 16  # a dynamic batch dimension allows batching
        self._preprocess = Preprocessor(profile.input)
        self._decoder = Decoder(profile)
        self.score_threshold = (
            profile.score_threshold if score_threshold is None else score_threshold
        )
        self._local = threading.local()

    def _check_shapes(self) -> None:
        spec = self.profile.input
        got_in = _dims(self._input.shape)
        if got_in[1:] != (3, spec.height, spec.width):
            raise ModelError(
                self.name,
                f"input shape {list(self._input.shape)} does not fit "
                f"the profile's 3x{spec.height}x{spec.width}",
            )
        expected = expected_output_shapes(self.profile, len(self.labels))
        outputs = self._session.get_outputs()
        got = [_dims(o.shape)[1:] for o in outputs]
        if len(got) != len(expected) or any(
            len(g) != len(e) or any(d is not None and d != x for d, x in zip(g, e, strict=True))
            for g, e in zip(got, expected, strict=False)
        ):
            raise ModelError(
                self.name,
                f"output shapes {[list(o.shape) for o in outputs]} do not fit decoder "
                f"{self.profile.decoder} with {len(self.labels)} classes (expected "
                f"{[['N', *e] for e in expected]})",
            )

    def _buffer(self, batch: int) -> npt.NDArray[np.float32]:
        # One input buffer per thread and batch size: no allocation per frame, no sharing.
        buffers: dict[int, npt.NDArray[np.float32]] = getattr(self._local, "buffers", {})
        if batch not in buffers:
            spec = self.profile.input
            buffers[batch] = np.empty((batch, 3, spec.height, spec.width), np.float32)
            self._local.buffers = buffers
        return buffers[batch]

    def detect(self, frame: npt.NDArray[np.uint8]) -> Detections:
        return self.detect_batch([frame])[0]

    def detect_batch(self, frames: list[npt.NDArray[np.uint8]]) -> list[Detections]:
        results: list[Detections] = []
        for start in range(0, len(frames), self.max_batch):
            chunk = frames[start : start + self.max_batch]
            tensor = self._buffer(len(chunk))
            placements = [
                self._preprocess(frame, out=tensor[i])[1] for i, frame in enumerate(chunk)
            ]
            outputs = self._session.run(self._output_names, {self._input.name: tensor})
            for i, placement in enumerate(placements):
                candidates = self._decoder([o[i] for o in outputs], self.score_threshold)
                results.append(self._finish(candidates, placement))
        return results

    def _finish(self, candidates: Candidates, placement: Placement) -> Detections:
        if candidates.scores.size == 0:
            return Detections.empty(self.labels)
        xyxy = placement.to_frame(candidates.xyxy)
        xywh = np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1)
        if self.profile.class_agnostic_nms:
            keep = cv2.dnn.NMSBoxes(
                xywh, candidates.scores, self.score_threshold, self.profile.nms_iou
            )
        else:
            keep = cv2.dnn.NMSBoxesBatched(
                xywh,
                candidates.scores,
                candidates.class_ids,
                self.score_threshold,
                self.profile.nms_iou,
            )
        keep = np.asarray(keep, dtype=np.int64).ravel()[: self.profile.max_detections]
        return Detections(
            xyxy[keep], candidates.scores[keep], candidates.class_ids[keep], self.labels
        )
