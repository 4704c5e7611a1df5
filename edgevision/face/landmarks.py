"""Face Mesh: the rotated, enlarged face crop, 468 landmarks mapped back to the frame, and head pose.

Crop contract (as MediaPipe's face landmark front-end): the square ROI is centred on the detection box, its
side is ``margin`` (1.5) times the larger box side, and it is rotated so the eye line is horizontal. The model
takes that crop as 192x192 RGB float in [0, 1] and returns 468 (x, y, z) in crop pixels plus a presence logit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from edgevision.results.face import HeadPose

# Face Mesh landmark indices used for checks and pose (subject's right = image left on a frontal face).
RIGHT_EYE_OUTER, RIGHT_EYE_INNER, LEFT_EYE_INNER, LEFT_EYE_OUTER = 33, 133, 362, 263
NOSE_TIP, UPPER_LIP, LOWER_LIP, CHIN, FOREHEAD = 1, 13, 14, 152, 10


@dataclass(frozen=True)
class Roi:
    """A rotated square region of the frame, in pixels."""

    cx: float
    cy: float
    size: float
    angle: float  # radians; the eye line's angle in the image

    def to_crop(self, out: int) -> np.ndarray:
        """2x3 affine matrix frame → crop of ``out`` x ``out`` pixels (rotated upright)."""
        scale = out / self.size
        rot = cv2.getRotationMatrix2D((self.cx, self.cy), math.degrees(self.angle), scale)
        rot[0, 2] += out / 2 - self.cx
        rot[1, 2] += out / 2 - self.cy
        return rot


def roi_from_detection(
    box_px: tuple[float, float, float, float],
    right_eye: tuple[float, float],
    left_eye: tuple[float, float],
    margin: float = 1.5,
) -> Roi:
    """ROI from a face box and its two eye keypoints (pixels)."""
    x1, y1, x2, y2 = box_px
    angle = math.atan2(left_eye[1] - right_eye[1], left_eye[0] - right_eye[0])
    return Roi((x1 + x2) / 2, (y1 + y2) / 2, max(x2 - x1, y2 - y1) * margin, angle)


def crop_face(frame_rgb: np.ndarray, roi: Roi, out: int = 192) -> tuple[np.ndarray, np.ndarray]:
    """The upright crop as float32 [0, 1] ``[1, out, out, 3]`` and the frame→crop affine matrix."""
    m = roi.to_crop(out)
    crop = cv2.warpAffine(frame_rgb, m, (out, out), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    return (crop.astype(np.float32) / 255.0)[np.newaxis], m


def landmarks_to_frame(raw: np.ndarray, m: np.ndarray, roi: Roi, out: int = 192) -> np.ndarray:
    """``[468, 3]`` crop-pixel landmarks → frame pixels (x, y) and z scaled like x."""
    pts = np.asarray(raw, dtype=np.float64).reshape(-1, 3)
    inv = cv2.invertAffineTransform(m)
    xy = pts[:, :2] @ inv[:, :2].T + inv[:, 2]
    z = pts[:, 2] * roi.size / out
    return np.concatenate([xy, z[:, None]], axis=1)


def head_pose(pts: np.ndarray) -> HeadPose:
    """Yaw / pitch / roll (degrees) from landmark geometry (pixels); an estimate, not a calibrated pose."""
    r_eye = (pts[RIGHT_EYE_OUTER, :2] + pts[RIGHT_EYE_INNER, :2]) / 2
    l_eye = (pts[LEFT_EYE_OUTER, :2] + pts[LEFT_EYE_INNER, :2]) / 2
    eye_mid = (r_eye + l_eye) / 2
    eye_vec = l_eye - r_eye
    roll = math.degrees(math.atan2(eye_vec[1], eye_vec[0]))
    c, s = math.cos(math.radians(-roll)), math.sin(math.radians(-roll))
    rot = np.array([[c, -s], [s, c]])
    nose = rot @ (pts[NOSE_TIP, :2] - eye_mid)
    mouth = rot @ ((pts[UPPER_LIP, :2] + pts[LOWER_LIP, :2]) / 2 - eye_mid)
    half = max(np.linalg.norm(eye_vec) / 2, 1e-6)
    yaw = math.degrees(math.asin(max(-1.0, min(1.0, nose[0] / half))))
    # Frontal faces have the nose tip about 55 % of the way from the eye line to the mouth.
    ratio = nose[1] / max(mouth[1], 1e-6)
    pitch = math.degrees(math.asin(max(-1.0, min(1.0, (0.55 - ratio) * 2.5))))
    return HeadPose(yaw, pitch, roll)
