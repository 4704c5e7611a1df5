"""Strict, typed configuration loaded from YAML, with errors reported as ``file:line key: message``.

Unknown keys, wrong types and out-of-range values are all errors (``extra="forbid"``); command-line flags are
applied on top of the file before validation, so a bad flag value is reported the same way.
"""

from __future__ import annotations

import enum
import ipaddress
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from edgevision.config_load import RawConfig, read_config_file
from edgevision.config_messages import set_path, validation_messages
from edgevision.errors import ConfigError, UsageError


class _Mode(str, enum.Enum):
    """A configuration mode: compares equal to, prints as and is written in YAML as its value."""

    def __str__(self) -> str:
        return str(self.value)


class Device(_Mode):
    """Where the detector runs."""

    CPU = "cpu"
    EDGETPU = "edgetpu"  # the Coral Edge TPU (falls back to the CPU twin with runtime.cpu_fallback)


class Kernels(_Mode):
    """Which CPU kernels run a uint8 per-tensor model (the catalog's SSDs and classifiers)."""

    INT8 = "int8"  # a checked int8 per-channel copy, made once (edgevision/inference/requant.py): faster
    AS_SHIPPED = "as-shipped"  # the file as downloaded


class SourceKind(_Mode):
    """Where frames come from."""

    CAMERA = "camera"  # V4L2 / USB camera index
    PICAMERA2 = "picamera2"  # the Raspberry Pi camera
    VIDEO = "video"  # a file: a deterministic replay, or paced with source.realtime
    URL = "url"  # an rtsp:// or http(s):// stream


class FaceRegion(_Mode):
    """Where the face stage looks."""

    PERSONS = "persons"  # the upper part of each person box
    FRAME = "frame"  # the whole frame


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class RuntimeConfig(_Strict):
    """Which TFLite runtime and device run the models."""

    runtime: Literal["auto", "litert", "tflite-runtime"] = "auto"
    device: Device = Device.CPU
    threads: int = Field(2, ge=1, le=64)
    # interpreters running frames side by side (threads split among them); auto: app.source.interpreters
    parallel: Literal["auto"] | Annotated[int, Field(ge=1, le=16)] = "auto"
    edgetpu_device: str | None = None
    cpu_fallback: bool = True
    kernels: Kernels = Kernels.INT8


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

    kind: SourceKind = SourceKind.CAMERA
    camera: int = Field(0, ge=0, le=255)  # /dev/videoN: V4L2 has 256 nodes; OpenCV takes a C int
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
        if self.kind is SourceKind.VIDEO and self.path is None:
            raise ValueError("source.kind 'video' needs source.path")
        if self.kind is SourceKind.URL and self.url is None:
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


class RecorderConfig(_Strict):
    """Person events, clips, snapshots and the event index."""

    enabled: bool = False
    data_dir: Path | None = None
    camera: str | None = None
    labels: list[str] = Field(default_factory=lambda: ["person"], min_length=1)
    min_score: float = Field(0.5, ge=0.0, le=1.0)
    min_area: float = Field(0.0, ge=0.0, le=1.0)
    trigger_frames: int = Field(3, ge=1, le=1000)
    window_frames: int = Field(5, ge=1, le=1000)
    zones: list[list[tuple[float, float]]] = Field(default_factory=list)
    pre_roll_s: float = Field(3.0, ge=0.0, le=60.0)
    post_roll_s: float = Field(5.0, ge=0.0, le=600.0)
    max_length_s: float = Field(300.0, gt=0.0, le=86400.0)
    pre_roll_max_mb: int = Field(64, ge=1, le=4096)
    queue_frames: int = Field(64, ge=2, le=10000)
    codec: str = "auto"
    jpeg_quality: int = Field(90, ge=10, le=100)
    thumbnail_width: int = Field(320, ge=32, le=4096)

    @model_validator(mode="after")
    def _check(self) -> RecorderConfig:
        if self.trigger_frames > self.window_frames:
            raise ValueError("trigger_frames must be <= window_frames (M of the last N frames)")
        for i, zone in enumerate(self.zones):
            if len(zone) < 3:
                raise ValueError(f"zones[{i}] needs at least 3 points")
            if any(not (0.0 <= c <= 1.0) for p in zone for c in p):
                raise ValueError(f"zones[{i}]: coordinates are normalized, 0..1")
        return self


