"""Capture faults a camera or stream really shows: a source that opens but never delivers a frame."""

from __future__ import annotations

import threading

import numpy as np

from edgevision.capture.runner import LiveRunner, SourceWait


class _RecordingStop(threading.Event):
    """The runner's stop event, with every wait recorded and returned at once (no real sleeping)."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(float(timeout or 0.0))
        return self.is_set()


class _OpensButNoFrame:
    """A live source whose open succeeds and whose every read fails (a USB camera short of bandwidth: the
    device opens, VIDIOC_STREAMON fails; an HTTP server that closes after its headers)."""

    live = True
    fps: float | None = None
    source_id = "camera9"

    def __init__(self, log: list[str]) -> None:
        self.log = log

    def open(self) -> None:
        self.log.append("open")

    def read(self) -> tuple[np.ndarray, float, np.ndarray | None] | None:
        return None

    def close(self) -> None:
        pass


def test_a_source_that_opens_but_delivers_nothing_is_reopened_with_backoff() -> None:
    calls: list[str] = []
    waits: list[SourceWait | None] = []  # what the status said as each connection was being made
    runner: LiveRunner

    def factory() -> _OpensButNoFrame:
        waits.append(runner.waiting())
        if calls.count("open") >= 6:
            runner._stop.set()  # enough: end the capture thread
        return _OpensButNoFrame(calls)

    runner = LiveRunner(factory, backoff_initial=0.5, backoff_max=4.0)
    stop = _RecordingStop()
    runner._stop = stop
    runner.start()
    for t in runner._threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in runner._threads)
    opens = calls.count("open")
    assert opens >= 6
    # every reopen after a connection that gave nothing waited its turn, the delay doubling as for refused opens
    assert len(stop.waits) >= opens - 1
    assert stop.waits == [min(4.0, 0.5 * 2**i) for i in range(len(stop.waits))]
    assert waits[0] is None  # the first open, at start
    wait = waits[-1]
    assert wait is not None and "no frame" in wait.reason
    assert wait.attempts == len(stop.waits)  # one wait, its attempts counted across the connections
    assert {w.since for w in waits[1:] if w is not None} == {wait.since}
