"""The replay runner: a video file processed frame by frame as fast as inference allows.

A small bounded queue lets decoding and preprocessing overlap with inference; nothing is dropped, so output is
deterministic. Like :class:`~edgevision.capture.runner.LiveRunner` it re-raises its capture thread's unexpected
exception from ``get()``, and every wait has a timeout.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable

from edgevision.capture.runner import CaptureStats, Prepare, SourceWait, make_frame
from edgevision.capture.sources import FrameSource
from edgevision.results.frame import Frame


class ReplayRunner:
    """Decode a file in a thread into a bounded queue; the consumer gets every frame in order."""

    live = False
    last_poll: float | None = None

    def __init__(self, source: FrameSource, prepare: Prepare | None = None, depth: int = 4) -> None:
        self.source = source
        self.prepare = prepare
        self.stats = CaptureStats()
        self._q: queue.Queue[Frame | None] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._done = False
        self.on_stop: list[Callable[[], None]] = []  # called by stop() before joining (unblock the thread)
        self._thread = threading.Thread(target=self._run, name="capture-replay", daemon=True)

    @property
    def fps(self) -> float | None:
        return self.source.fps

    def waiting(self) -> SourceWait | None:
        """A file is never waited for."""
        return None

    def stuck_since(self) -> float | None:
        """A replay never replaces its thread."""
        return None

    def start(self) -> None:
        self.source.open()
        self._thread.start()

    def _put(self, item: Frame | None) -> bool:
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            index = 0
            while not self._stop.is_set():
                item = self.source.read()
                if item is None:
                    break
                frame = make_frame(item, index, self.source.source_id)
                index += 1
                if self.prepare:
                    frame = self.prepare(frame)
                if not self._put(frame):
                    break
                self.stats.frames += 1
        except BaseException as exc:  # handed to the consumer, which raises it
            self._error = exc
        finally:
            try:
                self.source.close()
            except BaseException as exc:  # the first failure is the one reported
                self._error = self._error or exc
            # always: without the marker the consumer would take the dead thread for the end of the file
            self._put(None)

    def get(self, timeout: float) -> Frame | None:
        """The next frame; None on timeout or at the end (then ``finished`` is True)."""
        self.last_poll = time.monotonic()
        if self._done:
            return None
        try:
            item = self._q.get(timeout=timeout)
        except queue.Empty:
            if not self._thread.is_alive() and self._q.empty():
                self._done = True
                if self._error is not None:
                    raise self._error from None
            return None
        if item is None:
            self._done = True
            if self._error is not None:
                raise self._error
            return None
        # Replay latency is measured from when the frame's own work began: time spent queued behind earlier
        # frames is the replay's own back-pressure, not capture-to-result latency. That is when the loop takes
        # it, unless its inference was submitted on this thread ahead of the loop (frames side by side): then
        # from that submission, which the frame carries.
        prepared = item.prepared
        if prepared is not None and prepared.started_at is not None:
            return item.with_captured_at(prepared.started_at)
        return item.with_captured_at(time.monotonic())

    @property
    def finished(self) -> bool:
        return self._done

    def stop(self) -> None:
        self._stop.set()
        for hook in self.on_stop:
            hook()
        self._thread.join(timeout=5.0)
