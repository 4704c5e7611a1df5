"""The rung ladder: resolution rungs derived from real SSDs, width rungs (narrower catalog SSDs and students
distilled on this device, each with resolution rungs of its own where its graph allows), cadence rungs.

The ladder is ordered by expected quality known in advance (:mod:`edgevision.scheduler.quality`: family, α,
input side, cadence); the profile measured on this device only tells the controller what fits the budget.
Every rung is loaded up front (within ``memory_budget_mb``), so switching costs no reload.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgevision.catalog.entries import Catalog, load_catalog
from edgevision.catalog.labels import load_labels
from edgevision.catalog.local import list_local_models, local_model_path
from edgevision.catalog.resolve import resolve_model
from edgevision.config import DetectorConfig, EdgeVisionConfig, SchedulerConfig
from edgevision.detection.detector import Detector
from edgevision.detection.factory import runtime_options
from edgevision.errors import ConfigError, ModelError
from edgevision.fsutil import install_atomically, unlink_quietly
from edgevision.inference.backends import RuntimeOptions, open_interpreter, runtime_name
from edgevision.paths import models_dir
from edgevision.scheduler.derive import ensure_derived
from edgevision.scheduler.quality import expected_quality, ladder_key

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
    """Measured on this device: invoke latency, memory, and (``bench models --video``) agreement with the best
    rung: ``agreement`` the share of frames where both see a person or neither does, ``box_f1`` the person-box
    F1 at IoU 0.5 (on a crowd every rung sees *a* person; only the boxes tell the rungs apart)."""

    name: str
    size: int
    cadence: int
    p50_ms: float
    p95_ms: float
    rss_mb: float
    agreement: float | None = None
    box_f1: float | None = None

    @property
    def cost_ms(self) -> float:
        """Typical per-frame cost (p50; orders the ladder): a rung detecting every k-th frame costs 1/k."""
        return self.p50_ms / self.cadence

    @property
    def worst_ms(self) -> float:
        """p95 per-frame cost (what the controller predicts with)."""
        return self.p95_ms / self.cadence


@dataclass(frozen=True)
class RungSpec:
    """What a rung is, known before loading it: the model it runs, at which input side and cadence."""

    model: str  # catalog or local model name (a rung's resolution / cadence variants share it)
    family: str
    alpha: float
    size: int
    cadence: int = 1
    kind: str = "catalog"  # catalog | local

    @property
    def name(self) -> str:
        base = f"{self.model}@{self.size}"
        return base if self.cadence == 1 else f"{base}/k{self.cadence}"

    @property
    def quality(self) -> float:
        """Expected quality of the detections (the prior the ladder is ordered by)."""
        return expected_quality(self.family, self.alpha, self.size)

    def sort_key(self) -> tuple[int, float, bool, str]:
        return ladder_key(self.family, self.alpha, self.size, self.cadence, self.name, self.kind == "local")


def switch_kind(a: RungSpec, b: RungSpec) -> str:
    """What a switch from ``a`` to ``b`` changes: ``cadence``, ``resolution`` (same model), ``width`` (same
    family at another α) or ``model`` (another family, or another model at the same α: a student at its
    teacher's width is not a narrower one)."""
    if a.cadence != b.cadence:
        return "cadence"
    if a.model == b.model:
        return "resolution"
    if a.family == b.family and a.alpha != b.alpha:
        return "width"
    return "model"


@dataclass
class Rung:
    detector: Detector
    profile: RungProfile
    spec: RungSpec
    model_ms: float | None = (
        None  # invoke cost from the model's fit over its resolution rungs (see smooth_costs)
    )

    @property
    def name(self) -> str:
        return self.profile.name

    @property
    def expected_ms(self) -> float:
        """The invoke cost the controller predicts with: the fitted one, else the measured p50."""
        return self.model_ms if self.model_ms is not None else self.profile.p50_ms


def smooth_costs(rungs: Sequence[Rung]) -> None:
    """Fit each model's invoke cost as ``c x side²`` (a MobileNet's cost scales with the input area; measured
    here within a few per cent over 128-300 px) with ``c`` the median over its rungs, so one measurement taken
    during a burst of other work cannot make 256 px look dearer than 300 px, or cheaper than 192 px."""
    by_model: dict[str, list[float]] = {}
    for r in rungs:
        if r.spec.cadence == 1:
            by_model.setdefault(r.spec.model, []).append(r.profile.p50_ms / r.spec.size**2)
    for r in rungs:
        c = float(np.median(by_model[r.spec.model])) if r.spec.model in by_model else None
        r.model_ms = c * r.spec.size**2 if c is not None else None


def order_ladder(rungs: Sequence[Rung]) -> list[Rung]:
    """Best expected quality first (cadence 1 before any k > 1); measured costs play no part."""
    return sorted(rungs, key=lambda r: r.spec.sort_key())


def measure(detector: Detector, tensors: Sequence[np.ndarray], invokes: int) -> tuple[float, float]:
    """p50 / p95 invoke latency (ms) over ``invokes`` runs on real preprocessed frames, after a warm-up."""
    h = detector.handle
    for t in tensors[:3]:
        h.invoke_on(t)
    times = []
    for i in range(invokes):
        t0 = time.perf_counter()
        h.invoke_on(tensors[i % len(tensors)])
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.percentile(times, 50)), float(np.percentile(times, 95))


