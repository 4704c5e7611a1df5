"""Where edgevision keeps things: every location is resolved here, and only here.

Each location has one configuration key and one environment variable so a test, a benchmark or the service can
move it. Precedence: a command-line flag, then the config file, then the environment, then the per-user default
(the model mirror: flag, environment, config file, as ``service install`` always did).

``models.dir``         / ``EDGEVISION_MODELS_DIR``   installed models (default ``$XDG_CACHE_HOME/edgevision/models``)
``scheduler.derived_dir``                            derived (re-shaped) rungs (default ``<models dir>/derived``)
``recorder.data_dir``  / ``EDGEVISION_DATA_DIR``     recordings, the event index ``events.db`` and the MQTT outbox
                                                     (default ``$XDG_DATA_HOME/edgevision``)
``models.mirror``      / ``EDGEVISION_MODEL_MIRROR`` a directory or http(s) URL tried before the official model URLs
``EDGEVISION_SHARED``  real test models and media (tests and benchmarks only; default ``../shared``)
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edgevision.config import EdgeVisionConfig

SERVICE_MODELS_DIR = Path("/var/lib/edgevision/models")
SERVICE_DATA_DIR = Path("/var/lib/edgevision")
EVENTS_INDEX = "events.db"  # the event index, in the data directory
MQTT_OUTBOX = "mqtt-outbox.db"  # MQTT messages not yet acknowledged, in the data directory
PROFILE = "profile.json"  # measured rung costs (`edgevision bench models`), in the derived directory


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


def models_dir(cfg: EdgeVisionConfig) -> Path:
    """Installed models: ``models.dir`` (a ``--models-dir`` flag sets it), else the per-user default."""
    return cfg.models.dir or default_models_dir()


def derived_dir(cfg: EdgeVisionConfig) -> Path:
    """Derived rungs (flatbuffers re-shaped to another input size): ``scheduler.derived_dir`` or
    ``<models dir>/derived``."""
    return cfg.scheduler.derived_dir or models_dir(cfg) / "derived"


def profile_path(cfg: EdgeVisionConfig) -> Path:
    """Where ``bench models`` writes the rung profile unless told otherwise."""
    return derived_dir(cfg) / PROFILE


def data_dir(cfg: EdgeVisionConfig) -> Path:
    """Recordings, the event index and the MQTT outbox: ``recorder.data_dir`` (``--data-dir``), else the
    per-user default."""
    return cfg.recorder.data_dir or default_data_dir()


def events_index(data: Path) -> Path:
    """The event index (SQLite) of a data directory."""
    return data / EVENTS_INDEX


def mqtt_outbox(data: Path) -> Path:
    """The persistent MQTT outbox of a data directory."""
    return data / MQTT_OUTBOX


def model_mirror(cfg: EdgeVisionConfig | None, flag: str | None = None) -> str | None:
    """Where models are fetched from first: ``--mirror``, else ``EDGEVISION_MODEL_MIRROR``, else
    ``models.mirror``; ``None`` means the official URLs only."""
    return flag or os.environ.get("EDGEVISION_MODEL_MIRROR") or (cfg.models.mirror if cfg else None) or None


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
