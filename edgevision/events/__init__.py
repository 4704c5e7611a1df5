"""Events: the debounced person-event state machine (pure, driven by the frame clock)."""

from edgevision.events.state import EventEnd, EventSettings, EventStart, EventTracker, point_in_polygon

__all__ = ["EventEnd", "EventSettings", "EventStart", "EventTracker", "point_in_polygon"]
