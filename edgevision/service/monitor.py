"""The service monitor: READY after the first processed frame, WATCHDOG only while frames make progress,
STATUS with fps / rung / events / Pi health, STOPPING on shutdown.

The ping thread never looks at anything but the time of the last processed frame, so a stalled camera or a
hung ``invoke()`` stops the pings and systemd (``WatchdogSec=``) restarts the service.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from edgevision.pipeline.loop import FrameResult
from edgevision.service.health import PiHealth, read_health
from edgevision.service.notify import Notifier

log = logging.getLogger(__name__)


def should_ping(now: float, last_progress: float | None, progress_timeout: float) -> bool:
    """Pure watchdog rule: ping only if a frame was processed within ``progress_timeout`` seconds."""
    return last_progress is not None and now - last_progress <= progress_timeout


class ServiceMonitor:
    """A pipeline sink plus one thread that pings systemd. Safe to use without systemd (everything is a no-op
    except health reading)."""

    def __init__(
        self,
        notifier: Notifier,
        ping_interval: float | None,
        progress_timeout: float = 10.0,
        status_interval: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        health: Callable[[], PiHealth] = read_health,
        extra_status: Callable[[], str] = lambda: "",
    ) -> None:
        self.notifier = notifier
        self.ping_interval = ping_interval
        self.progress_timeout = progress_timeout
        self.status_interval = status_interval
        self.clock = clock
        self.read_health = health
        self.extra_status = extra_status
        self.health = health()
        self._lock = threading.Lock()  # guards the progress fields below
        self.last_progress: float | None = None
        self.frames = 0
        self.model = ""
        self.ready_sent = False
        self.pings = 0
        self._window: tuple[float, int] = (clock(), 0)
        self._stop = threading.Event()
        self._stopping_sent = False
        self._thread = threading.Thread(target=self._run, name="service-monitor", daemon=True)
        self._thread.start()

    def on_result(self, result: FrameResult) -> None:
        with self._lock:
            self.last_progress = self.clock()
            self.frames += 1
            self.model = str(result.extras.get("rung", result.model))
            first = not self.ready_sent
            self.ready_sent = True
        if first:
            self.notifier.ready(self.status_text())
            log.info("service: ready (first frame processed)")

    def status_text(self) -> str:
        now = self.clock()
        with self._lock:
            t0, n0 = self._window
            fps = (self.frames - n0) / max(now - t0, 1e-6)
            self._window = (now, self.frames)
            model = self.model
        parts = [f"{fps:.1f} fps", f"rung {model}" if model else "starting"]
        extra = self.extra_status()
        if extra:
            parts.append(extra)
        health = self.health.text()
        if health:
            parts.append(health)
        return ", ".join(parts)

    def _run(self) -> None:
        next_status = self.clock() + self.status_interval
        period = min(self.ping_interval or self.status_interval, self.status_interval)
        was_throttling = False
        while not self._stop.wait(period):
            now = self.clock()
            with self._lock:
                last = self.last_progress
            pinging = self.ping_interval is not None and should_ping(now, last, self.progress_timeout)
            if pinging and self.notifier.watchdog():
                self.pings += 1
            if now >= next_status:
                next_status = now + self.status_interval
                self.health = self.read_health()
                if self.health.throttling != was_throttling or self.health.under_voltage:
                    level = (
                        logging.WARNING
                        if self.health.throttling or self.health.under_voltage
                        else logging.INFO
                    )
                    log.log(level, "pi health: %s", self.health.text() or "ok")
                    was_throttling = self.health.throttling
                self.notifier.status(self.status_text())

    def stopping(self) -> None:
        if not self._stopping_sent:
            self._stopping_sent = True
            self.notifier.stopping()

    def close(self) -> None:
        self.stopping()
        self._stop.set()
        self._thread.join(timeout=5.0)
