"""Crash safety of recording: kills at every step of a finish and of recovery, the data-directory lock, a full
disk, the loss bound under a slow pipeline, and recovered events keeping their statistics and their end."""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import recorder_driver as drv
from conftest import count_frames, run_cli
from test_recorder import rows

from edgevision.config import MqttConfig
from edgevision.fsutil import sha256_file
from edgevision.recorder.index import EventIndex
from edgevision.recorder.lock import EXIT_BUSY, DataDirBusy, DataDirLock
from edgevision.recorder.recorder import Recorder
from edgevision.recorder.recovery import recover

DRIVER = Path(drv.__file__)
FINISH_POINTS = ["finish.synced", "finish.renamed", "finish.dir_synced", "finish.hashed", "finish.snapshot"]
RECOVERY_POINTS = ["recover.salvaged", "recover.renamed", "recover.hashed"]


def drive(
    data: Path, *args: str, fault: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("EDGEVISION_FAULT_POINT", None)
    if fault:
        env["EDGEVISION_FAULT_POINT"] = fault
    return subprocess.run(
        [sys.executable, str(DRIVER), str(data), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The event a clean run records (what every crashed run must still end up with)."""
    data = tmp_path_factory.mktemp("ref")
    r = drive(data)
    assert r.returncode == 0 and "done 1 1" in r.stdout, r.stderr
    (ev,) = rows(data)
    ev["decoded"] = count_frames(data / ev["clip_path"])
    assert ev["decoded"] == ev["clip_frames"] > 20
    return ev


def assert_clip_intact(data: Path, ev: dict, frames: int) -> None:
    clip = data / ev["clip_path"]
    assert count_frames(clip) == frames == ev["clip_frames"], ev
    assert ev["clip_size"] == clip.stat().st_size and ev["clip_sha256"] == sha256_file(clip)
    assert (data / ev["snapshot_path"]).exists() and (data / ev["thumb_path"]).exists()
    assert not list(data.rglob("*.partial")) and not list(data.rglob("*.tmp"))


@pytest.mark.parametrize("point", FINISH_POINTS)
def test_kill_between_clip_rename_and_index_row_keeps_the_complete_clip(
    tmp_path: Path, reference: dict, point: str
) -> None:
    """SIGKILL at each step of a finish (before the index row, the commit point): recovery finishes the event
    with its whole clip instead of deleting it."""
    data = tmp_path / "data"
    r = drive(data, fault=point)
    assert r.returncode == -signal.SIGKILL, (r.returncode, r.stderr)
    (ev,) = rows(data)
    assert ev["status"] == "recording"  # killed before the commit point
    report = recover(EventIndex(data), data)
    (ev,) = rows(data)
    assert report.lost == 0 and report.closed == [ev["id"]]
    assert ev["status"] == ("recovered" if point == "finish.synced" else "finalized"), ev
    assert_clip_intact(data, ev, reference["decoded"])
    # the statistics the event had when it was killed survive (written while it ran)
    assert ev["max_score"] == pytest.approx(reference["max_score"]) and ev["peak_count"] == 2
    assert ev["end_sent"] == 0  # its end is still owed to MQTT


def _stopped(pid: int, timeout: float = 120.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state in ("T", "t"):
            return True
        time.sleep(0.05)
    return False


def test_sigstop_in_the_window_shows_a_complete_clip_and_an_open_row_then_sigkill(
    tmp_path: Path, reference: dict
) -> None:
    """Frozen (SIGSTOP) right after the rename: the disk holds a complete clip and a row still ``recording``,
    exactly the state the old recovery deleted. SIGKILL, recover: the clip is kept whole."""
    data = tmp_path / "data"
    env = dict(os.environ, EDGEVISION_FAULT_POINT="finish.renamed", EDGEVISION_FAULT_ACTION="stop")
    proc = subprocess.Popen(
        [sys.executable, str(DRIVER), str(data)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert _stopped(proc.pid)
        (ev,) = rows(data)
        clip = data / ev["clip_path"]
        assert ev["status"] == "recording" and clip.exists() and not list(data.rglob("*.partial"))
        assert count_frames(clip) == reference["decoded"]  # complete while the row says "recording"
    finally:
        proc.kill()
        proc.wait(timeout=10)
    recover(EventIndex(data), data)
    (ev,) = rows(data)
    assert ev["status"] == "finalized"
    assert_clip_intact(data, ev, reference["decoded"])


@pytest.mark.parametrize("point", RECOVERY_POINTS)
def test_recovery_killed_half_way_is_completed_by_the_next(
    tmp_path: Path, reference: dict, point: str
) -> None:
    data = tmp_path / "data"
    assert drive(data, fault="finish.synced").returncode == -signal.SIGKILL  # leaves a complete .partial
    env = dict(os.environ, EDGEVISION_FAULT_POINT=point)
    r = subprocess.run(
        [sys.executable, "-m", "edgevision", "events", "prune", "--data-dir", str(data)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert [e["status"] for e in rows(data)] == ["recording"]
    report = recover(EventIndex(data), data)
    (ev,) = rows(data)
    assert report.lost == 0 and ev["status"] in ("recovered", "finalized"), ev
    assert_clip_intact(data, ev, reference["decoded"])
    assert recover(EventIndex(data), data).closed == []  # idempotent: nothing left to do


def test_recovery_never_deletes_a_complete_clip_it_finds(tmp_path: Path, reference: dict) -> None:
    """The on-disk state of a kill after the rename, built by hand: row ``recording``, complete .mp4."""
    data = tmp_path / "data"
    drive(data)
    (ev,) = rows(data)
    index = EventIndex(data)
    index.update(
        ev["id"],
        status="recording",
        clip_frames=None,
        clip_size=None,
        clip_sha256=None,
        snapshot_path=None,
        thumb_path=None,
        end_ts=None,
    )
    (data / ev["snapshot_path"]).unlink()
    recover(index, data)
    (ev,) = rows(data)
    assert ev["status"] == "finalized"
    assert_clip_intact(data, ev, reference["decoded"])


def test_stray_partials_are_kept_when_they_play_and_removed_only_when_nothing_decodes(tmp_path: Path) -> None:
    """A ``.partial`` no event names (its row never reached the index): kept when it holds playable video (and
    given a row, salvaged like any open event's clip), removed when nothing in it decodes; each is announced
    (file and size) once, before recovery decodes it, the finished event's clip is not."""
    data = tmp_path / "data"
    drive(data)
    (ev,) = rows(data)
    clip = data / ev["clip_path"]
    playable = clip.with_name("999998.mp4.partial")
    shutil.copy(clip, playable)
    zeros = clip.with_name("999999.mp4.partial")
    zeros.write_bytes(bytes(clip.stat().st_size))
    calls: list[tuple[str, int]] = []
    report = recover(EventIndex(data), data, checking=lambda p, n: calls.append((p.name, n)))
    assert sorted(calls) == [(playable.name, clip.stat().st_size), (zeros.name, clip.stat().st_size)]
    assert not zeros.exists() and report.orphans_removed == 1 and report.adopted == 1
    first, adopted = rows(data)
    assert first["status"] == "finalized" and sha256_file(clip) == first["clip_sha256"] == ev["clip_sha256"]
    assert adopted["id"] == 999998 and adopted["status"] == "recovered"
    assert not playable.exists() and sha256_file(data / adopted["clip_path"]) == adopted["clip_sha256"]


def test_a_clip_that_does_not_decode_is_proven_broken_and_only_then_removed(tmp_path: Path) -> None:
    data = tmp_path / "data"
    drive(data)
    (ev,) = rows(data)
    clip = data / ev["clip_path"]
    clip.write_bytes(b"\0" * clip.stat().st_size)  # a power cut before any block reached the card
    index = EventIndex(data)
    index.update(ev["id"], status="recording")
    recover(index, data)
    (ev,) = rows(data)
    assert ev["status"] == "lost" and not clip.exists() and ev["max_score"] > 0.9


@pytest.mark.parametrize(
    ("failure", "code", "text"),
    [("OSError", errno.EIO, "Input/output error"), ("MemoryError", errno.ENOMEM, "Cannot allocate memory")],
    ids=["EIO", "no-memory"],
)
@pytest.mark.parametrize("partial", [False, True], ids=["complete-clip", "partial"])
def test_a_clip_that_cannot_be_read_is_left_as_it_is_for_the_next_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: str, code: int, text: str, partial: bool
) -> None:
    """A read error (a failing SD card, no memory) proves nothing about a clip: recovery used to count it as a
    clip that does not decode and delete it (or cut a .partial at the failing fragment)."""
    import av

    data = tmp_path / "data"
    drive(data)
    (ev,) = rows(data)
    clip = data / ev["clip_path"]
    if partial:
        clip = clip.rename(clip.with_name(clip.name + ".partial"))
    size, sha = clip.stat().st_size, sha256_file(clip)
    index = EventIndex(data)
    index.update(ev["id"], status="recording")
    real_open = av.open

    def failing_open(path: Any, *args: Any, **kw: Any) -> Any:
        if str(path).endswith((".mp4", ".partial")):  # as FFmpeg reports it: av.error.OSError / MemoryError
            raise getattr(av.error, failure)(code, text)
        return real_open(path, *args, **kw)

    monkeypatch.setattr(av, "open", failing_open)
    report = recover(index, data)
    assert report.unchecked == 1 and "left unchecked" in report.line()
    assert clip.stat().st_size == size and sha256_file(clip) == sha  # untouched
    assert [e["status"] for e in rows(data)] == ["recording"]  # the next start checks it again
    monkeypatch.setattr(av, "open", real_open)
    assert recover(EventIndex(data), data).unchecked == 0
    assert [e["status"] for e in rows(data)] == ["recovered" if partial else "finalized"]


@pytest.mark.parametrize("failing", ["hash", "stat", "stat-finalized"])
def test_a_clip_whose_hash_or_size_cannot_be_read_is_left_as_it_is_and_the_recorder_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    """Hashing the clip, or asking whether it exists, hit a read error (a failing SD card): the OSError left
    recovery, so the recorder could not start at all (and, restarted, failed again on the same clip) instead of
    leaving that one event for the next start."""
    import edgevision.recorder.recovery as recovery

    data = tmp_path / "data"
    drive(data)
    (ev,) = rows(data)
    clip = data / ev["clip_path"]
    size = clip.stat().st_size
    index = EventIndex(data)
    status = "finalized" if failing == "stat-finalized" else "recording"
    index.update(ev["id"], status=status)

    def failing_hash(path: Path) -> str:
        raise OSError(errno.EIO, "Input/output error", str(path))

    real_stat = Path.stat

    def failing_stat(path: Path, *args: Any, **kw: Any) -> os.stat_result:
        if path.suffix in (".mp4", ".partial"):
            raise OSError(errno.EIO, "Input/output error", str(path))
        return real_stat(path, *args, **kw)

    if failing == "hash":
        monkeypatch.setattr(recovery, "sha256_file", failing_hash)
    else:
        monkeypatch.setattr(Path, "stat", failing_stat)
    report = recover(index, data)
    monkeypatch.undo()
    assert report.unchecked == int(status == "recording") and clip.stat().st_size == size
    assert report.lost == 0 and [e["status"] for e in rows(data)] == [
        status
    ]  # the next start checks it again


def _kill_during_event(data: Path, after_start: float, fps: float = 5.0) -> None:
    """Run the driver in real time (a live camera whose pipeline gives ``fps``; nominal 25 fps) and SIGKILL it
    ``after_start`` seconds of frames after the event started."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("EDGEVISION_FAULT_POINT", None)
    args = [
        sys.executable,
        str(DRIVER),
        str(data),
        "--realtime",
        "--fps",
        str(fps),
        "--fps-hint",
        "25",
        "--seconds",
        "20",
        "--person",
        "2:20",
    ]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    trigger = 2.0 + 2 / fps  # the third person frame completes 3-of-5
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("frame") and float(line.split()[1]) >= trigger + after_start:
            break
    proc.kill()
    proc.wait(timeout=10)


@pytest.mark.parametrize("after_start", [1.5, 2.2, 2.8])
def test_kill_soon_after_an_event_starts_under_a_slow_pipeline_keeps_media(
    tmp_path: Path, after_start: float
) -> None:
    """At 5 fps from a 25 fps camera, fragments are still cut every second of media: a kill 1.5-2.8 s into
    an event keeps the pre-roll and all but the last second, and the event's statistics."""
    data = tmp_path / "data"
    _kill_during_event(data, after_start)
    (ev,) = rows(data)
    assert ev["status"] == "recording" and ev["max_score"] > 0.6  # statistics were written as it ran
    recover(EventIndex(data), data)
    (ev,) = rows(data)
    assert ev["status"] == "recovered", ev
    kept = count_frames(data / ev["clip_path"]) / 5.0  # seconds of media
    # the pre-roll as cut (from the last keyframe at or before trigger - 1 s: a GOP is 1 s) + the event so far
    recorded = ev["start_ts"] - ev["clip_start_ts"] + after_start
    assert 1.0 <= ev["start_ts"] - ev["clip_start_ts"] <= 2.0 + 1e-6
    # at least the pre-roll fragment and, with no backlog, all but the last second (printed for the record)
    print(f"killed {after_start:.1f} s after the start: {kept:.1f} s of {recorded:.1f} s kept")
    assert 1.0 <= kept <= recorded + 0.2, (kept, recorded)
    assert ev["peak_count"] >= 1 and ev["max_score"] > 0.6


def test_recovered_events_announce_their_end_through_the_live_path(tmp_path: Path) -> None:
    """A crashed event's end reaches the listeners (MQTT: event ``end`` and ``person OFF``) once, with its
    statistics, from the next run's recorder, exactly as a live end does."""
    data = tmp_path / "data"
    _kill_during_event(data, 1.6, fps=10.0)
    seen: list[tuple[str, dict]] = []
    rec = Recorder(drv.settings(data), blocking=True, listeners=[lambda kind, d: seen.append((kind, d))])
    assert rec.recovery.closed == [1]
    drv.record(data, 10.0, 6.0, [(1.0, 3.0)], recorder=rec)  # the next run records one more event
    kinds = [(k, d["id"] if k == "end" else d["event_id"]) for k, d in seen if k != "update"]
    assert kinds == [("end", 1), ("start", 2), ("end", 2)]
    end1 = seen[0][1]
    assert end1["status"] == "recovered" and end1["max_score"] > 0.6 and end1["peak_count"] == 1
    assert all(e["end_sent"] == 1 for e in rows(data))
    seen.clear()
    rec = Recorder(drv.settings(data), blocking=True, listeners=[lambda kind, d: seen.append((kind, d))])
    rec.close()
    assert seen == []  # sent once


def test_mqtt_end_and_person_off_for_a_recovered_event(tmp_path: Path) -> None:
    """The MQTT side needs no special case: the recovered end reaches the outbox as an `end` event with its
    statistics, and occupancy goes OFF (the crashed run's retained ON does not stay)."""
    import sqlite3

    from edgevision.publish.mqtt import MqttPublisher, Topics
    from edgevision.publish.mqtt_events import EventRelay
    from edgevision.publish.outbox import Outbox

    data = tmp_path / "data"
    _kill_during_event(data, 1.6, fps=10.0)
    outbox = Outbox(tmp_path / "outbox.db", 1000)
    pub = MqttPublisher(
        MqttConfig(host="127.0.0.1", port=1), outbox, Topics("edgevision", "cam")
    )  # no broker: messages wait
    try:
        relay = EventRelay(pub)
        Recorder(drv.settings(data), blocking=True, listeners=[relay.recorder_event]).close()
    finally:
        pub.client.loop_stop()
    db = sqlite3.connect(tmp_path / "outbox.db")
    queued = [(t, bytes(p)) for t, p in db.execute("SELECT topic, payload FROM outbox ORDER BY rowid")]
    db.close()
    assert ("edgevision/cam/person/occupancy", b"OFF") in queued, queued
    ends = [json.loads(p) for t, p in queued if t == "edgevision/events" and json.loads(p)["type"] == "end"]
    assert len(ends) == 1, queued
    after = ends[0]["after"]
    assert after["top_score"] > 0.6 and after["status"] == "recovered" and after["active"] is False, after


def test_prune_is_refused_while_a_recorder_owns_the_directory(env: dict[str, str], tmp_path: Path) -> None:
    data = tmp_path / "data"
    proc = subprocess.Popen(
        [
            sys.executable,
            str(DRIVER),
            str(data),
            "--realtime",
            "--fps",
            "10",
            "--seconds",
            "7",
            "--person",
            "1:5",
        ],
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("frame") and float(line.split()[1]) >= 2.0:  # the event is recording
            break
    r = run_cli(["events", "prune", "--data-dir", str(data)], env)
    assert r.returncode == EXIT_BUSY == 75, r.stderr
    assert f"in use by process {proc.pid}" in r.stderr
    with pytest.raises(DataDirBusy):
        DataDirLock(data).acquire()  # also in this process (another process holds it)
    assert (data / "clips").exists() and list(data.rglob("*.partial"))  # untouched
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0 and "done 1 1" in out, err
    (ev,) = rows(data)
    assert ev["status"] == "finalized" and count_frames(data / ev["clip_path"]) == ev["clip_frames"]
    r = run_cli(["events", "prune", "--data-dir", str(data)], env)  # the owner is gone: allowed now
    assert r.returncode == 0, r.stderr


def test_a_second_run_is_refused(env: dict[str, str], tmp_path: Path, two_events_video: Path) -> None:
    data = tmp_path / "data"
    with DataDirLock(data, "test"):
        r = run_cli(["run", "--video", str(two_events_video), "--record", "--data-dir", str(data)], env)
    assert r.returncode == 75 and f"in use by process {os.getpid()}" in r.stderr, r.stderr
    assert not (data / "events.db").exists() or rows(data) == []


@pytest.fixture()
def two_events_video(tmp_path: Path) -> Path:
    from media import splice

    path = tmp_path / "short.avi"
    splice(path, [("empty", 10), ("people", 10)])
    return path


def _unshare_available() -> str | None:
    if shutil.which("unshare") is None:
        return "util-linux unshare is not installed"
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True, text=True)
    return None if probe.returncode == 0 else f"cannot make a private mount namespace: {probe.stderr.strip()}"


def test_a_full_disk_never_crashes_and_queued_rows_land_when_space_returns(tmp_path: Path) -> None:
    """A 32 MiB tmpfs filled to the last byte: clip, snapshot and SQLite writes fail ("database or disk is
    full"); the recorder degrades, keeps the row in memory, and writes it when space comes back."""
    why = _unshare_available()
    if why:
        pytest.skip(f"no tiny filesystem can be mounted here: {why}")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    script = 'mount -t tmpfs -o size=32m tmpfs "$1" && exec "$2" "$3" "$1" --scenario full-disk'
    r = subprocess.run(
        ["unshare", "-rm", "sh", "-c", script, "_", str(mnt), sys.executable, str(DRIVER)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert (
        "database or disk is full" in r.stderr
        and out["index_failures"] >= 1
        and out["pending_while_full"] >= 1
    )
    assert out["modes"] == ["normal", "index-only", "normal"]
    first, second, third = out["rows"]
    assert first["status"] == third["status"] == "finalized" and first["clip_frames"] and third["clip_frames"]
    assert (
        second["status"] == "finalized" and second["degraded"] == "index-only" and second["clip_path"] is None
    )
    assert second["max_score"] > 0.9 and all(e["end_sent"] == 1 for e in out["rows"])


@pytest.mark.slow
def test_kill_loop_random_instants_and_fault_points(tmp_path: Path) -> None:
    """SIGKILL at random wall-clock instants and at random fault points (finish window, recovery); after each,
    recovery leaves every event closed, every clip playable and matching its row, and never loses an event
    whose clip was complete. ``EDGEVISION_KILL_ITERATIONS`` sets the count (CI: 8; by hand e.g. 200)."""
    data = tmp_path / "data"
    iterations = int(os.environ.get("EDGEVISION_KILL_ITERATIONS", "8"))
    rng = random.Random(int(os.environ.get("EDGEVISION_KILL_SEED", "15")))
    outcomes: dict[str, int] = {}
    for i in range(iterations):
        kind = rng.choice(["time", "finish", "recover"])
        before = {e["id"] for e in rows(data)} if (data / "events.db").exists() else set()
        if kind == "time":
            _kill_during_event(data, rng.uniform(0.0, 4.0), fps=rng.choice([5.0, 10.0]))
        else:
            point = rng.choice(FINISH_POINTS)
            r = drive(
                data,
                "--fps",
                "10",
                "--person",
                "1:2.5",
                "--person",
                "4:5.5",
                "--seconds",
                "7",
                fault=f"{point}@{rng.choice([1, 2])}",
            )
            assert r.returncode == -signal.SIGKILL, r.stderr
        if kind == "recover":
            env = dict(os.environ, EDGEVISION_FAULT_POINT=rng.choice(RECOVERY_POINTS))
            subprocess.run(
                [sys.executable, "-m", "edgevision", "events", "prune", "--data-dir", str(data)],
                env=env,
                capture_output=True,
                timeout=300,
            )
        env = dict(os.environ)
        env.pop("EDGEVISION_FAULT_POINT", None)
        r = subprocess.run(
            [sys.executable, "-m", "edgevision", "events", "prune", "--data-dir", str(data)],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert r.returncode == 0, r.stderr
        events = rows(data)
        for e in events:
            assert e["status"] in ("finalized", "recovered", "lost"), e
            if e["clip_path"]:
                clip = data / e["clip_path"]
                assert count_frames(clip) == e["clip_frames"] > 0, e
                assert e["clip_size"] == clip.stat().st_size and e["clip_sha256"] == sha256_file(clip)
            if e["id"] not in before:
                outcomes[f"{kind}:{e['status']}"] = outcomes.get(f"{kind}:{e['status']}", 0) + 1
                if kind != "time":
                    assert e["status"] != "lost", (i, e)  # a fault point after frames were written
        assert not list(data.rglob("*.partial")) and not list(data.rglob("*.tmp"))
    print(f"kill loop: {iterations} iterations: {outcomes}")


def test_a_clip_whose_salvage_fails_after_a_disk_error_is_left_for_recovery(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk fails mid-clip and salvaging the ``.partial`` then fails too (an I/O error reading it back): nothing
    is proven about the file, so it stays, and its row stays open for start-up recovery, which finishes it (the
    ``.partial`` was deleted as if it held nothing)."""
    import errno

    from edgevision.capture.packets import EncodedPacket
    from edgevision.recorder import packet_clips
    from edgevision.recorder.remux import PacketClipWriter

    real_write = PacketClipWriter.write
    written = {"n": 0}

    def write(self: PacketClipWriter, packet: EncodedPacket) -> None:
        written["n"] += 1
        if written["n"] > 25:  # the disk fails 2.5 s into the clip
            raise OSError(errno.EIO, "Input/output error")
        real_write(self, packet)

    def salvage(path: Path) -> int:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(PacketClipWriter, "write", write)
    monkeypatch.setattr(packet_clips, "salvage_fragmented_mp4", salvage)
    data = tmp_path / "data"
    drv.record(data, 10.0, 6.0, [(1.0, 4.0)])
    (ev,) = rows(data)
    partial = data / (ev["clip_path"] + ".partial")
    assert partial.exists() and ev["status"] == "recording"
    monkeypatch.undo()
    report = recover(EventIndex(data), data)
    (ev,) = rows(data)
    assert report.recovered == 1 and ev["status"] == "recovered" and not partial.exists()
    assert count_frames(data / ev["clip_path"]) == ev["clip_frames"] >= 10


def test_a_clip_salvaged_after_a_disk_error_is_renamed_durably_before_its_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk fails mid-clip: the ``.partial`` is cut back and renamed to the clip's name, and the row then says
    ``recovered`` with that name. The rename's directory was never fsync'd, so a power cut after the row could
    bring back the ``.partial`` under a row recovery no longer looks at (not ``recording``): a clip the index
    names and nobody can play. The directory is fsync'd after the rename, before the row."""
    from edgevision.capture.packets import EncodedPacket
    from edgevision.recorder.remux import PacketClipWriter

    real_write, real_replace, real_fsync = PacketClipWriter.write, os.replace, os.fsync
    real_update = EventIndex.update
    written = {"n": 0}
    steps: list[tuple[str, str]] = []

    def write(self: PacketClipWriter, packet: EncodedPacket) -> None:
        written["n"] += 1
        if written["n"] > 25:  # the disk fails 2.5 s into the clip
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(self, packet)

    def replace(src: Any, dst: Any, **kw: Any) -> None:
        real_replace(src, dst, **kw)
        steps.append(("replace", str(dst)))

    def fsync(fd: int) -> None:
        real_fsync(fd)
        steps.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))

    def update(self: EventIndex, event_id: int, **values: Any) -> None:
        real_update(self, event_id, **values)
        steps.append(("row", ",".join(sorted(values))))

    monkeypatch.setattr(PacketClipWriter, "write", write)
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(EventIndex, "update", update)
    data = tmp_path / "data"
    drv.record(data, 10.0, 6.0, [(1.0, 4.0)])
    monkeypatch.undo()
    (ev,) = rows(data)
    clip = data / ev["clip_path"]
    assert ev["status"] == "recovered" and clip.exists() and ev["clip_sha256"] == sha256_file(clip)
    renamed = steps.index(("replace", str(clip)))
    named = next(i for i, (kind, what) in enumerate(steps) if kind == "row" and "clip_sha256" in what)
    assert ("fsync", str(clip.parent)) in steps[renamed:named]


@pytest.mark.parametrize("clip", [False, True], ids=["snapshots-only", "clip-does-not-decode"])
def test_a_lost_event_keeps_the_snapshot_written_before_the_kill(tmp_path: Path, clip: bool) -> None:
    """Killed after its snapshot landed and before its row (fault point ``finish.snapshot``), an event recorded
    without a clip (snapshots only: the disk was low), or whose clip holds nothing that decodes, was marked
    ``lost`` with no snapshot: the JPEGs stayed on disk, named by no row, so retention never deleted them and no
    page showed them. The row now names the stills that landed."""
    import numpy as np

    from edgevision.recorder.snapshots import write_jpeg

    data = tmp_path / "data"
    index = EventIndex(data)
    rel = "clips/20240101/000001.mp4" if clip else None
    event_id = index.create("cam", "person", 1.0, 10, status="recording", clip_path=rel, end_sent=0)
    if rel is not None:
        (data / rel).parent.mkdir(parents=True)
        (data / (rel + ".partial")).write_bytes(bytes(4096))  # nothing in it decodes
    image = np.full((48, 64, 3), 128, np.uint8)
    for name in ("000001.jpg", "000001-thumb.jpg", "000001-face.jpg"):
        write_jpeg(data / "snapshots" / name, image)
    recover(index, data)
    ev = index.get(event_id)
    assert ev is not None and ev.status == "lost" and ev.clip_path is None and ev.end_sent == 0
    assert (ev.snapshot_path, ev.thumb_path, ev.face_path) == (
        "snapshots/000001.jpg",
        "snapshots/000001-thumb.jpg",
        "snapshots/000001-face.jpg",
    )
    index.close()


def test_recovery_removes_only_its_own_half_written_snapshots(tmp_path: Path) -> None:
    """Recovery removed every ``*.tmp`` anywhere under the data directory. The single service's data directory
    (/var/lib/edgevision) holds the shared models directory and every camera instance's data directory, so a
    restart deleted a model another instance was writing and another recorder's snapshot in flight (its rename
    then failed and stopped that recorder). Only this recorder's own half-written snapshots go."""
    data = tmp_path / "data"
    EventIndex(data).close()
    own = data / "snapshots" / "000001.jpg.tmp"
    others = [
        data / "models" / "derived" / ".ssd_int8.tflite.4242.tmp",
        data / "garage" / "snapshots" / "000007.jpg.tmp",
        data / "garage" / "clips" / "20240101" / "000007.mp4.partial",
    ]
    for path in [own, *others]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"in flight")
    report = recover(EventIndex(data), data)
    assert not own.exists() and report.orphans_removed == 1
    assert all(path.read_bytes() == b"in flight" for path in others)


def test_a_full_disk_at_start_leaves_open_events_for_later_and_the_recorder_starts(tmp_path: Path) -> None:
    """Killed with an event open while the disk was full, the next start's recovery could not write the event's
    row (SQLite: "database or disk is full"): the error stopped the start, the service restarted into the same
    error, and retention, which runs after recovery and would have freed the space, never ran. Nothing was
    recorded again until someone freed space by hand. The row is left open (as after a read error) for a later
    start, and the recorder starts."""
    import sqlite3

    class FullIndex(EventIndex):
        full = True

        def update(self, *a: Any, **k: Any) -> None:
            if self.full:
                raise sqlite3.OperationalError("database or disk is full")
            super().update(*a, **k)

    data = tmp_path / "data"
    index = FullIndex(data)
    event_id = index.create("cam", "person", 1.0, 10, status="recording", end_sent=0)
    rec = Recorder(drv.settings(data), blocking=True, index=index)  # no exception
    rec.close()
    assert rec.recovery.unchecked == 1
    again = FullIndex(data)
    ev = again.get(event_id)
    assert ev is not None and ev.status == "recording"
    again.full = False  # space is back: the next start closes it
    report = recover(again, data)
    ev = again.get(event_id)
    assert report.closed == [event_id] and ev is not None and ev.status == "lost"
    again.close()


def test_a_new_day_and_snapshot_directory_survive_a_power_cut(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each day's first clip makes ``clips/<day>/`` (the first event ``clips/`` and ``snapshots/`` too), and only
    the new directory itself was fsync'd (for the file's name in it), never the directory holding its name: after
    a power cut on a filesystem that does not order metadata (vfat on an SD card) the new directory could be
    gone with every clip in it, under rows that name them. The parent of each directory made is fsync'd."""
    real_fsync = os.fsync
    synced: set[str] = set()

    def fsync(fd: int) -> None:
        real_fsync(fd)
        synced.add(os.readlink(f"/proc/self/fd/{fd}"))

    data = tmp_path / "data"
    data.mkdir()
    monkeypatch.setattr(os, "fsync", fsync)
    drv.record(data, 10.0, 6.0, [(1.0, 4.0)])
    monkeypatch.undo()
    (ev,) = rows(data)
    day = (data / ev["clip_path"]).parent
    assert ev["status"] == "finalized" and ev["snapshot_path"]
    assert {str(data), str(data / "clips"), str(day), str(data / "snapshots")} <= synced


@pytest.mark.parametrize("where", ["finish", "salvage"])
def test_a_clip_that_cannot_be_read_back_for_its_hash_never_stops_the_recording(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """The clip was written, fsync'd and renamed, then reading it back for its sha256 failed (EIO from a failing
    card): the error stopped the recorder thread and with it the run. The clip is kept and its row closed as
    usual, without a hash (the note says why); the next event is recorded."""
    from edgevision.capture.packets import EncodedPacket
    from edgevision.recorder import packet_clips
    from edgevision.recorder import recorder as recorder_mod
    from edgevision.recorder.remux import PacketClipWriter

    def unreadable(path: Path) -> str:
        raise OSError(errno.EIO, "Input/output error", str(path))

    if where == "salvage":
        real_write = PacketClipWriter.write
        written = {"n": 0}

        def write(self: PacketClipWriter, packet: EncodedPacket) -> None:
            written["n"] += 1
            if written["n"] == 26:  # the disk fails once, 2.5 s into the first clip
                raise OSError(errno.ENOSPC, "No space left on device")
            real_write(self, packet)

        monkeypatch.setattr(PacketClipWriter, "write", write)
    monkeypatch.setattr(packet_clips, "sha256_file", unreadable)
    monkeypatch.setattr(recorder_mod, "sha256_file", unreadable, raising=False)  # where it was read before
    data = tmp_path / "data"
    drv.record(data, 10.0, 14.0, [(1.0, 4.0), (8.0, 11.0)])  # no exception
    monkeypatch.undo()
    first, second = rows(data)
    assert first["status"] == ("recovered" if where == "salvage" else "finalized")
    assert first["clip_sha256"] is None and "Input/output error" in first["note"]
    assert (data / first["clip_path"]).exists() and first["clip_size"] == (
        data / first["clip_path"]
    ).stat().st_size
    assert second["status"] == "finalized" and second["end_sent"] == 1


@pytest.mark.parametrize("clip", [False, True], ids=["no-clip", "complete-clip"])
def test_an_event_closed_by_recovery_ends_when_it_stopped_not_when_recovery_ran(
    tmp_path: Path, clip: bool
) -> None:
    """An event left open by a kill (or a power cut at night) was closed by the next start with ``end_wall`` = the
    time recovery ran: its MQTT ``end_time`` and ``events show`` made it last until the Pi came back, hours
    later. Its end on the wall clock is its start plus its length on the frame clock."""
    data = tmp_path / "data"
    index = EventIndex(data)
    if clip:
        drv.record(data, 10.0, 6.0, [(1.0, 4.0)])
        (ev,) = rows(data)
        event_id = ev["id"]
        index.update(event_id, status="recording", end_ts=None, end_wall=None, start_wall=1000.0)
    else:
        event_id = index.create("cam", "person", 50.0, 500, start_wall=1000.0, best_ts=53.0, end_sent=0)
    recover(index, data)
    row = index.get(event_id)
    assert row is not None and row.end_ts is not None and row.status in ("lost", "finalized")
    assert row.end_wall == pytest.approx(1000.0 + row.end_ts - row.start_ts)
    index.close()


@pytest.mark.parametrize("failing", ["snapshot-exists", "rename-partial"])
def test_an_io_error_on_any_file_of_an_open_event_leaves_it_for_the_next_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    """Asking whether an open event's snapshot exists, or renaming its salvaged ``.partial``, hit an I/O error
    (a failing SD card): the OSError left recovery and the recorder could not start at all (restarted, it met
    the same file again). A snapshot that cannot be looked at is not proven missing: the row keeps naming it and
    is closed; any other disk error leaves the event as it is for the next start, like an unreadable clip."""
    data = tmp_path / "data"
    drive(data)
    (ev,) = rows(data)
    clip = data / ev["clip_path"]
    if failing == "rename-partial":
        clip = clip.rename(clip.with_name(clip.name + ".partial"))
    index = EventIndex(data)
    index.update(ev["id"], status="recording")
    snapshot = data / ev["snapshot_path"]
    real_exists, real_replace = Path.exists, os.replace

    def failing_exists(path: Path) -> bool:
        if path == snapshot:
            raise OSError(errno.EIO, "Input/output error", str(path))
        return real_exists(path)

    def failing_replace(src: Any, dst: Any) -> None:
        if str(src).endswith(".partial"):
            raise OSError(errno.EIO, "Input/output error", str(src))
        real_replace(src, dst)

    if failing == "snapshot-exists":
        monkeypatch.setattr(Path, "exists", failing_exists)
    else:
        monkeypatch.setattr(os, "replace", failing_replace)
    report = recover(index, data)  # no exception
    monkeypatch.undo()
    (after,) = rows(data)
    if failing == "snapshot-exists":
        assert report.unchecked == 0 and after["status"] == "finalized"
        assert after["snapshot_path"] == ev["snapshot_path"] and snapshot.exists()
    else:
        assert report.unchecked == 1 and after["status"] == "recording" and clip.exists()
        assert recover(EventIndex(data), data).unchecked == 0  # the next start finishes it
        assert [e["status"] for e in rows(data)] == ["recovered"]
    index.close()


def test_files_without_a_row_are_given_one_at_start_so_retention_reclaims_them(tmp_path: Path) -> None:
    """Files whose row is gone (retention deleted it and a power cut brought the unlinked files back) or never
    landed (a row kept in memory for a full disk, a playable ``.partial``) stayed on disk named by no event:
    never listed, never deleted, their space never reclaimed. Recovery gives each id its row back (as a rebuilt
    index does), checks a ``.partial`` among them like any open event's, and retention then manages them."""
    from edgevision.recorder.index_rebuild import ADOPTED_NOTE
    from edgevision.recorder.retention import RetentionPolicy, apply_retention

    data = tmp_path / "data"
    drive(data)
    (ev,) = rows(data)
    clip = data / ev["clip_path"]
    stray = clip.with_name("000002.mp4.partial")
    shutil.copy(clip, stray)
    index = EventIndex(data)
    index.delete(ev["id"])  # its files came back after a power cut
    report = recover(index, data, owner=("garden", "person"))
    got = {r.id: r for r in index.list()}
    assert sorted(got) == [1, 2] and report.adopted == 2
    back, partial = got[1], got[2]
    assert (back.status, back.clip_path, back.snapshot_path, back.thumb_path) == (
        "finalized",
        ev["clip_path"],
        ev["snapshot_path"],
        ev["thumb_path"],
    )
    assert back.note == ADOPTED_NOTE and back.camera == "garden" and back.end_sent == 1
    assert partial.status == "recovered" and (data / str(partial.clip_path)).exists() and not stray.exists()
    assert recover(index, data).adopted == 0  # once
    policy = RetentionPolicy(max_age_s=0.0, min_free_bytes=None, keep_newest=0)
    assert [i for i, _ in apply_retention(index, data, time.time() + 10, 1 << 40, policy)] == [1, 2]
    assert not list((data / "clips").rglob("*.mp4*")) and not list((data / "snapshots").iterdir())
    index.close()
