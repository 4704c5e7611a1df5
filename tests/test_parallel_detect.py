"""Frames side by side (runtime.parallel): results in frame order, one thread per interpreter, errors raised,
and the same detections as one interpreter."""

from __future__ import annotations

import json
import logging
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import WALKING, run_cli

from edgevision.detection.parallel import ParallelDetect
from edgevision.results import DetectMode, Frame, Latency
from edgevision.results.detection import BBox, Detection
from edgevision.results.frame import PreparedInput

DetectResult = tuple[list[Detection], Latency]


class Boom(RuntimeError):
    pass


class FakeDetector:
    """A detector whose "inference" returns the frame index it was given (as a score) after a random pause; it
    records how many threads are inside it at once, and over all fakes how many inferences run at once."""

    name = "fake"
    running = 0
    most = 0
    lock = threading.Lock()

    def __init__(self, fail_on: int | None = None, seed: int = 0) -> None:
        self.inside = 0
        self.most_inside = 0
        self.fail_on = fail_on
        self.rng = random.Random(seed)

    def prepare(self, frame: Frame) -> Frame:
        tensor = np.full((1, 1, 1, 1), frame.index, np.int64)
        return frame.with_prepared(PreparedInput((1, 1), tensor, 0.5))

    def detect_tensor(self, tensor: np.ndarray, preprocess_ms: float) -> tuple[list[Detection], Latency]:
        cls = type(self)
        with cls.lock:
            self.inside += 1
            self.most_inside = max(self.most_inside, self.inside)
            cls.running += 1
            cls.most = max(cls.most, cls.running)
        try:
            time.sleep(self.rng.uniform(0.0, 0.004))  # workers finish out of order
            index = int(tensor.reshape(-1)[0])
            if index == self.fail_on:
                raise Boom(f"frame {index}")
            return [Detection("person", 0, index / 1000, BBox(0, 0, 1, 1))], Latency(preprocess=preprocess_ms)
        finally:
            with cls.lock:
                self.inside -= 1
                cls.running -= 1

    def detect_frame(self, frame: Frame) -> tuple[list[Detection], Latency]:
        return self.detect_tensor(np.full((1,), frame.index, np.int64), 0.0)


def frame(i: int) -> Frame:
    return Frame(np.zeros((2, 2, 3), np.uint8), i / 25, i, "fake")


@pytest.fixture(autouse=True)
def _reset() -> None:
    FakeDetector.running = FakeDetector.most = 0


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_results_come_in_frame_order_with_at_most_one_thread_per_interpreter(workers: int) -> None:
    fakes = [FakeDetector(seed=k) for k in range(workers)]
    step = ParallelDetect(fakes)  # type: ignore[arg-type]
    prepared: list[Frame] = []
    # the capture thread runs ahead (prepare submits); the loop consumes in order
    capture = threading.Thread(target=lambda: prepared.extend(step.prepare(frame(i)) for i in range(60)))
    capture.start()
    capture.join(timeout=30)
    outcomes = [step.detect(f) for f in prepared]
    step.close()
    assert [round(o.detections[0].score * 1000) for o in outcomes] == list(range(60))
    assert all(o.mode is DetectMode.DETECTED and o.model == "fake" for o in outcomes)
    assert outcomes[0].latency.preprocess == 0.5  # the capture thread's preprocessing time travels along
    assert all(f.most_inside <= 1 for f in fakes)  # an interpreter is never used by two threads at once
    assert FakeDetector.most <= workers  # never more in flight than interpreters
    if workers > 1:
        assert FakeDetector.most > 1  # and they did run side by side


def test_a_worker_error_is_raised_on_the_frames_detect() -> None:
    step = ParallelDetect([FakeDetector(fail_on=3), FakeDetector(fail_on=3)])  # type: ignore[list-item]
    prepared = [step.prepare(frame(i)) for i in range(5)]
    assert step.detect(prepared[2]).detections
    with pytest.raises(Boom, match="frame 3"):
        step.detect(prepared[3])
    assert step.detect(prepared[4]).detections  # the others are unharmed
    step.close()


def test_a_frame_prepared_elsewhere_runs_on_a_free_interpreter() -> None:
    step = ParallelDetect([FakeDetector()])  # type: ignore[list-item]
    out = step.detect(frame(7))
    assert round(out.detections[0].score * 1000) == 7
    out = step.detect(step.prepare(frame(8)))  # the slot was given back: no deadlock
    assert round(out.detections[0].score * 1000) == 8
    step.close()


