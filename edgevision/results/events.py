"""Event signals: what the person-event tracker says a frame started or ended (consumed by recorder, MQTT, metrics)."""

from __future__ import annotations

from dataclasses import dataclass


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
