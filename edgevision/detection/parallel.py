"""Frames side by side: several interpreters of one model, each frame's inference started by the capture thread.

An interpreter's own threads split one invoke's layers; on a board with few cores they scale poorly, and the
frame's decode competes with them. Running whole frames side by side on interpreters of one thread each keeps
every core on useful work: throughput rises, while each frame's latency becomes the one-thread invoke (a live
camera that the detector keeps up with gains nothing but load; a replay, or a camera faster than one
interpreter, gains frames). ``runtime.parallel`` picks how many.

How it flows (the ``DetectStep`` seam is unchanged for the pipeline):

* capture thread, :meth:`ParallelDetect.prepare`: makes the tensor, waits (with a timeout) until fewer than
  ``len(detectors)`` inferences run, and submits this frame's to a worker; the future travels on the frame
  (``PreparedInput.pending``), so no table maps frames to work;
* worker threads: take a free interpreter, invoke, parse, put it back. An interpreter is used by one thread at a
  time (the free-queue hands it out), which is the only rule a TFLite interpreter needs;
* pipeline thread, :meth:`ParallelDetect.detect`: waits for *this* frame's future, so results stay in frame
  order however the workers finish. A frame without one (made elsewhere) runs on a free interpreter right there.

A live source that drops a frame after it was submitted wastes that frame's inference: with a camera faster
than the pipeline, one interpreter per core is still the better use of the cores, but not of the energy.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future

from edgevision.detection.detector import Detector
from edgevision.results.detection import Detection
from edgevision.results.frame import Frame
from edgevision.results.result import DetectMode, DetectOutcome, Latency, SwitchInfo

log = logging.getLogger(__name__)

TIMEOUT_S = 30.0  # no single inference takes this long; a worker that does is stuck, and the run fails


class ParallelDetect:
    """The detect step of a run without a scheduler over ``detectors`` (one model, loaded several times)."""

    def __init__(self, detectors: Sequence[Detector], timeout: float = TIMEOUT_S) -> None:
        if not detectors:
            raise ValueError("ParallelDetect needs at least one detector")
        self.detectors = list(detectors)
        self.timeout = timeout
        self._free: queue.Queue[Detector] = queue.Queue()
        for d in self.detectors:
            self._free.put(d)
        # in flight: submitted and not yet finished; never more than interpreters, so no task waits for one
        self._slots = threading.BoundedSemaphore(len(self.detectors))
        # Daemon workers, not a ThreadPoolExecutor: the interpreter joins an executor's threads at exit, so one
        # stuck invoke would keep the process alive after close() gave up on it. A ``None`` tells one to stop;
        # ``_lock`` orders every submission before the stops, so nothing submitted is left unrun.
        self._work: queue.Queue[tuple[Future[tuple[list[Detection], Latency]], object, float] | None]
        self._work = queue.Queue()
        self._lock = threading.Lock()
        self._closed = False
        self._workers = [
            threading.Thread(target=self._worker, name=f"detect-{i}", daemon=True)
            for i in range(len(self.detectors))
        ]
        for t in self._workers:
            t.start()

    @property
    def model(self) -> str:
        return self.detectors[0].name

    def prepare(self, frame: Frame) -> Frame:
        """Capture thread: the frame's tensor, and its inference submitted (blocks while every interpreter is busy)."""
        frame = self.detectors[0].prepare(frame)
        assert frame.prepared is not None
        self._acquire()
        pending: Future[tuple[list[Detection], Latency]] = Future()
        with self._lock:
            if self._closed:
                self._slots.release()
                raise RuntimeError("ParallelDetect is closed")
            self._work.put((pending, frame.prepared.tensor, frame.prepared.ms))
        # submitted now (a worker was free), prepared just before: the frame's own work began ms earlier
        started = time.monotonic() - frame.prepared.ms / 1e3
        return frame.with_prepared(dataclasses.replace(frame.prepared, pending=pending, started_at=started))

    def detect(self, frame: Frame) -> DetectOutcome:
        """This frame's detections, in frame order (waits for the frame's own inference)."""
        pending = frame.prepared.pending if frame.prepared is not None else None
        if pending is None:
            self._acquire()
            dets, latency = self._infer_frame(frame)
        else:
            dets, latency = pending.result(timeout=self.timeout)
        return DetectOutcome(dets, latency, DetectMode.DETECTED, self.model)

    def feedback(self, outcome: DetectOutcome, total_ms: float, wait_ms: float) -> SwitchInfo | None:
        return None  # one model: nothing to switch

    def close(self) -> None:
        """Stop the workers: no new work; waits (at most ``timeout``) for the inferences in flight to finish.

        Every slot coming back proves every inference ended; a worker stuck longer is reported, not waited for
        (workers are daemon threads: a stuck one does not keep the process alive). A second call does nothing.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for _ in self._workers:
                self._work.put(None)
        deadline = time.monotonic() + self.timeout
        for _ in self.detectors:
            if not self._slots.acquire(timeout=max(0.0, deadline - time.monotonic())):
                log.error("a detect worker did not finish within %.3g s of the end of the run", self.timeout)
                return

    # -- workers ---------------------------------------------------------------------------------------------

    def _acquire(self) -> None:
        if self._closed:
            raise RuntimeError("ParallelDetect is closed")
        if not self._slots.acquire(timeout=self.timeout):
            raise TimeoutError(f"no detect worker finished a frame in {self.timeout:.3g} s")

    def _worker(self) -> None:
        while (item := self._work.get()) is not None:
            pending, tensor, preprocess_ms = item
            if not pending.set_running_or_notify_cancel():
                self._slots.release()
                continue
            try:
                pending.set_result(self._infer(tensor, preprocess_ms))
            except BaseException as exc:  # raised on the pipeline thread, by that frame's detect()
                pending.set_exception(exc)

    def _infer(self, tensor: object, preprocess_ms: float) -> tuple[list[Detection], Latency]:
        detector = self._free.get(timeout=self.timeout)  # a slot was taken, so one is free
        try:
            return detector.detect_tensor(tensor, preprocess_ms)  # type: ignore[arg-type]
        finally:
            self._free.put(detector)
            self._slots.release()

    def _infer_frame(self, frame: Frame) -> tuple[list[Detection], Latency]:
        detector = self._free.get(timeout=self.timeout)
        try:
            return detector.detect_frame(frame)
        finally:
            self._free.put(detector)
            self._slots.release()


__all__ = ["ParallelDetect"]