def _width_models(sc: SchedulerConfig, mdir: Path, cat: Catalog) -> list[str]:
    """Installed catalog detectors narrower than the configured ones: the same family at a smaller α, or
    MobileNet V3. The configured models themselves never count, whatever their α."""
    configured = [cat.models[n].architecture for n in sc.models if n in cat.models]
    out = []
    for name, m in cat.models.items():
        if m.task != "detect" or m.device != "cpu" or name in sc.models:
            continue
        a = m.architecture
        narrower = a.family.startswith("mobilenet_v3") or any(
            a.family == c.family and a.alpha < c.alpha for c in configured
        )
        if narrower and (mdir / m.file).exists():
            out.append(name)
    return out


def load_profile(path: Path, expect: dict[str, Any] | None = None) -> dict[str, RungProfile]:
    """The rungs of a saved profile (``edgevision bench models``), by name.

    ``expect`` holds what the timings depend on (``threads``, ``kernels``): a profile saved with other values
    timed other kernels, so it is ignored with a warning (empty result) and the rungs are timed afresh. A key
    the profile lacks (one saved before it was recorded) is not held against it."""
    try:
        data = json.loads(path.read_text())
        rungs = {r["name"]: RungProfile(**r) for r in data["rungs"]}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: cannot read scheduler profile: {exc}") from None
    differ = {k: (data[k], v) for k, v in (expect or {}).items() if k in data and data[k] != v}
    if differ:
        said = ", ".join(f"{k} {saved!r} (this run: {now!r})" for k, (saved, now) in differ.items())
        log.warning(
            "scheduler: profile %s was measured with %s: ignored, rungs timed at start-up", path, said
        )
        return {}
    return rungs


def profile_conditions(cfg: EdgeVisionConfig) -> dict[str, Any]:
    """What a profile's timings depend on besides the device: saved with it, checked when it is loaded. The
    runtime is the one ``runtime.runtime`` resolves to here: ``auto`` is LiteRT where it is installed and
    tflite-runtime where only that is, whose kernels time quantized models several times slower."""
    return {
        "threads": cfg.runtime.threads,
        "kernels": cfg.runtime.kernels.value,
        "runtime": runtime_name(cfg.runtime.runtime),
    }


