"""Drawing detections on frames (annotated images, saved video, live view)."""

from __future__ import annotations

from collections.abc import Iterable

import cv2
import numpy as np

from edgevision.results.detection import Detection
from edgevision.results.face import Face

_PALETTE = [(56, 56, 255), (151, 157, 255), (31, 112, 255), (29, 178, 255), (49, 210, 207), (10, 249, 72)]


def color_for(class_id: int) -> tuple[int, int, int]:
    """A stable BGR colour per class id (person = red)."""
    return _PALETTE[class_id % len(_PALETTE)]


def draw_detections(frame: np.ndarray, detections: Iterable[Detection]) -> np.ndarray:
    """Draw boxes and ``label score`` captions on ``frame`` in place and return it."""
    h, w = frame.shape[:2]
    thick = max(1, round(min(h, w) / 360))
    for det in detections:
        px = det.box.to_pixels(w, h)
        color = color_for(det.class_id)
        cv2.rectangle(frame, (px.x1, px.y1), (px.x2, px.y2), color, thick)
        caption = f"{det.label} {det.score:.2f}"
        scale = 0.4 * thick
        (tw, th), base = cv2.getTextSize(caption, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        y = max(th + base, px.y1)
        cv2.rectangle(frame, (px.x1, y - th - base), (px.x1 + tw, y), color, -1)
        cv2.putText(
            frame,
            caption,
            (px.x1, y - base),
            cv2.FONT_HERSHEY_SIMPLEX,
            scale,
            (255, 255, 255),
            1,
            cv2.LINE_AA,
        )
    return frame


def draw_faces(
    frame: np.ndarray, faces: Iterable[Face], landmarks: bool = True, keypoints: bool = True
) -> np.ndarray:
    """Draw face boxes, the 6 keypoints and (sparsely) the landmarks on ``frame`` in place (the boxes alone on
    faces the privacy stage blurred: their eyes, nose, mouth and mesh drawn on the blur would sketch the face)."""
    h, w = frame.shape[:2]
    for f in faces:
        px = f.box.to_pixels(w, h)
        cv2.rectangle(frame, (px.x1, px.y1), (px.x2, px.y2), (255, 200, 0), 1)
        for x, y in f.keypoints.values() if keypoints else ():
            cv2.circle(frame, (round(x * w), round(y * h)), 2, (0, 255, 255), -1)
        if landmarks and f.landmarks:
            for x, y, _z in f.landmarks[::4]:
                cv2.circle(frame, (round(x * w), round(y * h)), 1, (0, 255, 0), -1)
    return frame
