"""The frame loop as a specification, with fakes for everything around it: a fake capture runner, a fake detect
step, fake stages and sinks, an injected clock. No model, no thread, no timing."""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import pytest
from media import DamagedPicture

from edgevision.capture.runner import CaptureStats
from edgevision.pipeline.control import Controls
from edgevision.pipeline.loop import Pipeline
from edgevision.results import DetectMode, DetectOutcome, Frame, FrameResult, Latency, SwitchInfo
from edgevision.results.detection import BBox, Detection

IMAGE = np.zeros((2, 2, 3), np.uint8)
PERSON = Detection("person", 0, 0.9, BBox(0.1, 0.1, 0.4, 0.9))
CAR = Detection("car", 2, 0.8, BBox(0.5, 0.5, 0.9, 0.9))


class Boom(RuntimeError):
    pass


@dataclass
class FakeRunner:
    """A capture runner serving ``frames``; ``None`` entries are empty polls (a live source between frames)."""

    frames: list[Frame | None]
    live: bool = False
    stats: CaptureStats = field(default_factory=CaptureStats)
    calls: list[str] = field(default_factory=list)
    served: int = 0
    fps: float | None = None

    def start(self) -> None:
        self.calls.append("start")

    def get(self, timeout: float) -> Frame | None:
        if self.served >= len(self.frames):
            return None
        frame = self.frames[self.served]
        self.served += 1
        if frame is not None:
            self.stats.frames += 1
        return frame

    @property
    def finished(self) -> bool:
        return self.served >= len(self.frames)

    def stop(self) -> None:
        self.calls.append("stop")


@dataclass
class FakeStep:
    """A detect step: detections per frame index, a switch on chosen frames; it logs every call."""

    log: list[str]
    detections: dict[int, list[Detection]] = field(default_factory=dict)
    switch_on: set[int] = field(default_factory=set)
    mode: DetectMode = DetectMode.DETECTED
    feedback_args: list[tuple[DetectOutcome, float, float]] = field(default_factory=list)
    closed: bool = False

    @property
    def model(self) -> str:
        return "fake@300"

    def prepare(self, frame: Frame) -> Frame:
        return frame

    def detect(self, frame: Frame) -> DetectOutcome:
        self.log.append(f"detect {frame.index}")
        dets = self.detections.get(frame.index, [])
        return DetectOutcome(dets, Latency(preprocess=1.0, invoke=4.0), self.mode, self.model, "fake@300")

    def feedback(self, outcome: DetectOutcome, total_ms: float, wait_ms: float) -> SwitchInfo | None:
        self.log.append("feedback")
        self.feedback_args.append((outcome, total_ms, wait_ms))
        n = len(self.feedback_args) - 1
        return (
            SwitchInfo("fake@300", "fake@224", "resolution", "down", "over budget")
            if n in self.switch_on
            else None
        )

    def close(self) -> None:
        self.closed = True


@dataclass
class FakeStage:
    name: str
    log: list[str]
    fail_on: int | None = None

    def process(self, result: FrameResult) -> None:
        self.log.append(f"stage {self.name}")
        if result.frame.index == self.fail_on:
            raise Boom(f"stage {self.name}")
        result.latency.faces = (result.latency.faces or 0.0) + 2.0  # a stage's time counts in the total


@dataclass
class FakeSink:
    name: str
    log: list[str]
    fail_on: int | None = None
    fail_close: bool = False
    results: list[FrameResult] = field(default_factory=list)
    closed: int = 0
    stop: threading.Event | None = None
    stop_after: int | None = None

    def on_result(self, result: FrameResult) -> None:
        self.log.append(f"sink {self.name}")
        if result.frame.index == self.fail_on:
            raise Boom(f"sink {self.name}")
        self.results.append(result)
        if self.stop is not None and len(self.results) == self.stop_after:
            self.stop.set()

    def close(self) -> None:
        self.log.append(f"close {self.name}")
        self.closed += 1
        if self.fail_close:
            raise Boom(f"close {self.name}")


def frames(n: int, captured_at: float = 0.0) -> list[Frame | None]:
    return [Frame(IMAGE, i / 10, i, "fake", captured_at=captured_at) for i in range(n)]


def pipeline(
    n: int = 3, stages: int = 2, sinks: int = 2, **kw: object
) -> tuple[Pipeline, FakeRunner, FakeStep, list[FakeSink], list[str]]:
    log: list[str] = []
    runner = FakeRunner(frames(n))
    step = FakeStep(log)
    sink_list = [FakeSink(f"s{i}", log) for i in range(sinks)]
    stage_list = [FakeStage(f"t{i}", log) for i in range(stages)]
    pipe = Pipeline(runner, step, sink_list, stage_list, **kw)  # type: ignore[arg-type]
    return pipe, runner, step, sink_list, log


