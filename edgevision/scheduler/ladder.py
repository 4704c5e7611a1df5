"""The rung ladder: resolution rungs derived from real SSDs, width rungs from the catalog, cadence rungs; and
the measurements (profile) that order it.

Every rung is loaded up front (within ``memory_budget_mb``), so switching costs no reload.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgevision.catalog.entries import load_catalog
from edgevision.catalog.resolve import resolve_model
from edgevision.config import EdgeVisionConfig
from edgevision.detection.detector import Detector, DetectorSettings
from edgevision.detection.factory import models_dir, runtime_options
from edgevision.errors import ConfigError
from edgevision.inference.backends import open_interpreter
from edgevision.scheduler.derive import ensure_derived

log = logging.getLogger(__name__)


def rss_mb() -> float:
    """Resident memory of this process in MiB (Linux /proc; 0 where unavailable)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return 0.0
    return pages * os.sysconf("SC_PAGE_SIZE") / (1 << 20)


@dataclass
class RungProfile:
    """Measured on this device: invoke latency, memory, person agreement with the largest rung."""

    name: str
    size: int
    cadence: int
    p50_ms: float
    p95_ms: float
    rss_mb: float
    agreement: float | None = None

    @property
    def cost_ms(self) -> float:
        """Typical per-frame cost (p50; orders the ladder): a rung detecting every k-th frame costs 1/k."""
        return self.p50_ms / self.cadence

    @property
    def worst_ms(self) -> float:
        """p95 per-frame cost (what the controller predicts with)."""
        return self.p95_ms / self.cadence


@dataclass
class Rung:
    detector: Detector
    profile: RungProfile

    @property
    def name(self) -> str:
        return self.profile.name


def measure(detector: Detector, tensors: Sequence[np.ndarray], invokes: int) -> tuple[float, float]:
    """p50 / p95 invoke latency (ms) over ``invokes`` runs on real preprocessed frames, after a warm-up."""
    h = detector.handle
    for t in tensors[:3]:
        h.set_input(t)
        h.invoke()
    times = []
    for i in range(invokes):
        h.set_input(tensors[i % len(tensors)])
        t0 = time.perf_counter()
        h.invoke()
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.percentile(times, 50)), float(np.percentile(times, 95))


def _settings(cfg: EdgeVisionConfig) -> DetectorSettings:
    d = cfg.detector
    return DetectorSettings(d.threshold, tuple(d.labels) if d.labels else None, d.max_detections)


def _width_models(cfg: EdgeVisionConfig) -> list[str]:
    """Catalog detectors that add width rungs: alpha < 1 or MobileNet V3, when installed."""
    cat = load_catalog()
    out = []
    for name, m in cat.models.items():
        if m.task != "detect" or m.device != "cpu" or name in cfg.scheduler.models:
            continue
        if (m.architecture.alpha < 1.0 or m.architecture.family.startswith("mobilenet_v3")) and (
            models_dir(cfg) / m.file
        ).exists():
            out.append(name)
    return out


def load_profile(path: Path) -> dict[str, RungProfile]:
    try:
        data = json.loads(path.read_text())
        return {r["name"]: RungProfile(**r) for r in data["rungs"]}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: cannot read scheduler profile: {exc}") from None


def save_profile(path: Path, rungs: Sequence[RungProfile], extra: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**extra, "rungs": [asdict(r) for r in rungs]}, indent=2) + "\n")


def build_ladder(
    cfg: EdgeVisionConfig,
    sample_frames: Sequence[np.ndarray],
    invokes: int = 15,
    on_rung: Callable[[str], None] | None = None,
) -> list[Rung]:
    """Load every rung (within the memory budget), profile it (or take the saved profile), order by cost.

    ``on_rung(name)`` is called after each rung is loaded and timed (a progress bar's hook)."""
    sc = cfg.scheduler
    mdir = models_dir(cfg)
    derived_dir = sc.derived_dir or (mdir / "derived")
    opts = runtime_options(cfg)
    saved = load_profile(sc.profile) if sc.profile else {}
    rungs: list[Rung] = []
    base_rss = rss_mb()
    specs: list[tuple[str, Path, int, dict[int, str]]] = []
    for name in sc.models:
        res = resolve_model(name, mdir)
        native = res.entry.architecture.input[0] if res.entry else 300
        for size in sc.sizes:
            path = res.path if size == native else ensure_derived(res.path, size, derived_dir)
            specs.append((f"{name}@{size}", path, size, res.labels))
    for name in _width_models(cfg):
        res = resolve_model(name, mdir)
        specs.append((name, res.path, res.entry.architecture.input[0] if res.entry else 0, res.labels))
    for rung_name, path, size, labels in specs:
        before = rss_mb()
        if before - base_rss > sc.memory_budget_mb:
            log.warning(
                "scheduler: memory budget %d MiB reached; rung %s not loaded", sc.memory_budget_mb, rung_name
            )
            continue
        det = Detector(open_interpreter(path, opts), labels, _settings(cfg), name=rung_name)
        tensors = [det.preprocess(f) for f in sample_frames]
        p50, p95 = measure(det, tensors, invokes)
        prof = saved.get(rung_name) or RungProfile(rung_name, size, 1, p50, p95, max(0.0, rss_mb() - before))
        rungs.append(Rung(det, prof))
        if on_rung is not None:
            on_rung(rung_name)
    if not rungs:
        raise ConfigError("scheduler: no rung could be loaded")
    cheapest = min(rungs, key=lambda r: r.profile.cost_ms)
    for k in sc.cadences:
        name = f"{cheapest.name}/k{k}"
        p = cheapest.profile
        prof = saved.get(name) or RungProfile(name, p.size, k, p.p50_ms, p.p95_ms, 0.0)
        rungs.append(Rung(cheapest.detector, prof))
    rungs.sort(key=lambda r: -r.profile.cost_ms)  # best (most expensive) first: measured, not assumed
    for r in rungs:
        p = r.profile
        log.info(
            "scheduler rung %-44s p50 %6.2f ms p95 %6.2f ms cost %6.2f ms/frame",
            p.name,
            p.p50_ms,
            p.p95_ms,
            p.cost_ms,
        )
    return rungs
