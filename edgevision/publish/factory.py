"""Wire the web view, metrics and MQTT into a run, from the configuration."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgevision.config import EdgeVisionConfig
from edgevision.events.stage import EventStage
from edgevision.naming import device_id, topic_name
from edgevision.paths import data_dir as configured_data_dir
from edgevision.paths import mqtt_outbox
from edgevision.pipeline.control import Controls
from edgevision.pipeline.loop import CaptureRunner
from edgevision.publish.hass import discovery_configs
from edgevision.publish.live import LiveView
from edgevision.publish.metrics import Metrics
from edgevision.publish.mqtt import MqttPublisher, Topics
from edgevision.publish.mqtt_events import EventRelay
from edgevision.publish.outbox import Outbox
from edgevision.publish.presence import Presence
from edgevision.publish.web import Progress, WebServer
from edgevision.results import FrameResult, Sink

if TYPE_CHECKING:
    from edgevision.recorder.recorder import Recorder
    from edgevision.service.monitor import ServiceMonitor


class StatsPublisher:
    """A sink that sends fps / rung / persons to MQTT every ``interval`` seconds (never waits). While no frame
    comes (the source is gone) its thread sends fps 0 every ``interval``: the stats are retained, and Home
    Assistant would show the last rate for as long as the camera stays away."""

    def __init__(self, mqtt: MqttPublisher, interval: float, extra: Callable[[], dict[str, Any]]) -> None:
        self.mqtt = mqtt
        self.interval = interval
        self.extra = extra
        self._lock = threading.Lock()  # guards _t0, _n, _last, _rung (pipeline thread and the idle thread)
        self._t0 = self._last = time.monotonic()
        self._n = 0
        self._rung: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._idle, name="mqtt-stats", daemon=True)
        self._thread.start()

    def on_result(self, result: FrameResult) -> None:
        now = time.monotonic()
        with self._lock:
            self._n += 1
            self._last = now
            self._rung = result.rung or result.model
            if now - self._t0 < self.interval:
                return
            fps = self._n / (now - self._t0)
            self._t0, self._n = now, 0
        persons = sum(1 for d in result.detections if d.label == "person")
        self.mqtt.stats({"fps": round(fps, 2), "rung": self._rung, "persons": persons, **self.extra()})

    def _idle(self) -> None:
        while not self._stop.wait(self.interval):
            now = time.monotonic()
            with self._lock:
                if now - self._last < self.interval:  # frames are coming: on_result sends
                    continue
                self._t0, self._n = now, 0
                rung = self._rung
            self.mqtt.stats({"fps": 0.0, "rung": rung, "persons": 0, **self.extra()})

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


@dataclass
class Sharing:
    sinks: list[Sink] = field(default_factory=list)
    web: WebServer | None = None
    mqtt: MqttPublisher | None = None
    relay: EventRelay | None = None
    metrics: Metrics | None = None

    def attach(
        self,
        runner: CaptureRunner,
        recorder: Recorder | None,
        monitor: ServiceMonitor | None = None,
        controls: Controls | None = None,
    ) -> None:
        """Connect what the run already counts: the recorder's events to MQTT, and the metrics read at scrape
        time (capture drops, recorder events and queue, throttling, MQTT outbox, switch states)."""
        if self.relay is not None and recorder is not None:
            index = recorder.index

            def row(event_id: int) -> dict[str, Any] | None:
                found = index.get(event_id)
                return found.to_dict() if found is not None else None

            self.relay.rows = row
            recorder.listeners.append(self.relay.recorder_event)
        m = self.metrics
        if m is None:
            return
        m.counter(
            "dropped_frames", "Frames dropped between capture and inference", lambda: runner.stats.dropped
        )
        if monitor is not None:
            m.gauge(
                "throttled",
                "1 while the Raspberry Pi reports throttling",
                lambda: 1.0 if monitor.health.throttling else 0.0,
            )
        if recorder is not None:
            m.counter("events_started", "Person events started", lambda: recorder.events_started)
            m.counter("events_finalized", "Person events finalized", lambda: recorder.events_finalized)
            m.gauge(
                "recorder_queue_frames",
                "Frames waiting for the recorder thread",
                lambda: recorder.queue_depth,
            )
            m.counter("recorder_dropped_frames", "Frames the recorder dropped", lambda: recorder.dropped)
            ring = recorder.clips.ring
            m.counter(
                "recorder_dropped_packets",
                "Packets of the source that never reached the recorder (full feed, up to the next keyframe)",
                lambda: recorder.intake.dropped,
            )
            m.counter(
                "recorder_preroll_trimmed_gops",
                "GOPs trimmed from the pre-roll ring to stay within its memory bound",
                lambda: ring.trimmed_gops,
            )
            m.counter(
                "recorder_preroll_overflows",
                "Times one GOP alone exceeded the pre-roll memory bound (the ring restarted)",
                lambda: ring.overflows,
            )
        if controls is not None:
            m.gauge("detect_enabled", "1 while detection is switched on", lambda: float(controls.detect))
            m.gauge(
                "recordings_enabled",
                "1 while recording is switched on",
                lambda: float(controls.recordings and recorder is not None),
            )
        mqtt = self.mqtt
        if mqtt is not None:
            m.gauge("mqtt_connected", "1 while connected to the MQTT broker", lambda: float(mqtt.connected))
            m.gauge("mqtt_outbox_messages", "Messages waiting in the MQTT outbox", lambda: len(mqtt.outbox))
            m.counter("mqtt_messages_sent", "Outbox messages the broker acknowledged", lambda: mqtt.sent)
            m.counter(
                "mqtt_messages_dropped", "Messages refused by the full outbox", lambda: mqtt.outbox.dropped
            )

    def close(self) -> None:
        if self.web is not None:
            self.web.close()
        if self.mqtt is not None:
            self.mqtt.close()


def build_sharing(
    cfg: EdgeVisionConfig,
    camera: str,
    data_dir: Path | None,
    progress: Progress | None,
    stats: Callable[[], dict[str, Any]],
    events: EventStage,
    controls: Controls | None = None,
    web_socket: socket.socket | None = None,
) -> Sharing:
    """Web view, metrics and MQTT as configured; ``camera`` is :func:`edgevision.naming.camera_name`; ``events``
    is the pipeline's event stage (MQTT occupancy and events read its updates on the results); ``data_dir`` is
    the recordings directory (``None`` without a recorder) the web view serves. The MQTT outbox is in the
    configured data directory either way."""
    sharing = Sharing()
    if cfg.web.enabled:
        budget = cfg.scheduler.budget if cfg.scheduler.enabled else None
        sharing.metrics = Metrics(budget)
        live = LiveView(cfg.web.stream_fps, cfg.web.jpeg_quality)
        sharing.sinks += [sharing.metrics, live]
        if data_dir is not None:
            sharing.metrics.watch_disk(data_dir)
        sharing.web = WebServer(cfg.web, live, sharing.metrics, data_dir, progress, sock=web_socket)
    if cfg.mqtt.enabled:
        m = cfg.mqtt
        # The outbox lives in the configured data directory (``--data-dir`` / ``recorder.data_dir``), recording
        # or not: ``data_dir`` is only passed when there are recordings to show.
        outbox = Outbox(mqtt_outbox(configured_data_dir(cfg)), m.outbox_max)
        topics = Topics(m.topic_prefix, topic_name(camera))
        switches: tuple[str, ...] = ()
        if controls is not None:
            switches = ("detect", "recordings") if cfg.recorder.enabled else ("detect",)
        labels = list(cfg.recorder.labels)
        discovery = []
        device = device_id()
        if m.homeassistant_discovery:
            discovery = discovery_configs(
                topics,
                camera,
                labels,
                switches,
                m.discovery_prefix,
                model=f"edgevision ({cfg.detector.model})",
                device_id=device,
            )
        sharing.mqtt = MqttPublisher(m, outbox, topics, discovery, controls, switches, device)
        sharing.relay = EventRelay(sharing.mqtt)
        presence = Presence(
            sharing.mqtt,
            sharing.relay,
            events,
            emit_events=not cfg.recorder.enabled,
            snapshot_interval=m.snapshot_interval_s,
        )
        sharing.sinks += [presence, StatsPublisher(sharing.mqtt, m.stats_interval_s, stats)]
    return sharing
