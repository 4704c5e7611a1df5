"""Capture threads: how frames get from a source to inference.

* :class:`~edgevision.capture.replay.ReplayRunner` — a video file processed frame by frame as fast as inference
  allows (its own module).
* :class:`LiveRunner` — cameras, streams and ``--realtime`` replay. Frames go through a :class:`LatestSlot`
  (drops counted); a stalled or vanished source is reopened with exponential backoff. With
  ``wait_at_start`` (the service) a source that is not there at start — a camera not yet enumerated, Wi-Fi or
  the RTSP server late — is retried the same way, forever, instead of being an error; :meth:`LiveRunner.waiting`
  says so (status line, sd_notify STATUS=, ``/healthz``).

Both re-raise a capture thread's unexpected exception from ``get()``, so a failed thread stops the program
loudly instead of leaving it waiting. Every wait has a timeout.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from edgevision.capture.slot import LatestSlot
from edgevision.capture.sources import FrameSource
from edgevision.errors import InputError
from edgevision.results.frame import DecodedImage, Frame, UndecodablePicture

log = logging.getLogger(__name__)

Prepare = Callable[[Frame], Frame]  # returns the frame carrying its prepared model input
Clock = Callable[[], float]
# How long packets arriving without a frame keep a stream from counting as stalled: a stream joined mid-GOP
# decodes nothing before its next keyframe, which a camera may send only every few seconds (or more).
KEYFRAME_WAIT_S = 30.0


def backoff_delays(initial: float, maximum: float) -> Iterator[float]:
    """Reconnect delays: ``initial``, doubling, capped at ``maximum``."""
    delay = initial
    while True:
        yield delay
        delay = min(maximum, delay * 2)


def is_stalled(last_frame_at: float, now: float, timeout: float) -> bool:
    """True when no frame has arrived for longer than ``timeout`` seconds (pure, clock injected)."""
    return now - last_frame_at > timeout


def make_frame(
    item: tuple[np.ndarray | DecodedImage, float, np.ndarray | None], index: int, source_id: str
) -> Frame:
    """The pipeline frame of what a source read: a lazy frame for a decoded picture, else the image itself."""
    image, ts, full = item
    if isinstance(image, np.ndarray):
        return Frame(image, ts, index, source_id, full, time.monotonic())
    return Frame.lazy(image, ts, index, source_id, time.monotonic())


@dataclass(frozen=True)
class SourceWait:
    """A live source that is not there (yet) and is being retried. Times are on the runner's clock."""

    source: str
    reason: str
    since: float
    attempts: int
    last_attempt: float  # when the latest open attempt started (``attempting``) or failed
    retry_in: float  # the backoff delay after the latest failure
    attempting: bool  # an open() is in progress (it may take up to ``open_timeout``)
    open_timeout: float

    def text(self, now: float) -> str:
        """One line for STATUS= and logs."""
        if self.attempting:
            nxt = "opening now"
        else:
            nxt = f"next try in {max(0.0, self.last_attempt + self.retry_in - now):.0f} s"
        return (
            f"waiting for source {self.source} for {now - self.since:.0f} s: {self.reason} "
            f"({self.attempts} attempt(s), {nxt})"
        )


def should_log_attempt(attempts: int) -> bool:
    """Log the first failures, then every 10th (a camera that stays away must not flood the journal)."""
    return attempts <= 3 or attempts % 10 == 0


@dataclass
class CaptureStats:
    """Counters reported in the status line and the run summary."""

    frames: int = 0
    dropped: int = 0
    reconnects: int = 0
    stalls: int = 0


