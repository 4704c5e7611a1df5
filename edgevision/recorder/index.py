"""The event index: SQLite in WAL mode in the data directory, one row per event.

``synchronous=FULL`` so a committed row survives power loss; paths are stored relative to the data directory
so the directory can be moved. Status is one of ``recording`` (open), ``finalized``, ``recovered`` (salvaged
after a crash) or ``lost`` (nothing playable survived).

The row is the commit point of a recording: a clip is finished when its row says so, and everything before
(rename, hash, snapshot) is redone by start-up recovery if the process died first. The statistics columns are
kept current while the event runs, so a crashed event keeps them. ``end_sent`` is 0 until the event's end has
been handed to the listeners (MQTT): recovery closes rows with ``end_sent = 0`` and the recorder announces them
through the same path as a live end.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from edgevision.fsutil import is_sqlite_damage
from edgevision.recorder.wallclock import StartStamp

STATUSES = ("recording", "finalized", "recovered", "lost")

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    camera        TEXT    NOT NULL,
    label         TEXT    NOT NULL,
    start_ts      REAL    NOT NULL,   -- frame clock (media seconds for files, monotonic for live)
    end_ts        REAL,
    start_wall    REAL    NOT NULL,   -- wall clock, seconds since the epoch
    end_wall      REAL,
    start_frame   INTEGER NOT NULL,
    end_frame     INTEGER,
    max_score     REAL    NOT NULL DEFAULT 0,
    mean_score    REAL    NOT NULL DEFAULT 0,
    peak_count    INTEGER NOT NULL DEFAULT 0,
    best_ts       REAL,
    clip_path     TEXT,
    clip_start_ts REAL,
    clip_frames   INTEGER,
    clip_size     INTEGER,
    clip_sha256   TEXT,
    snapshot_path TEXT,
    thumb_path    TEXT,
    face_path     TEXT,
    status        TEXT    NOT NULL CHECK (status IN ('recording', 'finalized', 'recovered', 'lost')),
    degraded      TEXT,
    note          TEXT,
    end_sent      INTEGER NOT NULL DEFAULT 1,
    boot_id       TEXT,               -- the boot it was recorded in (see recorder/wallclock.py)
    start_boot    REAL                -- CLOCK_BOOTTIME at the start: its age, whatever the wall clock did
);
CREATE INDEX IF NOT EXISTS events_start ON events (start_wall);
CREATE INDEX IF NOT EXISTS events_status ON events (status);
CREATE TABLE IF NOT EXISTS boots (
    boot_id       TEXT PRIMARY KEY,
    wall_offset   REAL    NOT NULL    -- wall - boottime as last seen in that boot (after NTP, if it synced)
);
"""

# columns added after the first release: an older index gets them (NULL: those rows age by start_wall)
_ADDED = {
    "end_sent": "INTEGER NOT NULL DEFAULT 1",  # an index written before it existed: its ends were all sent
    "boot_id": "TEXT",
    "start_boot": "REAL",
}


@dataclass(frozen=True)
class EventRow:
    """One row of the index."""

    id: int
    camera: str
    label: str
    start_ts: float
    end_ts: float | None
    start_wall: float
    end_wall: float | None
    start_frame: int
    end_frame: int | None
    max_score: float
    mean_score: float
    peak_count: int
    best_ts: float | None
    clip_path: str | None
    clip_start_ts: float | None
    clip_frames: int | None
    clip_size: int | None
    clip_sha256: str | None
    snapshot_path: str | None
    thumb_path: str | None
    face_path: str | None
    status: str
    degraded: str | None
    note: str | None
    end_sent: int = 1
    boot_id: str | None = None
    start_boot: float | None = None

    @property
    def stamp(self) -> StartStamp:
        """What the row says about its start (:mod:`~edgevision.recorder.wallclock`)."""
        return StartStamp(self.id, self.start_wall, self.boot_id, self.start_boot)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


_COLUMNS = [f.name for f in fields(EventRow)]


