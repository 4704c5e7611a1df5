"""Pure functions over raw SSD tensors: output layout, postprocess parsing, box decoding, anchors and NMS.

Nothing here touches an interpreter, so every function is tested on plain arrays.

Tensor contracts (batch dimension 1 everywhere):

* ``TFLite_Detection_PostProcess`` outputs: boxes ``[1, N, 4]`` float (ymin, xmin, ymax, xmax, normalized),
  classes ``[1, N]`` float (0-based, background removed), scores ``[1, N]`` float, count ``[1]`` float.
  Exporters order these four differently (TF1: boxes, classes, scores, count; TF2 exports often scores,
  boxes, count, classes), so :func:`postprocess_layout` maps them by shape and name, and
  :func:`classes_first` by value when names are not telling.
* Raw SSD outputs: box encodings ``[1, A, 4]`` (ty, tx, th, tw relative to the anchor, divided by the coder's
  scales), class predictions ``[1, A, C+1]`` (column 0 = background; logits or sigmoid scores), and anchors
  ``[A, 4]`` (ycenter, xcenter, height, width), normalized.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from edgevision.results.detection import BBox, Detection

#: Box coder scales of the TF Object Detection API's ``FasterRcnnBoxCoder`` as used by every SSD-MobileNet.
DEFAULT_BOX_SCALES = (10.0, 10.0, 5.0, 5.0)


@dataclass(frozen=True)
class PostprocessLayout:
    """Indexes of the four postprocess outputs. ``classes``/``scores`` may need value-based resolution."""

    boxes: int
    classes: int
    scores: int
    count: int
    names_resolved: bool


@dataclass(frozen=True)
class RawLayout:
    """Indexes of raw SSD outputs (no postprocess op); ``anchors`` is None when they come from elsewhere."""

    box_encodings: int
    class_predictions: int
    anchors: int | None


def postprocess_layout(names: Sequence[str], shapes: Sequence[Sequence[int]]) -> PostprocessLayout | None:
    """Map postprocess outputs by shape (and name, where the exporter's suffix tells), or None if not SSD-PP."""
    if len(shapes) != 4:
        return None
    dims = [tuple(int(d) for d in s) for s in shapes]
    boxes = [i for i, s in enumerate(dims) if len(s) == 3 and s[-1] == 4]
    count = [i for i, s in enumerate(dims) if int(np.prod(s)) == 1]
    if len(count) > 1:  # max_detections 1: classes and scores [1, 1] hold one value too; the count is 1-D
        count = [i for i in count if len(dims[i]) <= 1]
    pair = [i for i, s in enumerate(dims) if (len(s) == 2 and s[-1] > 1) or (len(s) == 2 and i not in count)]
    pair = [i for i in pair if i not in boxes and i not in count]
    if len(boxes) != 1 or len(count) != 1 or len(pair) != 2:
        return None
    a, b = pair
    suffix = {i: names[i].rsplit(":", 1)[-1] if ":" in names[i] else "0" for i in pair}
    base = {names[i].rsplit(":", 1)[0] for i in range(4)}
    if len(base) == 1 and "PostProcess" in next(iter(base)):
        # TF1 TFLite export of TFLite_Detection_PostProcess: :0 boxes, :1 classes, :2 scores, :3 count.
        if suffix[a] == "1" and suffix[b] == "2":
            return PostprocessLayout(boxes[0], a, b, count[0], True)
        if suffix[a] == "2" and suffix[b] == "1":
            return PostprocessLayout(boxes[0], b, a, count[0], True)
    return PostprocessLayout(boxes[0], a, b, count[0], False)


def raw_layout(names: Sequence[str], shapes: Sequence[Sequence[int]]) -> RawLayout | None:
    """Map raw SSD outputs: ``[1, A, 4]`` encodings, ``[1, A, C]`` class predictions, optional ``[A, 4]`` anchors."""
    dims = [tuple(int(d) for d in s) for s in shapes]
    enc = [i for i, s in enumerate(dims) if len(s) == 3 and s[0] == 1 and s[2] == 4]
    cls = [i for i, s in enumerate(dims) if len(s) == 3 and s[0] == 1 and s[2] > 1 and s[2] != 4]
    anc = [i for i, s in enumerate(dims) if len(s) == 2 and s[1] == 4]
    if len(enc) != 1 or len(cls) != 1 or dims[enc[0]][1] != dims[cls[0]][1]:
        # A model with 4 classes would make [1,A,4] ambiguous; prefer names then.
        if len(enc) == 2 and not cls:
            by_name = sorted(enc, key=lambda i: "class" in names[i].lower())
            enc, cls = [by_name[0]], [by_name[1]]
        else:
            return None
    return RawLayout(enc[0], cls[0], anc[0] if len(anc) == 1 else None)


def classes_first(a: np.ndarray, b: np.ndarray, count: int) -> bool | None:
    """Of the two ``[N]`` postprocess vectors in unknown order, is ``a`` the classes? None when this frame's
    values cannot tell (no detection; or every class id and every score exactly 0 or 1: a float model's
    saturated sigmoid on one confident person).

    Classes are whole numbers; scores lie in ``[0, 1]`` and are sorted in decreasing order.
    """
    n = max(0, min(count, a.shape[0]))
    av, bv = a[:n], b[:n]

    def looks_like_scores(v: np.ndarray) -> bool:
        return bool(np.all((v >= 0) & (v <= 1)) and np.all(np.diff(v) <= 1e-6))

    def whole(v: np.ndarray) -> bool:
        return bool(np.all(np.abs(v - np.round(v)) < 1e-6))

    if whole(av) != whole(bv):
        return whole(av)
    if looks_like_scores(av) != looks_like_scores(bv):
        return looks_like_scores(bv)
    return None


def detection_count(count: np.ndarray | float) -> int:
    """The postprocess op's valid-entry count as an int; a float model's NaN, infinite or negative count is 0
    (no detection on that frame, rather than a ``ValueError`` that ended the run)."""
    value = float(np.asarray(count, dtype=np.float64).reshape(-1)[0])
    return int(value) if math.isfinite(value) and value > 0 else 0


def parse_postprocess(
    boxes: np.ndarray,
    classes: np.ndarray,
    scores: np.ndarray,
    count: np.ndarray | float,
    labels: dict[int, str],
    threshold: float,
    max_detections: int | None = None,
    class_filter: Iterable[int] | None = None,
) -> list[Detection]:
    """Turn postprocess outputs into :class:`Detection` objects, best first.

    ``boxes`` is ``[1, N, 4]`` or ``[N, 4]`` in (ymin, xmin, ymax, xmax); ``classes``/``scores`` are ``[1, N]``
    or ``[N]``; ``count`` is the valid-entry count. Detections below ``threshold`` or outside
    ``class_filter`` (0-based ids) are dropped, and so are boxes with no area inside the frame; at most
    ``max_detections`` are returned.
    """
    b = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    c = np.asarray(classes).reshape(-1)
    s = np.asarray(scores, dtype=np.float32).reshape(-1)
    n = detection_count(count)
    n = max(0, min(n, b.shape[0], c.shape[0], s.shape[0]))
    allowed = None if class_filter is None else set(int(x) for x in class_filter)
    out: list[Detection] = []
    for i in range(n):
        score = float(s[i])
        if score < threshold or not math.isfinite(score):
            continue
        cid = round(float(c[i]))
        if allowed is not None and cid not in allowed:
            continue
        box = BBox.from_yxyx(*b[i].tolist())
        if box.area <= 0.0:  # wholly outside the frame (clipped to a line on its edge), or degenerate
            continue
        out.append(Detection(labels.get(cid, str(cid)), cid, score, box))
    out.sort(key=lambda d: -d.score)
    return out[:max_detections] if max_detections is not None else out


def decode_boxes(
    encodings: np.ndarray, anchors: np.ndarray, scales: Sequence[float] = DEFAULT_BOX_SCALES
) -> np.ndarray:
    """SSD box coder: ``[A, 4]`` (ty, tx, th, tw) + anchors (yc, xc, h, w) → ``[A, 4]`` (ymin, xmin, ymax, xmax)."""
    e = np.asarray(encodings, dtype=np.float32).reshape(-1, 4)
    a = np.asarray(anchors, dtype=np.float32).reshape(-1, 4)
    ys, xs, hs, ws = scales
    yc = e[:, 0] / ys * a[:, 2] + a[:, 0]
    xc = e[:, 1] / xs * a[:, 3] + a[:, 1]
    h = np.exp(e[:, 2] / hs) * a[:, 2]
    w = np.exp(e[:, 3] / ws) * a[:, 3]
    return np.stack([yc - h / 2, xc - w / 2, yc + h / 2, xc + w / 2], axis=1)


def iou_matrix(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    """IoU of one (ymin, xmin, ymax, xmax) box against ``[K, 4]`` others."""
    y1 = np.maximum(box[0], others[:, 0])
    x1 = np.maximum(box[1], others[:, 1])
    y2 = np.minimum(box[2], others[:, 2])
    x2 = np.minimum(box[3], others[:, 3])
    inter = np.clip(y2 - y1, 0, None) * np.clip(x2 - x1, 0, None)
    area = max(0.0, float((box[2] - box[0]) * (box[3] - box[1])))
    areas = np.clip(others[:, 2] - others[:, 0], 0, None) * np.clip(others[:, 3] - others[:, 1], 0, None)
    union = area + areas - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, max_output: int) -> list[int]:
    """Greedy non-maximum suppression; returns kept indexes, best first (stable for equal scores)."""
    order = np.argsort(-np.asarray(scores), kind="stable")
    keep: list[int] = []
    suppressed = np.zeros(len(order), dtype=bool)
    bx = np.asarray(boxes, dtype=np.float32)
    for rank, idx in enumerate(order):
        if suppressed[rank]:
            continue
        keep.append(int(idx))
        if len(keep) >= max_output:
            break
        rest = order[rank + 1 :]
        if len(rest):
            overl = iou_matrix(bx[idx], bx[rest]) > iou_threshold
            suppressed[rank + 1 :] |= overl
    return keep


def decode_raw(
    encodings: np.ndarray,
    class_predictions: np.ndarray,
    anchors: np.ndarray,
    labels: dict[int, str],
    threshold: float,
    iou_threshold: float = 0.6,
    max_detections: int = 10,
    scores_are_logits: bool = False,
    has_background: bool = True,
    scales: Sequence[float] = DEFAULT_BOX_SCALES,
    class_filter: Iterable[int] | None = None,
) -> list[Detection]:
    """Decode raw SSD outputs like ``TFLite_Detection_PostProcess`` in its default (fast, class-agnostic) mode.

    Each anchor keeps its best non-background class; anchors below ``threshold`` are dropped; class-agnostic
    greedy NMS keeps at most ``max_detections``.
    """
    n_anchors = len(np.asarray(anchors).reshape(-1, 4))
    scores: np.ndarray = np.asarray(class_predictions, dtype=np.float32).reshape(n_anchors, -1)
    if scores_are_logits:
        scores = (1.0 / (1.0 + np.exp(-scores))).astype(np.float32)
    if has_background:
        scores = scores[:, 1:]
    if class_filter is not None:
        mask = np.full(scores.shape[1], -np.inf, dtype=np.float32)
        for cid in class_filter:
            if 0 <= int(cid) < scores.shape[1]:
                mask[int(cid)] = 0.0
        scores = scores + mask
    best_class = np.argmax(scores, axis=1)
    best_score = scores[np.arange(scores.shape[0]), best_class]
    cand = np.nonzero(best_score >= threshold)[0]
    if len(cand) == 0:
        return []
    boxes = decode_boxes(
        np.asarray(encodings).reshape(-1, 4)[cand], np.asarray(anchors).reshape(-1, 4)[cand], scales
    )
    # a box with nothing inside the frame is no detection (and must not take a place in the NMS output)
    inside = np.nonzero(
        (np.clip(boxes[:, 2], 0, 1) > np.clip(boxes[:, 0], 0, 1))
        & (np.clip(boxes[:, 3], 0, 1) > np.clip(boxes[:, 1], 0, 1))
    )[0]
    cand, boxes = cand[inside], boxes[inside]
    keep = nms(boxes, best_score[cand], iou_threshold, max_detections)
    return [
        Detection(
            labels.get(int(best_class[cand[k]]), str(int(best_class[cand[k]]))),
            int(best_class[cand[k]]),
            float(best_score[cand[k]]),
            BBox.from_yxyx(*boxes[k].tolist()),
        )
        for k in keep
    ]


def ssd_anchors(
    feature_maps: Sequence[tuple[int, int]],
    min_scale: float = 0.2,
    max_scale: float = 0.95,
    aspect_ratios: Sequence[float] = (1.0, 2.0, 0.5, 3.0, 1.0 / 3.0),
    interpolated_scale_aspect_ratio: float = 1.0,
    reduce_boxes_in_lowest_layer: bool = True,
    size_scale: float = 1.0,
) -> np.ndarray:
    """The TF Object Detection API's ``ssd_anchor_generator`` (multiple grid anchors), as ``[A, 4]`` (yc, xc, h, w).

    ``feature_maps`` are the (height, width) grids of the predictor layers, e.g. ``[(19,19),(10,10),(5,5),(3,3),
    (2,2),(1,1)]`` for a 300x300 SSD-MobileNet V1. ``size_scale`` multiplies every anchor's height and width;
    a model re-derived at another input resolution keeps the pixel size each layer was trained for, which is
    ``size_scale = trained_size / new_size``.
    """
    n = len(feature_maps)
    scales = [min_scale + (max_scale - min_scale) * i / (n - 1) for i in range(n)] if n > 1 else [min_scale]
    scales.append(1.0)
    out = []
    for layer, (gh, gw) in enumerate(feature_maps):
        specs: list[tuple[float, float]] = []
        if layer == 0 and reduce_boxes_in_lowest_layer:
            specs = [(0.1, 1.0), (scales[0], 2.0), (scales[0], 0.5)]
        else:
            specs = [(scales[layer], ar) for ar in aspect_ratios]
            if interpolated_scale_aspect_ratio > 0:
                specs.append((math.sqrt(scales[layer] * scales[layer + 1]), interpolated_scale_aspect_ratio))
        hw = (
            np.array([[s / math.sqrt(ar), s * math.sqrt(ar)] for s, ar in specs], dtype=np.float64)
            * size_scale
        )
        ys = (np.arange(gh) + 0.5) / gh
        xs = (np.arange(gw) + 0.5) / gw
        cy, cx = np.meshgrid(ys, xs, indexing="ij")
        centers = np.stack([cy.ravel(), cx.ravel()], axis=1)
        grid = np.concatenate(
            [np.repeat(centers, len(specs), axis=0), np.tile(hw, (centers.shape[0], 1))], axis=1
        )
        out.append(grid)
    return np.concatenate(out, axis=0).astype(np.float32)
