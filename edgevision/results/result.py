"""What one processed frame produced, and the protocols of the things that produce and consume it.

A :class:`FrameResult` is made by the pipeline from the detect step's :class:`DetectOutcome`, then the stages (face,
privacy blur, event tracker) fill in their fields, then every sink reads it. Every field is typed: nothing is
passed by string key.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, fields
from typing import Protocol, runtime_checkable

from edgevision.results.detection import Detection
from edgevision.results.events import EventUpdate
from edgevision.results.face import Face
from edgevision.results.frame import Frame


class DetectMode(enum.Enum):
    """How a frame's detections came about."""

    DETECTED = "detected"  # the detector ran on this frame
    CARRIED = "carried"  # cadence skipped the detector; boxes carried forward from the last detection
    GATED = "gated"  # the person gate said nobody is there; the detector did not run
    OFF = "off"  # detection is switched off at run time (web control)


@dataclass
class Latency:
    """Per-stage wall time of one frame in milliseconds; ``None`` for a stage that did not run.

    ``total`` is capture to result (set last, by the pipeline). Field order is the order stages run, which is
    the order :meth:`as_dict` (the ``latency_ms`` JSON object and the metrics' stage label) lists them.
    """

    preprocess: float | None = None
    invoke: float | None = None
    postprocess: float | None = None
    carry: float | None = None
    gate: float | None = None
    faces: float | None = None
    privacy: float | None = None
    total: float | None = None

    def as_dict(self) -> dict[str, float]:
        """The stages that ran, by name."""
        return {f.name: v for f in fields(self) if (v := getattr(self, f.name)) is not None}

    def stages_ms(self) -> float:
        """Sum of every stage except ``total``."""
        return sum(v for k, v in self.as_dict().items() if k != "total")


@dataclass(frozen=True)
class SwitchInfo:
    """The scheduler changed rung on this frame: from, to (rung names), what changed, which way and why."""

    from_rung: str
    to_rung: str
    kind: str  # "width", "model", "resolution" or "cadence", as the ladder names them (ladder.switch_kind)
    direction: str  # "down" or "up"
    reason: str

    def as_dict(self) -> dict[str, object]:
        """The ``switch`` object of a detections line."""
        return {
            "from": self.from_rung,
            "to": self.to_rung,
            "kind": self.kind,
            "direction": self.direction,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class DetectOutcome:
    """What the detect step says about one frame: detections, the stage times it spent, how and with what."""

    detections: list[Detection]
    latency: Latency
    mode: DetectMode
    model: str
    rung: str | None = None  # the scheduler's rung name; None with a fixed detector


@dataclass
class FrameResult:
    """A processed frame.

    Filled in order: detect outcome (pipeline), ``faces`` (face stage, on the frames it ran on; ``faces_blurred``
    by the privacy stage), ``events`` (event tracker stage), ``latency.total`` and ``switch`` (pipeline, after
    the stages). Sinks only read it.
    """

    frame: Frame
    detections: list[Detection]
    latency: Latency
    model: str
    mode: DetectMode = DetectMode.DETECTED
    rung: str | None = None
    switch: SwitchInfo | None = None
    faces: list[Face] | None = None
    events: EventUpdate | None = None  # set by the event stage; None in a run without one
    faces_blurred: bool = False  # the privacy stage blurred ``faces``: overlays draw their boxes alone

    @classmethod
    def from_outcome(cls, frame: Frame, outcome: DetectOutcome) -> FrameResult:
        return cls(frame, outcome.detections, outcome.latency, outcome.model, outcome.mode, outcome.rung)

    def has(self, label: str) -> bool:
        """Whether any detection carries ``label``."""
        return any(d.label == label for d in self.detections)


class Stage(Protocol):
    """A hook run on every result before the sinks (face stage, privacy blur, event tracker)."""

    def process(self, result: FrameResult) -> None: ...


class Sink(Protocol):
    """A consumer of results (detections log, saved video, live view, recorder). ``close`` flushes everything."""

    def on_result(self, result: FrameResult) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class IdleEventSink(Protocol):
    """A sink that also hears event updates made without a frame.

    When a live source goes quiet (a camera unplugged, a stream down), the event stage ends the running event by
    time alone once its post-roll has passed (:meth:`~edgevision.events.stage.EventStage.idle`), so the recorder,
    MQTT presence and the metrics do not hold it open until frames come back. Called on the pipeline thread.
    """

    def on_idle_events(self, update: EventUpdate) -> None: ...


class DetectStep(Protocol):
    """The one seam between the pipeline and detection: a fixed detector and the scheduler both implement it.

    Per frame the pipeline calls :meth:`detect` once and, after the stages, :meth:`feedback` once with the
    frame's end-to-end latency; the step may change what it runs next (a rung switch), which it reports.
    """

    @property
    def model(self) -> str:
        """The name of the model the next frame will run (status lines, ``--detections``)."""
        ...

    def prepare(self, frame: Frame) -> Frame:
        """Capture thread: ``frame`` carrying the input tensor of the model current now (may be called
        concurrently with :meth:`detect`)."""
        ...

    def detect(self, frame: Frame) -> DetectOutcome: ...

    def feedback(self, outcome: DetectOutcome, total_ms: float, wait_ms: float) -> SwitchInfo | None: ...

    def close(self) -> None:
        """The run is over (the capture thread has stopped): release workers, if the step has any."""
        ...
