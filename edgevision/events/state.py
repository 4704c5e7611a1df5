"""The person-event state machine: a pure function of (frame timestamp, detections).

An event starts when a qualifying detection (label in ``labels``, score >= ``min_score``, box area >=
``min_area``, foot point inside a zone when zones are set) is seen in ``trigger_frames`` of the last
``window_frames`` frames. It ends ``post_roll`` seconds after the last qualifying frame (also when no frame comes
at all: :meth:`EventTracker.expire`), and is split at the first qualifying frame once it is ``max_length`` seconds
long (an event already in its post-roll then ends as it would, up to ``post_roll`` past ``max_length``: a split
there would start a new event with nobody in it). Time is the frame clock, so a replay gives the same events
every time.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from edgevision.config import RecorderConfig
from edgevision.results.detection import Detection
from edgevision.results.events import EventEnd, EventStart, EventStats

Polygon = tuple[tuple[float, float], ...]


def point_in_polygon(x: float, y: float, polygon: Polygon) -> bool:
    """Even-odd rule point-in-polygon test in normalized coordinates."""
    inside = False
    n = len(polygon)
    for i in range(n):
        x1, y1 = polygon[i]
        x2, y2 = polygon[(i + 1) % n]
        if (y1 > y) != (y2 > y):
            cross = x1 + (y - y1) * (x2 - x1) / (y2 - y1)
            if x < cross:
                inside = not inside
    return inside


@dataclass(frozen=True)
class EventSettings:
    """When a frame counts as a person frame, and how frames become events."""

    labels: tuple[str, ...] = ("person",)
    min_score: float = 0.5
    min_area: float = 0.0
    trigger_frames: int = 3
    window_frames: int = 5
    post_roll: float = 5.0
    max_length: float = 300.0
    zones: tuple[Polygon, ...] = ()

    @classmethod
    def from_config(cls, r: RecorderConfig) -> EventSettings:
        """The settings of the ``recorder:`` section (one mapping, for the event stage every consumer reads)."""
        return cls(
            labels=tuple(r.labels),
            min_score=r.min_score,
            min_area=r.min_area,
            trigger_frames=r.trigger_frames,
            window_frames=r.window_frames,
            post_roll=r.post_roll_s,
            max_length=r.max_length_s,
            zones=tuple(tuple((float(x), float(y)) for x, y in z) for z in r.zones),
        )

    def qualifies(self, det: Detection) -> bool:
        if det.label not in self.labels or det.score < self.min_score or det.box.area < self.min_area:
            return False
        if not self.zones:
            return True
        foot = ((det.box.xmin + det.box.xmax) / 2.0, det.box.ymax)  # where a pedestrian stands
        return any(point_in_polygon(foot[0], foot[1], z) for z in self.zones)


@dataclass
class RunningStats:
    """Running statistics of the active event (for the index)."""

    max_score: float = 0.0
    score_sum: float = 0.0
    score_n: int = 0
    peak_count: int = 0
    best_ts: float = 0.0

    def add(self, ts: float, matches: Sequence[Detection]) -> bool:
        """Fold in one frame; returns True when this frame is the new best frame."""
        if not matches:
            return False
        self.peak_count = max(self.peak_count, len(matches))
        self.score_sum += sum(d.score for d in matches)
        self.score_n += len(matches)
        top = max(d.score for d in matches)
        if top > self.max_score:
            self.max_score, self.best_ts = top, ts
            return True
        return False

    @property
    def mean_score(self) -> float:
        return self.score_sum / self.score_n if self.score_n else 0.0

    def snapshot(self) -> EventStats:
        """The statistics as they are now (an immutable value for the frame's result)."""
        return EventStats(self.max_score, self.mean_score, self.peak_count, self.best_ts)


@dataclass
class EventTracker:
    """Feed it every processed frame in order; it returns the start/end signals that frame causes."""

    settings: EventSettings
    _window: deque[tuple[float, bool]] = field(default_factory=deque)
    active: bool = False
    seq: int = 0
    start_ts: float = 0.0
    last_seen: float = 0.0
    stats: RunningStats = field(default_factory=RunningStats)
    best_frame: bool = False  # whether the last update() produced a new best frame

    def matches(self, detections: Sequence[Detection]) -> list[Detection]:
        return [d for d in detections if self.settings.qualifies(d)]

    def update(self, ts: float, detections: Sequence[Detection]) -> list[EventStart | EventEnd]:
        s = self.settings
        found = self.matches(detections)
        self._window.append((ts, bool(found)))
        while len(self._window) > s.window_frames:
            self._window.popleft()
        out: list[EventStart | EventEnd] = []
        self.best_frame = False
        if self.active:
            if found:
                self.last_seen = ts
            if not found and ts - self.last_seen >= s.post_roll:  # a person frame never ends it (post_roll 0)
                out.append(self._end(self.last_seen + s.post_roll, split=False))
            elif found and ts - self.start_ts >= s.max_length:
                out.append(self._end(ts, split=True))
                out.append(self._start(ts, ts))
        if not self.active and sum(hit for _, hit in self._window) >= s.trigger_frames:
            first = next(t for t, hit in self._window if hit)
            out.append(self._start(ts, first))
        if self.active:
            self.best_frame = self.stats.add(ts, found)
        return out

    def _start(self, ts: float, first_seen: float) -> EventStart:
        self.seq += 1
        self.active = True
        self.start_ts = ts
        self.last_seen = ts
        self.stats = RunningStats()
        return EventStart(self.seq, ts, first_seen)

    def _end(self, end_ts: float, split: bool) -> EventEnd:
        self.active = False
        if not split:
            self._window.clear()  # a new event needs a fresh M-of-N
        st = self.stats
        return EventEnd(
            self.seq, end_ts, self.last_seen, split, st.max_score, st.mean_score, st.peak_count, st.best_ts
        )

    def expire(self, now: float) -> EventEnd | None:
        """No frame came until ``now`` (same clock as the frames'): end the active event once its post-roll has
        passed, at the time the next frame would have ended it (``last_seen + post_roll``)."""
        if not self.active or now - self.last_seen < self.settings.post_roll:
            return None
        return self._end(self.last_seen + self.settings.post_roll, split=False)

    def flush(self, ts: float) -> EventEnd | None:
        """End of input: close an active event at ``ts`` (no more frames will come)."""
        if not self.active:
            return None
        return self._end(min(ts, self.last_seen + self.settings.post_roll), split=False)
