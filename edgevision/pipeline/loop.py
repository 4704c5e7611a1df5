"""The frame loop shared by replay and live capture; only the runner (source + clock) differs."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np

from edgevision.capture.frame import Frame
from edgevision.capture.runner import CaptureStats
from edgevision.detection.detector import Detector
from edgevision.detection.types import Detection
from edgevision.face.types import Face

if TYPE_CHECKING:
    from edgevision.pipeline.control import Controls
    from edgevision.scheduler.runtime import Scheduler
from edgevision.pipeline.stats import StatusWindow, percentile

log = logging.getLogger(__name__)


@dataclass
class FrameResult:
    """A processed frame. ``latency_ms`` holds per-stage times and ``total`` (capture to result)."""

    frame: Frame
    detections: list[Detection]
    latency_ms: dict[str, float]
    model: str
    extras: dict[str, object] = field(default_factory=dict)
    faces: list[Face] | None = None  # set by the face stage on the frames it ran on


class Stage(Protocol):
    """A hook run on every result before the sinks (face stage, scheduler, recorder trigger)."""

    def process(self, result: FrameResult) -> None: ...


class Sink(Protocol):
    """A consumer of results (detections log, saved video, live view). ``close`` flushes everything."""

    def on_result(self, result: FrameResult) -> None: ...

    def close(self) -> None: ...


class Runner(Protocol):
    stats: CaptureStats
    live: bool

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


def make_prepare(detector_ref: Callable[[], Detector]) -> Callable[[Frame], None]:
    """A capture-thread hook that preprocesses each frame for the detector current at that moment."""

    def prepare(frame: Frame) -> None:
        det = detector_ref()
        t0 = time.perf_counter()
        tensor = det.preprocess(frame.image)
        frame.prepared[det.input_size] = (tensor, (time.perf_counter() - t0) * 1e3)

    return prepare


class Pipeline:
    """Pull frames from a runner, detect, run the stages, feed the sinks, report status."""

    def __init__(
        self,
        runner: Runner,
        detector: Detector,
        sinks: Sequence[Sink] = (),
        stages: Sequence[Stage] = (),
        status_interval: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        person_label: str = "person",
        scheduler: Scheduler | None = None,
        controls: Controls | None = None,
    ) -> None:
        self.runner = runner
        self.detector = detector
        self.sinks = list(sinks)
        self.stages = list(stages)
        self.status_interval = status_interval
        self.clock = clock
        self.person_label = person_label
        self.scheduler = scheduler
        self.controls = controls  # run-time switches: detection off means no detections, no rung feedback
        self.on_status: Callable[[str], None] = lambda line: log.info("status: %s", line)

    def _tensor(self, frame: Frame) -> tuple[np.ndarray, float]:
        prepared = frame.prepared.pop(self.detector.input_size, None)
        frame.prepared.clear()  # drop tensors made for another rung: they would only hold memory
        if prepared is not None:
            return prepared
        t0 = time.perf_counter()
        tensor = self.detector.preprocess(frame.image)
        return tensor, (time.perf_counter() - t0) * 1e3

    def _detect(self, frame: Frame) -> tuple[list[Detection], dict[str, float], dict[str, object]]:
        """Detections for ``frame``: from the current detector, or carried / gated by the scheduler."""
        sched = self.scheduler
        extras: dict[str, object] = {}
        if sched is not None:
            self.detector = sched.detector
            extras["rung"] = sched.rung.name
        if self.controls is not None and not self.controls.detect:
            extras["detect_off"] = True
            return [], {}, extras
        if sched is not None:
            t0 = time.perf_counter()
            if not sched.should_detect():
                extras["carried"] = True
                return sched.carried(frame.ts), {"carry": (time.perf_counter() - t0) * 1e3}, extras
            if sched.gate_says_empty(frame.image):
                extras["gated"] = True
                return [], {"gate": (time.perf_counter() - t0) * 1e3}, extras
        tensor, pre_ms = self._tensor(frame)
        det = self.detector
        t1 = time.perf_counter()
        det.handle.set_input(tensor)
        det.handle.invoke()
        t2 = time.perf_counter()
        dets = det.parse([det.handle.output(i) for i in range(len(det.handle.output_details))])
        t3 = time.perf_counter()
        if sched is not None:
            sched.detected(frame.ts, dets, self.person_label)
        return dets, {"preprocess": pre_ms, "invoke": (t2 - t1) * 1e3, "postprocess": (t3 - t2) * 1e3}, extras

    def process(self, frame: Frame) -> FrameResult:
        """Detect on one frame and run the stages (sinks are fed by :meth:`run`)."""
        dets, latency, extras = self._detect(frame)
        result = FrameResult(frame, dets, latency, self.detector.name, extras)
        for stage in self.stages:
            stage.process(result)
        total = (time.monotonic() - frame.captured_at) * 1e3 if frame.captured_at else sum(latency.values())
        result.latency_ms["total"] = total
        if self.scheduler is not None and "detect_off" not in extras:
            sw = self.scheduler.observe(total)
            if sw is not None:
                result.extras["switch"] = {"from": self.scheduler.rungs[sw.from_rung].name,
                                           "to": self.scheduler.rungs[sw.to_rung].name, "reason": sw.reason}  # fmt: skip
        return result

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
        self.runner.start()
        started = self.clock()
        window = StatusWindow(started)
        all_latency: deque[float] = deque(maxlen=100_000)
        processed = person_frames = 0
        stopped_by = "end of input"
        try:
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
                    continue
                result = self.process(frame)
                for sink in self.sinks:
                    sink.on_result(result)
                processed += 1
                if any(d.label == self.person_label for d in result.detections):
                    person_frames += 1
                total = result.latency_ms["total"]
                window.add(total)
                all_latency.append(total)
                now = self.clock()
                if window.due(now, self.status_interval):
                    self.on_status(window.line(now, self.runner.stats.dropped, self.detector.name))
                    window = StatusWindow(now)
        except BaseException:
            self.runner.stop()
            self._close_sinks()  # failures are logged; the original error is the one raised
            raise
        self.runner.stop()
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
