"""Face Mesh bound to an interpreter: 468 landmarks, presence and head pose for a detected face."""

from __future__ import annotations

import cv2
import numpy as np

from edgevision.errors import ModelError
from edgevision.face.landmarks import crop_face, head_pose, landmarks_to_frame, roi_from_detection
from edgevision.inference.backends import InterpreterHandle
from edgevision.results.face import Face


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + float(np.exp(-np.clip(x, -80.0, 80.0))))


class LandmarkModel:
    """Face Mesh: adds 468 landmarks, presence and head pose to a :class:`Face`.

    The crop is rotated so the detector's eye keypoints lie level; a face without eye keypoints (an SSD face
    model) is cropped upright.
    """

    def __init__(self, handle: InterpreterHandle) -> None:
        self.handle = handle
        shape = handle.input_shape
        if len(shape) != 4 or shape[1] != shape[2] or shape[3] != 3:
            raise ModelError(f"{handle.model_path}: not a face landmark model (input {list(shape)})")
        self.size = int(shape[1])
        sizes = [int(np.prod(d["shape"])) for d in handle.output_details]
        try:
            self._pts = sizes.index(1404)
            self._presence = sizes.index(1)
        except ValueError:
            raise ModelError(
                f"{handle.model_path}: expected a 1404-value landmark output and a presence score"
            ) from None

    def refine(self, frame_bgr: np.ndarray, face: Face) -> Face:
        """``face`` with landmarks (frame-normalized), presence and head pose; a face with no extent in the
        frame (its box clipped to a point) has nothing to crop and comes back as it was."""
        h, w = frame_bgr.shape[:2]
        if face.box.width * w < 1.0 and face.box.height * h < 1.0:
            return face
        box = (face.box.xmin * w, face.box.ymin * h, face.box.xmax * w, face.box.ymax * h)
        kp = face.keypoints
        if "right_eye" in kp and "left_eye" in kp:
            (rx, ry), (lx, ly) = kp["right_eye"], kp["left_eye"]
            roi = roi_from_detection(box, (rx * w, ry * h), (lx * w, ly * h))
        else:  # no eye keypoints (an SSD face model): a level eye line, an upright crop
            roi = roi_from_detection(box, (0.0, 0.0), (1.0, 0.0))
        rgb = cv2.cvtColor(frame_bgr, cv2.COLOR_GRAY2RGB if frame_bgr.ndim == 2 else cv2.COLOR_BGR2RGB)
        tensor, m = crop_face(rgb, roi, self.size)
        self.handle.set_input(tensor)
        self.handle.invoke()
        pts = landmarks_to_frame(self.handle.output(self._pts), m, roi, self.size)
        presence = _sigmoid(float(self.handle.output(self._presence).reshape(-1)[0]))
        landmarks = tuple((float(x / w), float(y / h), float(z / w)) for x, y, z in pts)
        return Face(face.score, face.box, face.keypoints, landmarks, presence, head_pose(pts))
