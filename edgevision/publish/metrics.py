"""Prometheus metrics (prometheus-client, text exposition format), named by Prometheus' conventions: base units
(seconds, bytes), ``_total`` counters of counter type, latency histograms in seconds.

Most metrics are fed by the pipeline (``on_result``); values other parts already count (capture drops, recorder
events, disk, MQTT outbox) are read at scrape time through :meth:`Metrics.counter` / :meth:`Metrics.gauge`.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from edgevision.results import DetectMode, EventUpdate, FrameResult

# Seconds: from 1 ms (a Coral invoke) to 2.5 s (a Pi 3 at full width).
LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.02,
    0.03,
    0.04,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.5,
    1.0,
    2.5,
)
PREFIX = "edgevision_"
FPS_WINDOW_S = 5.0


class _ReadAtScrape(Collector):
    """Counters and gauges whose values live elsewhere, read (without locks: plain ints) on every scrape."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str, str, Callable[[], float | None]]] = []

    def collect(self) -> Iterator[Metric]:
        for kind, name, doc, read in self.items:
            value = read()
            if value is None:
                continue
            family = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
            yield family(name, doc, value=value)


class Metrics:
    """All edgevision metrics in one registry; a pipeline sink (``on_result``)."""

    def __init__(self, budget_ms: float | None = None) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.budget_ms = budget_ms
        self.frames = Counter(
            "edgevision_frames_processed", "Frames processed by the pipeline", registry=r
        )  # exposed as edgevision_frames_processed_total
        self.fps = Gauge(
            "edgevision_frames_per_second", "Processed frames per second over the last 5 s", registry=r
        )
        self.stage_latency = Histogram(
            "edgevision_stage_latency_seconds",
            "Latency of one pipeline stage (preprocess, invoke, ...)",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.frame_latency = Histogram(
            "edgevision_frame_latency_seconds",
            "Capture-to-result latency of a frame (what the budget bounds)",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.violations = Counter(
            "edgevision_budget_violations", "Frames whose latency exceeded the budget", registry=r
        )
        self.rung = Gauge(
            "edgevision_active_rung", "1 for the detector rung in use, 0 otherwise", ["rung"], registry=r
        )
        self.switches = Counter("edgevision_rung_switches", "Scheduler rung switches", registry=r)
        self.objects = Gauge(
            "edgevision_detected_objects", "Objects detected in the latest frame", ["label"], registry=r
        )
        self.events_seen = Counter(
            "edgevision_person_events", "Person events the event stage started (recorded or not)", registry=r
        )
        self.event_active = Gauge(
            "edgevision_person_event_active", "1 while a person event is running", registry=r
        )
        self.detect_skipped = Counter(
            "edgevision_detect_skipped_frames", "Frames not detected on: detection switched off", registry=r
        )
        self._read = _ReadAtScrape()
        r.register(self._read)
        if budget_ms is not None:  # none without the scheduler: a gauge at 0 s would put every frame over it
            budget = Gauge(
                "edgevision_latency_budget_seconds",
                "The scheduler's frame latency budget (the SLO target)",
                registry=r,
            )
            budget.set(budget_ms / 1e3)
        self._rung: str | None = None
        self._labels: set[str] = set()
        self._times: deque[float] = deque()  # processing times of the last 5 s, for the fps gauge
        self._times_lock = threading.Lock()  # appended by the pipeline, read by a scrape
        self.fps.set_function(self._rate)

    def counter(self, name: str, doc: str, read: Callable[[], float | None]) -> None:
        """A counter read at scrape time; ``name`` without ``_total`` (added on exposition)."""
        self._read.items.append(("counter", PREFIX + name, doc, read))

    def gauge(self, name: str, doc: str, read: Callable[[], float | None]) -> None:
        """A gauge read at scrape time (``read`` returns None to leave it out of this scrape)."""
        self._read.items.append(("gauge", PREFIX + name, doc, read))

    def on_result(self, result: FrameResult) -> None:
        self.frames.inc()
        now = time.monotonic()
        with self._times_lock:
            self._times.append(now)
            while now - self._times[0] > FPS_WINDOW_S:
                self._times.popleft()
        for stage, ms in result.latency.as_dict().items():
            if stage != "total":
                self.stage_latency.labels(stage).observe(ms / 1e3)
        total = result.latency.total
        if total is not None:
            self.frame_latency.observe(total / 1e3)
            if self.budget_ms is not None and total > self.budget_ms:
                self.violations.inc()
        if result.mode is DetectMode.OFF:
            self.detect_skipped.inc()
        rung = result.rung or result.model
        if rung != self._rung:
            if self._rung is not None:
                self.rung.labels(self._rung).set(0)
            self.rung.labels(rung).set(1)
            self._rung = rung
        if result.switch is not None:
            self.switches.inc()
        if result.events is not None:
            if result.events.started is not None:
                self.events_seen.inc()
            self.event_active.set(1.0 if result.events.active else 0.0)
        counts: dict[str, int] = dict.fromkeys(self._labels, 0)
        for d in result.detections:
            counts[d.label] = counts.get(d.label, 0) + 1
        for label, n in counts.items():
            self.objects.labels(label).set(n)
        self._labels |= counts.keys()

    def _rate(self) -> float:
        """Frames per second over the last :data:`FPS_WINDOW_S`, as of the scrape: 0 once frames stopped."""
        now = time.monotonic()
        with self._times_lock:
            recent = [t for t in self._times if now - t <= FPS_WINDOW_S]
        return (len(recent) - 1) / max(recent[-1] - recent[0], 1e-6) if len(recent) > 1 else 0.0

    def watch_disk(self, path: Path) -> None:
        """Used and free bytes of the filesystem holding ``path``."""

        def usage(attr: str) -> Callable[[], float | None]:
            def read() -> float | None:
                try:
                    return float(getattr(shutil.disk_usage(path), attr))
                except OSError:
                    return None

            return read

        self.gauge("disk_used_bytes", "Bytes used on the recordings filesystem", usage("used"))
        self.gauge("disk_free_bytes", "Bytes free on the recordings filesystem", usage("free"))

    def render(self) -> bytes:
        """The text exposition of every metric."""
        return generate_latest(self.registry)

    def on_idle_events(self, update: EventUpdate) -> None:
        """An event ended without a frame (a live source gone quiet)."""
        self.event_active.set(1.0 if update.active else 0.0)

    def close(self) -> None:
        pass
