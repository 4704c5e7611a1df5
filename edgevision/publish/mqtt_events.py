"""The event payload of ``<prefix>/events``, one shape for every message, as Frigate's::

    {"type": "new" | "update" | "end", "id": "<stable id>", "camera": "<camera>", "sent_at": <unix s>,
     "before": <event>, "after": <event>}

``<event>`` always has the keys of :data:`EVENT_KEYS`: ``id`` (stable across new/update/end and restarts:
``<start unix time>-<camera>``), ``event_id`` (the index row id, for the web view's ``/events/<event_id>/...``;
null without ``--record``), Frigate's ``start_time`` / ``end_time`` / ``top_score`` / ``has_clip`` /
``has_snapshot``, and ``index``: the event's index row (null without ``--record``). ``before`` is the event as
the previous message of this event showed it (for ``new``, and an ``end`` after a restart, the same as ``after``).
"""

from __future__ import annotations

import enum
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from edgevision.publish.mqtt import Publisher
from edgevision.results.events import EventPhase

log = logging.getLogger(__name__)

EVENT_KEYS = (
    "id",
    "camera",
    "label",
    "event_id",
    "start_time",
    "end_time",
    "active",
    "top_score",
    "peak_count",
    "has_clip",
    "has_snapshot",
    "status",
    "index",
)


class MessageType(str, enum.Enum):
    """The ``type`` of an events message, as Frigate names them."""

    NEW = "new"
    UPDATE = "update"
    END = "end"


KINDS = {
    EventPhase.START: MessageType.NEW,
    EventPhase.UPDATE: MessageType.UPDATE,
    EventPhase.END: MessageType.END,
}


def stable_id(start_wall: float, camera: str) -> str:
    return f"{start_wall:.6f}-{camera}"


def event_from_row(row: dict[str, Any], camera: str, active: bool) -> dict[str, Any]:
    """The payload's event for an index row (``EventRow.to_dict()``)."""
    return {
        "id": stable_id(row["start_wall"], camera),
        "camera": camera,
        "label": row["label"],
        "event_id": row["id"],
        "start_time": row["start_wall"],
        "end_time": None if active else row["end_wall"],
        "active": active,
        "top_score": row["max_score"],
        "peak_count": row["peak_count"],
        "has_clip": bool(row["clip_path"]) and not active,
        "has_snapshot": bool(row["snapshot_path"]),
        "status": row["status"],
        "index": row,
    }


def event_unrecorded(
    camera: str, label: str, start_wall: float, end_wall: float | None, top_score: float, peak_count: int
) -> dict[str, Any]:
    """The payload's event when nothing is recorded (no index row, clip or snapshot file)."""
    return {
        "id": stable_id(start_wall, camera),
        "camera": camera,
        "label": label,
        "event_id": None,
        "start_time": start_wall,
        "end_time": end_wall,
        "active": end_wall is None,
        "top_score": top_score,
        "peak_count": peak_count,
        "has_clip": False,
        "has_snapshot": False,
        "status": "not-recorded",
        "index": None,
    }


class EventRelay:
    """Turns events (from the recorder, or from :class:`Presence` without one) into ``<prefix>/events``
    messages through the outbox."""

    def __init__(
        self,
        publisher: Publisher,
        rows: Callable[[int], dict[str, Any] | None] | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.publisher = publisher
        self.camera = publisher.topics.camera
        self.rows = rows  # index row by id (set when a recorder is attached)
        self.wall = wall
        self._lock = threading.Lock()  # guards _last
        self._last: dict[str, dict[str, Any]] = {}  # active event id -> its event in the last message

    def publish(self, kind: MessageType, after: dict[str, Any]) -> bool:
        """Queue one message of ``kind`` (new / update / end); False when the outbox was full."""
        with self._lock:
            before = self._last.get(after["id"], after)
            if kind is MessageType.END:
                self._last.pop(after["id"], None)
            else:
                self._last[after["id"]] = after
        message = {
            "type": kind.value,
            "id": after["id"],
            "camera": self.camera,
            "sent_at": self.wall(),
            "before": before,
            "after": after,
        }
        return self.publisher.queue(self.publisher.topics.events, json.dumps(message).encode())

    def recorder_event(self, kind: EventPhase, data: dict[str, Any]) -> None:
        """A :class:`~edgevision.recorder.recorder.Recorder` listener: ``start`` / ``update`` carry the event id,
        ``end`` the finished index row."""
        if kind is EventPhase.END:
            row: dict[str, Any] | None = data
        else:
            row = self.rows(int(data["event_id"])) if self.rows is not None else None
            if row is None:
                log.error("mqtt: event %s: no index row; %s not published", data.get("event_id"), kind.value)
                return
            if (
                kind is EventPhase.UPDATE
            ):  # the index holds the statistics only at the end; the update carries them
                row = {
                    **row,
                    "max_score": data.get("max_score", row["max_score"]),
                    "peak_count": data.get("peak_count", row["peak_count"]),
                }
        assert row is not None
        event = event_from_row(row, self.camera, active=kind is not EventPhase.END)
        with self._lock:
            from_earlier_run = kind is EventPhase.END and event["id"] not in self._last
        self.publish(KINDS[kind], event)
        if from_earlier_run:
            # An event a killed run left open, closed by start-up recovery: that run's retained occupancy ON
            # would otherwise stay ON (live ends turn it OFF through Presence, which split events keep ON).
            self.publisher.queue(self.publisher.topics.occupancy(row["label"]), b"OFF", retain=True)