def save_profile(path: Path, rungs: Sequence[RungProfile], extra: dict[str, Any]) -> None:
    """Write a profile atomically: a write that fails (a full disk) leaves the previous profile whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps({**extra, "rungs": [asdict(r) for r in rungs]}, indent=2) + "\n")
        install_atomically(tmp, path)
    except BaseException:
        unlink_quietly(tmp)
        raise


@dataclass(frozen=True)
class _Load:
    """A rung to load: its spec, file, labels, score threshold and float input range."""

    spec: RungSpec
    path: Path
    labels: dict[int, str]
    threshold: float | None = None
    float_range: tuple[float, float] | None = None


def _catalog_specs(sc: SchedulerConfig, mdir: Path, cat: Catalog, derived_dir: Path) -> list[_Load]:
    """The configured models at each configured side (derived where it is not the native one), then the
    installed narrower catalog models at their native side."""
    out = []
    for name in sc.models:
        res = resolve_model(name, mdir, cat)
        arch = res.entry.architecture if res.entry else None
        native = arch.input[0] if arch else 300
        fam, alpha = (arch.family, arch.alpha) if arch else ("unknown", 1.0)
        rng = res.entry.input_range if res.entry else None
        for size in sc.sizes:
            path = res.path if size == native else ensure_derived(res.path, size, derived_dir)
            out.append(_Load(RungSpec(name, fam, alpha, size), path, res.labels, None, rng))
    for name in _width_models(sc, mdir, cat):
        res = resolve_model(name, mdir, cat)
        assert res.entry is not None
        a = res.entry.architecture
        spec = RungSpec(name, a.family, a.alpha, a.input[0])
        out.append(_Load(spec, res.path, res.labels, None, res.entry.input_range))
    return out


def _local_specs(sc: SchedulerConfig, mdir: Path, cat: Catalog, derived_dir: Path) -> list[_Load]:
    """Students made on this device: at their native side, and at the configured smaller sides when their
    graph can be derived like the teacher's (a TFLite_Detection_PostProcess SSD); else native only."""
    out = []
    for name, m in list_local_models(mdir).items():
        if m.task != "detect":
            continue
        path = local_model_path(mdir, m)
        label_entry = m.labels or (
            cat.models[m.teacher.name].labels if m.teacher.name in cat.models else None
        )
        labels: dict[int, str] = {}
        if label_entry and label_entry in cat.labels and (mdir / cat.labels[label_entry].file).exists():
            labels = load_labels(mdir / cat.labels[label_entry].file)
        a = m.architecture
        native = a.input[0]
        rng = (-1.0, 1.0) if a.quantization in ("float32", "float16") else None
        out.append(
            _Load(RungSpec(name, a.family, a.alpha, native, kind="local"), path, labels, m.threshold, rng)
        )
        for size in sorted({s for s in sc.sizes if s < native}, reverse=True):
            try:
                derived = ensure_derived(path, size, derived_dir)
            except ModelError as exc:
                log.info("scheduler: %s runs at its native %d px only (%s)", name, native, exc)
                break
            spec = RungSpec(name, a.family, a.alpha, size, kind="local")
            out.append(_Load(spec, derived, labels, m.threshold, rng))
    return out


def plan_rungs(sc: SchedulerConfig, mdir: Path, cat: Catalog | None = None) -> list[_Load]:
    """What to load, from the ``scheduler:`` section and the models directory (deriving smaller-input models on
    first use): configured catalog models, narrower installed ones, then students made on this device."""
    cat = cat or load_catalog()
    derived_dir = sc.derived_dir or (mdir / "derived")
    return _catalog_specs(sc, mdir, cat, derived_dir) + _local_specs(sc, mdir, cat, derived_dir)


def load_rung(item: _Load, opts: RuntimeOptions, det: DetectorConfig) -> Detector | None:
    """Open one planned rung as a detector; None (logged) for a student that cannot load, whose absence only
    narrows the ladder. A configured catalog model that cannot load is an error."""
    config = det if item.threshold is None else det.model_copy(update={"threshold": item.threshold})
    try:
        handle = open_interpreter(item.path, opts)
        return Detector(handle, item.labels, config, item.spec.name, item.float_range)
    except ModelError as exc:
        if item.spec.kind != "local":
            raise
        log.warning("scheduler: rung %s not loaded: %s", item.spec.name, exc)
        return None


