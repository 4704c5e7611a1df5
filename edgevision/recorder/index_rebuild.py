"""A damaged event index is set aside and rebuilt from the files it described, so recording goes on.

SQLite reports a damaged ``events.db`` (a power cut on an SD card that lies about its writes, a bad sector) as
``DatabaseError`` when it is opened or as a failed ``PRAGMA quick_check``. Raised from the recorder, that error
stopped every start of the service: nothing was recorded until someone moved the file by hand. Instead, the
recorder (which holds the data-directory lock) keeps the damaged file as ``events.db.damaged-<UTC stamp>`` (with
its ``-wal`` and ``-shm``; a set-aside a kill interrupted is finished at the next start, before anything opens
the file without its log: :func:`~edgevision.fsutil.set_aside`), opens a new index and gives every clip and
snapshot on disk its row back under its own id (the files are named by it: ``clips/<day>/<id>.mp4``,
``snapshots/<id>.jpg``), so that retention manages them again, `events list` and the web page show them, and the next event's id, above all of them, never reuses a
file name. A clip still ``.partial`` comes back as ``recording``: recovery then checks it like any other.

What the files cannot tell is lost with the damaged index: a rebuilt row's start is its clip's (or snapshot's)
modification time, its label the first recorded one, its scores zero; its note says so. Errors that do not prove
damage (the file locked by another process, unreadable, an I/O error) are raised as before and nothing is moved.
"""

from __future__ import annotations

import logging
import re
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from edgevision.fsutil import finish_set_aside, is_sqlite_damage, set_aside
from edgevision.recorder.index import EventIndex

log = logging.getLogger(__name__)

PARTIAL = ".partial"
_CLIP = re.compile(r"^clips/\d{8}/(\d{6,})\.mp4(\.partial)?$")
_SNAPSHOT = re.compile(r"^snapshots/(\d{6,})(-thumb|-face)?\.jpg$")
_SNAPSHOT_COLUMN = {None: "snapshot_path", "-thumb": "thumb_path", "-face": "face_path"}
REBUILT_NOTE = (
    "rebuilt from its files after the event index was damaged: start time from the file, scores unknown"
)
ADOPTED_NOTE = (
    "found on disk without its row (a row that never landed, or files a power cut brought back after retention): "
    "start time from the file, scores unknown"
)


@dataclass
class _Found:
    """What the files on disk say about one event id."""

    paths: dict[str, str] = field(default_factory=dict)  # column -> path relative to the data directory
    mtime: float = 0.0  # the newest file's
    partial: bool = False


def open_recorder_index(data_dir: Path, camera: str, label: str) -> EventIndex:
    """The recorder's index, checked; a damaged one is set aside and a new one rebuilt (module docstring)."""
    problem: str | None
    # a set-aside a kill interrupted is finished first: the file alone, without its log, is never opened
    kept = finish_set_aside(data_dir / "events.db")
    if kept is not None:
        problem = "found half set aside after a kill"
    else:
        try:
            index = EventIndex(data_dir)
        except sqlite3.DatabaseError as exc:
            if not is_sqlite_damage(exc):  # locked, unreadable, an I/O error, a bug: proves nothing
                raise
            problem = str(exc)  # not a database, malformed
        else:
            problem = index.damage()
            if problem is None:
                return index
            index.close()
        kept = set_aside(data_dir / "events.db")
    index = EventIndex(data_dir)
    rows = rebuild(index, data_dir, camera, label)
    log.error(
        "recorder: the event index %s was damaged (%s); kept as %s, and a new one rebuilt from the files: %d "
        "event(s) back under their ids (their start times from the files, their scores lost)",
        data_dir / "events.db",
        problem,
        kept.name,
        rows,
    )
    return index


def _scan(data_dir: Path, known: frozenset[int] = frozenset()) -> dict[int, _Found]:
    """What the recorder's files in ``data_dir`` say, by id; ids in ``known`` are passed over (not stat'ed: at
    every start, a month of events)."""
    found: dict[int, _Found] = {}
    for pattern in ("clips/*/*", "snapshots/*"):
        for path in data_dir.glob(pattern):
            rel = path.relative_to(data_dir).as_posix()
            clip, snap = _CLIP.match(rel), _SNAPSHOT.match(rel)
            match = clip or snap
            if match is None or int(match.group(1)) in known:
                continue
            try:
                mtime = path.stat().st_mtime
            except OSError:  # gone meanwhile, or unreadable: the row comes back without it
                continue
            if clip is not None:
                entry = found.setdefault(int(clip.group(1)), _Found())
                entry.paths["clip_path"] = rel.removesuffix(PARTIAL)
                entry.partial = clip.group(2) is not None
            else:
                assert snap is not None
                entry = found.setdefault(int(snap.group(1)), _Found())
                entry.paths[_SNAPSHOT_COLUMN[snap.group(2)]] = rel
            entry.mtime = max(entry.mtime, mtime)
    return found


def highest_file_id(data_dir: Path) -> int:
    """The highest event id a clip or snapshot in ``data_dir`` is named by (0 when none): a file can outlive the
    row that named it (a row kept in memory for a full disk that never landed), and a new event given its id
    would overwrite it."""
    top = 0
    for pattern in ("clips/*/*", "snapshots/*"):
        for path in data_dir.glob(pattern):
            rel = path.relative_to(data_dir).as_posix()
            if match := _CLIP.match(rel) or _SNAPSHOT.match(rel):
                top = max(top, int(match.group(1)))
    return top


def rebuild(index: EventIndex, data_dir: Path, camera: str, label: str) -> int:
    """Give every clip and snapshot in ``data_dir`` its row in ``index`` (empty) under the id its name holds;
    returns how many rows were made."""
    return _give_rows(index, _scan(data_dir), camera, label, REBUILT_NOTE)


def adopt_orphans(index: EventIndex, data_dir: Path, camera: str, label: str) -> list[int]:
    """Give a row, as :func:`rebuild` does, to every clip and snapshot whose id has none in ``index``: a row kept
    in memory for a full disk that never landed, files a power cut brought back after retention deleted their
    row. Nothing on disk stays invisible to ``events list`` and to retention. Returns the ids adopted."""
    found = _scan(data_dir, frozenset(row.id for row in index.list()))
    _give_rows(index, found, camera, label, ADOPTED_NOTE)
    return sorted(found)


def _give_rows(index: EventIndex, found: dict[int, _Found], camera: str, label: str, note: str) -> int:
    for event_id, entry in sorted(found.items()):
        status = "recording" if entry.partial else "finalized"  # recovery checks a .partial
        index.create(
            camera,
            label,
            0.0,
            0,
            id=event_id,
            start_wall=entry.mtime,
            end_wall=None if entry.partial else entry.mtime,
            status=status,
            note=note,
            end_sent=1,  # nothing to announce: MQTT never heard of these ids in this run
            **entry.paths,
        )
    return len(found)
