"""A damaged event index is set aside and rebuilt from the clips and snapshots on disk (recorder/index_rebuild.py):
the recorder starts and records instead of failing at every start of the service."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from edgevision.events.state import EventSettings
from edgevision.fsutil import set_aside
from edgevision.recorder import index_rebuild
from edgevision.recorder.index import EventIndex
from edgevision.recorder.index_rebuild import REBUILT_NOTE, open_recorder_index
from edgevision.recorder.recorder import Recorder
from edgevision.recorder.retention import RetentionPolicy
from edgevision.recorder.state import RecorderSettings

FILES = [
    "clips/20261201/000003.mp4",
    "snapshots/000003.jpg",
    "snapshots/000003-thumb.jpg",
    "clips/20261202/000007.mp4.partial",  # recording when the index died
    "snapshots/000009.jpg",  # an event kept as a snapshot only (a degraded recording mode)
    "snapshots/000009-face.jpg",
    "clips/20261202/notes.txt",  # not the recorder's: ignored
    "snapshots/x.jpg",
]


def _files(data: Path) -> None:
    for rel in FILES:
        (data / rel).parent.mkdir(parents=True, exist_ok=True)
        (data / rel).write_bytes(b"x")


def _garbage_header(data: Path) -> None:
    (data / "events.db").write_bytes(b"this is no database" * 300)
    (data / "events.db-wal").write_bytes(b"wal")


def _malformed_page(data: Path) -> None:
    """A real index whose second page is overwritten: it opens, ``PRAGMA quick_check`` finds the damage."""
    index = EventIndex(data)
    for k in range(300):
        index.create("cam", "person", float(k), k, status="finalized", note="n" * 100)
    index.close()
    raw = bytearray((data / "events.db").read_bytes())
    assert len(raw) > 3 * 4096
    raw[4096 : 2 * 4096] = b"\xa5" * 4096
    (data / "events.db").write_bytes(bytes(raw))


@pytest.mark.parametrize("damage", [_garbage_header, _malformed_page])
def test_a_damaged_index_is_kept_aside_and_rebuilt_from_the_files(
    damage: object, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    damage(data)  # type: ignore[operator]
    _files(data)
    with caplog.at_level(logging.ERROR):
        index = open_recorder_index(data, "cam", "person")
    try:
        rows = {r.id: r for r in index.list()}
        assert sorted(rows) == [3, 7, 9]
        assert (rows[3].status, rows[3].clip_path, rows[3].snapshot_path, rows[3].thumb_path) == (
            "finalized",
            "clips/20261201/000003.mp4",
            "snapshots/000003.jpg",
            "snapshots/000003-thumb.jpg",
        )
        assert (rows[7].status, rows[7].clip_path) == ("recording", "clips/20261202/000007.mp4")
        assert (rows[9].clip_path, rows[9].snapshot_path, rows[9].face_path) == (
            None,
            "snapshots/000009.jpg",
            "snapshots/000009-face.jpg",
        )
        assert all(r.note == REBUILT_NOTE and r.end_sent == 1 and r.camera == "cam" for r in rows.values())
        assert rows[3].start_wall == pytest.approx((data / FILES[0]).stat().st_mtime)
        assert index.next_id() == 10  # a new event never takes an old file's name
        assert index.damage() is None
    finally:
        index.close()
    kept = sorted(p.name for p in data.iterdir() if p.name.startswith("events.db.damaged-"))
    (db,) = [name for name in kept if not name.endswith(("-wal", "-shm"))]
    assert "was damaged" in caplog.text and db in caplog.text
    if damage is _garbage_header:  # the damaged file as it was, and its write-ahead log beside it
        assert (data / db).read_bytes().startswith(b"this is no database")
        assert (data / f"{db}-wal").read_bytes() == b"wal"


def test_an_index_that_is_only_locked_or_unreadable_is_not_moved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Locked by another process or an I/O error proves nothing: raised as before, the file left where it is."""
    data = tmp_path / "data"
    EventIndex(data).close()

    def locked(_data: Path) -> EventIndex:
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(index_rebuild, "EventIndex", locked)
    with pytest.raises(sqlite3.OperationalError):
        open_recorder_index(data, "cam", "person")
    assert [p.name for p in data.iterdir() if p.name.startswith("events.db")] == ["events.db"]


def test_the_recorder_starts_on_a_damaged_index(tmp_path: Path) -> None:
    """It raised DatabaseError at every start: a service that recorded nothing until the file was moved by hand."""
    data = tmp_path / "data"
    data.mkdir()
    _garbage_header(data)
    (data / "clips/20261201").mkdir(parents=True)
    (data / "clips/20261201/000003.mp4").write_bytes(b"x")
    settings = RecorderSettings(
        data_dir=data,
        camera="cam",
        events=EventSettings(labels=("person",)),
        retention=RetentionPolicy(max_age_s=None, min_free_bytes=None),
    )
    rec = Recorder(settings, blocking=True)
    try:
        (row,) = rec.index.list()
        assert (row.id, row.status, row.clip_path) == (3, "finalized", "clips/20261201/000003.mp4")
    finally:
        rec.close()


class _Killed(BaseException):
    """A SIGKILL as a test can have it: nothing after it runs (no ``except Exception`` catches it)."""


