"""The event tracker as a pipeline stage: every frame's result carries the tracker's verdict (``result.events``),
so the recorder, MQTT presence and the metrics all read one state machine instead of running their own.

Runs on the pipeline thread, after the detect step (and the face stages); sinks read the update it leaves.
"""

from __future__ import annotations

from edgevision.events.state import EventSettings, EventTracker
from edgevision.results import FrameResult
from edgevision.results.events import EventEnd, EventStats, EventUpdate


class EventStage:
    """A :class:`~edgevision.results.Stage` around :class:`~edgevision.events.state.EventTracker`.

    ``active`` is whether an event is running now (the scheduler holds its rung during one). At the end of the
    input, :meth:`flush` closes an active event at the last frame; it is idempotent, so every consumer (recorder,
    MQTT presence) may ask for the final update at its own ``close`` and all see the same end.
    """

    def __init__(self, settings: EventSettings) -> None:
        self.settings = settings
        self.tracker = EventTracker(settings)
        self._last_ts: float | None = None
        self._final: EventUpdate | None = None
        self._flushed = False

    @property
    def active(self) -> bool:
        return self.tracker.active

    def update(self, result: FrameResult) -> EventUpdate:
        """Feed one frame to the tracker; put the update on ``result.events`` and return it."""
        t = self.tracker
        ts = result.frame.ts
        signals = t.update(ts, result.detections)
        self._last_ts, self._flushed, self._final = ts, False, None
        stats = t.stats.snapshot() if t.active else EventStats()
        matches = tuple(t.matches(result.detections))
        update = EventUpdate(tuple(signals), t.active, t.seq, t.best_frame, matches, stats)
        result.events = update
        return update

    def process(self, result: FrameResult) -> None:
        self.update(result)

    def idle(self, now: float) -> EventUpdate | None:
        """No frame came from a live source until ``now`` (the frames' clock): the update that ends the active
        event once its post-roll has passed, or None. The pipeline hands it to every
        :class:`~edgevision.results.IdleEventSink`."""
        end = self.tracker.expire(now)
        return None if end is None else _closing(end)

    def flush(self) -> EventUpdate | None:
        """End of input: the update that closes the active event at the last frame seen, or None when no event
        was active. Calling it again returns the same update (until another frame is processed)."""
        if not self._flushed:
            self._flushed = True
            end = self.tracker.flush(self._last_ts) if self._last_ts is not None else None
            if end is not None:
                self._final = _closing(end)
        return self._final


def _closing(end: EventEnd) -> EventUpdate:
    """The update that carries ``end`` alone (no frame behind it)."""
    return EventUpdate(
        (end,), False, end.seq, stats=EventStats(end.max_score, end.mean_score, end.peak_count, end.best_ts)
    )
