"""A bounded, persistent outbox: messages survive broker outages and restarts of edgevision itself.

SQLite in WAL mode next to the event index. ``put`` refuses (and counts) a message when the outbox is full,
so nothing is lost silently and nothing grows without bound; a retained message (a state, such as occupancy)
still goes in, in place of the older values of its topic waiting there, so the broker ends at the latest state.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

from edgevision.fsutil import finish_set_aside, is_sqlite_damage, set_aside

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    topic   TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos     INTEGER NOT NULL,
    retain  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox_meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


class Outbox:
    """Thread-safe FIFO of MQTT messages, bounded by ``max_messages``."""

    def __init__(self, path: Path, max_messages: int) -> None:
        """Open (or create) the outbox at ``path``; one SQLite cannot read is kept aside and a new one started
        (its messages are unreadable anyway; a crash at every start would stop the whole run)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        self.max = max_messages
        self._lock = threading.Condition()  # guards the connection; notified on put
        if kept := finish_set_aside(path):  # a kill came while it was set aside: never opened without its log
            log.warning("mqtt: the damaged outbox %s, set aside when a kill came, is kept as %s", path, kept)
        try:
            self._db = self._open(path)
        except sqlite3.DatabaseError as exc:
            if not is_sqlite_damage(exc):  # locked, I/O, full disk, a bug: not damage, keep the file
                raise
            aside = set_aside(path)
            log.warning(
                "mqtt: the outbox %s is damaged (%s): kept as %s, a new one started", path, exc, aside
            )
            self._db = self._open(path)

    @staticmethod
    def _open(path: Path) -> sqlite3.Connection:
        db = sqlite3.connect(path, timeout=10.0, check_same_thread=False, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(SCHEMA)
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

    def put(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> bool:
        """Queue one message; False (counted in ``dropped``) when the outbox is full. A retained message is
        queued even then, replacing (and counting) the values of its topic still waiting: only the latest state
        matters, and dropping it would leave a stale one at the broker (occupancy ON) for good. The outbox holds
        at most ``max_messages`` plus one per retained topic."""
        with self._lock:
            (n,) = self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()
            if n >= self.max:
                dropped = 1
                if retain:
                    cur = self._db.execute("DELETE FROM outbox WHERE topic = ? AND retain = 1", (topic,))
                    dropped = cur.rowcount
                if dropped:
                    self._db.execute(
                        "INSERT INTO outbox_meta (key, value) VALUES ('dropped', ?) "
                        "ON CONFLICT(key) DO UPDATE SET value = value + excluded.value",
                        (dropped,),
                    )
                if not retain:
                    return False
            self._db.execute(
                "INSERT INTO outbox (topic, payload, qos, retain) VALUES (?, ?, ?, ?)",
                (topic, payload, qos, int(retain)),
            )
            self._lock.notify_all()
            return True

    def peek(self, timeout: float = 0.0) -> tuple[int, str, bytes, int, bool] | None:
        """The oldest message, waiting up to ``timeout`` for one."""
        with self._lock:
            row = self._db.execute(
                "SELECT id, topic, payload, qos, retain FROM outbox ORDER BY id LIMIT 1"
            ).fetchone()
            if row is None and timeout > 0:
                self._lock.wait(timeout)
                row = self._db.execute(
                    "SELECT id, topic, payload, qos, retain FROM outbox ORDER BY id LIMIT 1"
                ).fetchone()
        return None if row is None else (int(row[0]), str(row[1]), bytes(row[2]), int(row[3]), bool(row[4]))

    def delete(self, msg_id: int) -> None:
        with self._lock:
            self._db.execute("DELETE FROM outbox WHERE id = ?", (msg_id,))

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    @property
    def dropped(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT value FROM outbox_meta WHERE key = 'dropped'").fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        with self._lock:
            self._db.close()
