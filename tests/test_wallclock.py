"""Retention's age limit on a Pi whose wall clock steps when NTP first answers (no real-time clock).

The events are placed on the true wall clock by their boot and boot clock (``recorder/wallclock.py``): a
recording made before the step is aged by how long ago it really was, not by how far the clock jumped.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest

from edgevision.recorder.index import EventIndex
from edgevision.recorder.index_writer import IndexWriter
from edgevision.recorder.retention import RetentionPolicy, apply_retention
from edgevision.recorder.wallclock import BootClock, StartStamp, read_boot_clock, true_starts

DAY = 86400.0
T = 1_800_000_000.0  # the true time "now" in these tables
MONTH = RetentionPolicy(max_age_s=30 * DAY, min_free_bytes=None)


@pytest.mark.parametrize(
    ("rows", "offsets", "expected"),
    [
        # this boot: the clock stepped 40 days forward at sync; a row recorded 1 h before it (boottime 1000 s)
        # read a wall clock 40 days behind. It started 1 h ago, not 40 days ago.
        ([StartStamp(1, T - 40 * DAY - 3600, "b2", 1000.0)], {}, [T - 3600]),
        # an earlier boot that synced: its saved offset places the row
        ([StartStamp(1, T - 50 * DAY, "b1", 500.0)], {"b1": T - 2 * DAY}, [T - 2 * DAY + 500]),
        # an earlier boot with no saved offset, or a row without boot stamps: its wall clock, as recorded
        ([StartStamp(1, T - 3 * DAY, "b0", 7.0)], {}, [T - 3 * DAY]),
        ([StartStamp(1, T - 3 * DAY)], {"b0": T}, [T - 3 * DAY]),
        # no event started before one recorded earlier: the second row's clock was behind, it is at least
        # as new as the first (a clock ahead, in the first row, keeps the later ones longer)
        ([StartStamp(1, T - 5 * DAY), StartStamp(2, T - 45 * DAY)], {}, [T - 5 * DAY, T - 5 * DAY]),
        ([StartStamp(2, T - 45 * DAY), StartStamp(1, T - 5 * DAY)], {}, [T - 5 * DAY, T - 5 * DAY]),
        # correct clocks in order: every start as recorded
        ([StartStamp(1, T - 9 * DAY), StartStamp(2, T - 1 * DAY)], {}, [T - 9 * DAY, T - DAY]),
    ],
)
def test_true_starts(rows: list[StartStamp], offsets: dict[str, float], expected: list[float]) -> None:
    clock = BootClock("b2", 3600.0 + 1000.0, T)  # booted 4600 s ago on the true clock
    got = true_starts(rows, clock, offsets)
    assert [got[r] for r in sorted(got)] == pytest.approx(expected)


def _index_with_one_event(data: Path, start_wall: float, **stamps: object) -> tuple[EventIndex, int]:
    index = EventIndex(data)
    eid = index.create("cam", "person", 0.0, 0, start_wall=start_wall, status="finalized", **stamps)
    (data / "clips").mkdir(exist_ok=True)
    (data / "clips" / f"{eid}.mp4").write_bytes(b"x" * 100)
    index.update(eid, clip_path=f"clips/{eid}.mp4")
    return index, eid


def test_an_event_recorded_before_the_clock_stepped_is_aged_by_the_boot_clock(tmp_path: Path) -> None:
    """The Pi was off for 40 days and booted with the clock it had saved; it recorded an event an hour before
    NTP answered. The age limit (30 days) used to delete that hour-old recording at the next pass."""
    clock = BootClock("boot-2", 4 * 3600.0, T)  # booted 4 h ago; the clock stepped since
    index, eid = _index_with_one_event(tmp_path, T - 40 * DAY - 3600, boot_id="boot-2", start_boot=3 * 3600.0)
    assert apply_retention(index, tmp_path, T, 10**12, MONTH, clock=clock) == []
    assert index.get(eid) is not None and (tmp_path / "clips" / f"{eid}.mp4").exists()
    # the same row without its boot stamps is aged by the wall clock it recorded, as before
    index.update(eid, boot_id=None, start_boot=None)
    assert apply_retention(index, tmp_path, T, 10**12, MONTH, clock=clock) == [(eid, "max_age")]
    index.close()


def test_a_pass_saves_the_boot_offset_that_a_later_boot_places_the_events_by(tmp_path: Path) -> None:
    """Boot 1 recorded before it synced and saved its offset after; boot 2 ages that event by the offset."""
    index, eid = _index_with_one_event(tmp_path, T - 40 * DAY, boot_id="boot-1", start_boot=100.0)
    booted = T - 10 * DAY  # boot 1 began 10 days ago (true time); the row was recorded 100 s into it
    assert (
        apply_retention(
            index, tmp_path, booted + 200, 10**12, MONTH, clock=BootClock("boot-1", 200, booted + 200)
        )
        == []
    )
    assert index.boot_offsets() == {"boot-1": pytest.approx(booted)}
    later = BootClock("boot-2", 50.0, T + 21 * DAY)  # 31 days after the recording
    assert apply_retention(index, tmp_path, later.wall, 10**12, MONTH, clock=later, dry_run=True) == [
        (eid, "max_age")
    ]
    assert "boot-2" not in index.boot_offsets()  # a dry run writes nothing
    assert apply_retention(index, tmp_path, T, 10**12, MONTH, clock=BootClock("boot-3", 50.0, T)) == []
    assert set(index.boot_offsets()) == {"boot-1", "boot-3"}
    # once boot 1's event is deleted, its offset is forgotten (the table does not grow by a row per boot)
    assert apply_retention(index, tmp_path, later.wall, 10**12, MONTH, clock=later) == [(eid, "max_age")]
    assert set(index.boot_offsets()) == {"boot-2"}
    index.close()


def test_the_writer_stamps_each_row_with_its_boot_and_boot_clock(tmp_path: Path) -> None:
    index = EventIndex(tmp_path)
    before = read_boot_clock()
    eid = IndexWriter(index).create("cam", "person", 0.0, 0, status="recording")
    row = index.get(eid)
    index.close()
    assert row is not None and row.boot_id == before.boot_id and row.boot_id
    assert row.start_boot is not None and before.boottime <= row.start_boot <= read_boot_clock().boottime
    assert row.start_wall == pytest.approx(time.time(), abs=60)


def test_an_index_from_before_the_boot_stamps_gains_them(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "events.db")
    db.executescript(
        "CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT, camera TEXT NOT NULL, label TEXT NOT NULL,"
        " start_ts REAL NOT NULL, end_ts REAL, start_wall REAL NOT NULL, end_wall REAL, start_frame INTEGER"
        " NOT NULL, end_frame INTEGER, max_score REAL NOT NULL DEFAULT 0, mean_score REAL NOT NULL DEFAULT 0,"
        " peak_count INTEGER NOT NULL DEFAULT 0, best_ts REAL, clip_path TEXT, clip_start_ts REAL, clip_frames"
        " INTEGER, clip_size INTEGER, clip_sha256 TEXT, snapshot_path TEXT, thumb_path TEXT, face_path TEXT,"
        " status TEXT NOT NULL, degraded TEXT, note TEXT);"
        "INSERT INTO events (camera, label, start_ts, start_wall, start_frame, status)"
        " VALUES ('cam', 'person', 0, 1.0, 0, 'finalized');"
    )
    db.commit()
    db.close()
    index = EventIndex(tmp_path)
    (row,) = index.list()
    assert (row.end_sent, row.boot_id, row.start_boot) == (1, None, None)
    index.close()


def test_a_start_shown_to_a_user_is_not_raised_to_the_one_before() -> None:
    rows = [StartStamp(1, T - 5 * DAY), StartStamp(2, T - 45 * DAY)]  # the second row's clock was behind
    clock = BootClock("b2", 100.0, T)
    assert true_starts(rows, clock, {}, monotone=False) == {1: T - 5 * DAY, 2: T - 45 * DAY}


def _recorded_before_the_step(data: Path) -> float:
    """A row of the running boot recorded an hour ago while the wall clock was 40 days behind; its true start."""
    now = read_boot_clock()
    index = EventIndex(data)
    index.create(
        "cam",
        "person",
        0.0,
        0,
        status="finalized",
        start_wall=now.wall - 40 * DAY - 3600,
        boot_id=now.boot_id,
        start_boot=now.boottime - 3600,
    )
    index.close()
    return now.wall - 3600


def test_events_list_and_the_web_page_show_when_an_event_really_started(
    env: dict[str, str], tmp_path: Path
) -> None:
    """They showed the date the Pi booted with (40 days back) for an event recorded before NTP answered."""
    from conftest import run_cli
    from test_publish import TOKEN, get

    from edgevision.config import WebConfig
    from edgevision.publish.live import LiveView
    from edgevision.publish.web import WebServer

    true_start = _recorded_before_the_step(tmp_path / "data")
    r = run_cli(["events", "list", "--data-dir", str(tmp_path / "data"), "--json"], env)
    assert r.returncode == 0, r.stderr
    (row,) = json.loads(r.stdout)
    assert row["start_time"] == pytest.approx(true_start, abs=5)
    assert row["start_wall"] == pytest.approx(true_start - 40 * DAY, abs=5)  # the row as recorded
    for since, found in (("1d", 1), ("30m", 0)):  # --since filters on that start, not on start_wall
        r = run_cli(["events", "list", "--data-dir", str(tmp_path / "data"), "--json", "--since", since], env)
        assert r.returncode == 0 and len(json.loads(r.stdout)) == found, (since, r.stdout, r.stderr)
    r = run_cli(["events", "show", str(row["id"]), "--data-dir", str(tmp_path / "data"), "--json"], env)
    assert r.returncode == 0 and json.loads(r.stdout)["start_time"] == pytest.approx(true_start, abs=5)
    r = run_cli(["events", "list", "--data-dir", str(tmp_path / "data")], env)
    shown = time.strftime("%Y-%m-%d", time.localtime(true_start))
    assert r.returncode == 0 and shown in r.stdout.splitlines()[1], r.stdout
    live = LiveView(fps=5)
    web = WebServer(WebConfig(port=0, token=TOKEN), live, None, tmp_path / "data")
    try:
        status, _, body = get(web, "/api/events")
    finally:
        web.close()
        live.close()
    (event,) = json.loads(body)
    assert status == 200 and event["start_time"] == pytest.approx(true_start, abs=5)
