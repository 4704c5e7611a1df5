"""Pure pieces of the recorder: mode transitions, the index write queue, the data-directory lock."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from edgevision.recorder.index import EventIndex
from edgevision.recorder.index_writer import IndexWriter, is_disk_error
from edgevision.recorder.lock import DataDirBusy, DataDirLock
from edgevision.recorder.mode import RECORD_FLOOR_BYTES, Mode, after_failure, after_space_check, record_floor

MB = 1 << 20
N, S, X = Mode.NORMAL, Mode.SNAPSHOTS_ONLY, Mode.INDEX_ONLY


@pytest.mark.parametrize(
    ("current", "free", "floor", "expected"),
    [
        (N, 500 * MB, 128 * MB, N),
        (N, 100 * MB, 128 * MB, S),  # below the floor: no new clip
        (X, 100 * MB, 128 * MB, X),  # never less degraded by a space check alone
        (S, 200 * MB, 128 * MB, N),  # space is back
        (X, 200 * MB, 128 * MB, N),
        (S, 1 * MB, 0, S),  # a disk error with no floor: stay degraded until there is real space again
        (S, 9 * MB, 0, N),
        (N, 0, 0, N),  # no floor and no error: keep trying (the write itself degrades on ENOSPC)
    ],
)
def test_mode_after_space_check(current: Mode, free: int, floor: int, expected: Mode) -> None:
    assert after_space_check(current, free, floor) == expected


@pytest.mark.parametrize(
    ("current", "failed", "expected"), [(N, S, S), (S, X, X), (X, S, X), (N, X, X), (S, S, S)]
)
def test_mode_after_failure(current: Mode, failed: Mode, expected: Mode) -> None:
    assert after_failure(current, failed) == expected


def test_record_floor_and_mode_text() -> None:
    assert record_floor(1 << 30) == RECORD_FLOOR_BYTES  # the default min_free_gb 1.0 does not stop clips
    assert record_floor(64 * MB) == 64 * MB and record_floor(None) == 0
    assert str(Mode.SNAPSHOTS_ONLY) == "snapshots-only" and f"{Mode.INDEX_ONLY}" == "index-only"


class FlakyIndex(EventIndex):
    """An index whose writes fail with SQLite's disk-full error while ``full`` is set."""

    full = False

    def _check(self) -> None:
        if self.full:
            raise sqlite3.OperationalError("database or disk is full")

    def create(self, *a: Any, **k: Any) -> int:
        self._check()
        return super().create(*a, **k)

    def update(self, *a: Any, **k: Any) -> None:
        self._check()
        super().update(*a, **k)


def test_index_writes_queue_while_the_disk_is_full_and_land_in_order(tmp_path: Path) -> None:
    index = FlakyIndex(tmp_path)
    w = IndexWriter(index)
    first = w.create("cam", "person", 0.0, 0, status="recording", end_sent=0)
    index.full = True
    second = w.create("cam", "person", 5.0, 50, status="recording", end_sent=0)  # no crash
    w.update(second, max_score=0.7)
    w.update(first, status="finalized", max_score=0.9)
    w.update(second, status="finalized", peak_count=2)
    assert second == first + 1 and w.pending == 2  # create(2) with its updates folded in, update(1)
    assert not w.flush() and w.unsent_ends() == []
    index.full = False
    assert w.flush() and w.pending == 0
    got = {r.id: (r.status, r.max_score, r.peak_count) for r in index.list()}
    assert got == {first: ("finalized", 0.9, 0), second: ("finalized", 0.7, 2)}
    assert [r.id for r in w.unsent_ends()] == [first, second]
    assert is_disk_error(sqlite3.OperationalError("database or disk is full"))
    assert not is_disk_error(sqlite3.OperationalError("no such table: nowhere"))


def test_ids_are_never_reused_after_deletion(tmp_path: Path) -> None:
    index = EventIndex(tmp_path)
    a = index.create("cam", "person", 0.0, 0)
    b = index.create("cam", "person", 0.0, 0)
    index.delete(b)
    assert IndexWriter(index).next_id_preview() == b + 1 and a < b


def test_lock_is_exclusive_across_processes_reentrant_within_one(tmp_path: Path) -> None:
    code = (
        "import sys, time; from pathlib import Path; from edgevision.recorder.lock import DataDirLock;"
        "DataDirLock(Path(sys.argv[1])).acquire(); print('held', flush=True); time.sleep(60)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        with pytest.raises(DataDirBusy, match=f"in use by process {proc.pid}") as info:
            DataDirLock(tmp_path, "events prune").acquire()
        assert info.value.exit_code == 75
    finally:
        proc.kill()
        proc.wait()
    # the owner died (as after a crash): no stale lock
    with DataDirLock(tmp_path) as outer, DataDirLock(tmp_path):
        assert outer is not None
    with DataDirLock(tmp_path):
        pass


def test_retention_runs_on_its_own_timer_and_keeps_its_failure() -> None:
    import threading

    from edgevision.recorder.retention import RetentionTimer

    calls: list[str] = []
    ran = threading.Event()

    def run() -> None:
        calls.append(threading.current_thread().name)
        if len(calls) == 3:
            ran.set()

    timer = RetentionTimer(run, 0.01)
    timer.start()
    assert ran.wait(5)
    timer.stop()
    n = len(calls)
    assert n >= 3 and set(calls) == {"retention"} and timer.error is None  # not the caller's thread
    assert len(calls) == n  # stopped: no more runs

    def failing() -> None:
        raise RuntimeError("index gone")

    bad = RetentionTimer(failing, 0.01)
    bad.start()  # runs at once: the failure ends the thread
    bad._thread.join(5)
    assert isinstance(bad.error, RuntimeError) and bad.runs == 0
