"""The recorder's one typed view of the configuration: ``recorder:``, ``retention:`` and the two face/privacy
switches that decide whether face crops may be stored, resolved (data directory, camera name, codec) in one place."""

from __future__ import annotations

from edgevision.config import EdgeVisionConfig
from edgevision.errors import ConfigError
from edgevision.events.state import EventSettings
from edgevision.paths import data_dir
from edgevision.recorder.clip import choose_codec
from edgevision.recorder.retention import RetentionPolicy
from edgevision.recorder.state import RecorderSettings

GB = 1 << 30


def retention_policy(cfg: EdgeVisionConfig) -> RetentionPolicy:
    r = cfg.retention
    return RetentionPolicy(
        max_age_s=r.max_age_days * 86400 if r.max_age_days is not None else None,
        max_total_bytes=int(r.max_total_gb * GB) if r.max_total_gb is not None else None,
        min_free_bytes=int(r.min_free_gb * GB) if r.min_free_gb is not None else None,
        keep_newest=r.keep_newest,
    )


def recorder_settings(cfg: EdgeVisionConfig, camera: str, fps_hint: float | None) -> RecorderSettings:
    r = cfg.recorder
    try:
        codec = choose_codec(r.codec)
    except ValueError as exc:
        raise ConfigError(f"recorder.codec: {exc}") from None
    return RecorderSettings(
        data_dir=data_dir(cfg),
        camera=r.camera or camera,
        events=EventSettings.from_config(r),
        pre_roll=r.pre_roll_s,
        pre_roll_max_bytes=r.pre_roll_max_mb << 20,
        queue_frames=r.queue_frames,
        codec=codec,
        jpeg_quality=r.jpeg_quality,
        thumb_width=r.thumbnail_width,
        fps_hint=fps_hint or 25.0,
        retention=retention_policy(cfg),
        retention_interval_s=cfg.retention.interval_s,
        store_face_crops=cfg.faces.store_face_crops and not cfg.privacy.blur_faces,
    )
