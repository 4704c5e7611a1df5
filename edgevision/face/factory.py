"""Build the face and privacy stages from the configuration."""

from __future__ import annotations

from dataclasses import replace

from edgevision.catalog.resolve import open_model
from edgevision.config import DetectorConfig, EdgeVisionConfig
from edgevision.detection.detector import Detector
from edgevision.detection.factory import runtime_options
from edgevision.face.detector import FaceDetector, LandmarkModel, SsdFaceDetector
from edgevision.face.privacy import PrivacyStage
from edgevision.face.stage import FaceStage
from edgevision.paths import models_dir
from edgevision.results import Stage


def _load(cfg: EdgeVisionConfig, spec: str):  # type: ignore[no-untyped-def]
    # Face models are float MediaPipe models: they always run on the CPU (no Edge TPU twin exists).
    handle, _ = open_model(spec, models_dir(cfg), replace(runtime_options(cfg), device="cpu"), True)
    return handle


def face_detector(cfg: EdgeVisionConfig, spec: str | None = None) -> FaceDetector | SsdFaceDetector:
    """BlazeFace, or an SSD face model with the postprocess op (Coral format) through the SSD detector."""
    handle = _load(cfg, spec or cfg.faces.model)
    if handle.info.has_postprocess:
        settings = DetectorConfig(threshold=cfg.faces.min_score if cfg.faces.min_score is not None else 0.5)
        return SsdFaceDetector(Detector(handle, {0: "face"}, settings, name=spec or cfg.faces.model))
    return FaceDetector(handle, cfg.faces.min_score)


def landmark_model(cfg: EdgeVisionConfig) -> LandmarkModel | None:
    return LandmarkModel(_load(cfg, cfg.faces.landmark_model)) if cfg.faces.landmarks else None


def build_face_stages(cfg: EdgeVisionConfig) -> list[Stage]:
    """The face stage (when faces or face blurring are on), then the privacy stage (blur or masks)."""
    f, p = cfg.faces, cfg.privacy
    stages: list[Stage] = []
    if f.enabled or p.blur_faces:
        frame_det = face_detector(cfg, f.frame_model) if p.blur_faces and f.region == "persons" else None
        stages.append(FaceStage(face_detector(cfg), landmark_model(cfg), f, frame_det))
    if p.blur_faces or p.masks:
        stages.append(PrivacyStage(p.blur_faces, [tuple(m) for m in p.masks], p.method, p.margin))
    return stages
