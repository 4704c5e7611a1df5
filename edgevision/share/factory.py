"""Wire the web view, metrics and MQTT into a run, from the configuration."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgevision.config import EdgeVisionConfig
from edgevision.pipeline.loop import FrameResult, Sink
from edgevision.settings import default_data_dir
from edgevision.share.live import LiveView
from edgevision.share.metrics import Metrics
from edgevision.share.mqtt import MqttPublisher
from edgevision.share.outbox import Outbox
from edgevision.share.web import WebServer


class StatsPublisher:
    """A sink that sends fps / rung / persons to MQTT every ``interval`` seconds (never waits)."""

    def __init__(self, mqtt: MqttPublisher, interval: float, extra: Callable[[], dict[str, Any]]) -> None:
        self.mqtt = mqtt
        self.interval = interval
        self.extra = extra
        self._t0 = time.monotonic()
        self._n = 0

    def on_result(self, result: FrameResult) -> None:
        self._n += 1
        now = time.monotonic()
        if now - self._t0 >= self.interval:
            fps = self._n / (now - self._t0)
            self._t0, self._n = now, 0
            persons = sum(1 for d in result.detections if d.label == "person")
            self.mqtt.stats({"fps": round(fps, 2), "rung": result.extras.get("rung", result.model),
                             "persons": persons, **self.extra()})  # fmt: skip

    def close(self) -> None:
        pass


@dataclass
class Sharing:
    sinks: list[Sink] = field(default_factory=list)
    web: WebServer | None = None
    mqtt: MqttPublisher | None = None
    metrics: Metrics | None = None

    def close(self) -> None:
        if self.web is not None:
            self.web.close()
        if self.mqtt is not None:
            self.mqtt.close()


def build_sharing(cfg: EdgeVisionConfig, camera: str, data_dir: Path | None, progress: object,
                  stats: Callable[[], dict[str, Any]], web_socket: socket.socket | None = None) -> Sharing:  # fmt: skip
    sharing = Sharing()
    if cfg.web.enabled:
        budget = cfg.scheduler.budget if cfg.scheduler.enabled else None
        sharing.metrics = Metrics(budget)
        live = LiveView(cfg.web.stream_fps, cfg.web.jpeg_quality)
        sharing.sinks += [sharing.metrics, live]
        if data_dir is not None:
            sharing.metrics.watch_disk(data_dir)
        sharing.web = WebServer(
            cfg.web.host, cfg.web.port, live, sharing.metrics, data_dir, cfg.web.token, progress,
            sock=web_socket, allowed_hosts=cfg.web.allowed_hosts, session_ttl_s=cfg.web.session_ttl_s,
        )  # fmt: skip
    if cfg.mqtt.enabled:
        m = cfg.mqtt
        outbox_dir = (
            data_dir or default_data_dir()
        )  # the outbox lives with the recordings, or the user's data dir
        outbox = Outbox(outbox_dir / "mqtt-outbox.db", m.outbox_max)
        sharing.mqtt = MqttPublisher(m.host, m.port, outbox, camera, m.topic_prefix, m.client_id, m.username,
                                     m.password, m.qos, m.homeassistant_discovery, m.discovery_prefix,
                                     m.reconnect_max_s, m.drain_timeout_s)  # fmt: skip
        sharing.sinks.append(StatsPublisher(sharing.mqtt, m.stats_interval_s, stats))
    return sharing
