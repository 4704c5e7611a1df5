"""The frame loop shared by replay and live capture; only the runner (source + clock) differs."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from edgevision.capture.runner import CaptureStats
from edgevision.pipeline.stats import StatusWindow, percentile
from edgevision.results import (
    DetectMode,
    DetectOutcome,
    DetectStep,
    EventUpdate,
    Frame,
    FrameResult,
    IdleEventSink,
    Latency,
    Sink,
    Stage,
)
from edgevision.results.frame import UndecodablePicture

if TYPE_CHECKING:
    from edgevision.pipeline.control import Controls

log = logging.getLogger(__name__)


class CaptureRunner(Protocol):
    """What the loop needs of a capture runner (``capture.runner.ReplayRunner`` / ``LiveRunner``): frames from a
    source on its own thread, with the counters of what it captured and dropped."""

    stats: CaptureStats
    live: bool

    @property
    def fps(self) -> float | None:
        """The source's frame rate once it is open (``None`` when it does not say)."""
        ...

    def start(self) -> None: ...

    def get(self, timeout: float) -> Frame | None: ...

    @property
    def finished(self) -> bool: ...

    def stop(self) -> None: ...


@dataclass
class RunSummary:
    """What a run did; printed at the end and returned to callers/tests."""

    frames_processed: int
    frames_captured: int
    dropped: int
    reconnects: int
    stalls: int
    seconds: float
    latency_p50_ms: float
    latency_p95_ms: float
    person_frames: int
    stopped_by: str

    @property
    def fps(self) -> float:
        return self.frames_processed / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        return (
            f"processed {self.frames_processed} frames in {self.seconds:.1f} s ({self.fps:.1f} fps); "
            f"captured {self.frames_captured}, dropped {self.dropped}, reconnects {self.reconnects}, "
            f"latency p50 {self.latency_p50_ms:.1f} ms p95 {self.latency_p95_ms:.1f} ms; "
            f"frames with a person: {self.person_frames}; stopped by {self.stopped_by}"
        )


class Pipeline:
    """Pull frames from a runner, ask the detect step, run the stages, feed the sinks, report status."""

    def __init__(
        self,
        runner: CaptureRunner,
        step: DetectStep,
        sinks: Sequence[Sink] = (),
        stages: Sequence[Stage] = (),
        status_interval: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        person_label: str = "person",
        controls: Controls | None = None,
        on_status: Callable[[str], None] | None = None,
        idle_events: Callable[[float], EventUpdate | None] | None = None,
    ) -> None:
        self.runner = runner
        self.step = step
        self.sinks = list(sinks)
        self.stages = list(stages)
        self.status_interval = status_interval
        self.clock = clock
        self.person_label = person_label
        self.controls = controls  # run-time switches: detection off means no detections, no rung feedback
        self.on_status: Callable[[str], None] = on_status or (lambda line: log.info("status: %s", line))
        # A live source that gives no frame: asked at every empty poll with the time on the frames' clock (the
        # event stage ends an event whose post-roll has passed); an update goes to the sinks that listen
        # (IdleEventSink).
        self.idle_events = idle_events
        # (ts, clock time) of the last frame: frames are not on this clock (a paced file's media clock, a
        # stream's anchor that drifts), so idle time is counted on it from the last frame
        self._last_frame_at: tuple[float, float] | None = None

    def process(self, frame: Frame) -> FrameResult:
        """Detect on one frame and run the stages (sinks are fed by :meth:`run`)."""
        started = time.monotonic()
        if self.controls is not None and not self.controls.detect:
            outcome = DetectOutcome([], Latency(), DetectMode.OFF, self.step.model)
        else:
            outcome = self.step.detect(frame)
        result = FrameResult.from_outcome(frame, outcome)
        for stage in self.stages:
            stage.process(result)
        latency = result.latency
        total = (time.monotonic() - frame.captured_at) * 1e3 if frame.captured_at else latency.stages_ms()
        latency.total = total
        if outcome.mode is not DetectMode.OFF:
            wait = (started - frame.captured_at) * 1e3 if frame.captured_at else 0.0
            result.switch = self.step.feedback(outcome, total, wait)
        return result

    def _idle(self) -> None:
        """An empty poll of a live source: events that end by time alone end now, for every listening sink."""
        if self.idle_events is None or not self.runner.live or self._last_frame_at is None:
            return  # a file's events end with its frames (or its end); before any frame, no event
        ts, at = self._last_frame_at
        update = self.idle_events(ts + self.clock() - at)  # the frames' clock, never compared with ours
        if update is None:
            return
        for sink in self.sinks:
            if isinstance(sink, IdleEventSink):
                sink.on_idle_events(update)

    def _close_sinks(self) -> list[Exception]:
        """Close every sink, even when one fails; return the failures (never swallowed by callers)."""
        errors: list[Exception] = []
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as exc:
                log.error("closing %s failed: %s", type(sink).__name__, exc)
                errors.append(exc)
        return errors

    def run(self, stop: threading.Event, max_frames: int | None = None) -> RunSummary:
        """Run until the source ends, ``max_frames`` are processed or ``stop`` is set; sinks are always closed, errors re-raised."""
        all_latency: deque[float] = deque(maxlen=100_000)
        processed = person_frames = 0
        stopped_by = "end of input"
        running = False  # the runner started (a source that does not open leaves nothing to stop)
        try:
            self.runner.start()
            running = True
            started = self.clock()
            window = StatusWindow(started)
            while True:
                if stop.is_set():
                    stopped_by = "signal"
                    break
                if max_frames is not None and processed >= max_frames:
                    stopped_by = "frame limit"
                    break
                frame = self.runner.get(timeout=0.5)
                if frame is None:
                    if self.runner.finished:
                        break
                    self._idle()
                    continue
                try:
                    result = self.process(frame)
                except UndecodablePicture as exc:
                    # a damaged camera JPEG the capture thread did not prepare for this detector (a rung switched
                    # since, detection switched on): skipped like a dropped frame, as the capture thread does
                    log.debug("frame %d skipped: %s", frame.index, exc)
                    continue
                for sink in self.sinks:
                    sink.on_result(result)
                processed += 1
                if result.has(self.person_label):
                    person_frames += 1
                total = result.latency.total or 0.0
                window.add(total)
                all_latency.append(total)
                now = self.clock()
                self._last_frame_at = (frame.ts, now)
                if window.due(now, self.status_interval):
                    self.on_status(window.line(now, self.runner.stats.dropped, self.step.model))
                    window = StatusWindow(now)
        except BaseException:
            if running:
                self.runner.stop()
            self.step.close()
            self._close_sinks()  # failures are logged; the original error is the one raised
            raise
        self.runner.stop()
        self.step.close()  # after the capture thread, which may be submitting work to the step
        errors = self._close_sinks()
        if errors:
            raise errors[0]
        st = self.runner.stats
        return RunSummary(
            frames_processed=processed,
            frames_captured=st.frames,
            dropped=st.dropped,
            reconnects=st.reconnects,
            stalls=st.stalls,
            seconds=self.clock() - started,
            latency_p50_ms=percentile(all_latency, 50),
            latency_p95_ms=percentile(all_latency, 95),
            person_frames=person_frames,
            stopped_by=stopped_by,
        )
