"""The teacher: a catalog SSD run with every tensor kept, so its raw per-anchor outputs are the targets.

The same reader opens the exported student (its grafted postprocess op has the same inputs, person only), so the
gate decodes both models' raw outputs one way (:meth:`Teacher.detections`) and reads the op's own top-10 beside it.

Tensor contract (TF1 SSD export with ``TFLite_Detection_PostProcess``): the op's inputs are the box encodings
``[1, A, 4]`` (ty, tx, th, tw, uint8), the class scores ``[1, A, C+1]`` (sigmoid, column 0 = background, uint8;
``[1, A, C]`` without a background column, as the student's ``C = 1``)
and the anchors ``[A, 4]`` (yc, xc, h, w, uint8 constant); its custom options (a flexbuffer map) hold the box
coder scales, NMS settings and ``max_detections``. The interpreter runs with ``experimental_preserve_all_tensors``
so the op's inputs can be read after ``invoke``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgevision.detection import ssd
from edgevision.detection.detector import quantize_input
from edgevision.distill.gate import PERSON, UNCAPPED_K, FrameDets, decode_nms
from edgevision.errors import ModelError
from edgevision.inference import adapter
from edgevision.inference.tflite_file import POSTPROCESS_CUSTOM_OP

EPS = 1e-4


@dataclass(frozen=True)
class TeacherOutputs:
    """Teacher targets of one frame: person score and box encodings per anchor, and its final detections."""

    person: np.ndarray  # [A] sigmoid score of class person
    boxes: np.ndarray  # [A, 4] box encodings (ty, tx, th, tw), dequantized
    best_score: np.ndarray  # [A] each anchor's best class score (what the op's fast NMS sorts by)
    best_class: np.ndarray  # [A] that class, 0-based (first on ties, like the op)
    det_boxes: np.ndarray  # [N, 4] postprocess boxes (ymin, xmin, ymax, xmax)
    det_classes: np.ndarray  # [N]
    det_scores: np.ndarray  # [N]


@dataclass(frozen=True)
class PostprocessSpec:
    """Where the postprocess op reads from, and its options, in the teacher's flatbuffer."""

    box_input: int
    class_input: int
    anchors_input: int
    options: bytes  # flexbuffer custom options


def postprocess_spec(path: Path | bytes) -> PostprocessSpec:
    """Find the teacher's postprocess op; a model without one is not an SSD we can distil from."""
    from edgevision.distill.replica import read_graph

    g = read_graph(path)
    ops = [op for op in g.sg.operators if g.op_name(op) == POSTPROCESS_CUSTOM_OP]
    if len(ops) != 1:
        raise ModelError(
            f"{'model' if isinstance(path, bytes) else path}: the teacher must be an SSD with one {POSTPROCESS_CUSTOM_OP} op (found {len(ops)}); "
            "use a catalog SSD such as ssd_mobilenet_v1_coco_quant"
        )
    op = ops[0]
    return PostprocessSpec(
        int(op.inputs[0]), int(op.inputs[1]), int(op.inputs[2]), bytes(np.asarray(op.customOptions, np.uint8))
    )


def postprocess_options(spec: PostprocessSpec) -> dict[str, Any]:
    import flatbuffers.flexbuffers as flex

    return dict(flex.Loads(spec.options))


