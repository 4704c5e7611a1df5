"""The SSD detector: preprocessing from the model's own input contract, inference, typed results.

Both SSD output styles are handled: models with ``TFLite_Detection_PostProcess`` (outputs mapped by shape and
name) and raw SSD heads (box encodings + class predictions, decoded with the SSD box coder and NMS in numpy).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import cv2
import numpy as np

from edgevision.config import DetectorConfig
from edgevision.detection import ssd
from edgevision.errors import ModelError
from edgevision.inference.backends import InterpreterHandle
from edgevision.inference.quant import dequantize, quantize_input
from edgevision.results.detection import Detection
from edgevision.results.frame import Frame, PreparedInput
from edgevision.results.result import DetectMode, DetectOutcome, Latency, SwitchInfo

# Default float input normalisation of TF Object Detection API SSDs: pixel / 127.5 - 1.
DEFAULT_FLOAT_RANGE = (-1.0, 1.0)


def to_rgb(frame_bgr: np.ndarray) -> np.ndarray:
    """A BGR, BGRA or grayscale frame as RGB (what every model here was trained on).

    Anything else (float or 16-bit pixels, no pixels, another number of channels) is a ``ValueError`` saying
    what was given: OpenCV's own assertion names none of it."""
    shape = getattr(frame_bgr, "shape", None)
    if (
        not isinstance(frame_bgr, np.ndarray)
        or frame_bgr.dtype != np.uint8
        or frame_bgr.ndim not in (2, 3)
        or (frame_bgr.ndim == 3 and frame_bgr.shape[2] not in (1, 3, 4))
        or 0 in frame_bgr.shape
    ):
        kind = getattr(frame_bgr, "dtype", type(frame_bgr).__name__)
        raise ValueError(
            f"an image must be uint8 pixels [H, W] or [H, W, 1|3|4] (grayscale, BGR, BGRA), got {kind} "
            f"{list(shape) if shape is not None else ''}".rstrip()
        )
    if frame_bgr.ndim == 3 and frame_bgr.shape[2] == 1:
        frame_bgr = frame_bgr[:, :, 0]
    if frame_bgr.ndim == 2:
        return cv2.cvtColor(frame_bgr, cv2.COLOR_GRAY2RGB)
    if frame_bgr.shape[2] == 4:
        return cv2.cvtColor(frame_bgr, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB)


