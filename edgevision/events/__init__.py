"""Events: the debounced person-event state machine (pure, driven by the frame clock) and its pipeline stage."""

from edgevision.events.stage import EventStage
from edgevision.events.state import EventSettings, EventTracker, point_in_polygon
from edgevision.results.events import EventEnd, EventStart, EventUpdate

__all__ = [
    "EventEnd",
    "EventSettings",
    "EventStage",
    "EventStart",
    "EventTracker",
    "EventUpdate",
    "point_in_polygon",
]
