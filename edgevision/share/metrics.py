"""Prometheus metrics (prometheus-client, text exposition format) fed by a pipeline sink and a few gauges
read at scrape time."""

from __future__ import annotations

import shutil
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from edgevision.pipeline.loop import FrameResult

LATENCY_BUCKETS = (1, 2.5, 5, 7.5, 10, 15, 20, 30, 40, 50, 75, 100, 150, 200, 300, 500, 1000, 2500)


class Metrics:
    """All edgevision metrics in one registry; a pipeline sink (``on_result``)."""

    def __init__(self, budget_ms: float | None = None) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.budget_ms = budget_ms
        self.frames = Counter("edgevision_frames_processed", "Frames processed by the pipeline", registry=r)
        self.fps = Gauge("edgevision_fps", "Processed frames per second (last status window)", registry=r)
        self.latency = Histogram("edgevision_stage_latency_ms", "Per-stage latency in milliseconds", ["stage"],
                                 buckets=LATENCY_BUCKETS, registry=r)  # fmt: skip
        self.rung = Gauge("edgevision_active_rung", "1 for the detector rung in use", ["rung"], registry=r)
        self.switches = Counter("edgevision_rung_switches", "Scheduler rung switches", registry=r)
        self.violations = Counter(
            "edgevision_budget_violations", "Frames over the latency budget", registry=r
        )
        self.dropped = Gauge(
            "edgevision_dropped_frames", "Frames dropped between capture and inference", registry=r
        )
        self.events_started = Gauge("edgevision_events_started", "Person events started", registry=r)
        self.events_finalized = Gauge("edgevision_events_finalized", "Person events finalized", registry=r)
        self.recorder_queue = Gauge(
            "edgevision_recorder_queue_depth", "Frames waiting for the recorder", registry=r
        )
        self.recorder_dropped = Gauge(
            "edgevision_recorder_dropped_frames", "Frames the recorder dropped", registry=r
        )
        self.disk_used = Gauge(
            "edgevision_disk_used_bytes", "Bytes used on the recordings filesystem", registry=r
        )
        self.disk_free = Gauge(
            "edgevision_disk_free_bytes", "Bytes free on the recordings filesystem", registry=r
        )
        self.throttled = Gauge(
            "edgevision_throttled", "1 while the Raspberry Pi reports throttling", registry=r
        )
        self.persons = Gauge("edgevision_persons", "Persons detected in the latest frame", registry=r)
        self._rung: str | None = None
        self._times: deque[float] = deque()  # processing times of the last 5 s, for the fps gauge
        self.readers: list[Callable[[], None]] = []

    def on_result(self, result: FrameResult) -> None:
        self.frames.inc()
        now = time.monotonic()
        self._times.append(now)
        while self._times and now - self._times[0] > 5.0:
            self._times.popleft()
        if len(self._times) > 1:
            self.fps.set((len(self._times) - 1) / max(self._times[-1] - self._times[0], 1e-6))
        for stage, ms in result.latency_ms.items():
            self.latency.labels(stage).observe(ms)
        total = result.latency_ms.get("total", 0.0)
        if self.budget_ms is not None and total > self.budget_ms:
            self.violations.inc()
        rung = str(result.extras.get("rung", result.model))
        if rung != self._rung:
            if self._rung is not None:
                self.rung.labels(self._rung).set(0)
            self.rung.labels(rung).set(1)
            self._rung = rung
        if "switch" in result.extras:
            self.switches.inc()
        self.persons.set(sum(1 for d in result.detections if d.label == "person"))

    def watch_disk(self, path: Path) -> None:
        def read() -> None:
            try:
                usage = shutil.disk_usage(path)
            except OSError:
                return
            self.disk_used.set(usage.used)
            self.disk_free.set(usage.free)

        self.readers.append(read)

    def render(self) -> bytes:
        """The text exposition of every metric (gauges read from their sources first)."""
        for read in self.readers:
            read()
        return generate_latest(self.registry)

    def close(self) -> None:
        pass
