"""Turn ``--model NAME|PATH`` plus runtime options into a loaded interpreter, with Edge TPU fallback."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

from edgevision.catalog.entries import Catalog, ModelEntry, load_catalog
from edgevision.catalog.fetch import verify_installed
from edgevision.catalog.labels import load_labels
from edgevision.catalog.local import LocalModel, list_local_models, verify_local_model
from edgevision.errors import EdgeTPUUnavailable, ModelError
from edgevision.inference.backends import InterpreterHandle, RuntimeOptions, open_interpreter
from edgevision.inference.tflite_file import inspect_tflite

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ResolvedModel:
    """A model file on disk, its catalog entry (if any) and its labels."""

    name: str
    path: Path
    entry: ModelEntry | None
    labels: dict[int, str]
    local: LocalModel | None = None  # a model made on this device (``models distill``)

    @property
    def default_threshold(self) -> float | None:
        """The score threshold calibrated for a local student (used unless the user sets one)."""
        return self.local.threshold if self.local is not None else None


def _looks_like_path(spec: str) -> bool:
    return "/" in spec or spec.endswith(".tflite") or (Path(spec).suffix != "" and Path(spec).exists())


def resolve_model(
    spec: str, models_dir: Path, catalog: Catalog | None = None, labels_path: Path | None = None
) -> ResolvedModel:
    """Find the file for a catalog name or a path; a catalog file must be installed and verify."""
    catalog = catalog or load_catalog()
    entry: ModelEntry | None = None
    if not _looks_like_path(spec) and spec not in catalog.models:
        local = list_local_models(models_dir).get(spec)
        if local is not None:
            return _resolve_local(local, models_dir, catalog, labels_path)
    if _looks_like_path(spec):
        path = Path(spec)
        inspect_tflite(path)  # not found / a directory / a FIFO / not TFLite: each says what it is
        entry = next((m for m in catalog.models.values() if m.file == path.name), None)
        name = path.stem
        labels_dir = path.parent
    else:
        entry = catalog.model(spec)
        path = models_dir / entry.file
        ok, msg = verify_installed(entry, models_dir)
        if not ok:
            hint = (
                f"run: edgevision models fetch {spec}"
                if msg == "not installed"
                else "re-fetch it with --force"
            )
            raise ModelError(f"model '{spec}' in {models_dir}: {msg}; {hint}")
        name = spec
        labels_dir = models_dir
    labels: dict[int, str] = {}
    if labels_path is not None:
        labels = load_labels(labels_path)
    elif entry is not None and entry.labels:
        lab = catalog.labels[entry.labels]
        candidate = labels_dir / lab.file
        if not candidate.exists() and labels_dir != models_dir:
            candidate = models_dir / lab.file
        if candidate.exists():
            labels = load_labels(candidate)
        elif not _looks_like_path(spec):
            raise ModelError(
                f"labels '{lab.file}' for model '{spec}' are not installed; run: edgevision models fetch {spec}"
            )
    return ResolvedModel(name, path, entry, labels)


def _resolve_local(
    local: LocalModel, models_dir: Path, catalog: Catalog, labels_path: Path | None
) -> ResolvedModel:
    """A student from ``<models dir>/local``: sha256-verified, labels of its teacher.

    A manifest naming no labels (written by hand) still gets its one class's name: every student's grafted
    postprocess op has a single class, the person, as id 0 (without it the person was "0" and no event
    matched ``recorder.labels``)."""
    path = verify_local_model(models_dir, local)
    labels: dict[int, str] = {0: "person"}
    if labels_path is not None:
        labels = load_labels(labels_path)
    elif local.labels:
        if local.labels not in catalog.labels:
            raise ModelError(f"local model '{local.name}': unknown label entry '{local.labels}'")
        candidate = models_dir / catalog.labels[local.labels].file
        if not candidate.exists():
            raise ModelError(
                f"labels '{candidate.name}' for local model '{local.name}' are not installed; "
                f"run: edgevision models fetch {local.teacher.name}"
            )
        labels = load_labels(candidate)
    return ResolvedModel(local.name, path, None, labels, local)


def _edgetpu_twin(catalog: Catalog, cpu_name: str) -> str | None:
    return next(
        (n for n, m in catalog.models.items() if m.cpu_twin == cpu_name and m.device == "edgetpu"), None
    )


def open_model(
    spec: str,
    models_dir: Path,
    options: RuntimeOptions,
    allow_cpu_fallback: bool = True,
    labels_path: Path | None = None,
    catalog: Catalog | None = None,
) -> tuple[InterpreterHandle, ResolvedModel]:
    """Resolve and load ``spec`` for the configured device.

    With ``device: edgetpu`` the model's Edge TPU twin is used when the catalog has one. When no Edge TPU can
    be used and ``allow_cpu_fallback`` is set, the CPU twin is loaded instead and a warning is logged.
    """
    catalog = catalog or load_catalog()
    want = spec
    if options.device == "edgetpu" and not _looks_like_path(spec) and spec in catalog.models:
        entry = catalog.model(spec)
        if entry.device != "edgetpu":
            want = _edgetpu_twin(catalog, spec) or spec
    resolved = resolve_model(want, models_dir, catalog, labels_path)
    needs_tpu = inspect_tflite(resolved.path).needs_edgetpu
    if options.device == "edgetpu" and not needs_tpu:
        msg = f"device is 'edgetpu' but model '{resolved.name}' is not compiled for the Edge TPU (no twin in the catalog)"
        if not allow_cpu_fallback:
            raise EdgeTPUUnavailable(msg)
        log.warning("%s; running it on the CPU", msg)
    try:
        handle = open_interpreter(resolved.path, replace(options, device="edgetpu" if needs_tpu else "cpu"))
        return handle, resolved
    except EdgeTPUUnavailable as exc:
        twin = resolved.entry.cpu_twin if resolved.entry else None
        if not (allow_cpu_fallback and twin):
            if not twin:
                raise EdgeTPUUnavailable(
                    f"{resolved.path}: model is compiled for the Edge TPU and has no CPU twin in the catalog; {exc}"
                ) from None
            raise
        log.warning("%s; falling back to the CPU model '%s'", exc, twin)
        cpu = resolve_model(twin, models_dir, catalog, labels_path)
        return open_interpreter(cpu.path, replace(options, device="cpu")), cpu