class EventIndex:
    """Access to ``events.db``. Thread-safe through one lock; each call is one transaction."""

    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.path = data_dir / "events.db"
        self._lock = threading.Lock()  # serializes use of the one connection
        self._db = sqlite3.connect(self.path, timeout=10.0, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)
        have = {r[1] for r in self._db.execute("PRAGMA table_info(events)")}
        for column, decl in _ADDED.items():
            if column not in have:
                self._db.execute(f"ALTER TABLE events ADD COLUMN {column} {decl}")

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def create(self, camera: str, label: str, start_ts: float, start_frame: int, **extra: Any) -> int:
        """Insert a row (``id=`` may be given: the recorder allocates ids itself, see :meth:`next_id`)."""
        values = {
            "camera": camera,
            "label": label,
            "start_ts": start_ts,
            "start_frame": start_frame,
            "start_wall": extra.pop("start_wall", time.time()),
            "status": "recording",
            **extra,
        }
        cols = ", ".join(values)
        marks = ", ".join("?" for _ in values)
        with self._tx() as db:
            cur = db.execute(f"INSERT INTO events ({cols}) VALUES ({marks})", list(values.values()))
            return int(cur.lastrowid or 0)

    def update(self, event_id: int, **values: Any) -> None:
        """Set ``values`` on a row; nothing to set is nothing to do (a clip a disk error cut short may leave
        nothing to say: ``UPDATE ... SET  WHERE`` was a syntax error that stopped the recorder)."""
        if not values:
            return
        unknown = set(values) - set(_COLUMNS)
        if unknown:
            raise KeyError(f"unknown event columns: {sorted(unknown)}")
        if values.get("status", "recording") not in STATUSES:
            raise ValueError(f"bad status {values['status']}")
        sets = ", ".join(f"{k} = ?" for k in values)
        with self._tx() as db:
            db.execute(f"UPDATE events SET {sets} WHERE id = ?", [*values.values(), event_id])

    def next_id(self) -> int:
        """The id the next event gets: above every id ever used (AUTOINCREMENT never reuses one)."""
        with self._lock:
            row = self._db.execute(
                "SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'events'), 0),"
                " coalesce((SELECT max(id) FROM events), 0))"
            ).fetchone()
        return int(row[0] or 0) + 1

    def unsent_ends(self) -> list[EventRow]:
        """Closed events whose end has not been announced yet, oldest first."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {', '.join(_COLUMNS)} FROM events WHERE end_sent = 0 AND status != 'recording'"
                " ORDER BY id"
            ).fetchall()
        return [EventRow(*r) for r in rows]

    def get(self, event_id: int) -> EventRow | None:
        with self._lock:
            row = self._db.execute(
                f"SELECT {', '.join(_COLUMNS)} FROM events WHERE id = ?", (event_id,)
            ).fetchone()
        return EventRow(*row) if row else None

    def latest(self, count: int) -> list[EventRow]:
        """The ``count`` newest rows (highest ids), oldest first; only those are read."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {', '.join(_COLUMNS)} FROM events ORDER BY id DESC LIMIT ?", (max(0, count),)
            ).fetchall()
        return [EventRow(*r) for r in reversed(rows)]

    def list(self, status: str | None = None, limit: int | None = None) -> list[EventRow]:
        """Rows in recording order (by id), those of ``status`` only when given. A time filter belongs to the
        caller: a row's ``start_wall`` is not when it started after the clock stepped (``recorder.wallclock``)."""
        sql = f"SELECT {', '.join(_COLUMNS)} FROM events WHERE 1=1"
        args: list[Any] = []
        if status is not None:
            sql += " AND status = ?"
            args.append(status)
        sql += " ORDER BY id"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        with self._lock:
            return [EventRow(*r) for r in self._db.execute(sql, args).fetchall()]

    def note_boot(self, boot_id: str, offset: float) -> None:
        """Save the running boot's offset (wall - boottime) as it is now: later boots place its events by it.
        Boots no event was recorded in any more (their events deleted) are forgotten."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO boots (boot_id, wall_offset) VALUES (?, ?)"
                " ON CONFLICT (boot_id) DO UPDATE SET wall_offset = excluded.wall_offset",
                (boot_id, offset),
            )
            db.execute(
                "DELETE FROM boots WHERE boot_id != ?"
                " AND boot_id NOT IN (SELECT boot_id FROM events WHERE boot_id IS NOT NULL)",
                (boot_id,),
            )

    def boot_offsets(self) -> dict[str, float]:
        """Every boot's last saved offset, by boot id."""
        with self._lock:
            return {str(b): float(o) for b, o in self._db.execute("SELECT boot_id, wall_offset FROM boots")}

    def delete(self, event_id: int) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM events WHERE id = ?", (event_id,))

    def damage(self) -> str | None:
        """What SQLite's ``PRAGMA quick_check`` finds wrong with the file (its first finding), or None."""
        with self._lock:
            try:
                rows = self._db.execute("PRAGMA quick_check(1)").fetchall()
            except sqlite3.DatabaseError as exc:  # the check itself can meet a malformed page
                if not is_sqlite_damage(exc):
                    raise
                return str(exc)
        first = str(rows[0][0]) if rows else "no answer"
        return None if first == "ok" else first

    def close(self) -> None:
        with self._lock:
            self._db.close()