def test_per_frame_order_detect_stages_feedback_sinks() -> None:
    pipe, runner, step, sinks, log = pipeline(n=2)
    summary = pipe.run(threading.Event())
    one = ["detect {i}", "stage t0", "stage t1", "feedback", "sink s0", "sink s1"]
    assert log == [e.format(i=i) for i in range(2) for e in one] + ["close s0", "close s1"]
    assert runner.calls == ["start", "stop"]
    assert summary.frames_processed == 2 and summary.stopped_by == "end of input"
    assert all(s.closed == 1 for s in sinks)
    assert step.closed  # its workers released once the capture thread has stopped


def test_stages_see_the_detections_and_sinks_see_the_stages_edits() -> None:
    pipe, _, step, sinks, _ = pipeline(n=2, stages=2)
    step.detections = {0: [PERSON, CAR]}
    pipe.run(threading.Event())
    first, second = sinks[0].results
    assert first.detections == [PERSON, CAR] and second.detections == []
    assert first.latency.faces == 4.0  # both stages ran on the result the sinks get
    assert first.rung == "fake@300" and first.mode is DetectMode.DETECTED and first.model == "fake@300"
    assert sinks[0].results == sinks[1].results  # every sink sees the same results


@pytest.mark.parametrize(
    ("detect_on", "mode", "detect_calls", "feedback_calls"),
    [
        (True, DetectMode.DETECTED, 3, 3),
        (False, DetectMode.OFF, 0, 0),  # switched off: no detector, no rung feedback
    ],
)
def test_the_detect_switch(detect_on: bool, mode: DetectMode, detect_calls: int, feedback_calls: int) -> None:
    controls = Controls(detect=detect_on)
    pipe, _, step, sinks, log = pipeline(n=3, controls=controls)
    step.detections = {i: [PERSON] for i in range(3)}
    pipe.run(threading.Event())
    assert sum(e.startswith("detect") for e in log) == detect_calls
    assert log.count("feedback") == feedback_calls
    assert [r.mode for r in sinks[0].results] == [mode] * 3
    if not detect_on:
        assert all(
            r.detections == [] and r.switch is None and r.model == "fake@300" for r in sinks[0].results
        )


@pytest.mark.parametrize("mode", [DetectMode.DETECTED, DetectMode.CARRIED, DetectMode.GATED])
def test_feedback_once_per_frame_whatever_the_step_did(mode: DetectMode) -> None:
    pipe, _, step, _, log = pipeline(n=4, stages=1)
    step.mode = mode
    pipe.run(threading.Event())
    assert log.count("feedback") == 4
    assert [o.mode for o, _, _ in step.feedback_args] == [mode] * 4


def test_feedback_gets_the_total_including_stages_and_the_wait() -> None:
    # Without a capture time the total is the sum of the stage times and nothing waited.
    pipe, _, step, sinks, _ = pipeline(n=1, stages=2)
    pipe.run(threading.Event())
    (_, total, wait), r = step.feedback_args[0], sinks[0].results[0]
    assert total == r.latency.total == 1.0 + 4.0 + 2.0 + 2.0 and wait == 0.0
    # With one, the total runs from capture to the end of the stages, and the wait from capture to detect.
    log: list[str] = []
    step = FakeStep(log)
    captured = time.monotonic() - 10.0  # captured 10 s ago: both include those 10 s
    Pipeline(FakeRunner(frames(1, captured)), step).run(threading.Event())
    _, total, wait = step.feedback_args[0]
    assert wait >= 10_000.0 and total >= wait + 0.0


def test_the_switch_the_step_reports_is_on_that_frames_result_only() -> None:
    pipe, _, step, sinks, _ = pipeline(n=3)
    step.switch_on = {1}
    pipe.run(threading.Event())
    assert [r.switch is not None for r in sinks[0].results] == [False, True, False]


@pytest.mark.parametrize(
    ("fail", "raised", "processed_by_s1"),
    [
        ({"sink": ("s0", 1)}, "sink s0", 1),  # a sink fails on frame 1: s1 never sees frame 1
        ({"sink": ("s1", 0)}, "sink s1", 0),
        ({"stage": ("t1", 2)}, "stage t1", 2),  # a stage fails: nothing of frame 2 reaches the sinks
        ({"close": ("s0",)}, "close s0", 3),  # closing fails after a clean run: the close error is raised
        ({"close": ("s0", "s1")}, "close s0", 3),  # both fail: the first one is raised
        (
            {"sink": ("s0", 1), "close": ("s0", "s1")},
            "sink s0",
            1,
        ),  # the original error wins over close errors
    ],
)
def test_sinks_are_always_closed_and_the_first_error_is_raised(
    fail: dict[str, tuple[object, ...]], raised: str, processed_by_s1: int
) -> None:
    pipe, runner, step, sinks, _ = pipeline(n=3)
    by_name = {s.name: s for s in sinks}
    if "sink" in fail:
        name, index = fail["sink"]
        by_name[str(name)].fail_on = int(str(index))
    if "stage" in fail:
        name, index = fail["stage"]
        stage = next(s for s in pipe.stages if isinstance(s, FakeStage) and s.name == name)
        stage.fail_on = int(str(index))
    for name in fail.get("close", ()):
        by_name[str(name)].fail_close = True
    with pytest.raises(Boom, match=f"^{raised}$"):
        pipe.run(threading.Event())
    assert [s.closed for s in sinks] == [1, 1]  # every sink closed exactly once, even after a failure
    assert runner.calls == ["start", "stop"] and step.closed
    assert len(by_name["s1"].results) == processed_by_s1


