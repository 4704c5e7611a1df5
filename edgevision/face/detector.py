"""Face detection (BlazeFace) on a frame or on regions of it, and Face Mesh landmarks for each face."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from edgevision.detection.detector import Detector
from edgevision.errors import ModelError
from edgevision.face.blazeface import (
    FULL_RANGE,
    KEYPOINT_NAMES,
    SHORT_RANGE,
    BlazeFaceSpec,
    blazeface_anchors,
    decode_faces,
)
from edgevision.face.landmarks import crop_face, head_pose, landmarks_to_frame, roi_from_detection
from edgevision.inference.backends import InterpreterHandle
from edgevision.results.detection import BBox
from edgevision.results.face import Face


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + float(np.exp(-np.clip(x, -80.0, 80.0))))


@dataclass(frozen=True)
class CropGeometry:
    """Where the model's input lies in the frame: top-left corner and size in pixels, and the frame size."""

    left: float
    top: float
    width: float
    height: float
    frame_w: int
    frame_h: int

    def x(self, u: float) -> float:
        """Crop-normalized x → frame-normalized x."""
        return (self.left + u * self.width) / self.frame_w

    def y(self, v: float) -> float:
        return (self.top + v * self.height) / self.frame_h


class FaceDetector:
    """BlazeFace bound to an interpreter; faces come back in frame-normalized coordinates.

    ``detect(frame, region)`` looks at a square area around ``region`` (padded with black at the frame edge, so
    faces keep their aspect ratio): the cascade's view of a person's head. ``detect(frame)`` resizes the whole
    frame to the model input (as the model card's preprocessing does), which keeps small faces at the edges of
    wide frames larger than letterboxing would.
    """

    def __init__(self, handle: InterpreterHandle, min_score: float | None = None) -> None:
        self.handle = handle
        size = handle.input_shape[1]
        specs = {SHORT_RANGE.input_size: SHORT_RANGE, FULL_RANGE.input_size: FULL_RANGE}
        if size not in specs or handle.input_shape[3] != 3:
            raise ModelError(f"{handle.model_path}: not a BlazeFace model (input {list(handle.input_shape)})")
        self.spec: BlazeFaceSpec = specs[size]
        self.anchors = blazeface_anchors(self.spec)
        shapes = [tuple(d["shape"]) for d in handle.output_details]
        try:
            self._reg = next(i for i, s in enumerate(shapes) if s[-1] == 16)
            self._cls = next(i for i, s in enumerate(shapes) if s[-1] == 1)
        except StopIteration:
            raise ModelError(
                f"{handle.model_path}: outputs {shapes} are not BlazeFace regressors/classificators"
            ) from None
        if shapes[self._reg][1] != len(self.anchors):
            raise ModelError(
                f"{handle.model_path}: {shapes[self._reg][1]} anchors, expected {len(self.anchors)}"
            )
        self.min_score = min_score

    def preprocess(
        self, frame_bgr: np.ndarray, region: BBox | None = None
    ) -> tuple[np.ndarray, CropGeometry]:
        """The model input for ``region`` (or the whole frame) and where that crop lies in the frame."""
        h, w = frame_bgr.shape[:2]
        n = self.spec.input_size
        rgb = cv2.cvtColor(frame_bgr, cv2.COLOR_GRAY2RGB if frame_bgr.ndim == 2 else cv2.COLOR_BGR2RGB)
        if region is None:
            geo = CropGeometry(0.0, 0.0, float(w), float(h), w, h)
            crop = cv2.resize(rgb, (n, n), interpolation=cv2.INTER_AREA)
        else:
            x0, y0, x1, y1 = region.xmin * w, region.ymin * h, region.xmax * w, region.ymax * h
            side = max(x1 - x0, y1 - y0, 1.0)
            geo = CropGeometry((x0 + x1) / 2 - side / 2, (y0 + y1) / 2 - side / 2, side, side, w, h)
            s = n / side
            m = np.array([[s, 0.0, -geo.left * s], [0.0, s, -geo.top * s]])
            crop = cv2.warpAffine(rgb, m, (n, n), flags=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
        return (crop.astype(np.float32) / 127.5 - 1.0)[np.newaxis], geo

    def decode(self, outputs: list[np.ndarray], geo: CropGeometry) -> list[Face]:
        """Raw interpreter outputs → faces in frame-normalized coordinates."""
        raw = decode_faces(outputs[self._reg], outputs[self._cls], self.anchors, self.spec, self.min_score)
        faces = []
        for f in raw:
            bx = [geo.x(f.box[0]), geo.y(f.box[1]), geo.x(f.box[2]), geo.y(f.box[3])]
            kps = {
                name: (geo.x(x), geo.y(y)) for name, (x, y) in zip(KEYPOINT_NAMES, f.keypoints, strict=True)
            }
            faces.append(Face(f.score, BBox(*[min(1.0, max(0.0, v)) for v in bx]), kps))
        return faces

    def detect(self, frame_bgr: np.ndarray, region: BBox | None = None) -> list[Face]:
        """Faces in ``region`` (a square around it) or, without a region, in the whole frame."""
        tensor, geo = self.preprocess(frame_bgr, region)
        return self.decode(self.handle.run(tensor), geo)


class SsdFaceDetector:
    """An SSD face detector with the postprocess op (the Coral ``ssd_mobilenet_v2_face`` format) behind the same
    ``detect(frame, region)`` interface. It has no keypoints, so landmark crops are taken upright."""

    def __init__(self, detector: Detector) -> None:
        self.detector = detector

    def detect(self, frame_bgr: np.ndarray, region: BBox | None = None) -> list[Face]:
        h, w = frame_bgr.shape[:2]
        x0, y0, x1, y1 = 0, 0, w, h
        if region is not None:
            x0, y0 = int(region.xmin * w), int(region.ymin * h)
            x1, y1 = max(x0 + 1, int(np.ceil(region.xmax * w))), max(y0 + 1, int(np.ceil(region.ymax * h)))
        dets, _ = self.detector.detect(frame_bgr[y0:y1, x0:x1])
        cw, ch = x1 - x0, y1 - y0
        faces = []
        for d in dets:
            b = d.box
            box = BBox(
                (x0 + b.xmin * cw) / w, (y0 + b.ymin * ch) / h, (x0 + b.xmax * cw) / w, (y0 + b.ymax * ch) / h
            )
            cy = box.ymin + box.height * 0.4
            faces.append(Face(d.score, box, {"right_eye": (box.xmin + box.width * 0.3, cy),
                                             "left_eye": (box.xmin + box.width * 0.7, cy)}))  # fmt: skip
        return faces


class LandmarkModel:
    """Face Mesh bound to an interpreter: adds 468 landmarks, presence and head pose to a :class:`Face`."""

    def __init__(self, handle: InterpreterHandle) -> None:
        self.handle = handle
        shape = handle.input_shape
        if shape[1] != shape[2] or shape[3] != 3:
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
        h, w = frame_bgr.shape[:2]
        box = (face.box.xmin * w, face.box.ymin * h, face.box.xmax * w, face.box.ymax * h)
        re, le = face.keypoints["right_eye"], face.keypoints["left_eye"]
        roi = roi_from_detection(box, (re[0] * w, re[1] * h), (le[0] * w, le[1] * h))
        rgb = (
            cv2.cvtColor(frame_bgr, cv2.COLOR_GRAY2RGB)
            if frame_bgr.ndim == 2
            else cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB)
        )
        tensor, m = crop_face(rgb, roi, self.size)
        self.handle.set_input(tensor)
        self.handle.invoke()
        pts = landmarks_to_frame(self.handle.output(self._pts), m, roi, self.size)
        presence = _sigmoid(float(self.handle.output(self._presence).reshape(-1)[0]))
        landmarks = tuple((float(x / w), float(y / h), float(z / w)) for x, y, z in pts)
        return Face(face.score, face.box, face.keypoints, landmarks, presence, head_pose(pts))