class RetentionConfig(_Strict):
    """How long recordings are kept (oldest finalized first; never an active recording)."""

    max_age_days: float | None = Field(30.0, gt=0)
    max_total_gb: float | None = Field(None, gt=0)
    min_free_gb: float | None = Field(1.0, ge=0)
    keep_newest: int = Field(1, ge=0)
    interval_s: float = Field(60.0, gt=0, le=86400)


class FacesConfig(_Strict):
    """The face stage: BlazeFace in the upper part of person boxes (or the whole frame), Face Mesh landmarks."""

    enabled: bool = False
    model: str = "blazeface_short_range"
    frame_model: str = "blazeface_full_range"
    region: FaceRegion = FaceRegion.PERSONS
    upper_fraction: float = Field(0.5, gt=0.0, le=1.0)
    max_persons: int = Field(5, ge=1, le=100)
    max_faces: int = Field(5, ge=1, le=100)
    every_n_frames: int = Field(1, ge=1, le=1000)
    min_score: float | None = Field(None, ge=0.0, le=1.0)
    landmarks: bool = True
    landmark_model: str = "face_mesh"
    min_presence: float = Field(0.5, ge=0.0, le=1.0)
    landmarks_in_log: bool = False
    store_face_crops: bool = True


class PrivacyConfig(_Strict):
    """Redaction applied before any frame is written or served."""

    blur_faces: bool = False
    method: Literal["blur", "pixelate"] = "blur"
    margin: float = Field(0.4, ge=0.0, le=2.0)
    masks: list[list[tuple[float, float]]] = Field(default_factory=list)

    @model_validator(mode="after")
    def _masks(self) -> PrivacyConfig:
        for i, poly in enumerate(self.masks):
            if len(poly) < 3:
                raise ValueError(f"masks[{i}] needs at least 3 points")
            if any(not (0.0 <= c <= 1.0) for p in poly for c in p):
                raise ValueError(f"masks[{i}]: coordinates are normalized, 0..1")
        return self


class PersonGateConfig(_Strict):
    """Skip the detector on frames a tiny person classifier is confident are empty."""

    enabled: bool = False
    model: str = "vww_mobilenet_v1_0.25_96"
    min_person_prob: float = Field(0.05, ge=0.0, le=1.0)


class SchedulerConfig(_Strict):
    """Latency scheduler: keep the best rung that fits the frame budget on this device."""

    enabled: bool = False
    budget_ms: float | None = Field(None, gt=0, le=60000)
    target_fps: float | None = Field(None, gt=0, le=240)
    models: list[str] = Field(default_factory=lambda: ["ssd_mobilenet_v1_coco_quant"], min_length=1)
    sizes: list[int] = Field(default_factory=lambda: [300, 256, 224, 192, 160, 128], min_length=1)
    cadences: list[int] = Field(default_factory=lambda: [2, 3])
    profile: Path | None = None
    derived_dir: Path | None = None
    window: int = Field(25, ge=5, le=10000)  # recent frames: more than one over budget holds a step up
    down_after: int = Field(3, ge=1, le=10000)  # frames predicted over budget before a step down
    up_margin: float = Field(0.75, gt=0.0, le=1.0)
    stable_s: float = Field(10.0, ge=0.0, le=3600)
    cooldown_s: float = Field(2.0, ge=0.0, le=3600)
    event_overrun_factor: float = Field(2.0, ge=1.0, le=100)
    memory_budget_mb: int = Field(256, ge=16, le=65536)
    profile_invokes: int = Field(15, ge=3, le=10000)
    person_gate: PersonGateConfig = Field(default_factory=PersonGateConfig)

    @field_validator("sizes")
    @classmethod
    def _sizes(cls, v: list[int]) -> list[int]:
        if any(s < 64 or s > 640 for s in v):
            raise ValueError("sizes are square input sides from 64 to 640 pixels")
        return v

    @field_validator("cadences")
    @classmethod
    def _cadences(cls, v: list[int]) -> list[int]:
        if any(k < 2 or k > 30 for k in v):
            raise ValueError("cadences are detect-every-k-th-frame values from 2 to 30")
        return v

    @model_validator(mode="after")
    def _budget(self) -> SchedulerConfig:
        if self.enabled and (self.budget_ms is None) == (self.target_fps is None):
            raise ValueError("set exactly one of scheduler.budget_ms or scheduler.target_fps")
        return self

    @property
    def budget(self) -> float:
        """The frame budget in ms."""
        if self.budget_ms is not None:
            return self.budget_ms
        return 1000.0 / self.target_fps if self.target_fps else 1000.0