def test_a_stuck_worker_times_out_instead_of_hanging(caplog: pytest.LogCaptureFixture) -> None:
    class Stuck(FakeDetector):
        def detect_tensor(self, tensor: np.ndarray, preprocess_ms: float) -> tuple[list[Detection], Latency]:
            release.wait(10)
            return [], Latency()

    release = threading.Event()
    step = ParallelDetect([Stuck()], timeout=0.2)  # type: ignore[list-item]
    first = step.prepare(frame(0))
    with pytest.raises(TimeoutError, match="no detect worker"):
        step.prepare(frame(1))  # the only interpreter is busy: capture waits, with a timeout
    with pytest.raises(TimeoutError):
        step.detect(first)
    with caplog.at_level(logging.ERROR):
        step.close()  # the worker is still stuck: close reports it instead of waiting for it
    assert "did not finish" in caplog.text
    release.set()


def test_close_waits_for_the_inferences_in_flight(caplog: pytest.LogCaptureFixture) -> None:
    class Slow(FakeDetector):
        def detect_tensor(self, tensor: np.ndarray, preprocess_ms: float) -> tuple[list[Detection], Latency]:
            with lock:
                busy[0] += 1
            started.release()
            time.sleep(0.05)
            with lock:
                busy[0] -= 1
            return [], Latency()

    started, lock, busy = threading.Semaphore(0), threading.Lock(), [0]
    step = ParallelDetect([Slow(), Slow()])  # type: ignore[list-item]
    for i in range(2):  # submitted, never consumed (the run stopped)
        step.prepare(frame(i))
    assert started.acquire(timeout=10) and started.acquire(timeout=10)  # both running
    with caplog.at_level(logging.ERROR):
        step.close()
    assert busy == [0]  # no interpreter is in use once close() returns
    assert "did not finish" not in caplog.text


def test_close_twice_returns_at_once_and_reports_nothing(caplog: pytest.LogCaptureFixture) -> None:
    step = ParallelDetect([FakeDetector(), FakeDetector()], timeout=0.5)  # type: ignore[list-item]
    prepared = [step.prepare(frame(i)) for i in range(4)]
    assert [round(step.detect(f).detections[0].score * 1000) for f in prepared] == [0, 1, 2, 3]
    with caplog.at_level(logging.ERROR):
        step.close()
        step.close()  # a second close (an error path closing again) has no worker to wait for
    assert "did not finish" not in caplog.text


def test_prepare_after_close_is_refused_at_once() -> None:
    step = ParallelDetect([FakeDetector()], timeout=30)  # type: ignore[list-item]
    step.close()
    with pytest.raises(RuntimeError, match="closed"):
        step.prepare(frame(0))  # not a 30 s wait for a slot close() holds, then a misleading timeout
    with pytest.raises(RuntimeError, match="closed"):
        step.detect(frame(1))


STUCK_RUN = """
import sys, threading
sys.path.insert(0, sys.argv[1])
from test_parallel_detect import FakeDetector, frame
from edgevision.detection.parallel import ParallelDetect

class Stuck(FakeDetector):
    def detect_tensor(self, tensor, preprocess_ms):
        threading.Event().wait()  # an invoke that never returns

step = ParallelDetect([Stuck(), Stuck()], timeout=0.2)
step.prepare(frame(0))
step.close()
print("closed", flush=True)
"""


def test_a_stuck_worker_does_not_keep_the_process_from_exiting() -> None:
    # close() reports the stuck worker and returns; the program must then be able to exit (and fail loudly)
    # instead of waiting at interpreter exit for a thread that never ends
    r = subprocess.run(
        [sys.executable, "-c", STUCK_RUN, str(Path(__file__).parent)],
        capture_output=True,
        text=True,
        timeout=60,  # a hang guard, not a timing threshold: the process ends at once or never
    )
    assert r.returncode == 0 and "closed" in r.stdout, r.stderr
    assert "did not finish" in r.stderr


def _detections(path: Path) -> list[list[object]]:
    return [
        [(d["label"], d["score"], d["box"]) for d in json.loads(line)["detections"]] for line in path.open()
    ]


