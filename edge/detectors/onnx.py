"""Detection with onnxruntime, driven by a model profile. The only module importing it."""

from __future__ import annotations

import hashlib
import logging
import threading
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import onnx
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


def _any_input_size(model_path: Path) -> bytes:
    """The graph with its input's height and width (and so its outputs' sizes) left open:
    onnxruntime refuses any other size than the one a file declares."""
    model = onnx.load(str(model_path))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_param, dims[3].dim_param = "height", "width"
    for output in model.graph.output:
        for dim in output.type.tensor_type.shape.dim[1:]:
            dim.dim_param = "size"
    del model.graph.value_info[:]  # shapes recorded at export; onnxruntime infers them again
    return model.SerializeToString()


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
        self.threads = threads
        self._session = self._open(model_path)
        self._input = self._session.get_inputs()[0]
        self._output_names = [o.name for o in self._session.get_outputs()]
        self._check_shapes()
        batch = _dims(self._input.shape)[0]
        self.max_batch = 1 if batch == 1 else 16  # a dynamic batch dimension allows batching
        self._preprocess = Preprocessor(profile.input, stride=max(profile.strides))
        self._decoder = Decoder(profile)
        if profile.input.trim_padding:
            self._session = self._open(model_path, trimmed=True)
            self._check_trimmed()
        self.score_threshold = (
            profile.score_threshold if score_threshold is None else score_threshold
        )
        self._local = threading.local()

    def _open(self, model_path: Path, *, trimmed: bool = False) -> ort.InferenceSession:
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3  # old exporters list weights as inputs: 200 warnings
        try:
            graph: str | bytes = _any_input_size(model_path) if trimmed else str(model_path)
            return ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            raise ModelError(self.name, f"onnxruntime cannot load {model_path}: {exc}") from exc

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

    def _check_trimmed(self) -> None:
        """One run at a size smaller than the profile's: the graph must take it and answer
        with the rows the decoder's grid expects (a grid baked into the graph would not)."""
        stride = max(self.profile.strides)
        spec = self.profile.input
        size = (max(stride, spec.width - stride), max(stride, spec.height - stride))
        expected = expected_output_shapes(self.profile, len(self.labels), size)
        probe = np.zeros((1, 3, size[1], size[0]), np.float32)
        try:
            outputs = self._session.run(self._output_names, {self._input.name: probe})
        except Exception as exc:
            raise ModelError(
                self.name,
                f"input.trim_padding: the graph does not take a {size[0]}x{size[1]} input",
            ) from exc
        got = [tuple(o.shape[1:]) for o in outputs]
        if got != expected:
            raise ModelError(
                self.name,
                f"input.trim_padding: at {size[0]}x{size[1]} the graph answers {got}, the "
                f"decoder expects {expected}",
            )

    def _buffer(self, batch: int, width: int, height: int) -> npt.NDArray[np.float32]:
        # One input buffer per thread, batch and size: no allocation per frame, no sharing.
        buffers: dict[tuple[int, int, int], npt.NDArray[np.float32]] = getattr(
            self._local, "buffers", {}
        )
        key = (batch, width, height)
        if key not in buffers:
            buffers[key] = np.empty((batch, 3, height, width), np.float32)
            self._local.buffers = buffers
        return buffers[key]

    def detect(self, frame: npt.NDArray[np.uint8]) -> Detections:
        return self.detect_batch([frame])[0]

    def detect_batch(self, frames: list[npt.NDArray[np.uint8]]) -> list[Detections]:
        results: list[Detections | None] = [None] * len(frames)
        # Frames whose inputs have one size run together (trimmed inputs follow each
        # camera's aspect ratio).
        by_size: dict[tuple[int, int], list[int]] = {}
        for index, frame in enumerate(frames):
            placement = self._preprocess.place(frame.shape[1], frame.shape[0])
            by_size.setdefault((placement.input_width, placement.input_height), []).append(index)
        for (width, height), indices in by_size.items():
            for start in range(0, len(indices), self.max_batch):
                chunk = indices[start : start + self.max_batch]
                tensor = self._buffer(len(chunk), width, height)
                placements = [
                    self._preprocess(frames[index], out=tensor[i])[1]
                    for i, index in enumerate(chunk)
                ]
                outputs = self._session.run(self._output_names, {self._input.name: tensor})
                for i, (index, placement) in enumerate(zip(chunk, placements, strict=True)):
                    candidates = self._decoder(
                        [o[i] for o in outputs], self.score_threshold, (width, height)
                    )
                    results[index] = self._finish(candidates, placement)
        return [r for r in results if r is not None]

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
