"""The built system: run it (signals stop it cleanly), then say what it did."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from types import FrameType

from edgevision.face.privacy import PrivacyStage
from edgevision.pipeline.loop import Pipeline, RunSummary
from edgevision.publish.factory import Sharing
from edgevision.recorder.recorder import Recorder
from edgevision.scheduler.runtime import Scheduler
from edgevision.service.monitor import ServiceMonitor

log = logging.getLogger("edgevision.run")
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def stop_signals(environ: Mapping[str, str]) -> tuple[signal.Signals, ...]:
    """The signals a run stops cleanly on. Under systemd (``INVOCATION_ID``) a SIGHUP keeps its default action:
    there it is no closing terminal but a ``kill -HUP``, and a clean stop (exit 0) would not be restarted by
    ``Restart=on-failure``: the service would stay down."""
    if environ.get("INVOCATION_ID"):
        return (signal.SIGINT, signal.SIGTERM)
    return STOP_SIGNALS


@dataclass
class System:
    """Everything :func:`edgevision.app.build` made, ready to run once."""

    pipeline: Pipeline
    monitor: ServiceMonitor
    sharing: Sharing
    scheduler: Scheduler | None = None
    recorder: Recorder | None = None
    web_socket: socket.socket | None = None  # bound before anything loaded; the web server serves on it
    privacy: PrivacyStage | None = None

    def run(self, max_frames: int | None = None, stop: threading.Event | None = None) -> RunSummary:
        """Run until the source ends, ``max_frames`` are processed, ``stop`` is set or SIGINT / SIGTERM / SIGHUP (a
        terminal or ssh session closing; not under systemd: :func:`stop_signals`) arrives; every sink is flushed and closed, sharing shut down, the signal
        handlers restored. A second SIGINT or SIGTERM while that shutdown runs ends the process at once."""
        stop = stop if stop is not None else threading.Event()
        handled = stop_signals(os.environ)

        def on_signal(signum: int, _frame: FrameType | None) -> None:
            # A second Ctrl-C (or SIGTERM) gets the kernel's default action, even while the shutdown hangs in a
            # driver; a hangup comes twice (the kernel's and the shell's), so a second one is ignored.
            for sig in handled:
                signal.signal(sig, signal.SIG_IGN if sig == signal.SIGHUP else signal.SIG_DFL)
            log.info("received %s; stopping (Ctrl-C again to exit at once)", signal.Signals(signum).name)
            self.monitor.stopping()  # tell systemd now: finalizing a recording may take a moment
            stop.set()

        previous = {sig: signal.signal(sig, on_signal) for sig in handled}
        try:
            return self.pipeline.run(stop, max_frames)
        finally:
            self.sharing.close()
            if self.web_socket is not None:
                self.web_socket.close()  # the server closed it already, unless the run failed before serving
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def summary(self, summary: RunSummary) -> list[str]:
        """The closing lines (stderr): frames and latency, then the scheduler's, the recorder's and privacy's part."""
        lines = [summary.line()]
        s = self.scheduler
        if s is not None:
            lines.append(
                f"scheduler: {s.switch_count} switch(es); final rung {s.rung.name}; "
                f"{s.gated} frame(s) skipped by the person gate"
            )
        r = self.recorder
        if r is not None:
            lines.append(
                f"events: {r.events_started} started, {r.events_finalized} finalized; "
                f"{r.dropped} frame(s) dropped by the recorder; recording mode {r.mode}"
            )
            ring = r.clips.ring
            lines.append(
                f"recording: {r.intake.dropped} packet(s) dropped before the recorder; pre-roll ring: "
                f"{ring.trimmed_gops} GOP(s) trimmed for memory, {ring.overflows} overflow(s)"
            )
        coverage = self.privacy.coverage if self.privacy is not None else None
        if coverage is not None:
            lines.append(coverage.summary())
        return lines
