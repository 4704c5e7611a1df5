"""The watchdog decision: restart a hung process, never one that is waiting for its camera.

systemd restarts the service when ``WATCHDOG=1`` stops for ``WatchdogSec``. Pings are sent when one of:

* **processing** — a frame was processed within ``progress_timeout`` (the pipeline makes progress);
* **waiting, alive** — the source is absent and being retried (:class:`~edgevision.capture.runner.SourceWait`),
  *and* the main loop polled the capture within ``progress_timeout`` (it is not hung), *and* the retry loop
  is on schedule: its latest open attempt started or failed no longer ago than the backoff delay (or, while an
  open is in progress, the open timeout) plus ``progress_timeout``, *and* no capture thread that a stall
  replaced has been stuck in its source for longer than the open timeout plus ``progress_timeout`` (a driver
  call that never returns can hold the device, and the new thread's opens then fail as "busy" for good: only
  a restart frees it).

Everything else stops the pings: a hung ``invoke()`` or main loop, a capture that opened but delivers nothing
(a wedged driver), an ``open()`` that never returns. Pure over an injected clock: the caller passes ``now``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from edgevision.capture.runner import SourceWait


class State(str, enum.Enum):
    """What the service is doing, as STATUS= and ``/healthz`` report it."""

    STARTING = "starting"  # models loaded, no frame yet
    OK = "ok"  # processing frames
    WAITING = "waiting"  # the source is absent and retried; the process is healthy
    STALLED = "stalled"  # no progress: the watchdog stops pinging


@dataclass(frozen=True)
class Liveness:
    """What the monitor knows at one instant (times on the same monotonic clock as ``now``)."""

    last_frame: float | None  # last processed frame
    last_poll: float | None  # last time the main loop asked the capture for a frame
    wait: SourceWait | None  # the source being waited for, if any
    stuck_since: float | None = None  # a replaced capture thread has been inside its source since then


def retry_on_schedule(now: float, wait: SourceWait, grace: float) -> bool:
    """The retry loop is alive: its next attempt (or the open in progress) is not overdue by ``grace``."""
    budget = wait.open_timeout if wait.attempting else wait.retry_in
    return now - wait.last_attempt <= budget + grace


def state(now: float, live: Liveness, progress_timeout: float) -> State:
    """The service state; only OK and WAITING get watchdog pings."""
    if live.last_frame is not None and now - live.last_frame <= progress_timeout:
        return State.OK
    if live.wait is not None:
        loop_alive = live.last_poll is not None and now - live.last_poll <= progress_timeout
        stuck = (
            live.stuck_since is not None
            and now - live.stuck_since > live.wait.open_timeout + progress_timeout
        )
        if loop_alive and not stuck and retry_on_schedule(now, live.wait, progress_timeout):
            return State.WAITING
        return State.STALLED
    return State.STARTING if live.last_frame is None else State.STALLED


def should_ping(now: float, live: Liveness, progress_timeout: float) -> bool:
    """Send ``WATCHDOG=1`` now?"""
    return state(now, live, progress_timeout) in (State.OK, State.WAITING)