class Teacher:
    """A loaded teacher with all tensors preserved (slower than a normal interpreter; used only for targets)."""

    def __init__(self, path: Path | bytes, threads: int = 2) -> None:
        self.path = path
        self.spec = postprocess_spec(path)
        self.options = postprocess_options(self.spec)
        self.interp = adapter.load(
            path if isinstance(path, bytes) else str(path), threads, preserve_all_tensors=True
        )
        inp = self.input = adapter.inputs(self.interp)[0]
        self.input_dtype = inp["dtype"]
        self.size = int(inp["shape"][1])
        if int(inp["shape"][2]) != self.size:
            raise ModelError(f"{self.name}: input must be square, got {list(inp['shape'])}")
        self.outs = adapter.outputs(self.interp)
        details = self.details = adapter.tensors(self.interp)
        self._box_q = details[self.spec.box_input]["quantization"]
        self._cls_q = details[self.spec.class_input]["quantization"]
        columns = int(details[self.spec.class_input]["shape"][-1])
        n_classes = int(self.options.get("num_classes", columns - 1))
        # like the op: column 0 is background when there is one more column than classes
        self.label_offset = columns - n_classes
        self.columns = columns  # class columns per anchor, background included when there is one
        if self.label_offset not in (0, 1) or n_classes < 1:
            raise ModelError(
                f"{self.name}: class predictions have {columns} column(s) for {n_classes} classes; "
                "expected C or C+1"
            )
        anchors = details[self.spec.anchors_input]
        self.anchors = _deq(adapter.get(self.interp, anchors), anchors)

    def run(self, rgb: np.ndarray) -> TeacherOutputs:
        """Targets for one RGB uint8 frame already resized to the teacher's input."""
        adapter.set_tensor(
            self.interp, self.input, quantize_input(rgb, self.input_dtype, (-1.0, 1.0))[np.newaxis]
        )
        adapter.invoke(self.interp)
        boxes = _deq_q(adapter.get(self.interp, self.details[self.spec.box_input]), self._box_q).reshape(
            -1, 4
        )
        scores = _deq_q(adapter.get(self.interp, self.details[self.spec.class_input]), self._cls_q)
        scores = scores.reshape(boxes.shape[0], -1)[:, self.label_offset :]
        outs = [adapter.get(self.interp, d) for d in self.outs]
        layout = ssd.postprocess_layout([d["name"] for d in self.outs], [list(o.shape) for o in outs])
        assert layout is not None
        n = ssd.detection_count(outs[layout.count])
        return TeacherOutputs(
            person=np.clip(scores[:, PERSON], 0.0, 1.0).astype(np.float32),
            boxes=boxes.astype(np.float32),
            best_score=scores.max(axis=1).astype(np.float32),
            best_class=scores.argmax(axis=1).astype(np.int32),
            det_boxes=np.asarray(outs[layout.boxes]).reshape(-1, 4)[:n].astype(np.float32),
            det_classes=np.asarray(outs[layout.classes]).reshape(-1)[:n].astype(np.int32),
            det_scores=np.asarray(outs[layout.scores]).reshape(-1)[:n].astype(np.float32),
        )

    @property
    def name(self) -> str:
        return "model bytes" if isinstance(self.path, bytes) else str(self.path)

    def detections(self, out: TeacherOutputs, max_detections: int = UNCAPPED_K) -> FrameDets:
        """``out`` decoded as this model's postprocess op decodes it (its box coder scales, NMS IoU and score
        floor), keeping up to ``max_detections``; with the op's own ``max_detections`` it equals ``det_*``."""
        o = self.options
        return decode_nms(
            out.boxes,
            out.best_score,
            out.best_class,
            self.anchors,
            float(o.get("nms_iou_threshold", 0.6)),
            float(o.get("nms_score_threshold", 0.0)),
            max_detections,
            (
                float(o.get("y_scale", 10.0)),
                float(o.get("x_scale", 10.0)),
                float(o.get("h_scale", 5.0)),
                float(o.get("w_scale", 5.0)),
            ),
        )


def _deq(values: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    return _deq_q(values, detail["quantization"])


def _deq_q(values: np.ndarray, q: tuple[float, int]) -> np.ndarray:
    scale, zero = q
    if scale and values.dtype != np.float32:
        return (values.astype(np.float32) - zero) * scale
    return values.astype(np.float32)


def person_logit(p: np.ndarray) -> np.ndarray:
    """Inverse sigmoid of a score, clipped away from 0 and 1 (uint8 scores reach both)."""
    q = np.clip(p, EPS, 1 - EPS)
    return np.log(q / (1 - q)).astype(np.float32)


def op_detections(out: TeacherOutputs) -> FrameDets:
    """The postprocess op's own detections (its ``max_detections``, all classes), best first."""
    return FrameDets(out.det_boxes, out.det_scores, out.det_classes)
