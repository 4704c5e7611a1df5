"""Checks of a validated config against this machine: model names, the data directory.

The schema (:mod:`edgevision.config`) checks what a config *says*; :func:`check_config` checks that it can
*work here*, so ``edgevision config check`` and ``edgevision run`` refuse with exit 78 and ``file:line`` before
any model is loaded or any source opened:

* every model name is a catalog entry, a model made on this device (``<models dir>/local``) or the path of an
  existing regular file;
* the data directory (recordings, the event index, the MQTT outbox) is a writable directory, or can be
  created as one.
"""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

from edgevision.catalog.entries import load_catalog, unknown_model
from edgevision.catalog.local import list_local_models
from edgevision.config import Device, EdgeVisionConfig
from edgevision.errors import ConfigError
from edgevision.paths import data_dir, models_dir
from edgevision.safe_read import file_kind
from edgevision.writable import dir_problem


def model_keys(cfg: EdgeVisionConfig) -> list[tuple[tuple[Any, ...], str]]:
    """Every model the config names, with its key path."""
    keys: list[tuple[tuple[Any, ...], str]] = [(("detector", "model"), cfg.detector.model)]
    f = cfg.faces
    keys += [(("faces", "model"), f.model), (("faces", "frame_model"), f.frame_model)]
    keys.append((("faces", "landmark_model"), f.landmark_model))
    keys += [(("scheduler", "models", i), m) for i, m in enumerate(cfg.scheduler.models)]
    keys.append((("scheduler", "person_gate", "model"), cfg.scheduler.person_gate.model))
    return keys


def models_loaded(cfg: EdgeVisionConfig) -> list[str]:
    """Model names (no paths) the configured pipeline loads, once each: the detector (and its Edge TPU twin),
    the face models in use, the scheduler's models and its person gate."""
    from edgevision.catalog.entries import load_catalog

    names = [cfg.detector.model]
    if cfg.runtime.device is Device.EDGETPU:
        names += [n for n, m in load_catalog().models.items() if m.cpu_twin == cfg.detector.model]
    if cfg.faces.enabled or cfg.privacy.blur_faces:
        names += [cfg.faces.model] + ([cfg.faces.landmark_model] if cfg.faces.landmarks else [])
        if cfg.privacy.blur_faces:
            names.append(cfg.faces.frame_model)
    if cfg.scheduler.enabled:
        names += cfg.scheduler.models
        if cfg.scheduler.person_gate.enabled:
            names.append(cfg.scheduler.person_gate.model)
    return [n for i, n in enumerate(names) if n not in names[:i] and not _looks_like_path(n)]


def _looks_like_path(spec: str) -> bool:
    # the same rule as edgevision.catalog.resolve: a slash, a .tflite suffix, or an existing file
    return "/" in spec or spec.endswith(".tflite") or (Path(spec).suffix != "" and Path(spec).exists())


def model_problem(spec: str, known: set[str]) -> str | None:
    """Why ``spec`` cannot name a model here, or None."""
    if spec in known:
        return None
    if _looks_like_path(spec):
        try:
            st = Path(spec).stat()
        except FileNotFoundError:
            return f"model file {spec} not found"
        except OSError as exc:
            return f"model file {spec}: {exc.strerror}"
        if not stat.S_ISREG(st.st_mode):
            return f"model file {spec} is {file_kind(st.st_mode)}, not a regular file"
        return None
    return unknown_model(spec, known)


def data_dir_problem(path: Path) -> str | None:
    """Why ``path`` cannot be the data directory, or None (it is, or can be created as, a writable dir)."""
    return dir_problem(path)


def model_errors(cfg: EdgeVisionConfig) -> list[str]:
    """``file:line key: message`` for every model name that does not name a model here."""
    catalog = load_catalog()
    known = set(catalog.models) | set(list_local_models(models_dir(cfg)))
    errors = []
    for key, spec in model_keys(cfg):
        problem = model_problem(spec, known)
        if problem:
            errors.append(f"{cfg.where(*key)} {'.'.join(map(str, key))}: {problem}")
    return errors


def data_dir_errors(cfg: EdgeVisionConfig) -> list[str]:
    """``file:line recorder.data_dir: message`` when the data directory cannot be used."""
    explicit = cfg.recorder.data_dir is not None
    if not (explicit or cfg.recorder.enabled or cfg.mqtt.enabled):
        return []
    data = data_dir(cfg)
    problem = data_dir_problem(data)
    if not problem:
        return []
    where = cfg.where("recorder", "data_dir") if explicit else f"{cfg.where()} (default)"
    return [f"{where} recorder.data_dir: {problem}"]


def check_models(cfg: EdgeVisionConfig) -> None:
    """Raise :class:`ConfigError` when a model name is unknown (for ``service install``, whose data
    directory is the service's, not the installing user's)."""
    errors = model_errors(cfg)
    if errors:
        raise ConfigError("\n".join(errors))


def check_config(cfg: EdgeVisionConfig) -> None:
    """Raise :class:`ConfigError` listing every problem (``file:line key: message``); return when all is well."""
    errors = model_errors(cfg) + data_dir_errors(cfg)
    if errors:
        raise ConfigError("\n".join(errors))