def profile_rung(
    det: Detector, spec: RungSpec, sample_frames: Sequence[np.ndarray], invokes: int, rss_before: float
) -> RungProfile:
    """Time ``det`` on the sample frames; its memory is what the process grew by since ``rss_before``."""
    p50, p95 = measure(det, [det.preprocess(f) for f in sample_frames], invokes)
    return RungProfile(spec.name, spec.size, 1, p50, p95, max(0.0, rss_mb() - rss_before))


def warm_up(det: Detector, sample_frames: Sequence[np.ndarray]) -> None:
    """One invoke on the first sample frame (none without frames)."""
    if len(sample_frames):
        det.handle.invoke_on(det.preprocess(sample_frames[0]))


def cadence_rungs(
    rungs: Sequence[Rung], cadences: Sequence[int], saved: dict[str, RungProfile]
) -> list[Rung]:
    """The cheapest rung again at each cadence k (detect every k-th frame, carry the boxes in between).

    Cheapest by the fitted cost (:func:`smooth_costs`, applied to ``rungs`` here): one rung timed slow during a
    burst of other work must not make a larger one the base of every cadence rung, and the cheapest of all."""
    smooth_costs(rungs)
    cheapest = min(rungs, key=lambda r: r.expected_ms / r.spec.cadence)  # carries the rung that fits the most
    out = []
    for k in cadences:
        spec = replace(cheapest.spec, cadence=k)
        p = cheapest.profile
        prof = saved.get(spec.name) or RungProfile(spec.name, p.size, k, p.p50_ms, p.p95_ms, 0.0)
        out.append(Rung(cheapest.detector, prof, spec, cheapest.model_ms))
    return out


def log_ladder(rungs: Sequence[Rung]) -> None:
    for r in rungs:
        p = r.profile
        log.info(
            "scheduler rung %-44s quality %5.1f  p50 %6.2f ms p95 %6.2f ms  fitted %6.2f ms/frame",
            p.name,
            r.spec.quality,
            p.p50_ms,
            p.p95_ms,
            r.expected_ms / p.cadence,
        )


def build_ladder(
    cfg: EdgeVisionConfig,
    sample_frames: Sequence[np.ndarray],
    invokes: int = 15,
    on_rung: Callable[[str], None] | None = None,
) -> list[Rung]:
    """Plan the rungs, load each (within the memory budget), profile it (or take the saved profile, without
    timing it again), add the cadence rungs, order by quality.

    ``on_rung(name)`` is called after each rung is loaded and timed (a progress bar's hook)."""
    sc = cfg.scheduler
    opts = runtime_options(cfg)
    saved = load_profile(sc.profile, profile_conditions(cfg)) if sc.profile else {}
    rungs: list[Rung] = []
    base_rss = rss_mb()
    for item in plan_rungs(sc, models_dir(cfg)):
        spec = item.spec
        before = rss_mb()
        if before - base_rss > sc.memory_budget_mb:
            log.warning(
                "scheduler: memory budget %d MiB reached; rung %s not loaded", sc.memory_budget_mb, spec.name
            )
            continue
        det = load_rung(item, opts, cfg.detector)
        if det is None:
            continue
        # a saved profile (timed under this run's conditions) stands for the start-up timing; one warm-up invoke
        # still allocates the interpreter's buffers and packed weights now, so the memory budget sees them and
        # the controller's first switch to this rung does not pay them as a latency spike
        prof = saved.get(spec.name)
        if prof is not None:
            warm_up(det, sample_frames)
        else:
            prof = profile_rung(det, spec, sample_frames, invokes, before)
        rungs.append(Rung(det, prof, spec))
        if on_rung is not None:
            on_rung(spec.name)
    if not rungs:
        raise ConfigError("scheduler: no rung could be loaded")
    rungs = order_ladder(rungs + cadence_rungs(rungs, sc.cadences, saved))
    smooth_costs(rungs)
    log_ladder(rungs)
    return rungs
