"""The service monitor: READY after the first processed frame (or once the service waits for an absent
source), WATCHDOG by the rule of :mod:`edgevision.service.watchdog`, STATUS with fps / rung / events / Pi
health or "waiting for source …", STOPPING on shutdown.

The ping thread looks only at times: the last processed frame, the main loop's last poll of the capture and
the capture's retry schedule. A hung ``invoke()``, main loop or capture stops the pings and systemd
(``WatchdogSec=``) restarts the service; a camera that is not there yet does not.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

from edgevision.capture.runner import SourceWait
from edgevision.config import ServiceConfig
from edgevision.results import FrameResult
from edgevision.service.health import HealthState, PiHealth
from edgevision.service.notify import Notifier
from edgevision.service.watchdog import Liveness, State, should_ping, state

log = logging.getLogger(__name__)


class Capture(Protocol):
    """What the monitor reads from the capture runner."""

    last_poll: float | None

    def waiting(self) -> SourceWait | None: ...

    def stuck_since(self) -> float | None: ...


class ServiceMonitor:
    """A pipeline sink plus one thread that pings systemd. Safe to use without systemd (everything is a no-op
    except health reading)."""

    def __init__(
        self,
        notifier: Notifier,
        ping_interval: float | None,
        config: ServiceConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
        health: HealthState | None = None,
        extra_status: Callable[[], str] = lambda: "",
        capture: Capture | None = None,
    ) -> None:
        """``config`` is the ``service:`` section (progress timeout, status interval); ``ping_interval`` comes
        from systemd (``WATCHDOG_USEC``). ``health`` is refreshed here every status interval (a fresh :class:`HealthState` by default)."""
        self.notifier = notifier
        self.capture = capture
        self.ping_interval = ping_interval
        config = config if config is not None else ServiceConfig()
        self.progress_timeout = config.progress_timeout_s
        self.status_interval = config.status_interval_s
        self.clock = clock
        self.health_state = health if health is not None else HealthState()
        self.extra_status = extra_status
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

    @property
    def health(self) -> PiHealth:
        """The last Pi health reading."""
        return self.health_state.current

    def on_result(self, result: FrameResult) -> None:
        with self._lock:
            self.last_progress = self.clock()
            self.frames += 1
            self.model = result.rung or result.model
            first = not self.ready_sent
            self.ready_sent = True
        if first:
            self._ready("first frame processed")

    def _ready(self, why: str) -> None:
        """Send READY=1 and say so, only under systemd: a run from a shell has no "service" to be ready."""
        if self.notifier.ready(self.status_text()):
            log.info("service: ready (%s)", why)
        elif self.notifier.enabled:
            log.warning("service: READY=1 could not be sent to %s (%s)", self.notifier.address, why)

    def liveness(self) -> Liveness:
        with self._lock:
            last = self.last_progress
        cap = self.capture
        if cap is None:
            return Liveness(last, None, None)
        return Liveness(last, cap.last_poll, cap.waiting(), cap.stuck_since())

    def state(self) -> State:
        """starting / ok / waiting / stalled (what ``/healthz`` reports)."""
        return state(self.clock(), self.liveness(), self.progress_timeout)

    def waiting_text(self) -> str:
        """ "waiting for source …" while the source is absent and retried, else empty."""
        wait = self.capture.waiting() if self.capture else None
        return wait.text(self.clock()) if wait else ""

    def status_text(self) -> str:
        now = self.clock()
        with self._lock:
            t0, n0 = self._window
            fps = (self.frames - n0) / max(now - t0, 1e-6)
            self._window = (now, self.frames)
            model = self.model
        waiting = self.waiting_text()
        parts = [waiting] if waiting else [f"{fps:.1f} fps", f"rung {model}" if model else "starting"]
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
        was_waiting = False
        while not self._stop.wait(period):
            now = self.clock()
            live = self.liveness()
            waiting = live.wait is not None
            if waiting != was_waiting:  # say it at once, not at the next status interval
                was_waiting = waiting
                next_status = now
                with self._lock:
                    first = waiting and not self.ready_sent
                    self.ready_sent = self.ready_sent or waiting
                if first:  # up and waiting: the start must not time out on an absent camera
                    self._ready("waiting for the source")
            pinging = self.ping_interval is not None and should_ping(now, live, self.progress_timeout)
            if pinging and self.notifier.watchdog():
                self.pings += 1
            if now >= next_status:
                next_status = now + self.status_interval
                self.health_state.refresh()
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
