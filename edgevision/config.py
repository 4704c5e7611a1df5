"""Strict, typed configuration loaded from YAML, with errors reported as ``file:line key: message``.

Unknown keys, wrong types and out-of-range values are all errors (``extra="forbid"``); command-line flags are
applied on top of the file before validation, so a bad flag value is reported the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edgevision.errors import ConfigError, UsageError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class RuntimeConfig(_Strict):
    """Which TFLite runtime and device run the models."""

    runtime: Literal["auto", "litert", "tflite-runtime"] = "auto"
    device: Literal["cpu", "edgetpu"] = "cpu"
    threads: int = Field(2, ge=1, le=64)
    edgetpu_device: str | None = None
    cpu_fallback: bool = True


class ModelsConfig(_Strict):
    """Where models are installed and fetched from."""

    dir: Path | None = None
    mirror: str | None = None


class DetectorConfig(_Strict):
    """The SSD detector and how its results are filtered."""

    model: str = "ssd_mobilenet_v1_coco_quant"
    labels_file: Path | None = None
    threshold: float = Field(0.5, ge=0.0, le=1.0)
    labels: list[str] | None = None
    max_detections: int = Field(20, ge=1, le=1000)


class SourceConfig(_Strict):
    """The frame source: a V4L2/USB camera, the Pi camera, a video file or a network stream."""

    kind: Literal["camera", "picamera2", "video", "url"] = "camera"
    camera: int = Field(0, ge=0)
    path: Path | None = None
    url: str | None = None
    width: int | None = Field(None, ge=16, le=8192)
    height: int | None = Field(None, ge=16, le=8192)
    fps: float | None = Field(None, gt=0, le=240)
    fourcc: str | None = None
    realtime: bool = False
    stall_timeout_s: float = Field(5.0, gt=0, le=600)
    open_timeout_s: float = Field(10.0, gt=0, le=600)
    reconnect_initial_s: float = Field(0.5, gt=0, le=60)
    reconnect_max_s: float = Field(30.0, gt=0, le=3600)
    picamera_main_size: tuple[int, int] = (1280, 720)
    picamera_lores_size: tuple[int, int] = (640, 360)

    @field_validator("fourcc")
    @classmethod
    def _fourcc(cls, v: str | None) -> str | None:
        if v is not None and len(v) != 4:
            raise ValueError("fourcc must be exactly 4 characters, e.g. MJPG or YUYV")
        return v

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("rtsp://", "rtsps://", "http://", "https://")):
            raise ValueError("url must start with rtsp://, rtsps://, http:// or https://")
        return v

    @model_validator(mode="after")
    def _needs(self) -> SourceConfig:
        if self.kind == "video" and self.path is None:
            raise ValueError("source.kind 'video' needs source.path")
        if self.kind == "url" and self.url is None:
            raise ValueError("source.kind 'url' needs source.url")
        if self.reconnect_max_s < self.reconnect_initial_s:
            raise ValueError("reconnect_max_s must be >= reconnect_initial_s")
        return self


class OutputConfig(_Strict):
    """What the run loop writes."""

    detections: Path | None = None
    save_video: Path | None = None
    status_interval_s: float = Field(5.0, gt=0, le=3600)
    show: bool = False


class EdgeVisionConfig(_Strict):
    """The whole configuration file (``configs/default.yaml`` documents every key)."""

    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    models: ModelsConfig = Field(default_factory=ModelsConfig)
    detector: DetectorConfig = Field(default_factory=DetectorConfig)
    source: SourceConfig = Field(default_factory=SourceConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    log_level: Literal["debug", "info", "warning", "error"] = "info"


def _line_map(node: yaml.Node, prefix: tuple[Any, ...], out: dict[tuple[Any, ...], int]) -> None:
    out.setdefault(prefix, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            path = (*prefix, key.value)
            out[path] = key.start_mark.line + 1
            _line_map(value, path, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _line_map(item, (*prefix, i), out)


def _set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    cur = data
    parts = dotted.split(".")
    for p in parts[:-1]:
        nxt = cur.get(p)
        if not isinstance(nxt, dict):
            nxt = {}
            cur[p] = nxt
        cur = nxt
    cur[parts[-1]] = value


def load_config(path: Path | None = None, overrides: dict[str, Any] | None = None) -> EdgeVisionConfig:
    """Load ``path`` (or the defaults), apply ``overrides`` (dotted keys from flags) and validate strictly."""
    origin = str(path) if path else "<defaults>"
    lines: dict[tuple[Any, ...], int] = {}
    raw: Any = {}
    if path is not None:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read config: {exc}") from None
        try:
            node = yaml.compose(text, Loader=yaml.SafeLoader)
            raw = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{path}:{mark.line + 1}" if mark else str(path)
            raise ConfigError(f"{where}: invalid YAML: {getattr(exc, 'problem', exc)}") from None
        if node is not None:
            _line_map(node, (), lines)
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}:1: the top level of a config file must be a mapping of sections")
    flagged: set[tuple[str, ...]] = set()
    for key, value in (overrides or {}).items():
        if value is not None:
            _set_path(raw, key, value)
            flagged.add(tuple(key.split(".")))
    try:
        return EdgeVisionConfig.model_validate(raw)
    except ValidationError as exc:
        msgs = []
        from_flags = 0
        for err in exc.errors():
            loc = tuple(err["loc"])
            key = ".".join(str(p) for p in loc) or "(top level)"
            if loc in flagged or any(loc[: len(f)] == f for f in flagged):
                where = "command line"
                from_flags += 1
            else:
                probe = loc
                while probe and probe not in lines:
                    probe = probe[:-1]
                where = f"{origin}:{lines.get(probe, 1)}"
            text = str(err["msg"]).removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                text = "unknown key"
            msgs.append(f"{where} {key}: {text}")
        if from_flags == len(msgs):
            raise UsageError("\n".join(msgs)) from None  # a bad flag value is a usage error (exit 2)
        raise ConfigError("\n".join(msgs)) from None