class LiveRunner:
    """Live capture with a latest-frame slot, stall detection and reconnect with backoff.

    ``source_factory`` makes a fresh source for every (re)connection. With ``pace=True`` a file source is
    replayed at its own frame rate (``--realtime``) and ends at end of file instead of reconnecting. With
    ``wait_at_start=True`` a source that cannot be opened at start is retried with backoff (like a lost one)
    instead of raising; ``open_timeout`` is how long one open may take (for the watchdog's patience).
    """

    live = True

    def __init__(
        self,
        source_factory: Callable[[], FrameSource],
        prepare: Prepare | None = None,
        stall_timeout: float = 5.0,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        pace: bool = False,
        clock: Clock = time.monotonic,
        wait_at_start: bool = False,
        open_timeout: float = 10.0,
    ) -> None:
        self.factory = source_factory
        self.wait_at_start = wait_at_start
        self.open_timeout = open_timeout
        self.prepare = prepare
        self.stall_timeout = stall_timeout
        self.backoff = (backoff_initial, backoff_max)
        self.pace = pace
        self.clock = clock
        self.stats = CaptureStats()
        self.slot: LatestSlot[Frame] = LatestSlot()
        self._stop = threading.Event()
        # guards _generation, _last_frame_at, _last_packet_at, _index, _wait, _cleared, _threads, _superseded
        self._lock = threading.Lock()
        self._generation = 0
        self._wait: SourceWait | None = None
        self._cleared: SourceWait | None = None  # the wait an open ended, until that connection gives a frame
        self._superseded: dict[threading.Thread, float] = {}  # replaced threads still running, since when
        self._opened = False  # a source has been opened once (later opens are reconnects)
        self.last_poll: float | None = None  # when the main loop last asked for a frame (its liveness)
        self._last_frame_at = clock()
        self._last_packet_at: float | None = (
            None  # the current connection's latest packet, if its source says
        )
        self._index = 0
        self._error: BaseException | None = None
        self._finished = False
        self._first: FrameSource | None = None
        self.fps: float | None = None
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """Open the source once synchronously (so a missing camera fails now, unless ``wait_at_start``), then
        capture in a thread."""
        src = self.factory()
        try:
            src.open()
        except InputError as exc:
            if not self.wait_at_start:
                raise
            now = self.clock()
            with self._lock:
                self._wait = SourceWait(
                    src.source_id, str(exc), now, 1, now, self.backoff[0], False, self.open_timeout
                )
            log.warning(
                "capture: %s; waiting for it (retried with backoff up to %.0f s, forever)",
                exc,
                self.backoff[1],
            )
            self._last_frame_at = now
            self._spawn()
            return
        self._first = src
        self._opened = True
        self.fps = src.fps
        self._last_frame_at = self.clock()
        self._spawn()

    def waiting(self) -> SourceWait | None:
        """The source being waited for (absent at start, or lost and not back yet), else None."""
        with self._lock:
            return self._wait

    def _note_attempt(self, gen: int, source: str, reason: str | None, retry_in: float) -> int:
        """Record an open attempt starting (``reason`` None) or failing; returns the attempt count."""
        now = self.clock()
        with self._lock:
            if gen != self._generation:
                return 0
            w = self._wait
            if reason is None:
                if w is not None:
                    self._wait = dataclasses.replace(w, last_attempt=now, attempting=True)
                return w.attempts if w else 0
            if w is None:
                w = SourceWait(source, reason, now, 0, now, retry_in, False, self.open_timeout)
            self._wait = dataclasses.replace(
                w,
                reason=reason,
                attempts=w.attempts + 1,
                last_attempt=now,
                retry_in=retry_in,
                attempting=False,
            )
            return self._wait.attempts

    def _spawn(self) -> None:
        now = self.clock()
        with self._lock:
            self._generation += 1
            gen = self._generation
            for th in self._threads:  # replaced: each returns once its source does
                if th.is_alive():
                    self._superseded.setdefault(th, now)
            t = threading.Thread(target=self._run, args=(gen,), name=f"capture-live-{gen}", daemon=True)
            self._threads = [th for th in self._threads if th.is_alive()] + [t]
        t.start()

    def stuck_since(self) -> float | None:
        """Since when a capture thread that a stall replaced has been inside its source without returning (a
        driver call that never comes back, which may hold the device the new thread waits for), or None."""
        with self._lock:
            self._superseded = {t: since for t, since in self._superseded.items() if t.is_alive()}
            return min(self._superseded.values(), default=None)

    def _current(self, gen: int) -> bool:
        with self._lock:
            return gen == self._generation and not self._stop.is_set()

    def _watch(self, src: FrameSource, gen: int) -> None:
        """A source that reports packets (a demuxed stream) tells of each: a sign of life before its next frame.
        Told False once connection ``gen`` was given up, it stops reading."""
        watch = getattr(src, "watch_packets", None)
        if watch is not None:
            watch(lambda: self._heard(gen))

    def _heard(self, gen: int) -> bool:
        with self._lock:
            if gen != self._generation or self._stop.is_set():
                return False
            self._last_packet_at = self.clock()
            return True

    def _open_with_backoff(self, gen: int, delays: Iterator[float]) -> FrameSource | None:
        """A fresh source, opened; each failed open waits the next of ``delays``. None when stopped/superseded."""
        while True:
            if not self._current(gen):
                return None
            src = self.factory()
            self._note_attempt(gen, src.source_id, None, 0.0)
            try:
                src.open()
            except InputError as exc:
                delay = next(delays)
                attempts = self._note_attempt(gen, src.source_id, str(exc), delay)
                if should_log_attempt(attempts):
                    log.warning("capture: %s; retrying in %.1f s (attempt %d)", exc, delay, attempts)
                if self._stop.wait(delay):
                    return None
                continue
            with self._lock:
                first_open, self._opened = not self._opened, True
                if gen == self._generation:
                    self._wait, self._cleared = None, self._wait
                self._last_frame_at = self.clock()
            if first_open:
                self.fps = src.fps
                log.info("capture: %s is there; capturing", src.source_id)
            else:
                self.stats.reconnects += 1
                log.info("capture: %s reconnected", src.source_id)
            return src

    def _run(self, gen: int) -> None:
        src, self._first = self._first, None
        if src is not None:
            self._watch(src, gen)
        t0: float | None = None
        ts0 = 0.0
        # One backoff sequence until a connection delivers a frame: a source that opens but fails its first read
        # (a USB camera short of bandwidth, a server closing after its headers) is retried like a refused open,
        # not reopened in a tight loop.
        delays = backoff_delays(*self.backoff)
        delivered = False
        try:
            while self._current(gen):
                if src is None:
                    src = self._open_with_backoff(gen, delays)
                    if src is None:
                        return
                    delivered = False
                    self._watch(src, gen)
                item = src.read()
                if not self._current(gen):
                    return
                if item is None:
                    if not src.live:
                        self._finished = True
                        self.slot.close()
                        return
                    source_id = src.source_id
                    src.close()
                    src = None
                    if delivered:
                        log.warning("capture: %s disconnected or returned no frame; reconnecting", source_id)
                        delays = backoff_delays(*self.backoff)
                        continue
                    delay = next(delays)
                    with self._lock:  # the same wait goes on: its start and attempts count on
                        if gen == self._generation and self._wait is None:
                            self._wait = self._cleared
                    attempts = self._note_attempt(gen, source_id, "opened but delivered no frame", delay)
                    if should_log_attempt(attempts):
                        log.warning(
                            "capture: %s opened but delivered no frame; retrying in %.1f s (attempt %d)",
                            source_id,
                            delay,
                            attempts,
                        )
                    if self._stop.wait(delay):
                        return
                    continue
                if not delivered:
                    delivered = True
                    with self._lock:
                        self._cleared = None
                ts = item[1]
                if self.pace:
                    if t0 is None:
                        t0, ts0 = self.clock(), ts
                    delay = t0 + (ts - ts0) - self.clock()
                    if delay > 0:
                        with self._lock:  # the frame is not due before then: waiting for it is no stall
                            self._last_frame_at = max(self._last_frame_at, self.clock() + delay)
                        if self._stop.wait(delay) or not self._current(gen):
                            return
                with self._lock:
                    index = self._index
                    self._index += 1
                frame = make_frame(item, index, src.source_id)
                if self.prepare:
                    try:
                        frame = self.prepare(frame)
                    except UndecodablePicture as exc:  # one damaged camera JPEG: skipped like a dropped frame
                        log.debug("capture: %s: frame %d skipped: %s", src.source_id, index, exc)
                        continue
                with self._lock:  # a frame only once it proved sound: only damaged pictures are a stall
                    self._last_frame_at = self.clock()
                self.slot.put(frame)
                self.stats.frames += 1
                self.stats.dropped = self.slot.dropped
        except BaseException as exc:  # handed to the consumer, which raises it
            with self._lock:
                superseded = gen != self._generation
            if superseded and isinstance(exc, Exception):
                # a thread a stall replaced, coming back from its driver with an error: capture is its
                # replacement's now, which this must neither stop nor end
                log.warning("capture: the capture thread replaced after a stall failed: %s", exc)
                return
            self._error = exc
            self.slot.close()
        finally:
            if src is not None:
                src.close()

    def get(self, timeout: float) -> Frame | None:
        """The latest frame, or None after ``timeout``; detects stalls and restarts capture."""
        self.last_poll = self.clock()
        frame = self.slot.get(timeout)
        if self._error is not None:
            raise self._error
        if frame is None and not self._finished and not self._stop.is_set():
            # a packet is a sign of life too, for a while after the last frame (a GOP's wait)
            grace = max(self.stall_timeout, KEYFRAME_WAIT_S)
            with self._lock:
                life, heard = self._last_frame_at, self._last_packet_at
                life = life if heard is None else max(life, min(heard, life + grace))
                stalled = is_stalled(life, self.clock(), self.stall_timeout)
                if stalled:
                    self._last_frame_at = self.clock()
            if stalled and self.waiting() is None:
                self.stats.stalls += 1
                log.warning("capture: no frame for %.1f s: source stalled; reopening it", self.stall_timeout)
                self._spawn()
        self.stats.dropped = self.slot.dropped
        return frame

    @property
    def finished(self) -> bool:
        return self._finished and self.slot.closed

    def stop(self, timeout: float = 2.0) -> None:
        """Stop capturing; wait at most ``timeout`` s in all (not per thread: threads stuck in a driver after
        stalls would add up) for the capture threads to close their sources, the current one first."""
        self._stop.set()
        self.slot.close()
        deadline = self.clock() + timeout
        with self._lock:
            threads = self._threads[::-1]
        for t in threads:
            t.join(timeout=max(0.0, deadline - self.clock()))
