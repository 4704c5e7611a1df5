"""BlazeFace: anchors, box/keypoint decoding and weighted NMS as pure numpy functions.

Tensor contract (MediaPipe face_detection_*.tflite): ``regressors [1, A, 16]`` = (dx, dy, w, h) of the box
followed by 6 (x, y) keypoints, in input pixels relative to the anchor centre; ``classificators [1, A, 1]`` =
logits. Anchors have a fixed unit size; centres are ((x + 0.5) / grid, (y + 0.5) / grid). Keypoints, in the
subject's terms: right eye, left eye, nose tip, mouth centre, right ear tragion, left ear tragion (the
subject's right eye appears on the image's left for a frontal face).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgevision.detection.ssd import iou_matrix

KEYPOINT_NAMES = ("right_eye", "left_eye", "nose_tip", "mouth_center", "right_ear", "left_ear")


@dataclass(frozen=True)
class BlazeFaceSpec:
    """Anchor layout and decoding constants of one BlazeFace variant."""

    input_size: int
    strides: tuple[int, ...]
    anchors_per_layer_extra: bool  # interpolated-scale anchor per layer (short range: yes; full range: no)
    min_score: float
    nms_iou: float = 0.3


SHORT_RANGE = BlazeFaceSpec(128, (8, 16, 16, 16), True, 0.5)
FULL_RANGE = BlazeFaceSpec(192, (4,), False, 0.6)


def blazeface_anchors(spec: BlazeFaceSpec) -> np.ndarray:
    """``[A, 2]`` anchor centres (x, y), normalized; layers with the same stride share one grid."""
    out = []
    i = 0
    strides = spec.strides
    while i < len(strides):
        stride = strides[i]
        per_cell = 0
        while i < len(strides) and strides[i] == stride:
            per_cell += 2 if spec.anchors_per_layer_extra else 1
            i += 1
        grid = int(np.ceil(spec.input_size / stride))
        ys, xs = np.meshgrid((np.arange(grid) + 0.5) / grid, (np.arange(grid) + 0.5) / grid, indexing="ij")
        centres = np.stack([xs.ravel(), ys.ravel()], axis=1)
        out.append(np.repeat(centres, per_cell, axis=0))
    return np.concatenate(out).astype(np.float32)


@dataclass(frozen=True)
class RawFace:
    """A decoded face in model-input coordinates (normalized 0..1): box (xmin, ymin, xmax, ymax), keypoints."""

    score: float
    box: tuple[float, float, float, float]
    keypoints: tuple[tuple[float, float], ...]


def decode_faces(
    regressors: np.ndarray,
    logits: np.ndarray,
    anchors: np.ndarray,
    spec: BlazeFaceSpec,
    min_score: float | None = None,
) -> list[RawFace]:
    """Decode BlazeFace outputs and apply weighted NMS; returns faces best first."""
    reg = np.asarray(regressors, dtype=np.float32).reshape(len(anchors), -1)
    raw = np.clip(np.asarray(logits, dtype=np.float64).reshape(-1), -100.0, 100.0)
    scores = 1.0 / (1.0 + np.exp(-raw))
    keep = np.nonzero(scores >= (spec.min_score if min_score is None else min_score))[0]
    if len(keep) == 0:
        return []
    s = float(spec.input_size)
    r, a = reg[keep], anchors[keep]
    cx = r[:, 0] / s + a[:, 0]
    cy = r[:, 1] / s + a[:, 1]
    w = r[:, 2] / s
    h = r[:, 3] / s
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    kps = r[:, 4:16].reshape(-1, 6, 2) / s + a[:, None, :]
    return weighted_nms(boxes, kps, scores[keep], spec.nms_iou)


def weighted_nms(boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray, iou: float) -> list[RawFace]:
    """MediaPipe's WEIGHTED suppression: each cluster becomes the score-weighted mean of its members."""
    order = np.argsort(-scores, kind="stable")
    boxes, keypoints, scores = boxes[order], keypoints[order], scores[order]
    remaining = np.ones(len(scores), dtype=bool)
    out: list[RawFace] = []
    for i in range(len(scores)):
        if not remaining[i]:
            continue
        members = np.nonzero(remaining)[0]
        # IoU is the same in xyxy or yxyx. The face itself always belongs to its cluster: a zero-area box has
        # IoU 0 with itself, and at nms_iou 1.0 no IoU exceeds it (an empty cluster averaged to a NaN face)
        overlap = members[(iou_matrix(boxes[i], boxes[members]) > iou) | (members == i)]
        remaining[overlap] = False
        weights = scores[overlap][:, None]
        box = (boxes[overlap] * weights).sum(0) / weights.sum()
        kp = (keypoints[overlap] * weights[:, :, None]).sum(0) / weights.sum()
        out.append(
            RawFace(
                float(scores[i]),
                tuple(float(v) for v in box),  # type: ignore[arg-type]
                tuple((float(x), float(y)) for x, y in kp),
            )
        )
    return out