@pytest.mark.parametrize(
    ("n", "max_frames", "stop_after", "processed", "stopped_by"),
    [
        (5, None, None, 5, "end of input"),
        (5, 3, None, 3, "frame limit"),
        (5, 5, None, 5, "frame limit"),  # the limit is checked before asking for a frame
        (5, 1, None, 1, "frame limit"),
        (5, None, 2, 2, "signal"),  # the stop event is checked before every frame
        (5, 3, 2, 2, "signal"),
        (0, None, None, 0, "end of input"),
    ],
)
def test_what_ends_a_run(
    n: int, max_frames: int | None, stop_after: int | None, processed: int, stopped_by: str
) -> None:
    stop = threading.Event()
    pipe, runner, _, sinks, _ = pipeline(n=n)
    sinks[1].stop, sinks[1].stop_after = stop, stop_after
    summary = pipe.run(stop, max_frames)
    assert (summary.frames_processed, summary.stopped_by) == (processed, stopped_by)
    assert len(sinks[0].results) == processed and runner.served == processed
    assert runner.calls == ["start", "stop"] and all(s.closed == 1 for s in sinks)


def test_empty_polls_are_waited_through_until_the_source_finishes() -> None:
    log: list[str] = []
    runner = FakeRunner([None, *frames(2), None, None])
    sink = FakeSink("s", log)
    summary = Pipeline(runner, FakeStep(log), [sink]).run(threading.Event())
    assert summary.frames_processed == 2 and summary.frames_captured == 2 and runner.served == 5


def test_summary_counts_person_frames_and_capture_stats() -> None:
    pipe, runner, step, _, _ = pipeline(n=4, person_label="person")
    step.detections = {0: [PERSON], 1: [CAR], 2: [PERSON, PERSON]}
    runner.stats.dropped, runner.stats.reconnects, runner.stats.stalls = 7, 2, 1
    s = pipe.run(threading.Event())
    assert (s.person_frames, s.frames_captured, s.dropped, s.reconnects, s.stalls) == (2, 4, 7, 2, 1)
    assert s.latency_p50_ms == 5.0 + 4.0  # detect (1 + 4) and two stages (2 + 2) per frame


@pytest.mark.parametrize(
    ("n", "interval", "lines"),
    [
        (6, 2.0, 3),  # the clock ticks 1 s per reading: a line every second frame
        (6, 3.0, 2),
        (6, 100.0, 0),
        (1, 1.0, 1),
    ],
)
def test_status_lines(n: int, interval: float, lines: int) -> None:
    ticks = itertools.count(0.0, 1.0)
    pipe, runner, _, _, _ = pipeline(n=n, status_interval=interval, clock=lambda: next(ticks))
    runner.stats.dropped = 3
    seen: list[str] = []
    pipe.on_status = seen.append
    pipe.run(threading.Event())
    assert len(seen) == lines
    for line in seen:
        assert "| dropped 3 | model fake@300" in line and "latency p50 9.0 ms" in line


def test_a_source_that_fails_to_open_still_closes_the_step_and_every_sink() -> None:
    """A camera or file that does not open (exit 66) fails in ``runner.start()``: the sinks built before it (the
    recorder holding the data directory, the service monitor's thread) and the detect step are closed all the
    same, and the open's error is the one raised."""
    pipe, runner, step, sinks, _ = pipeline(n=3)

    def refuse() -> None:
        runner.calls.append("start")
        raise Boom("cannot open camera 0")

    runner.start = refuse  # type: ignore[method-assign]
    with pytest.raises(Boom, match=r"^cannot open camera 0$"):
        pipe.run(threading.Event())
    assert [s.closed for s in sinks] == [1, 1] and step.closed
    assert runner.calls == ["start"]  # a runner that never started is not stopped (its thread never ran)


@dataclass
class _PreprocessingStep(FakeStep):
    """A step that makes the model's input on the loop (a rung switched since the capture thread prepared the
    frame for the old one, or detection switched on since then)."""

    def detect(self, frame: Frame) -> DetectOutcome:
        from edgevision.detection.detector import frame_rgb

        frame_rgb(frame, 32, 24)
        return super().detect(frame)


def test_a_damaged_picture_preprocessed_on_the_loop_is_skipped_not_the_end_of_the_run() -> None:
    """A damaged camera JPEG preprocessed on the loop (after a rung switch) raised out of the run."""
    log: list[str] = []
    good = frames(3)
    runner = FakeRunner([good[0], Frame.lazy(DamagedPicture(), 0.1, 1, "fake"), good[2]])
    sink = FakeSink("s0", log)
    summary = Pipeline(runner, _PreprocessingStep(log), [sink]).run(threading.Event())
    assert [r.frame.index for r in sink.results] == [0, 2]
    assert summary.frames_processed == 2 and summary.stopped_by == "end of input"
