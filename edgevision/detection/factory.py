"""Build a :class:`Detector` from the configuration (catalog lookup, runtime, Edge TPU fallback)."""

from __future__ import annotations

from edgevision.catalog.resolve import open_model
from edgevision.config import Device, EdgeVisionConfig, Kernels
from edgevision.detection.detector import Detector
from edgevision.inference.backends import DeviceName, RuntimeOptions
from edgevision.paths import derived_dir, models_dir


def runtime_options(cfg: EdgeVisionConfig) -> RuntimeOptions:
    """The ``runtime:`` section in the inference layer's terms."""
    r = cfg.runtime
    device: DeviceName = "edgetpu" if r.device is Device.EDGETPU else "cpu"
    return RuntimeOptions(
        runtime=r.runtime,
        device=device,
        threads=r.threads,
        edgetpu_device=r.edgetpu_device,
        int8_cache=derived_dir(cfg) if r.kernels is Kernels.INT8 else None,
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
    if resolved.default_threshold is not None and "threshold" not in d.model_fields_set:
        d = d.model_copy(update={"threshold": resolved.default_threshold})
    float_range = resolved.entry.input_range if resolved.entry else None
    return Detector(handle, resolved.labels, d, name=resolved.name, float_range=float_range)
