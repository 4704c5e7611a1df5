"""Whether a person event is open: the one signal that runs against the pipeline direction.

The scheduler (built first: its models load before anything else) holds its rung and keeps the person gate
open during an event; the event tracker that knows lives in the recorder (built later: it needs the capture
runner's frame rate). So the composition root makes an :class:`EventActivity` before both, hands its reader to
the scheduler and its :class:`ActivityFeed` sink (after the recorder) the tracker. When the event tracker is a
stage of its own, built before the scheduler, the scheduler reads the tracker directly and this module goes.
"""

from __future__ import annotations

from typing import Protocol

from edgevision.results import FrameResult


class Tracker(Protocol):
    """What the feed reads: the event tracker's state after the frame it was just given."""

    active: bool


class EventActivity:
    """A flag written by :class:`ActivityFeed` and read by the scheduler, both in the pipeline thread."""

    def __init__(self) -> None:
        self._active = False

    def active(self) -> bool:
        """True while a person event is open (as of the last processed frame)."""
        return self._active

    def set(self, active: bool) -> None:
        self._active = active


class ActivityFeed:
    """A sink placed after the recorder: copies the tracker's state into the activity flag every frame."""

    def __init__(self, tracker: Tracker, activity: EventActivity) -> None:
        self.tracker = tracker
        self.activity = activity

    def on_result(self, result: FrameResult) -> None:
        self.activity.set(self.tracker.active)

    def close(self) -> None:
        self.activity.set(False)
