"""BlazeFace (MediaPipe short and full range) as a face detector plugin: key ``blazeface``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar, Literal

import cv2
import numpy as np
from pydantic import Field

from edgevision.errors import ModelError
from edgevision.face.blazeface import (
    FULL_RANGE,
    KEYPOINT_NAMES,
    SHORT_RANGE,
    BlazeFaceSpec,
    blazeface_anchors,
    decode_faces,
)
from edgevision.face.detector import FaceDetectorConfig
from edgevision.inference.backends import InterpreterHandle
from edgevision.results.detection import BBox
from edgevision.results.face import Face


class BlazeFaceConfig(FaceDetectorConfig):
    """BlazeFace's options: the score threshold (None: 0.5 short range, 0.6 full range) and the NMS overlap."""

    type: Literal["blazeface"] = "blazeface"
    nms_iou: float = Field(0.3, gt=0.0, le=1.0)


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
        """Crop-normalized y → frame-normalized y."""
        return (self.top + v * self.height) / self.frame_h


class BlazeFaceDetector:
    """BlazeFace bound to an interpreter; faces come back in frame-normalized coordinates with 6 keypoints.

    ``detect(frame, region)`` looks at a square area around ``region`` (padded with black at the frame edge, so
    faces keep their aspect ratio): the cascade's view of a person's head. ``detect(frame)`` resizes the whole
    frame to the model input (as the model card's preprocessing does), which keeps small faces at the edges of
    wide frames larger than letterboxing would. The variant (short or full range) is read from the input size.
    """

    key: ClassVar[str] = "blazeface"
    config_type: ClassVar[type[FaceDetectorConfig]] = BlazeFaceConfig

    def __init__(
        self, handle: InterpreterHandle, config: BlazeFaceConfig | None = None, name: str = "blazeface"
    ) -> None:
        config = config or BlazeFaceConfig()
        self.handle = handle
        self.name = name
        shape = handle.input_shape
        size = shape[1] if len(shape) == 4 else 0
        specs = {SHORT_RANGE.input_size: SHORT_RANGE, FULL_RANGE.input_size: FULL_RANGE}
        if size not in specs or shape[3] != 3:
            raise ModelError(f"{handle.model_path}: not a BlazeFace model (input {list(handle.input_shape)})")
        self.spec: BlazeFaceSpec = dataclasses.replace(specs[size], nms_iou=config.nms_iou)
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
        self.min_score = config.min_score

    @classmethod
    def from_config(
        cls, handle: InterpreterHandle, config: FaceDetectorConfig, name: str
    ) -> BlazeFaceDetector:
        """The plugin constructor the factory calls (``config`` is a :class:`BlazeFaceConfig`)."""
        return cls(handle, BlazeFaceConfig.model_validate(config.model_dump()), name)

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
