"""The recorder's settings and the state it passes between its two threads.

``RecorderSettings`` is the recorder's typed view of ``recorder:``, ``retention:`` and the face-crop switch
(built once by :func:`edgevision.recorder.factory.recorder_settings`). A :class:`WorkItem` crosses the bounded queue
from the pipeline thread to the recorder thread (:func:`track` makes it); :class:`ActiveEvent` lives on the recorder
thread only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from edgevision.events.stage import EventStage
from edgevision.events.state import EventSettings, RunningStats
from edgevision.recorder.remux import PacketClipWriter
from edgevision.recorder.retention import RetentionPolicy
from edgevision.recorder.snapshots import EventStills
from edgevision.results import FrameResult
from edgevision.results.detection import Detection
from edgevision.results.events import EventEnd, EventStart
from edgevision.results.face import Face
from edgevision.results.frame import Frame


@dataclass(frozen=True)
class RecorderSettings:
    """Recording knobs (see ``recorder:`` and ``retention:`` in configs/default.yaml)."""

    data_dir: Path
    camera: str = "camera"
    events: EventSettings = field(default_factory=EventSettings)
    pre_roll: float = 3.0
    pre_roll_max_bytes: int = 64 << 20
    queue_frames: int = 64
    codec: str = "libx264"
    jpeg_quality: int = 90
    thumb_width: int = 320
    fps_hint: float = 25.0
    retention: RetentionPolicy = field(default_factory=RetentionPolicy)
    retention_interval_s: float = 60.0
    space_check_s: float = 10.0
    store_face_crops: bool = True  # off when privacy blurs faces: no face may be stored


@dataclass
class WorkItem:
    """One frame as the pipeline thread hands it to the recorder thread (a reference: frames are immutable)."""

    frame: Frame
    detections: list[Detection]
    signals: list[EventStart | EventEnd]
    best: bool
    faces: list[Face] | None = None
    stats: tuple[float, float, int, float] = (0.0, 0.0, 0, 0.0)  # (max, mean, peak, best ts) of the event
    matches: list[Detection] = field(default_factory=list)  # the frame's qualifying detections
    # signals only (an end at close, or by time alone while a live source is quiet): ``frame`` is the last one,
    # handled already, and is not taken or encoded again
    frameless: bool = False


def track(result: FrameResult, events: EventStage) -> WorkItem:
    """The event signals and statistics of one result: the one place the recorder reads the event stage
    (pipeline thread; the recorder thread only sees what this returns)."""
    ev = result.events if result.events is not None else events.update(result)
    st = ev.stats
    return WorkItem(
        result.frame,
        list(result.detections),
        list(ev.signals),
        ev.best_frame,
        result.faces,
        (st.max_score, st.mean_score, st.peak_count, st.best_ts),
        list(ev.matches),
    )


@dataclass
class ActiveEvent:
    """What the recorder thread holds about the event being recorded (recorder thread only)."""

    event_id: int
    start: EventStart
    clip: PacketClipWriter | None
    clip_rel: str | None
    stills: EventStills  # the snapshot output: best frame and face, written at the end
    last_update: float = 0.0
    last_index: int = 0
    last_ts: float = 0.0
    stats_ts: float = 0.0  # frame time the statistics were last written
    stats_written: tuple[float, float, int, float] = (0.0, 0.0, 0, 0.0)
    # (max, mean, peak, best ts) of this row as of the last frame handled
    stats: tuple[float, float, int, float] = (0.0, 0.0, 0, 0.0)
    # A row the recorder split off (after a reconnect) counts its own statistics: the event stage's run over the
    # whole event, and the row's must not name a best frame or a peak from before its start.
    own: RunningStats | None = None
    clip_done: bool = False  # the clip was finalized (a reconnect may do it before the event ends)
    # salvaging the clip after a disk error failed: start-up recovery finishes it
    clip_unsettled: bool = False

    def observe(self, item: WorkItem) -> bool:
        """Fold in one handled frame: its statistics become the row's (the event stage's, or the row's own
        after a split); returns whether the frame is the row's new best."""
        self.last_index, self.last_ts = item.frame.index, item.frame.ts
        if self.own is None:
            self.stats = item.stats
            return item.best
        best = self.own.add(item.frame.ts, item.matches)
        st = self.own.snapshot()
        self.stats = (st.max_score, st.mean_score, st.peak_count, st.best_ts)
        return best
