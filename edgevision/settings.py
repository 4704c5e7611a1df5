"""Where edgevision keeps things: model directory, data directory and the shared test assets.

Every location has one environment variable so a test, a benchmark or the service can move it:

``EDGEVISION_MODELS_DIR``   installed models (default: ``$XDG_CACHE_HOME/edgevision/models``)
``EDGEVISION_DATA_DIR``     recordings and the event index (default: ``$XDG_DATA_HOME/edgevision``)
``EDGEVISION_MODEL_MIRROR`` a directory or http(s) URL tried before the official model URLs
``EDGEVISION_SHARED``       real test models and media (tests and benchmarks only; default ``../shared``)
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

SERVICE_MODELS_DIR = Path("/var/lib/edgevision/models")
SERVICE_DATA_DIR = Path("/var/lib/edgevision")


def _xdg(var: str, fallback: str) -> Path:
    value = os.environ.get(var)
    return Path(value) if value else Path.home() / fallback


def default_models_dir() -> Path:
    """The per-user model cache, overridable with ``EDGEVISION_MODELS_DIR``."""
    env = os.environ.get("EDGEVISION_MODELS_DIR")
    if env:
        return Path(env)
    return _xdg("XDG_CACHE_HOME", ".cache") / "edgevision" / "models"


def default_data_dir() -> Path:
    """The per-user data directory, overridable with ``EDGEVISION_DATA_DIR``."""
    env = os.environ.get("EDGEVISION_DATA_DIR")
    if env:
        return Path(env)
    return _xdg("XDG_DATA_HOME", ".local/share") / "edgevision"


def data_file(relative: str) -> Path:
    """A file shipped with the package (catalog, configs, unit file).

    In a wheel they live in ``edgevision/data``; in a source checkout (editable install) they are read from
    the repository's top-level ``models/``, ``configs/`` and ``systemd/`` directories.
    """
    packaged = Path(str(resources.files("edgevision"))) / "data" / relative
    if packaged.exists():
        return packaged
    repo = Path(__file__).resolve().parent.parent
    mapping = {"catalog.yaml": repo / "models" / "catalog.yaml"}
    if relative in mapping:
        return mapping[relative]
    return repo / relative
