"""The face stage of the pipeline: faces in the upper part of each person box (or the whole frame)."""

from __future__ import annotations

import time

import numpy as np

from edgevision.config import FacesConfig
from edgevision.face.accept import AcceptMode, FaceRule
from edgevision.face.detector import FaceDetector
from edgevision.face.mesh import LandmarkModel
from edgevision.results import FrameResult
from edgevision.results.detection import BBox
from edgevision.results.face import Face

PERSON = "person"  # the detector label whose boxes are searched for faces


def dedupe(faces: list[Face], iou: float = 0.4) -> list[Face]:
    """Drop faces found twice (overlapping person regions), keeping the higher score."""
    kept: list[Face] = []
    for f in sorted(faces, key=lambda f: -f.score):
        if all(f.box.iou(k.box) <= iou for k in kept):
            kept.append(f)
    return kept


def confirm(
    image: np.ndarray, candidates: list[Face], landmarks: LandmarkModel | None, rule: FaceRule
) -> list[Face]:
    """The candidates that are faces: each refined by the landmark model (when loaded), then judged by ``rule``.

    The one path from detector output to "these are faces", shared by the face stage and ``detect --faces``.
    """
    if landmarks is not None:
        candidates = [landmarks.refine(image, f) for f in candidates]
    h, w = image.shape[:2]
    return rule.accept(candidates, w, h)


def head_region(person: BBox, upper_fraction: float) -> BBox:
    """The top ``upper_fraction`` of a person box, widened a little (heads stick out of tight boxes)."""
    h = person.height * upper_fraction
    pad = person.width * 0.1
    return BBox(
        max(0.0, person.xmin - pad),
        max(0.0, person.ymin - h * 0.1),
        min(1.0, person.xmax + pad),
        min(1.0, person.ymin + h),
    )


class FaceStage:
    """Adds ``result.faces`` (and ``latency.faces``); runs every ``every_n_frames`` frames.

    Candidates from ``detector`` in the head of each person box (the ``max_persons`` best ones; in privacy mode
    every person's: a face the whole-frame scan is too coarse for is found only there, and every face must be
    blurred) and from ``frame_detector`` are deduplicated, capped at ``max_faces`` (in privacy
    mode the rest are kept unrefined: every face found is blurred), refined by ``landmarks`` and judged by ``rule``
    (:mod:`edgevision.face.accept`); in privacy mode the rule keeps every candidate, so what is blurred is what
    is reported. ``frame_detector`` (a full-range model) additionally
    scans the whole frame, which privacy mode uses so that a face on a missed person is still found.
    """

    def __init__(
        self,
        detector: FaceDetector,
        landmarks: LandmarkModel | None,
        config: FacesConfig,
        rule: FaceRule | None = None,
        frame_detector: FaceDetector | None = None,
    ) -> None:
        self.detector = detector
        self.frame_detector = frame_detector
        self.landmarks = landmarks
        self.rule = rule or FaceRule()
        self.config = config  # region, upper_fraction, max_persons, max_faces, every_n_frames

    def find(self, result: FrameResult) -> list[Face]:
        image = result.frame.image
        faces: list[Face] = []
        if self.config.region == "frame":
            faces += self.detector.detect(image)
        else:
            persons = sorted((d for d in result.detections if d.label == PERSON), key=lambda d: -d.score)
            if self.rule.mode is not AcceptMode.PRIVACY:  # reporting looks at the best few people
                persons = persons[: self.config.max_persons]
            for p in persons:
                faces += self.detector.detect(image, head_region(p.box, self.config.upper_fraction))
        if self.frame_detector is not None:
            faces += self.frame_detector.detect(image)
        faces = dedupe(faces)
        cap = self.config.max_faces
        found = confirm(image, faces[:cap], self.landmarks, self.rule)
        if self.rule.mode is AcceptMode.PRIVACY:  # every face found is blurred, not the first few (the rest
            h, w = image.shape[:2]  # unrefined: Face Mesh on a crowd's every face would cost a frame's time)
            found += self.rule.accept(faces[cap:], w, h)
        return found

    def process(self, result: FrameResult) -> None:
        if result.frame.index % self.config.every_n_frames:
            return
        t0 = time.perf_counter()
        result.faces = self.find(result)
        result.latency.faces = (time.perf_counter() - t0) * 1e3
