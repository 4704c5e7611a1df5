"""Typed catalog entries, validated strictly from ``models/catalog.yaml``."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edgevision.errors import ConfigError, ModelError
from edgevision.paths import data_file

Task = Literal["detect", "face", "landmark", "classify"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Source(_Strict):
    """Where a file comes from: a URL (optionally an archive member) or a member of a pinned PyPI wheel."""

    url: str | None = None
    member: str | None = None
    pypi: str | None = None
    wheel: str | None = None
    wheel_sha256: str | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Source:
        if (self.url is None) == (self.pypi is None):
            raise ValueError("a source needs exactly one of url: or pypi:")
        if self.pypi is not None and not (self.wheel and self.wheel_sha256 and self.member):
            raise ValueError("a pypi: source needs wheel:, wheel_sha256: and member:")
        return self

    @property
    def archive_name(self) -> str | None:
        """File name of the archive or wheel this source downloads, when it is not the file itself."""
        if self.pypi is not None:
            return self.wheel
        if self.member is not None and self.url is not None:
            return self.url.rstrip("/").rsplit("/", 1)[-1]
        return None

    def describe(self) -> str:
        if self.pypi is not None:
            return f"pypi {self.pypi} ({self.wheel}) :: {self.member}"
        return f"{self.url}" + (f" :: {self.member}" if self.member else "")


class Architecture(_Strict):
    family: str
    alpha: float = Field(gt=0, le=2)
    input: tuple[int, int]
    quantization: Literal["uint8", "int8", "float32", "float16"]
    head: str
    postprocess: bool


class _FileEntry(_Strict):
    name: str = ""
    file: str
    size: int | None = None
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    unpinned: str | None = None
    license: str
    sources: tuple[Source, ...]

    @model_validator(mode="after")
    def _pinned(self) -> _FileEntry:
        if self.sha256 is None and not self.unpinned:
            raise ValueError("an entry without sha256 must say why in unpinned:")
        if "/" in self.file or self.file.startswith("."):
            raise ValueError("file: must be a plain file name")
        return self


class LabelEntry(_FileEntry):
    """A label file."""


class ModelEntry(_FileEntry):
    """A model file and what it is."""

    task: Task
    description: str
    architecture: Architecture
    labels: str | None = None
    device: Literal["cpu", "edgetpu"] = "cpu"
    cpu_twin: str | None = None
    input_range: tuple[float, float] | None = None


class Catalog(_Strict):
    """The whole catalog: labels and models by name."""

    schema_: int = Field(alias="schema")
    labels: dict[str, LabelEntry]
    models: dict[str, ModelEntry]

    @model_validator(mode="after")
    def _references(self) -> Catalog:
        for name, m in self.models.items():
            if m.labels is not None and m.labels not in self.labels:
                raise ValueError(f"models.{name}.labels: unknown label entry '{m.labels}'")
            if m.cpu_twin is not None and m.cpu_twin not in self.models:
                raise ValueError(f"models.{name}.cpu_twin: unknown model '{m.cpu_twin}'")
        return self

    def model(self, name: str) -> ModelEntry:
        """The entry called ``name``; unknown names list what exists."""
        try:
            return self.models[name]
        except KeyError:
            raise ModelError(unknown_model(name, self.models)) from None

    def entry(self, name: str) -> ModelEntry | LabelEntry:
        if name in self.models:
            return self.models[name]
        if name in self.labels:
            return self.labels[name]
        hint = did_you_mean(name, [*self.models, *self.labels])
        raise ModelError(f"unknown catalog entry '{name}'{hint} (see `edgevision models list`)")

    def files_for(self, name: str) -> list[ModelEntry | LabelEntry]:
        """The model and its label file, i.e. everything ``models fetch NAME`` installs."""
        entry = self.entry(name)
        out: list[ModelEntry | LabelEntry] = [entry]
        if isinstance(entry, ModelEntry) and entry.labels:
            out.append(self.labels[entry.labels])
        return out


def parse_catalog(text: str, origin: str = "catalog.yaml") -> Catalog:
    """Parse and validate catalog YAML text."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{origin}: invalid YAML: {exc}") from None
    try:
        for section in ("labels", "models"):
            for key, value in (raw.get(section) or {}).items():
                if isinstance(value, dict):
                    value.setdefault("name", key)
        return Catalog.model_validate(raw)
    except (ValidationError, AttributeError) as exc:
        raise ConfigError(f"{origin}: invalid catalog: {exc}") from None


@lru_cache(maxsize=4)
def _load(path: str) -> Catalog:
    return parse_catalog(Path(path).read_text(encoding="utf-8"), path)


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest known name (difflib), or ``""``."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def unknown_model(name: str, known: Iterable[str]) -> str:
    """The one message for a model name that names nothing here (``detect``, ``run``, ``config check``): the
    closest known name, else the known names."""
    names = sorted(known)
    hint = did_you_mean(name, names)
    where = "see `edgevision models list`" if hint else f"known: {', '.join(names)}"
    return f"unknown model '{name}'{hint} ({where}; or give the path of a .tflite file)"


def load_catalog(path: Path | None = None) -> Catalog:
    """Load the packaged catalog (or ``path``)."""
    return _load(str(path or data_file("catalog.yaml")))
