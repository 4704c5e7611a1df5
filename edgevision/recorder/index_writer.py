"""Index writes that survive a full disk: a failed write is kept in memory and retried, never a crash.

SQLite reports a full disk as ``sqlite3.OperationalError`` ("database or disk is full"), not ``OSError``.
The recorder's index writes go through :class:`IndexWriter`: when one fails for a disk reason, it and every later
write are queued in order (updates of one event merged) and replayed when the disk takes them again. Ids are
allocated here (above every id ever used, in the index or in a file's name), so an event can start, be named and
be announced while its row waits. Only the recorder, which owns the data directory, writes; the queue is bounded.
"""

from __future__ import annotations

import logging
import sqlite3
from typing import Any

from edgevision.recorder.index import EventIndex, EventRow
from edgevision.recorder.wallclock import boot_clock_at

log = logging.getLogger(__name__)

MAX_PENDING = 10_000  # queued writes; beyond this the oldest are dropped (logged)
_DISK_MESSAGES = ("full", "disk i/o error", "readonly", "unable to open")


def is_disk_error(exc: BaseException) -> bool:
    """Whether a SQLite error is the disk's fault (full, I/O error, read-only) rather than a bug."""
    return isinstance(exc, sqlite3.OperationalError) and any(m in str(exc).lower() for m in _DISK_MESSAGES)


class IndexWriter:
    """Ordered create/update of event rows with a retry queue. Used by the recorder thread only."""

    def __init__(self, index: EventIndex, first_id: int = 1) -> None:
        """``first_id``: the lowest id to give (above the ids of files on disk, whose rows may be missing)."""
        self.index = index
        self._next_id = max(index.next_id(), first_id)
        self._pending: list[tuple[str, int, dict[str, Any]]] = []  # (op, event id, values) in order
        self.failures = 0

    @property
    def pending(self) -> int:
        """Writes waiting for the disk."""
        return len(self._pending)

    @property
    def pending_creates(self) -> int:
        """Events whose row waits for the disk (their later writes are folded into it)."""
        return sum(op == "create" for op, _, _ in self._pending)

    def next_id_preview(self) -> int:
        """The id :meth:`create` will return next."""
        return self._next_id

    def create(
        self,
        camera: str,
        label: str,
        start_ts: float,
        start_frame: int,
        at: float | None = None,
        **extra: Any,
    ) -> int:
        """Create an event's row (queued while the disk is full); returns its id. ``at``: when it started, on
        ``time.monotonic()`` (its trigger frame's capture), for its wall and boot clocks; now when None."""
        event_id = self._next_id
        self._next_id += 1
        # the boot clock beside the wall clock: retention ages the row by it; both read at the trigger, not
        # after the detector's latency and the hand-off queue
        clock = boot_clock_at(at)
        values = {
            "camera": camera,
            "label": label,
            "start_ts": start_ts,
            "start_frame": start_frame,
            "start_wall": clock.wall,
            "boot_id": clock.boot_id,
            "start_boot": clock.boottime,
            **extra,
        }
        self._write("create", event_id, values)
        return event_id

    def update(self, event_id: int, **values: Any) -> None:
        self._write("update", event_id, values)

    def _write(self, op: str, event_id: int, values: dict[str, Any]) -> None:
        if self._pending:
            self._queue(op, event_id, values)
            self.flush()
            return
        try:
            self._apply(op, event_id, values)
        except sqlite3.OperationalError as exc:
            if not is_disk_error(exc):
                raise
            self.failures += 1
            log.error(
                "recorder: the event index cannot be written (%s): keeping rows in memory until the "
                "disk takes them",
                exc,
            )
            self._queue(op, event_id, values)

    def _apply(self, op: str, event_id: int, values: dict[str, Any]) -> None:
        if op == "create":
            v = dict(values)
            self.index.create(
                v.pop("camera"), v.pop("label"), v.pop("start_ts"), v.pop("start_frame"), id=event_id, **v
            )
        else:
            self.index.update(event_id, **values)

    def _queue(self, op: str, event_id: int, values: dict[str, Any]) -> None:
        if op == "update":
            for pop, pid, pvalues in reversed(self._pending):
                if pid == event_id:  # fold into the last queued write of this event (order per event kept)
                    pvalues.update(values)
                    return
                if pop == "create":
                    break
        self._pending.append((op, event_id, dict(values)))
        if len(self._pending) > MAX_PENDING:
            op0, id0, _ = self._pending.pop(0)
            log.error("recorder: index queue full: dropped a queued %s of event %d", op0, id0)

    def flush(self) -> bool:
        """Replay queued writes in order; True when none is left."""
        while self._pending:
            op, event_id, values = self._pending[0]
            try:
                self._apply(op, event_id, values)
            except sqlite3.OperationalError as exc:
                if not is_disk_error(exc):
                    raise
                return False
            self._pending.pop(0)
            if not self._pending:
                log.warning("recorder: the event index is writable again: queued rows written")
        return True

    def unsent_ends(self) -> list[EventRow]:
        """Closed events whose end was not announced (only what the index holds: queued rows wait)."""
        if self._pending:
            return []
        try:
            return self.index.unsent_ends()
        except sqlite3.OperationalError as exc:
            if not is_disk_error(exc):
                raise
            return []
