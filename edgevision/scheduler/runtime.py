"""The scheduler as the pipeline sees it: which detector runs now, whether this frame is detected or carried,
and one controller step per processed frame. Switches are logged, counted and written to the detections log.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Sequence

import cv2
import numpy as np

from edgevision.detection.detector import Detector, frame_rgb
from edgevision.errors import ModelError
from edgevision.inference.backends import InterpreterHandle
from edgevision.inference.quant import quantize_input
from edgevision.results.detection import Detection
from edgevision.results.frame import Frame
from edgevision.results.result import DetectMode, DetectOutcome, Latency, SwitchInfo
from edgevision.scheduler.carry import BoxCarrier
from edgevision.scheduler.controller import (
    ControllerSettings,
    RungCost,
    Sample,
    Switch,
    initial_rung,
    start_state,
    step,
)
from edgevision.scheduler.ladder import Rung, switch_kind

__all__ = ["PersonGate", "Sample", "Scheduler", "initial_rung"]

log = logging.getLogger(__name__)

SWITCH_HISTORY = 100  # recent switches kept (every one is logged and written to the detections output)


class PersonGate:
    """The Visual Wake Words MobileNet (alpha 0.25, 96x96) as a cheap "is anybody there?" check."""

    def __init__(self, handle: InterpreterHandle, min_person_prob: float) -> None:
        """Bind the gate to a loaded two-class (no person, person) image classifier; another model (an ImageNet
        classifier, a detector) is a :class:`ModelError`: its second output value is no person probability."""
        self.handle = handle
        self.threshold = min_person_prob
        shape = handle.input_shape
        outputs = [int(np.prod(d["shape"])) for d in handle.output_details]
        if len(shape) != 4 or shape[3] != 3 or outputs[:1] != [2]:
            raise ModelError(
                f"{handle.model_path}: not a person gate model (input {list(shape)}, outputs {outputs}): it "
                "needs an image input and a two-class (no person, person) output, like vww_mobilenet_v1_0.25_96"
            )
        self.size = (int(shape[2]), int(shape[1]))

    def person_prob(self, frame: Frame) -> float:
        """The model's person probability for ``frame`` (a packet source's frame is scaled from its YUV straight
        to 96x96: the gate never makes the full-resolution image)."""
        rgb = frame_rgb(frame, *self.size, interpolation=cv2.INTER_AREA)
        # int8: pixel - 128 (scale 1/255, zero point -128); a float twin takes [0, 1]
        self.handle.invoke_on(quantize_input(rgb, self.handle.input_dtype, (0.0, 1.0))[np.newaxis])
        return float(self.handle.output_float(0).reshape(-1)[1])


class Scheduler:
    """Owns the loaded rungs and the controller state. Used from the pipeline thread only."""

    def __init__(
        self,
        rungs: Sequence[Rung],
        settings: ControllerSettings,
        clock: Callable[[], float] = time.monotonic,
        event_active: Callable[[], bool] = lambda: False,
        budget_factor: Callable[[], float] = lambda: 1.0,
        gate: PersonGate | None = None,
        person_label: str = "person",
    ) -> None:
        self.rungs = list(rungs)
        self.settings = settings
        self.clock = clock
        self.event_active = event_active
        self.budget_factor = budget_factor
        self.gate = gate
        self.person_label = person_label
        self.costs = [RungCost(r.expected_ms, r.profile.cadence) for r in self.rungs]
        self.state = start_state(self.costs, settings, clock())
        # the recent switches only: a service runs for months
        self.switches: deque[Switch] = deque(maxlen=SWITCH_HISTORY)
        self.switch_count = 0  # every switch of the run
        self.carrier = BoxCarrier()
        self._n = 0
        self._last_had_person = False
        self.gated = 0

    @property
    def rung(self) -> Rung:
        return self.rungs[self.state.rung]

    @property
    def detector(self) -> Detector:
        return self.rung.detector

    def should_detect(self) -> bool:
        """Cadence: a rung with cadence k runs the detector on every k-th processed frame."""
        k = self.rung.profile.cadence
        detect = k == 1 or self._n % k == 0
        self._n += 1
        return detect

    def gate_says_empty(self, frame: Frame) -> bool:
        """True when the person gate is confident nobody is there (never during an event or after a person)."""
        if self.gate is None or self._last_had_person or self.event_active():
            return False
        empty = self.gate.person_prob(frame) < self.gate.threshold
        self.gated += int(empty)
        return empty

    def carried(self, ts: float) -> list[Detection]:
        return self.carrier.predict(ts)

    def detected(self, ts: float, dets: list[Detection], person_label: str = "person") -> None:
        self.carrier.update(ts, dets)
        self._last_had_person = any(d.label == person_label for d in dets)

    # -- the detect step (``results.DetectStep``) ------------------------------------------------------------

    @property
    def model(self) -> str:
        return self.detector.name

    def prepare(self, frame: Frame) -> Frame:
        # Capture thread: reads ``self.rung`` once; a switch in between only costs a preprocess on the loop.
        return self.detector.prepare(frame)

    def detect(self, frame: Frame) -> DetectOutcome:
        """This frame's detections: carried (cadence), gated (nobody there) or from the current rung's model."""
        rung = self.rung
        t0 = time.perf_counter()
        if not self.should_detect():
            carried = self.carried(frame.ts)
            ms = (time.perf_counter() - t0) * 1e3
            return DetectOutcome(
                carried, Latency(carry=ms), DetectMode.CARRIED, rung.detector.name, rung.name
            )
        if self.gate_says_empty(frame):
            ms = (time.perf_counter() - t0) * 1e3
            return DetectOutcome([], Latency(gate=ms), DetectMode.GATED, rung.detector.name, rung.name)
        dets, latency = rung.detector.detect_frame(frame)
        self.detected(frame.ts, dets, self.person_label)
        return DetectOutcome(dets, latency, DetectMode.DETECTED, rung.detector.name, rung.name)

    def feedback(self, outcome: DetectOutcome, total_ms: float, wait_ms: float) -> SwitchInfo | None:
        """One controller step with the frame's measured times; the switch it made, if any."""
        lat = outcome.latency
        sample = Sample(total_ms, lat.invoke, lat.preprocess or 0.0, lat.postprocess or 0.0, wait_ms)
        sw = self.observe(sample)
        return None if sw is None else self.switch_record(sw)

    def close(self) -> None:
        pass  # no workers

    def observe(self, sample: Sample) -> Switch | None:
        """One controller step with this frame's measured stage times."""
        now = self.clock()
        self.state, sw = step(
            self.state, sample, now, self.costs, self.settings, self.event_active(), self.budget_factor()
        )
        if sw is not None:
            self.switches.append(sw)
            self.switch_count += 1
            self._n = 0
            rec = self.switch_record(sw)
            # a step down is quality given up under load (a warning); a step up is the scheduler at work
            log.log(
                logging.WARNING if sw.direction == "down" else logging.INFO,
                "scheduler: %s step %s: %s -> %s: %s",
                rec.kind,
                sw.direction,
                rec.from_rung,
                rec.to_rung,
                sw.reason,
            )
        return sw

    def switch_record(self, sw: Switch) -> SwitchInfo:
        """The switch as the results carry it: rungs by name, and whether width, resolution or cadence changed."""
        a, b = self.rungs[sw.from_rung], self.rungs[sw.to_rung]
        return SwitchInfo(a.name, b.name, switch_kind(a.spec, b.spec), sw.direction, sw.reason)