class ServiceConfig(_Strict):
    """Behaviour under systemd (see systemd/edgevision.service)."""

    progress_timeout_s: float = Field(10.0, gt=0, le=3600)
    status_interval_s: float = Field(5.0, gt=0, le=3600)
    throttle_budget_factor: float = Field(0.8, gt=0.0, le=1.0)


def is_loopback(host: str) -> bool:
    """True for a name or address that only this machine can reach (``localhost``, 127.0.0.0/8, ``::1``)."""
    h = host.strip().strip("[]").rstrip(".").lower()
    if h == "localhost" or h.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


MIN_TOKEN_LENGTH = 16


def _host_name(v: str) -> str:
    """A ``web.allowed_hosts`` entry: a name or IP literal as a ``Host`` header carries it (no scheme, port, path)."""
    try:
        ipaddress.ip_address(v.strip("[]"))
    except ValueError:
        if not v or any(c in v for c in ":/@?# \t\\"):
            raise ValueError(f"{v!r} is not a host name: give the name alone (no scheme or port)") from None
        if "*" in v:  # compared as it is with the Host header: a pattern would never match
            raise ValueError(f"{v!r}: names are not patterns; list each name a browser uses") from None
    return v


class WebConfig(_Strict):
    """Live MJPEG view, events page, /healthz and /metrics over HTTP."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    token: str | None = None
    allowed_hosts: list[Annotated[str, AfterValidator(_host_name)]] = Field(default_factory=list)
    session_ttl_s: float = Field(3600.0, ge=60, le=7 * 86400)
    stream_fps: float = Field(10.0, gt=0, le=60)
    jpeg_quality: int = Field(80, ge=10, le=100)

    @field_validator("token")
    @classmethod
    def _token(cls, v: str | None) -> str | None:
        if v is not None and (len(v) < MIN_TOKEN_LENGTH or any(c.isspace() for c in v)):
            raise ValueError(
                f"a token needs at least {MIN_TOKEN_LENGTH} characters and no spaces "
                "(e.g. the output of: openssl rand -hex 16)"
            )
        return v

    @model_validator(mode="after")
    def _lan_needs_token(self) -> WebConfig:
        if self.enabled and self.token is None and not is_loopback(self.host):
            raise ValueError(
                f"web.host {self.host} is reachable from the network: set web.token (or web.token_file), "
                "or bind to 127.0.0.1"
            )
        return self


class MqttConfig(_Strict):
    """Events, counts, snapshots, switches, stats and availability over MQTT (Frigate's topic layout)."""

    enabled: bool = False
    host: str = "localhost"
    port: int = Field(1883, ge=1, le=65535)
    username: str | None = None
    password: str | None = None
    client_id: str | None = None
    topic_prefix: str = "edgevision"
    qos: int = Field(2, ge=0, le=2)
    outbox_max: int = Field(10000, ge=10, le=10_000_000)
    stats_interval_s: float = Field(60.0, gt=0, le=86400)
    snapshot_interval_s: float = Field(1.0, gt=0, le=3600)
    reconnect_max_s: float = Field(30.0, ge=1, le=3600)
    drain_timeout_s: float = Field(10.0, ge=0, le=600)
    homeassistant_discovery: bool = False
    discovery_prefix: str = "homeassistant"

    @field_validator("password")
    @classmethod
    def _password_needs_user(cls, v: str | None, info: ValidationInfo) -> str | None:
        # MQTT 3.1.1 sends no password without a user name: paho would connect with no credentials at all
        if v is not None and not info.data.get("username"):
            raise ValueError("a password needs mqtt.username (or mqtt.username_file) too")
        return v

    @field_validator("host")
    @classmethod
    def _broker(cls, v: str) -> str:
        # paho takes a name or address alone: a URL (mqtt://broker, as Zigbee2MQTT writes it) or broker:1883
        # never connects, and the run only logs that it cannot reach it. Not echoed: a URL may carry a password.
        try:
            ipaddress.ip_address(v)
        except ValueError:
            if any(c in v for c in ":/@?#[] \t\\"):
                raise ValueError(
                    "give the broker's name or address alone: no scheme, user or port (the port is mqtt.port)"
                ) from None
        return v

    @field_validator("host", "topic_prefix", "discovery_prefix")
    @classmethod
    def _names(cls, v: str) -> str:
        # paho refuses an empty host when the run starts; a broker refuses a will topic with a wildcard, silently
        if not v or v != v.strip() or any(c in v for c in "+#\0"):
            raise ValueError("must be non-empty, without surrounding spaces or MQTT wildcards (+ or #)")
        return v


class EdgeVisionConfig(_Strict):
    """The whole configuration file (``configs/default.yaml`` documents every key)."""

    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    models: ModelsConfig = Field(default_factory=ModelsConfig)
    detector: DetectorConfig = Field(default_factory=DetectorConfig)
    source: SourceConfig = Field(default_factory=SourceConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    recorder: RecorderConfig = Field(default_factory=RecorderConfig)
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
    faces: FacesConfig = Field(default_factory=FacesConfig)
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    service: ServiceConfig = Field(default_factory=ServiceConfig)
    web: WebConfig = Field(default_factory=WebConfig)
    mqtt: MqttConfig = Field(default_factory=MqttConfig)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    _origin: str = PrivateAttr("<defaults>")
    _lines: dict[tuple[Any, ...], int] = PrivateAttr(default_factory=dict)
    _flagged: set[tuple[str, ...]] = PrivateAttr(default_factory=set)

    def where(self, *key: Any) -> str:
        """``file:line`` of a key path (``command line`` when a flag set it), for messages about it."""
        if any(key[: len(f)] == f for f in self._flagged):
            return "command line"
        probe = tuple(key)
        while probe and probe not in self._lines:
            probe = probe[:-1]
        return f"{self._origin}:{self._lines.get(probe, 1)}"

    @model_validator(mode="after")
    def _privacy_needs_every_frame(self) -> EdgeVisionConfig:
        if self.privacy.blur_faces and self.faces.every_n_frames != 1:
            raise ValueError("privacy.blur_faces needs faces.every_n_frames: 1 (every frame must be checked)")
        return self

    @model_validator(mode="after")
    def _parallel_runs_one_model(self) -> EdgeVisionConfig:
        parallel = self.runtime.parallel
        if parallel == "auto" or parallel == 1:
            return self
        if self.scheduler.enabled:
            raise ValueError(
                "runtime.parallel > 1 runs one fixed model on frames side by side; the scheduler switches "
                "models per frame: use one of them"
            )
        if self.runtime.device is Device.EDGETPU:
            raise ValueError("runtime.parallel > 1 needs the CPU: one Edge TPU runs one frame at a time")
        return self


def load_config(path: Path | None = None, overrides: dict[str, Any] | None = None) -> EdgeVisionConfig:
    """Load ``path`` (or the defaults), apply ``overrides`` (dotted keys from flags) and validate strictly.

    The file is read by :func:`edgevision.config_load.read_config_file` (bounded, no aliases, no duplicate keys,
    ``${ENV}`` and ``*_file`` secrets). The returned config remembers where each key came from
    (:meth:`EdgeVisionConfig.where`) so later checks can report ``file:line`` too.
    """
    raw = read_config_file(path) if path is not None else RawConfig("<defaults>")
    origin, lines, data = raw.origin, raw.lines, raw.data
    flagged: set[tuple[str, ...]] = set()
    for key, value in (overrides or {}).items():
        if value is not None:
            set_path(data, key, value)
            flagged.add(tuple(key.split(".")))
    try:
        cfg = EdgeVisionConfig.model_validate(data)
    except ValidationError as exc:
        msgs, all_flags = validation_messages(exc.errors(), origin, lines, flagged)
        if all_flags:
            raise UsageError("\n".join(msgs)) from None  # a bad flag value is a usage error (exit 2)
        raise ConfigError("\n".join(msgs)) from None
    cfg._origin = origin
    cfg._lines = lines
    cfg._flagged = flagged
    return cfg
