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
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgevision.catalog.entries import Architecture
from edgevision.errors import ModelError
from edgevision.fsutil import fsync_dir, unlink_quietly

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
    training: dict[str, Any] = Field(default_factory=dict)
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


def verify_local_model(models_dir: Path, model: LocalModel) -> Path:
    """The student's file, after checking its size and sha256 against the manifest (ModelError otherwise)."""
    path = local_model_path(models_dir, model)
    if not path.is_file():
        raise ModelError(f"local model '{model.name}': {path} is missing; distil it again")
    if path.stat().st_size != model.size or file_sha256(path) != model.sha256:
        raise ModelError(
            f"local model '{model.name}': {path} does not match its manifest (size/sha256); distil it again"
        )
    return path


def _write_synced(path: Path, data: bytes) -> None:
    with path.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def install_local_model(models_dir: Path, manifest: LocalModel, model_bytes: bytes) -> Path:
    """Install a student atomically: model file first, manifest last, each temp file + fsync + rename.

    A kill at any instant leaves either the previous student (its manifest still matches its old file, or the
    new file is not yet renamed), or a new file with the old manifest — which :func:`list_local_models` skips
    because size/sha256 do not match — or the complete new student. Never a manifest pointing at a partial file.
    """
    if manifest.size != len(model_bytes) or manifest.sha256 != hashlib.sha256(model_bytes).hexdigest():
        raise ValueError("manifest size/sha256 do not describe the model bytes")
    d = local_dir(models_dir)
    d.mkdir(parents=True, exist_ok=True)
    final = d / manifest.file
    meta = d / f"{manifest.name}.json"
    tmp = d / f".{manifest.file}.{os.getpid()}.tmp"
    tmp_meta = d / f".{meta.name}.{os.getpid()}.tmp"
    try:
        _write_synced(tmp, model_bytes)
        os.replace(tmp, final)
        fsync_dir(d)
        text = json.dumps(manifest.model_dump(by_alias=True), indent=2, sort_keys=False) + "\n"
        _write_synced(tmp_meta, text.encode("utf-8"))
        os.replace(tmp_meta, meta)
        fsync_dir(d)
    finally:
        unlink_quietly(tmp)
        unlink_quietly(tmp_meta)
    return final
