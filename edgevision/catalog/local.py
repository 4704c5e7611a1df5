"""Models made on this device (distilled students): ``<models dir>/local/<name>.tflite`` plus a manifest.

The manifest ``<models dir>/local/<name>.json`` says what the model is (the same :class:`Architecture` as a catalog
entry), which teacher it learned from, the data it saw, how it validated and the score threshold calibrated to the
teacher's operating point. A model is listed only when its manifest parses and its file matches the manifest's size
and sha256, so a half-installed or edited student is never run.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgevision.catalog.entries import Architecture

log = logging.getLogger(__name__)

LOCAL_SUBDIR = "local"


class TeacherRef(BaseModel):
    """The catalog model a student was distilled from."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class LocalModel(BaseModel):
    """Manifest of a model made on this device."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    schema_: int = Field(default=1, alias="schema")
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    file: str
    size: int
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    task: str = "detect"
    architecture: Architecture
    labels: str | None = None  # a catalog label entry name (the teacher's labels)
    threshold: float = Field(gt=0, lt=1)  # calibrated score threshold, used by default when it runs
    teacher: TeacherRef
    data: dict[str, Any] = Field(default_factory=dict)
    validation: dict[str, Any] = Field(default_factory=dict)
    latency: dict[str, Any] = Field(default_factory=dict)
    created: str = ""


def local_dir(models_dir: Path) -> Path:
    """Where students live inside a models directory."""
    return models_dir / LOCAL_SUBDIR


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_manifest(path: Path) -> LocalModel:
    """Parse one manifest (raises ``ValueError`` with the reason when it does not validate)."""
    try:
        return LocalModel.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, ValidationError) as exc:
        raise ValueError(f"{path}: {exc}") from None


def list_local_models(models_dir: Path) -> dict[str, LocalModel]:
    """Every intact student in ``models_dir`` by name (a broken one is logged and left out)."""
    out: dict[str, LocalModel] = {}
    d = local_dir(models_dir)
    if not d.is_dir():
        return out
    for manifest in sorted(d.glob("*.json")):
        try:
            m = read_manifest(manifest)
        except ValueError as exc:
            log.warning("local model skipped: %s", exc)
            continue
        model_path = d / m.file
        if not model_path.is_file() or model_path.stat().st_size != m.size:
            log.warning("local model %s skipped: %s missing or of the wrong size", m.name, model_path)
            continue
        out[m.name] = m
    return out


def local_model_path(models_dir: Path, model: LocalModel) -> Path:
    return local_dir(models_dir) / model.file