def test_run_parallel_gives_the_same_detections_as_one_interpreter(
    env: dict[str, str], tmp_path: Path
) -> None:
    runs = {}
    for name, flags in {"one": ["--threads", "1"], "parallel": ["--threads", "2", "--parallel", "2"]}.items():
        out = tmp_path / f"{name}.jsonl"
        r = run_cli(
            ["run", "--video", str(WALKING), "--max-frames", "24", "--detections", str(out), *flags], env
        )
        assert r.returncode == 0, r.stderr
        runs[name] = _detections(out)
        if name == "parallel":
            assert "2 interpreters of 1 thread(s)" in r.stderr
    assert len(runs["one"]) == 24 and runs["parallel"] == runs["one"]
    # each frame's total (capture to result) covers its own stages, though its inference ran ahead of the loop
    for line in (tmp_path / "parallel.jsonl").open():
        lat = json.loads(line)["latency_ms"]
        assert lat["total"] >= lat["preprocess"] + lat["invoke"] + lat["postprocess"] - 0.01, lat


def test_parallel_and_the_scheduler_are_refused(env: dict[str, str]) -> None:
    r = run_cli(["run", "--video", str(WALKING), "--parallel", "2", "--budget-ms", "50"], env)
    assert r.returncode == 2 and "runtime.parallel > 1" in r.stderr


def test_parallel_and_the_scheduler_in_a_file_name_the_line(env: dict[str, str], tmp_path: Path) -> None:
    cfg = tmp_path / "p.yaml"
    cfg.write_text("runtime:\n  threads: 2\n  parallel: 2\nscheduler:\n  enabled: true\n  budget_ms: 40\n")
    r = run_cli(["config", "check", str(cfg)], env)
    assert r.returncode == 78 and f"{cfg}:3 runtime.parallel: runtime.parallel > 1" in r.stderr


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({}, (2, 1)),  # replaying a file: one single-thread interpreter per thread
        ({"runtime.threads": 4}, (4, 1)),
        ({"runtime.threads": 1}, (1, 1)),
        ({"source.realtime": True}, (1, 2)),  # paced like a camera: each frame soon
        ({"source.kind": "camera", "source.path": None}, (1, 2)),
        ({"scheduler.enabled": True, "scheduler.budget_ms": 40}, (1, 2)),  # it switches models per frame
        ({"runtime.device": "edgetpu"}, (1, 2)),  # one TPU, one frame at a time
        ({"runtime.parallel": 1}, (1, 2)),
        ({"runtime.parallel": 2, "runtime.threads": 4}, (2, 2)),
        ({"runtime.parallel": 3, "runtime.threads": 2}, (3, 1)),  # asked for: at least one thread each
        ({"runtime.parallel": 2, "source.kind": "camera", "source.path": None}, (2, 1)),
    ],
)
def test_how_many_interpreters(overrides: dict[str, object], expected: tuple[int, int]) -> None:
    from edgevision.app.source import interpreters
    from edgevision.config import load_config

    cfg = load_config(None, {"source.kind": "video", "source.path": "clip.mp4", **overrides})
    assert interpreters(cfg) == expected


def test_detection_switched_off_runs_no_inference(models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # frames side by side infer in the capture thread: with detection switched off (MQTT), the capture thread
    # must not keep every core busy with inferences nobody reads
    from edgevision.app import RunOptions, build
    from edgevision.config import load_config

    cfg = load_config(
        overrides={
            "models.dir": str(models_dir),
            "source.kind": "video",
            "source.path": str(WALKING),
            "runtime.threads": 2,
            "runtime.parallel": 2,
        }
    )
    system = build(cfg, RunOptions(timing=False))
    step = system.pipeline.step
    assert isinstance(step, ParallelDetect) and system.pipeline.controls is not None
    calls = [0]

    def counting(
        real: Callable[[np.ndarray, float], DetectResult],
    ) -> Callable[[np.ndarray, float], DetectResult]:
        def counted(tensor: np.ndarray, ms: float) -> DetectResult:
            calls[0] += 1
            return real(tensor, ms)

        return counted

    for d in step.detectors:
        monkeypatch.setattr(d, "detect_tensor", counting(d.detect_tensor))
    system.pipeline.controls.set("detect", False)
    summary = system.run(max_frames=6)
    assert summary.frames_processed == 6 and calls == [0]
