"""Privacy: blur (or pixelate) every detected face and black out mask polygons before a frame leaves memory.

Runs as the last pipeline stage, so every sink — clips, the pre-roll ring, snapshots, thumbnails, saved video,
the live view — only ever receives the redacted image. The original is dropped with the frame. Its cost is
reported as its own latency stage (``privacy``). When most people in view are too small for a face to be found,
it says so (:mod:`edgevision.face.coverage`). The faces it blurs are the face stage's, judged by the
acceptance rule in its privacy mode (:mod:`edgevision.face.accept`): every candidate a detector reports.

The blur is a downscale–blur–upscale: the face region is shrunk (area-averaged) to ``BLUR_CELLS`` pixels
across, blurred there with a kernel as large as the region (twice), and scaled back smoothly: relative to the
face, the same filter as a full-resolution Gaussian as large as the face, but its cost no longer grows with
the face (a millisecond or so for a 300-px face on a 720p frame, instead of about a second).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence

import cv2
import numpy as np

from edgevision.face.coverage import FaceCoverage
from edgevision.results import FrameResult
from edgevision.results.face import Face

log = logging.getLogger(__name__)

Polygon = Sequence[tuple[float, float]]
BLUR_CELLS = 32  # the region is blurred at this size: the filter's cost no longer grows with the face


def blur_region(roi: np.ndarray, cells: int = BLUR_CELLS) -> np.ndarray:
    """``roi`` blurred beyond recognition at a cost independent of its size (a new array, same shape).

    The filter is the one that protects faces — a Gaussian with a kernel as large as the region, applied
    twice — run on the region shrunk (area-averaged) to ``cells`` pixels across, then scaled back smoothly.
    Relative to the face it is the same blur; the shrink only drops detail that blur removes anyway.
    """
    h, w = roi.shape[:2]
    scale = max(w, h) / cells
    small = roi
    if scale > 1.0:
        small = cv2.resize(
            roi, (max(1, round(w / scale)), max(1, round(h / scale))), interpolation=cv2.INTER_AREA
        )
    k = max(3, max(small.shape[:2]) | 1)
    small = cv2.GaussianBlur(cv2.GaussianBlur(small, (k, k), 0), (k, k), 0)
    if small.shape[:2] == roi.shape[:2]:
        return small
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def redact(
    image: np.ndarray,
    faces: Sequence[Face],
    masks: Sequence[Polygon],
    method: str = "blur",
    margin: float = 0.4,
) -> np.ndarray:
    """A redacted copy of ``image``: faces (box grown by ``margin``) blurred or pixelated, masks filled black."""
    out = image.copy()
    h, w = out.shape[:2]
    for f in faces:
        bw, bh = f.box.width * w, f.box.height * h
        x1 = max(0, int(f.box.xmin * w - bw * margin))
        y1 = max(0, int(f.box.ymin * h - bh * margin))
        x2 = min(w, int(np.ceil(f.box.xmax * w + bw * margin)))
        y2 = min(h, int(np.ceil(f.box.ymax * h + bh * margin)))
        if x2 <= x1 or y2 <= y1:
            continue
        roi = out[y1:y2, x1:x2]
        if method == "pixelate":
            # 4 blocks across a face: too coarse for a face detector (or a person) to find features in.
            small = cv2.resize(
                roi, (4, max(1, round(4 * (y2 - y1) / (x2 - x1)))), interpolation=cv2.INTER_AREA
            )
            out[y1:y2, x1:x2] = cv2.resize(small, (x2 - x1, y2 - y1), interpolation=cv2.INTER_NEAREST)
        else:
            out[y1:y2, x1:x2] = blur_region(roi, BLUR_CELLS)
    for poly in masks:
        pts = np.array([[round(x * w), round(y * h)] for x, y in poly], dtype=np.int32)
        cv2.fillPoly(out, [pts], 0)
    return out


class PrivacyStage:
    """Replaces ``result.frame`` by a redacted frame (both the inference image and the full-resolution one)."""

    def __init__(
        self, blur_faces: bool, masks: Sequence[Polygon], method: str = "blur", margin: float = 0.4
    ) -> None:
        self.blur_faces = blur_faces
        self.masks = list(masks)
        self.method = method
        self.margin = margin
        # blurring faces: are they large enough to be found? (a warning once, a line in the run summary)
        self.coverage = FaceCoverage() if blur_faces else None

    def process(self, result: FrameResult) -> None:
        faces = (result.faces or []) if self.blur_faces else []
        if self.coverage is not None and result.faces is not None:  # frames the face stage ran on
            warning = self.coverage.observe(result.detections, faces, result.frame.size[1])
            if warning:
                log.warning("%s", warning)
        if not faces and not self.masks:
            return
        t0 = time.perf_counter()
        frame = result.frame
        image = redact(frame.image, faces, self.masks, self.method, self.margin)
        full = (
            redact(frame.full, faces, self.masks, self.method, self.margin)
            if frame.full is not None
            else None
        )
        result.frame = dataclasses.replace(frame, image=image, full=full, prepared=None)
        result.faces_blurred = bool(faces)
        result.latency.privacy = (time.perf_counter() - t0) * 1e3
