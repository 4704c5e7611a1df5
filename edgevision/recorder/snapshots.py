"""Snapshot and thumbnail JPEGs of an event's best frame, written atomically."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from edgevision.fsutil import fsync_dir
from edgevision.render import draw_detections
from edgevision.results.detection import Detection
from edgevision.results.face import Face


def write_jpeg(path: Path, image: np.ndarray, quality: int = 90) -> int:
    """Encode and write ``image`` via a temporary file + rename; returns the size. Raises OSError."""
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise OSError(f"{path}: JPEG encoding failed")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(buf.tobytes())
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)
    return len(buf)


def write_snapshot(
    snapshot: Path, thumb: Path, image: np.ndarray, detections: Sequence[Detection], thumb_width: int = 320
) -> None:
    """The best frame with its boxes drawn, and a small thumbnail of it."""
    annotated = draw_detections(
        cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image.copy(), detections
    )
    write_jpeg(snapshot, annotated)
    h, w = annotated.shape[:2]
    tw = min(thumb_width, w)
    small = cv2.resize(annotated, (tw, max(1, round(h * tw / w))), interpolation=cv2.INTER_AREA)
    write_jpeg(thumb, small, 80)


def face_crop(image: np.ndarray, face: Face, margin: float = 0.3) -> np.ndarray:
    """The face box grown by ``margin``, cut out of ``image`` (a copy)."""
    h, w = image.shape[:2]
    bw, bh = face.box.width * w, face.box.height * h
    x1, y1 = max(0, int(face.box.xmin * w - bw * margin)), max(0, int(face.box.ymin * h - bh * margin))
    x2, y2 = (
        min(w, int(face.box.xmax * w + bw * margin) + 1),
        min(h, int(face.box.ymax * h + bh * margin) + 1),
    )
    return image[y1:y2, x1:x2].copy()