def test_a_kill_at_any_instant_of_setting_the_index_aside_loses_no_committed_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A damaged index whose write-ahead log SQLite could not fold in (the file does not open, a reader holds
    it) was set aside by three renames, its ``-wal`` first. Killed after that one, the next start opened
    ``events.db`` without its log: the rows committed there were gone from it, and from the kept copy too (its
    log under another stamp); an index whose damage lay in those pages even passed the check and was used as it
    was, without a word. Killed at any instant, the next start now finishes the set-aside: the damaged index is
    kept whole, with its log, never opened without it."""
    import os
    import re
    import shutil

    source = tmp_path / "source"
    live = EventIndex(source)  # kept open: its rows stay in the write-ahead log, as in a running recorder
    for k in range(5):
        live.create("cam", "person", float(k), k, status="finalized")
    names = sorted(p.name for p in source.iterdir())
    assert "events.db-wal" in names
    # the damage lies in pages the write-ahead log holds: the file without its log looks sound
    monkeypatch.setattr(EventIndex, "damage", lambda self: "simulated" if len(self.list()) == 5 else None)
    real_rename, real_replace = os.rename, os.replace
    kill_at = 0
    while True:
        kill_at += 1
        data = tmp_path / f"data{kill_at}"
        data.mkdir()
        for name in names:
            shutil.copy(source / name, data / name)
        calls = [0]

        def killing(real: Any, at: int = kill_at, calls: list[int] = calls) -> Any:
            def call(src: Any, dst: Any) -> None:
                calls[0] += 1
                if calls[0] == at:
                    raise _Killed
                real(src, dst)

            return call

        monkeypatch.setattr(os, "rename", killing(real_rename))
        monkeypatch.setattr(os, "replace", killing(real_replace))
        try:  # a log SQLite could not fold in before (the file unopenable, a reader's connection open)
            set_aside(data / "events.db")
            finished = True
        except _Killed:
            finished = False
        monkeypatch.setattr(os, "rename", real_rename)
        monkeypatch.setattr(os, "replace", real_replace)
        open_recorder_index(data, "cam", "person").close()  # the next start
        (kept,) = [p for p in data.iterdir() if re.fullmatch(r"events\.db\.damaged-[0-9TZ-]+", p.name)]
        check = tmp_path / f"check{kill_at}"
        check.mkdir()
        shutil.copy(kept, check / "events.db")
        if kept.with_name(kept.name + "-wal").exists():  # folded in when the next start opened it whole
            shutil.copy(kept.with_name(kept.name + "-wal"), check / "events.db-wal")
        assert [r.id for r in EventIndex(check).list()] == [1, 2, 3, 4, 5], kill_at
        if finished:
            break
    assert kill_at >= 3  # every rename was a kill point
    live.close()


def _sqlite_error(kind: str, tmp: Path) -> sqlite3.Error:
    """A real error SQLite raises: on a file that is no database, a UNIQUE violation, a locked database."""
    path = tmp / f"{kind}.db"
    if kind == "not-a-database":
        path.write_bytes(b"this is no SQLite file, just text that fills its header page" * 100)
        statement, db = "SELECT * FROM sqlite_master", sqlite3.connect(path)
    else:
        db = sqlite3.connect(path, timeout=0, isolation_level=None)
        db.execute("CREATE TABLE t (x PRIMARY KEY)")
        db.execute("INSERT INTO t VALUES (1)")
        statement = "INSERT INTO t VALUES (1)"
        if kind == "locked":
            other = sqlite3.connect(path, isolation_level=None)
            other.execute("BEGIN EXCLUSIVE")
            statement = "SELECT * FROM t"
    try:
        db.execute(statement)
    except sqlite3.Error as exc:
        return exc
    raise AssertionError(f"{kind}: no error")


@pytest.mark.parametrize(
    ("kind", "damage"), [("not-a-database", True), ("integrity", False), ("locked", False)]
)
def test_only_a_file_sqlite_calls_damaged_is_damage(tmp_path: Path, kind: str, damage: bool) -> None:
    """Any ``DatabaseError`` but ``OperationalError`` counted as damage, so a bug (an integrity or programming
    error) would have set a sound index aside and rebuilt it, losing every row's scores."""
    from edgevision.fsutil import is_sqlite_damage

    assert is_sqlite_damage(_sqlite_error(kind, tmp_path)) is damage


def test_a_quick_check_that_meets_a_malformed_page_reports_damage(tmp_path: Path) -> None:
    """``PRAGMA quick_check`` itself can raise "database disk image is malformed": the error escaped and the
    recorder did not start, the failure the rebuild exists to end. It is the damage the check reports."""
    index = EventIndex(tmp_path)
    malformed = sqlite3.DatabaseError("database disk image is malformed")
    malformed.sqlite_errorcode = 11

    class Failing:
        def execute(self, *a: Any) -> Any:
            raise malformed

        def close(self) -> None:
            pass

    real, index._db = index._db, Failing()  # type: ignore[assignment]
    try:
        assert index.damage() == "database disk image is malformed"
    finally:
        index._db = real
        index.close()


def test_events_prune_on_a_damaged_index_keeps_it_aside_and_says_so(
    env: dict[str, str], tmp_path: Path
) -> None:
    """``events prune`` opened the index directly: a damaged one stopped it with an error, and one a kill had left
    half set aside was replaced by an empty index in silence. It opens it as the recorder does: kept aside,
    rebuilt from the files, logged."""
    from conftest import run_cli

    data = tmp_path / "data"
    data.mkdir()
    _garbage_header(data)
    _files(data)
    r = run_cli(["events", "prune", "--data-dir", str(data)], env)
    assert r.returncode == 0, r.stderr
    assert "was damaged" in r.stderr and "rebuilt from the files" in r.stderr
    assert list(data.glob("events.db.damaged-*"))
    index = EventIndex(data)
    try:
        assert {row.id for row in index.list()} >= {3, 9}
    finally:
        index.close()
