"""The face stage of the pipeline: faces in the upper part of each person box (or the whole frame)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from edgevision.face.detector import FaceDetector, LandmarkModel, SsdFaceDetector
from edgevision.results import FrameResult
from edgevision.results.detection import BBox
from edgevision.results.face import Face


@dataclass(frozen=True)
class FaceSettings:
    """Where and how often to look for faces."""

    region: str = "persons"  # persons | frame
    person_label: str = "person"
    upper_fraction: float = 0.5  # the head is in the top part of a person box
    max_persons: int = 5
    max_faces: int = 5
    every_n_frames: int = 1
    min_presence: float = 0.5  # with landmarks: drop "faces" the mesh model says are not faces


def dedupe(faces: list[Face], iou: float = 0.4) -> list[Face]:
    """Drop faces found twice (overlapping person regions), keeping the higher score."""
    kept: list[Face] = []
    for f in sorted(faces, key=lambda f: -f.score):
        if all(f.box.iou(k.box) <= iou for k in kept):
            kept.append(f)
    return kept


def head_region(person: BBox, upper_fraction: float) -> BBox:
    """The top ``upper_fraction`` of a person box, widened a little (heads stick out of tight boxes)."""
    h = person.height * upper_fraction
    pad = person.width * 0.1
    return BBox(max(0.0, person.xmin - pad), max(0.0, person.ymin - h * 0.1), min(1.0, person.xmax + pad),
                min(1.0, person.ymin + h))  # fmt: skip


class FaceStage:
    """Adds ``result.faces`` (and ``latency.faces``); runs every ``every_n_frames`` frames.

    ``frame_detector`` (a full-range model) additionally scans the whole frame, which privacy mode uses so
    that a face on a missed person is still found.
    """

    def __init__(self, detector: FaceDetector | SsdFaceDetector, landmarks: LandmarkModel | None,
                 settings: FaceSettings, frame_detector: FaceDetector | SsdFaceDetector | None = None) -> None:  # fmt: skip
        self.detector = detector
        self.frame_detector = frame_detector
        self.landmarks = landmarks
        self.settings = settings

    def find(self, result: FrameResult) -> list[Face]:
        image = result.frame.image
        faces: list[Face] = []
        if self.settings.region == "frame":
            faces += self.detector.detect(image)
        else:
            persons = sorted(
                (d for d in result.detections if d.label == self.settings.person_label),
                key=lambda d: -d.score,
            )
            for p in persons[: self.settings.max_persons]:
                faces += self.detector.detect(image, head_region(p.box, self.settings.upper_fraction))
        if self.frame_detector is not None:
            faces += self.frame_detector.detect(image)
        faces = dedupe(faces)[: self.settings.max_faces]
        if self.landmarks is not None:
            refined = [self.landmarks.refine(image, f) for f in faces]
            faces = [f for f in refined if f.presence is None or f.presence >= self.settings.min_presence]
        return faces

    def process(self, result: FrameResult) -> None:
        if result.frame.index % self.settings.every_n_frames:
            return
        t0 = time.perf_counter()
        result.faces = self.find(result)
        result.latency.faces = (time.perf_counter() - t0) * 1e3
