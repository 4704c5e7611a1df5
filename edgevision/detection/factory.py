"""Build a :class:`Detector` from the configuration (catalog lookup, runtime, Edge TPU fallback)."""

from __future__ import annotations

from edgevision.catalog.resolve import open_model
from edgevision.config import EdgeVisionConfig
from edgevision.detection.detector import Detector, DetectorSettings
from edgevision.inference.backends import RuntimeOptions
from edgevision.paths import models_dir


def runtime_options(cfg: EdgeVisionConfig) -> RuntimeOptions:
    r = cfg.runtime
    return RuntimeOptions(
        runtime=r.runtime, device=r.device, threads=r.threads, edgetpu_device=r.edgetpu_device
    )


def build_detector(cfg: EdgeVisionConfig, model: str | None = None) -> Detector:
    """Load the configured (or given) detector model, ready to run."""
    spec = model or cfg.detector.model
    handle, resolved = open_model(
        spec, models_dir(cfg), runtime_options(cfg), cfg.runtime.cpu_fallback, cfg.detector.labels_file
    )
    d = cfg.detector
    # A distilled student carries the threshold calibrated to its teacher's operating point; an explicit
    # detector.threshold (config or --threshold) still wins.
    threshold = d.threshold
    if resolved.default_threshold is not None and "threshold" not in d.model_fields_set:
        threshold = resolved.default_threshold
    settings = DetectorSettings(
        threshold=threshold, labels=tuple(d.labels) if d.labels else None, max_detections=d.max_detections
    )
    float_range = resolved.entry.input_range if resolved.entry else None
    return Detector(handle, resolved.labels, settings, name=resolved.name, float_range=float_range)