def frame_rgb(frame: Frame, width: int, height: int, interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
    """``frame`` as ``height x width`` RGB for a model: a decoded picture nobody has converted yet is scaled by
    FFmpeg straight from its YUV (no full-resolution BGR is made); otherwise the frame's image is converted and
    resized with ``interpolation``."""
    if frame.decoded is not None and not frame.materialized:
        return frame.decoded.model_input(width, height)
    rgb = to_rgb(frame.image)
    if rgb.shape[0] != height or rgb.shape[1] != width:
        rgb = cv2.resize(rgb, (width, height), interpolation=interpolation)
    return rgb


class Detector:
    """An SSD detector bound to one loaded interpreter.

    Not thread-safe: one interpreter runs one ``invoke`` at a time. The pipeline owns one Detector per thread.
    """

    def __init__(
        self,
        handle: InterpreterHandle,
        labels: dict[int, str],
        config: DetectorConfig | None = None,
        name: str = "model",
        float_range: tuple[float, float] | None = None,
        anchors: np.ndarray | None = None,
        nms_iou: float = 0.6,
    ) -> None:
        self.handle = handle
        self.labels = labels
        self.config = config if config is not None else DetectorConfig()  # threshold, labels, max_detections
        self.name = name
        shape = handle.input_shape
        if len(shape) != 4 or shape[3] != 3:
            raise ModelError(f"{handle.model_path}: expected an image input [1, H, W, 3], got {list(shape)}")
        self.input_height, self.input_width = int(shape[1]), int(shape[2])
        self.input_dtype = handle.input_dtype
        self.float_range = float_range or DEFAULT_FLOAT_RANGE
        # what a prepared tensor must have been made for, besides the size (rungs of one side differ in it)
        self.input_domain = (self.input_dtype.str, self.float_range if self.input_dtype.kind == "f" else None)
        names = [str(d["name"]) for d in handle.output_details]
        shapes = [[int(x) for x in d["shape"]] for d in handle.output_details]
        self.pp_layout = ssd.postprocess_layout(names, shapes)
        self._classes_first = (
            True  # unnamed postprocess outputs: the layout's order until a frame tells (parse)
        )
        self.raw_layout = None if self.pp_layout else ssd.raw_layout(names, shapes)
        if self.pp_layout is None and self.raw_layout is None:
            raise ModelError(
                f"{handle.model_path}: outputs {list(zip(names, shapes, strict=True))} are neither "
                "TFLite_Detection_PostProcess outputs nor raw SSD outputs; is this a detection model?"
            )
        self.anchors = anchors
        if self.raw_layout is not None and self.raw_layout.anchors is None and anchors is None:
            raise ModelError(
                f"{handle.model_path}: raw SSD outputs without an anchors output; anchors are required"
            )
        self.nms_iou = nms_iou
        self.class_filter = self._class_filter(self.config.labels or None)

    def _class_filter(self, wanted: Sequence[str] | None) -> set[int] | None:
        if wanted is None:
            return None
        by_name = {v: k for k, v in self.labels.items()}
        unknown = [w for w in wanted if w not in by_name]
        if unknown:
            raise ModelError(f"unknown label(s) {', '.join(unknown)} for model '{self.name}'")
        return {by_name[w] for w in wanted}

    @property
    def input_size(self) -> tuple[int, int]:
        """(width, height) the model expects."""
        return self.input_width, self.input_height

    def preprocess(self, frame_bgr: np.ndarray) -> np.ndarray:
        """BGR (or grayscale) frame → ``[1, H, W, 3]`` input tensor in the model's dtype."""
        rgb = to_rgb(frame_bgr)
        if rgb.shape[0] != self.input_height or rgb.shape[1] != self.input_width:
            rgb = cv2.resize(rgb, (self.input_width, self.input_height), interpolation=cv2.INTER_LINEAR)
        return quantize_input(rgb, self.input_dtype, self.float_range)[np.newaxis]

    def preprocess_frame(self, frame: Frame) -> np.ndarray:
        """:meth:`preprocess` for a pipeline frame: a decoded picture is scaled by FFmpeg straight from its YUV
        to the input size (no full-resolution BGR is made); otherwise the frame's image is used."""
        rgb = frame_rgb(frame, self.input_width, self.input_height)
        return quantize_input(rgb, self.input_dtype, self.float_range)[np.newaxis]

    def infer(self, tensor: np.ndarray) -> list[Detection]:
        """Run the model on a preprocessed tensor and parse its outputs."""
        return self.parse(self.handle.run(tensor))

    def tensor_for(self, frame: Frame) -> tuple[np.ndarray, float]:
        """The input tensor for ``frame`` and the ms it took: the one the capture thread prepared when it was
        made for this model's input size and domain (dtype, float range), else made now."""
        p = frame.prepared
        if p is not None and p.size == self.input_size and p.domain == self.input_domain:
            return p.tensor, p.ms
        t0 = time.perf_counter()
        tensor = self.preprocess_frame(frame)
        return tensor, (time.perf_counter() - t0) * 1e3

    def prepare(self, frame: Frame) -> Frame:
        """``frame`` carrying this model's input tensor (the capture thread calls it, overlapping inference)."""
        t0 = time.perf_counter()
        tensor = self.preprocess_frame(frame)
        ms = (time.perf_counter() - t0) * 1e3
        return frame.with_prepared(PreparedInput(self.input_size, tensor, ms, domain=self.input_domain))

    def parse(self, outputs: list[np.ndarray]) -> list[Detection]:
        """Parse raw output tensors (as returned by the interpreter) into detections."""
        s = self.config
        if self.pp_layout is not None:
            lay = self.pp_layout
            count = ssd.detection_count(outputs[lay.count])
            classes, scores = outputs[lay.classes], outputs[lay.scores]
            if not lay.names_resolved:
                # The order is the model's, not the frame's: once a frame's values told it, a frame whose values
                # cannot (one saturated 1.0 score on class 0) is read the same way, not by the layout's guess.
                a, b = classes.reshape(-1), scores.reshape(-1)
                told = ssd.classes_first(a, b, count)
                if told is not None:
                    self._classes_first = told
                classes, scores = (a, b) if self._classes_first else (b, a)
            return ssd.parse_postprocess(
                outputs[lay.boxes],
                classes,
                scores,
                count,
                self.labels,
                s.threshold,
                s.max_detections,
                self.class_filter,
            )
        assert self.raw_layout is not None
        rl = self.raw_layout
        details = self.handle.output_details
        enc = dequantize(outputs[rl.box_encodings], details[rl.box_encodings])
        cls_detail = details[rl.class_predictions]
        cls = dequantize(outputs[rl.class_predictions], cls_detail)
        if rl.anchors is not None:
            anchors = dequantize(outputs[rl.anchors], details[rl.anchors])
        else:
            assert self.anchors is not None
            anchors = self.anchors
        # scores quantized onto [0, 1] are sigmoid outputs already; the range is the output type's (uint8 0..255,
        # int8 -128..127: a TF2 full-integer export), else int8 sigmoid scores were taken for logits
        scale, zero = cls_detail.get("quantization", (0.0, 0))
        dtype = np.dtype(cls_detail.get("dtype", outputs[rl.class_predictions].dtype))
        lo, hi = (np.iinfo(dtype).min, np.iinfo(dtype).max) if dtype.kind in "iu" else (0, 255)
        already_sigmoid = bool(scale) and (lo - zero) * scale >= -1e-6 and (hi - zero) * scale <= 1.0 + 1e-3
        return ssd.decode_raw(
            enc,
            cls,
            anchors,
            self.labels,
            s.threshold,
            self.nms_iou,
            s.max_detections,
            scores_are_logits=not already_sigmoid,
            class_filter=self.class_filter,
        )

    def detect_tensor(self, tensor: np.ndarray, preprocess_ms: float) -> tuple[list[Detection], Latency]:
        """Invoke on a prepared tensor and parse; detections and the stage times (ms)."""
        t1 = time.perf_counter()
        outputs = self.handle.run(tensor)
        t2 = time.perf_counter()
        dets = self.parse(outputs)
        t3 = time.perf_counter()
        return dets, Latency(preprocess=preprocess_ms, invoke=(t2 - t1) * 1e3, postprocess=(t3 - t2) * 1e3)

    def detect(self, frame_bgr: np.ndarray) -> tuple[list[Detection], Latency]:
        """Preprocess, infer and parse one image; returns detections and per-stage latency in ms."""
        t0 = time.perf_counter()
        tensor = self.preprocess(frame_bgr)
        return self.detect_tensor(tensor, (time.perf_counter() - t0) * 1e3)

    def detect_frame(self, frame: Frame) -> tuple[list[Detection], Latency]:
        """:meth:`detect` for a pipeline frame, using the tensor the capture thread prepared when it fits."""
        tensor, pre_ms = self.tensor_for(frame)
        return self.detect_tensor(tensor, pre_ms)


class FixedDetect:
    """The detect step of a run without a scheduler: the same detector on every frame (see ``DetectStep``)."""

    def __init__(self, detector: Detector) -> None:
        self.detector = detector

    @property
    def model(self) -> str:
        return self.detector.name

    def prepare(self, frame: Frame) -> Frame:
        return self.detector.prepare(frame)

    def detect(self, frame: Frame) -> DetectOutcome:
        dets, latency = self.detector.detect_frame(frame)
        return DetectOutcome(dets, latency, DetectMode.DETECTED, self.detector.name)

    def feedback(self, outcome: DetectOutcome, total_ms: float, wait_ms: float) -> SwitchInfo | None:
        return None

    def close(self) -> None:
        pass  # no workers
