"""SSD face detectors with the postprocess op (the Coral ``ssd_mobilenet_v2_face`` format): key ``ssd``."""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
from pydantic import Field

from edgevision.config import DetectorConfig
from edgevision.detection.detector import Detector
from edgevision.face.detector import FaceDetectorConfig
from edgevision.inference.backends import InterpreterHandle
from edgevision.results.detection import BBox
from edgevision.results.face import Face


class SsdFaceConfig(FaceDetectorConfig):
    """The SSD face plugin's options: the score threshold (None: 0.5) and which class index is "face"."""

    type: Literal["ssd"] = "ssd"
    face_class: int = Field(0, ge=0)


class SsdFaceDetector:
    """An SSD face model driven through the SSD :class:`Detector`. It has no keypoints, so its faces carry
    none: Face Mesh then takes an upright crop, and the acceptance rule judges the landmarks alone."""

    key: ClassVar[str] = "ssd"
    config_type: ClassVar[type[FaceDetectorConfig]] = SsdFaceConfig

    def __init__(
        self, handle: InterpreterHandle, config: SsdFaceConfig | None = None, name: str = "ssd"
    ) -> None:
        config = config or SsdFaceConfig()
        threshold = 0.5 if config.min_score is None else config.min_score
        self.name = name
        self.detector = Detector(
            handle, {config.face_class: "face"}, DetectorConfig(threshold=threshold), name=name
        )

    @classmethod
    def from_config(cls, handle: InterpreterHandle, config: FaceDetectorConfig, name: str) -> SsdFaceDetector:
        """The plugin constructor the factory calls (``config`` is an :class:`SsdFaceConfig`)."""
        return cls(handle, SsdFaceConfig.model_validate(config.model_dump()), name)

    def detect(self, frame_bgr: np.ndarray, region: BBox | None = None) -> list[Face]:
        """Faces in ``region`` (cropped exactly, SSD resizes anyway) or in the whole frame."""
        h, w = frame_bgr.shape[:2]
        x0, y0, x1, y1 = 0, 0, w, h
        if region is not None:
            x0, y0 = int(region.xmin * w), int(region.ymin * h)
            x1, y1 = max(x0 + 1, int(np.ceil(region.xmax * w))), max(y0 + 1, int(np.ceil(region.ymax * h)))
            if x0 >= w or y0 >= h:  # a region clipped flat against the right or bottom edge: nothing to see
                return []
        dets, _ = self.detector.detect(frame_bgr[y0:y1, x0:x1])
        cw, ch = x1 - x0, y1 - y0
        return [
            Face(
                d.score,
                BBox(
                    (x0 + d.box.xmin * cw) / w,
                    (y0 + d.box.ymin * ch) / h,
                    (x0 + d.box.xmax * cw) / w,
                    (y0 + d.box.ymax * ch) / h,
                ),
                {},
            )
            for d in dets
        ]
