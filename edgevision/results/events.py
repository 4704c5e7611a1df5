"""Event results: what the person-event stage says about each frame (consumed by recorder, MQTT, metrics)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from edgevision.results.detection import Detection


class EventPhase(str, enum.Enum):
    """What the recorder tells its listeners (MQTT) about an event: it started, has a new best frame, ended."""

    START = "start"
    UPDATE = "update"
    END = "end"


@dataclass(frozen=True)
class EventStart:
    """An event begins. ``trigger_ts`` is the frame that completed the M-of-N condition."""

    seq: int
    trigger_ts: float
    first_seen_ts: float


@dataclass(frozen=True)
class EventEnd:
    """An event ends at ``end_ts`` (last qualifying frame + post-roll, or the split point), with its statistics."""

    seq: int
    end_ts: float
    last_seen_ts: float
    split: bool
    max_score: float = 0.0
    mean_score: float = 0.0
    peak_count: int = 0
    best_ts: float = 0.0


@dataclass(frozen=True)
class EventStats:
    """Statistics of the active event so far (what the index row holds): top and mean score of the qualifying
    detections, the most qualifying detections in one frame, and the frame time of the top score."""

    max_score: float = 0.0
    mean_score: float = 0.0
    peak_count: int = 0
    best_ts: float = 0.0


@dataclass(frozen=True)
class EventUpdate:
    """The event stage's verdict on one frame.

    ``signals`` are the starts and ends this frame caused, in order (an event split at ``max_length`` gives an end
    and a start). ``active`` and ``seq`` describe the state after the frame; ``best_frame`` says this frame holds
    the event's new top score; ``matches`` are the frame's qualifying detections; ``stats`` is the active event's
    statistics after this frame (all zero when no event is active).
    """

    signals: tuple[EventStart | EventEnd, ...] = ()
    active: bool = False
    seq: int = 0
    best_frame: bool = False
    matches: tuple[Detection, ...] = ()
    stats: EventStats = EventStats()

    @property
    def started(self) -> EventStart | None:
        """The event this frame started, if any."""
        return next((s for s in self.signals if isinstance(s, EventStart)), None)

    @property
    def ended(self) -> EventEnd | None:
        """The event this frame ended, if any."""
        return next((s for s in self.signals if isinstance(s, EventEnd)), None)
