"""Events: the debounced person-event state machine (pure, driven by the frame clock)."""

from edgevision.events.state import EventSettings, EventTracker, point_in_polygon
from edgevision.results.events import EventEnd, EventStart

__all__ = ["EventEnd", "EventSettings", "EventStart", "EventTracker", "point_in_polygon"]
