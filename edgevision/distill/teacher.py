"""The teacher: a catalog SSD run with every tensor kept, so its raw per-anchor outputs are the targets.

Tensor contract (TF1 SSD export with ``TFLite_Detection_PostProcess``): the op's inputs are the box encodings
``[1, A, 4]`` (ty, tx, th, tw, uint8), the class scores ``[1, A, C+1]`` (sigmoid, column 0 = background, uint8)
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
from edgevision.errors import ModelError
from edgevision.inference import adapter
from edgevision.inference.tflite_file import POSTPROCESS_CUSTOM_OP

PERSON = 0  # 0-based COCO id of "person" in the teacher's postprocess output
EPS = 1e-4


@dataclass(frozen=True)
class TeacherOutputs:
    """Teacher targets of one frame: person score and box encodings per anchor, and its final detections."""

    person: np.ndarray  # [A] sigmoid score of class person
    boxes: np.ndarray  # [A, 4] box encodings (ty, tx, th, tw), dequantized
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


def postprocess_spec(path: Path) -> PostprocessSpec:
    """Find the teacher's postprocess op; a model without one is not an SSD we can distil from."""
    from edgevision.distill.replica import read_graph

    g = read_graph(path)
    ops = [op for op in g.sg.operators if g.op_name(op) == POSTPROCESS_CUSTOM_OP]
    if len(ops) != 1:
        raise ModelError(
            f"{path}: the teacher must be an SSD with one {POSTPROCESS_CUSTOM_OP} op (found {len(ops)}); "
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

    def __init__(self, path: Path, threads: int = 2) -> None:
        self.path = path
        self.spec = postprocess_spec(path)
        self.options = postprocess_options(self.spec)
        self.interp = adapter.load(str(path), threads, preserve_all_tensors=True)
        inp = self.input = adapter.inputs(self.interp)[0]
        self.input_dtype = inp["dtype"]
        self.size = int(inp["shape"][1])
        if int(inp["shape"][2]) != self.size:
            raise ModelError(f"{path}: teacher input must be square, got {list(inp['shape'])}")
        self.outs = adapter.outputs(self.interp)
        details = self.details = adapter.tensors(self.interp)
        self._box_q = details[self.spec.box_input]["quantization"]
        self._cls_q = details[self.spec.class_input]["quantization"]
        n_classes = int(details[self.spec.class_input]["shape"][-1])
        if n_classes < 2:
            raise ModelError(f"{path}: teacher class predictions have {n_classes} column(s); expected C+1")
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
        scores = scores.reshape(boxes.shape[0], -1)
        outs = [adapter.get(self.interp, d) for d in self.outs]
        layout = ssd.postprocess_layout([d["name"] for d in self.outs], [list(o.shape) for o in outs])
        assert layout is not None
        n = int(np.asarray(outs[layout.count]).reshape(-1)[0])
        return TeacherOutputs(
            person=np.clip(scores[:, 1 + PERSON], 0.0, 1.0).astype(np.float32),
            boxes=boxes.astype(np.float32),
            det_boxes=np.asarray(outs[layout.boxes]).reshape(-1, 4)[:n].astype(np.float32),
            det_classes=np.asarray(outs[layout.classes]).reshape(-1)[:n].astype(np.int32),
            det_scores=np.asarray(outs[layout.scores]).reshape(-1)[:n].astype(np.float32),
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


def person_boxes(out: TeacherOutputs, threshold: float, top_k: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """The teacher's person boxes at ``threshold`` among its top-``top_k`` detections, and their scores."""
    keep = (out.det_classes[:top_k] == PERSON) & (out.det_scores[:top_k] >= threshold)
    return out.det_boxes[:top_k][keep], out.det_scores[:top_k][keep]
