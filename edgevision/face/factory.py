"""Build face detectors (by plugin key), the landmark model, the acceptance rule and the face stages."""

from __future__ import annotations

from dataclasses import replace

from edgevision.catalog.resolve import open_model
from edgevision.config import EdgeVisionConfig
from edgevision.detection.factory import runtime_options
from edgevision.errors import ModelError
from edgevision.face.accept import AcceptMode, FaceLimits, FaceRule
from edgevision.face.detector import FaceDetector
from edgevision.face.mesh import LandmarkModel
from edgevision.face.plugins import PLUGINS
from edgevision.face.privacy import PrivacyStage
from edgevision.face.stage import FaceStage
from edgevision.inference.backends import InterpreterHandle
from edgevision.paths import models_dir
from edgevision.results import Stage


def _load(cfg: EdgeVisionConfig, spec: str) -> InterpreterHandle:
    # Face models are float MediaPipe models: they always run on the CPU (no Edge TPU twin exists).
    handle, _ = open_model(spec, models_dir(cfg), replace(runtime_options(cfg), device="cpu"), True)
    return handle


def detector_key(handle: InterpreterHandle) -> str:
    """The plugin key for a loaded face model: ``ssd`` when it has the SSD postprocess op, else ``blazeface``."""
    return "ssd" if handle.info.has_postprocess else "blazeface"


def face_detector(cfg: EdgeVisionConfig, spec: str | None = None, key: str | None = None) -> FaceDetector:
    """The face detector for model ``spec`` (default ``faces.model``), by plugin ``key`` (default: from the
    model's tensors, :func:`detector_key`), with its plugin config built from the ``faces`` section."""
    name = spec or cfg.faces.model
    handle = _load(cfg, name)
    key = key or detector_key(handle)
    if key not in PLUGINS:
        raise ModelError(f"{name}: no face detector plugin '{key}' (known: {', '.join(sorted(PLUGINS))})")
    plugin = PLUGINS[key]
    config = plugin.config_type.model_validate({"type": key, "min_score": cfg.faces.min_score})
    return plugin.from_config(handle, config, name)


def landmark_model(cfg: EdgeVisionConfig) -> LandmarkModel | None:
    """Face Mesh when ``faces.landmarks`` is on."""
    return LandmarkModel(_load(cfg, cfg.faces.landmark_model)) if cfg.faces.landmarks else None


def face_rule(cfg: EdgeVisionConfig, mode: AcceptMode | None = None) -> FaceRule:
    """The acceptance rule with the configured limits; by default in privacy mode when faces are blurred."""
    if mode is None:
        mode = AcceptMode.PRIVACY if cfg.privacy.blur_faces else AcceptMode.STRICT
    return FaceRule(mode, FaceLimits(min_presence=cfg.faces.min_presence))


def build_face_stages(cfg: EdgeVisionConfig) -> list[Stage]:
    """The face stage (when faces or face blurring are on), then the privacy stage (blur or masks)."""
    f, p = cfg.faces, cfg.privacy
    stages: list[Stage] = []
    if f.enabled or p.blur_faces:
        # blurring also scans the whole frame with the full-range model (faces far from the camera), unless
        # the face model already scans it and is that model: short range, on a whole frame, misses them
        scanned = f.region == "frame" and f.model == f.frame_model
        frame_det = face_detector(cfg, f.frame_model) if p.blur_faces and not scanned else None
        stages.append(FaceStage(face_detector(cfg), landmark_model(cfg), f, face_rule(cfg), frame_det))
    if p.blur_faces or p.masks:
        stages.append(PrivacyStage(p.blur_faces, [tuple(m) for m in p.masks], p.method, p.margin))
    return stages
