"""Pure pieces of the recorder: mode transitions, the index write queue, the data-directory lock."""

from __future__ import annotations

import errno
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edgevision.recorder import snapshots as snapshots_mod
from edgevision.recorder.index import EventIndex
from edgevision.recorder.index_writer import IndexWriter, is_disk_error
from edgevision.recorder.lock import DataDirBusy, DataDirLock
from edgevision.recorder.mode import RECORD_FLOOR_BYTES, Mode, after_failure, after_space_check, record_floor
from edgevision.recorder.snapshots import EventStills
from edgevision.results.detection import BBox, Detection
from edgevision.results.face import Face
from edgevision.results.frame import Frame

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


def test_two_retention_passes_never_both_delete_for_the_same_shortfall(tmp_path: Path) -> None:
    """Retention runs on its timer thread and on the recorder thread (free space below ``min_free`` at a space
    check). A pass that measured free space before the other deleted, and read the index after, deleted again
    for space already freed: here four events for a shortfall of two. One pass at a time, each on the free space
    measured under its lock, deletes exactly what is needed."""
    import threading

    import recorder_driver as drv

    from edgevision.recorder.recorder import Recorder
    from edgevision.recorder.retention import RetentionPolicy

    data = tmp_path / "data"
    index = EventIndex(data)
    clips = _finalized_clips(index, data, 5, 1000, start=lambda i: float(i))
    index.close()
    total = 13_500  # free = total - what the clips use: 8500, 1500 short of min_free, two events' worth

    def measure() -> int:
        return total - sum(c.stat().st_size for c in clips if c.exists())

    recorder_measured = threading.Event()
    calls: dict[str, int] = {}

    def free_bytes(path: Path) -> int:
        name = threading.current_thread().name
        calls[name] = calls.get(name, 0) + 1
        free = measure()
        if name == "retention" and calls[name] == 1:
            recorder_measured.wait(
                2.0
            )  # the recorder thread's check runs meanwhile (its pass waits for none)
        elif name == "recorder":
            recorder_measured.set()
        return free

    rec = Recorder(
        drv.settings(
            data,
            retention=RetentionPolicy(max_age_s=None, min_free_bytes=10_000, keep_newest=0),
            retention_interval_s=3600.0,
            space_check_s=3600.0,
        ),
        blocking=True,
        free_bytes=free_bytes,
    )
    deadline = time.monotonic() + 10
    while (rec.retention.runs < 1 or not recorder_measured.is_set()) and time.monotonic() < deadline:
        time.sleep(0.05)
    rec.close()
    assert [c.exists() for c in clips] == [False, False, True, True, True]
    assert [r.id for r in EventIndex(data).list()] == [3, 4, 5]


# -- the snapshot output (EventStills) ------------------------------------------------------------------------


class _Picture:
    """A decoded picture that counts how often its full-resolution image is made."""

    def __init__(self, value: int) -> None:
        self.value, self.conversions = value, 0

    @property
    def size(self) -> tuple[int, int]:
        return (64, 48)

    def model_input(self, width: int, height: int, pixel_format: str = "rgb24") -> np.ndarray:
        return np.zeros((height, width, 3), np.uint8)

    def bgr(self) -> np.ndarray:
        self.conversions += 1
        return np.full((48, 64, 3), self.value, np.uint8)


def _face(score: float) -> Face:
    return Face(score, BBox(0.25, 0.25, 0.5, 0.5), {})


def _person(score: float) -> Detection:
    return Detection("person", 0, score, BBox(0.1, 0.1, 0.6, 0.9))


# (best flag of each offered frame, face score or None per frame) -> index of the kept frame, of the face frame
@pytest.mark.parametrize(
    ("best", "faces", "kept", "face_kept"),
    [
        ([True, False, False], [None, None, None], 0, None),
        ([False, False], [None, None], 0, None),  # nothing marked best: the first frame is kept
        ([True, False, True], [0.9, 0.7, None], 2, 0),  # the later best frame; the higher face
        ([True, True, False], [0.6, 0.8, 0.95], 1, 2),  # the face can come from a frame that is not the best
        ([True, False], [0.8, 0.8], 0, 0),  # a tie keeps the first face
    ],
)
def test_event_stills_pick(
    best: list[bool], faces: list[float | None], kept: int, face_kept: int | None
) -> None:
    pictures = [_Picture(10 * (i + 1)) for i in range(len(best))]
    frames = [Frame.lazy(p, float(i), i, "cam") for i, p in enumerate(pictures)]
    stills = EventStills(store_face=True)
    for f, b, s in zip(frames, best, faces, strict=True):
        stills.offer(f, b, [_person(0.7)], None if s is None else [_face(s)])
    assert stills.frame is frames[kept]
    assert (stills.face[0] if stills.face else None) is (None if face_kept is None else frames[face_kept])
    assert sum(p.conversions for p in pictures) == 0  # offering never decodes


def test_event_stills_write_decodes_once_and_names_what_landed(tmp_path: Path) -> None:
    pictures = [_Picture(50), _Picture(200)]
    frames = [Frame.lazy(p, float(i), i, "cam") for i, p in enumerate(pictures)]
    stills = EventStills(thumb_width=32, store_face=True)
    stills.offer(frames[0], True, [_person(0.8)], [_face(0.9)])
    stills.offer(frames[1], False, [_person(0.6)], [_face(0.5)])
    values: dict[str, object] = {}
    stills.write(tmp_path, 7, values)
    assert values == {
        "snapshot_path": "snapshots/000007.jpg",
        "thumb_path": "snapshots/000007-thumb.jpg",
        "face_path": "snapshots/000007-face.jpg",
    }
    assert [p.conversions for p in pictures] == [1, 0]  # one full image, for the best frame and its face
    thumb = cv2.imread(str(tmp_path / "snapshots/000007-thumb.jpg"))
    assert thumb is not None and thumb.shape[1] == 32
    crop = cv2.imread(str(tmp_path / "snapshots/000007-face.jpg"))
    assert crop is not None and 0 < crop.shape[1] < 64 and abs(int(crop.mean()) - 50) <= 3

    # the best face on a frame that is not the best: the crop is cut from the face's own frame
    pictures = [_Picture(50), _Picture(200)]
    frames = [Frame.lazy(p, float(i), i, "cam") for i, p in enumerate(pictures)]
    stills = EventStills(thumb_width=32, store_face=True)
    stills.offer(frames[0], True, [_person(0.8)], [_face(0.5)])
    stills.offer(frames[1], False, [_person(0.6)], [_face(0.9)])
    stills.write(tmp_path, 8, {})
    crop = cv2.imread(str(tmp_path / "snapshots/000008-face.jpg"))
    assert crop is not None and abs(int(crop.mean()) - 200) <= 3
    assert [p.conversions for p in pictures] == [1, 1]


def _disk_full_on(suffix: str) -> Callable[..., int]:
    """``write_jpeg`` that fails with ENOSPC for files ending in ``suffix`` and writes the others."""
    write_jpeg = snapshots_mod.write_jpeg

    def write(path: Path, image: np.ndarray, quality: int = 90) -> int:
        if path.name.endswith(suffix):
            raise OSError(errno.ENOSPC, "No space left on device")
        return write_jpeg(path, image, quality)

    return write


def test_event_stills_without_face_crops_and_on_a_disk_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    frame = Frame.lazy(_Picture(80), 0.0, 0, "cam")
    stills = EventStills(store_face=False)
    stills.offer(frame, True, [], [_face(0.99)])
    assert stills.face is None  # privacy: no face is kept at all

    face_fails = _disk_full_on("-face.jpg")
    stills = EventStills(store_face=True)
    stills.offer(frame, True, [], [_face(0.99)])
    monkeypatch.setattr(snapshots_mod, "write_jpeg", face_fails)
    values: dict[str, object] = {}
    with pytest.raises(OSError):
        stills.write(tmp_path, 2, values)
    # the row names what landed (snapshot, thumbnail), never the face crop that did not
    assert values == {"snapshot_path": "snapshots/000002.jpg", "thumb_path": "snapshots/000002-thumb.jpg"}
    assert (tmp_path / "snapshots/000002.jpg").exists() and not (
        tmp_path / "snapshots/000002-face.jpg"
    ).exists()


def test_event_stills_name_the_snapshot_when_only_its_thumbnail_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the disk fills between the snapshot and its thumbnail: the snapshot landed, so the row must name it (or
    # retention never deletes that picture of a person: nothing else lists it)
    thumb_fails = _disk_full_on("-thumb.jpg")
    stills = EventStills(store_face=True)
    stills.offer(Frame.lazy(_Picture(80), 0.0, 0, "cam"), True, [_person(0.8)], [_face(0.9)])
    monkeypatch.setattr(snapshots_mod, "write_jpeg", thumb_fails)
    values: dict[str, object] = {}
    with pytest.raises(OSError):
        stills.write(tmp_path, 3, values)
    assert (tmp_path / "snapshots/000003.jpg").exists()
    assert values == {"snapshot_path": "snapshots/000003.jpg"}


def test_event_stills_a_failed_write_leaves_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    stills = EventStills()
    stills.offer(Frame.lazy(_Picture(80), 0.0, 0, "cam"), True, [_person(0.8)], None)
    monkeypatch.setattr(snapshots_mod.os, "fsync", full)
    values: dict[str, object] = {}
    with pytest.raises(OSError):
        stills.write(tmp_path, 4, values)
    assert values == {} and list((tmp_path / "snapshots").iterdir()) == []  # no half-written .tmp holds space


@pytest.mark.parametrize(
    "box",
    [BBox(1.0, 0.2, 1.0, 0.4), BBox(0.2, 1.0, 0.4, 1.0), BBox(0.5, 0.5, 0.5, 0.5)],
    ids=["right-edge", "bottom-edge", "empty"],
)
def test_event_stills_a_face_box_with_nothing_to_crop_is_skipped(tmp_path: Path, box: BBox) -> None:
    # a face clipped to the frame's edge has no pixels: the event still gets its snapshot, and the recorder
    # is not brought down by an encoder error on an empty image
    stills = EventStills(thumb_width=32, store_face=True)
    stills.offer(Frame.lazy(_Picture(80), 0.0, 0, "cam"), True, [_person(0.8)], [Face(0.9, box, {})])
    values: dict[str, object] = {}
    stills.write(tmp_path, 5, values)
    assert set(values) <= {"snapshot_path", "thumb_path", "face_path"}
    assert values["snapshot_path"] == "snapshots/000005.jpg" and "thumb_path" in values
    if "face_path" in values:
        assert cv2.imread(str(tmp_path / str(values["face_path"]))) is not None


@pytest.mark.parametrize("failing_call", [1, 2, 3], ids=["first-measure", "in-the-pass", "after-the-pass"])
def test_free_space_that_cannot_be_read_skips_the_check_and_never_stops_recording(
    tmp_path: Path, failing_call: int
) -> None:
    """A space check below min_free measures, runs a retention pass (which measures under its lock) and measures
    again. A statfs failing in the pass or after it used to escape and stop the recorder thread."""
    from edgevision.recorder.mode import Mode
    from edgevision.recorder.retention import RetentionPolicy
    from edgevision.recorder.space import DiskSpace

    calls = 0

    def free_bytes(path: Path) -> int:
        nonlocal calls
        calls += 1
        if calls == failing_call:
            raise OSError(errno.EIO, "Input/output error")
        return 10

    index = EventIndex(tmp_path)
    disk = DiskSpace(
        tmp_path, RetentionPolicy(max_age_s=None, min_free_bytes=1000), index, free_bytes, lambda: 0.0, 1.0
    )
    disk.check(force=True)  # no exception
    assert calls == (1 if failing_call == 1 else 3)
    # measured below the floor after the pass: no clip starts; not measured: the mode stays as it was
    assert disk.mode is (Mode.SNAPSHOTS_ONLY if failing_call == 2 else Mode.NORMAL)
    index.close()


@pytest.mark.parametrize("failing", ["unlink", "stat"])
def test_a_file_retention_cannot_touch_skips_its_event_and_never_stops_recording(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    """An I/O error unlinking or measuring one event's file (a bad sector, a card remounted read-only) escaped the
    retention pass: the timer thread died with it and the recorder raised it at the next frame, so the run stopped,
    and the pass at the next start met the same file. The event is skipped (its row and files stay for a later
    pass) and the other events are still deleted."""
    from edgevision.recorder.retention import RetentionPolicy, apply_retention

    index = EventIndex(tmp_path)
    clips = _finalized_clips(index, tmp_path, 3, 100, start=lambda i: 0.0)
    bad = clips[0]
    real = getattr(Path, failing)

    def broken(self: Path, *a: Any, **k: Any) -> Any:
        if self == bad:
            raise OSError(errno.EIO, "Input/output error", str(self))
        return real(self, *a, **k)

    monkeypatch.setattr(Path, failing, broken)
    policy = RetentionPolicy(max_age_s=10.0, min_free_bytes=None, keep_newest=0)
    plan = apply_retention(index, tmp_path, 5000.0, 1 << 40, policy)  # no exception
    monkeypatch.undo()
    kept = [r.id for r in index.list()]
    if failing == "unlink":
        assert kept == [1] and bad.exists()  # the row still names the file it could not delete
        assert plan == [(2, "max_age"), (3, "max_age")]  # what was deleted (events prune prints it)
    else:
        assert kept == [] and not bad.exists()  # an unknown size does not stop the deletion
        assert [event_id for event_id, _ in plan] == [1, 2, 3]
    assert not clips[1].exists() and not clips[2].exists()
    index.close()


def test_an_id_whose_row_never_landed_is_not_reused_for_new_files(tmp_path: Path) -> None:
    """A row that waited in memory for a full disk (IndexWriter) and never landed (the process was killed, or
    stopped before space came back) left its clip and snapshot on disk, named by its id, with no row. The next
    start numbered from the index alone, gave that id to its first event and overwrote those files (a clip is
    opened with "wb", a snapshot replaced by rename): a recording lost. Ids start above every file's too."""
    import recorder_driver as drv

    from edgevision.recorder.recorder import Recorder

    data = tmp_path / "data"
    index = EventIndex(data)
    index.create("cam", "person", 0.0, 0, status="finalized")  # id 1, the last row that landed
    index.close()
    orphans = {
        data / "clips/20240101/000003.mp4": b"clip of event 3",
        data / "clips/20240102/000004.mp4.partial": b"clip of event 4",
        data / "snapshots/000005.jpg": b"snapshot of event 5",
    }
    for path, content in orphans.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    rec = Recorder(drv.settings(data), blocking=True)
    try:
        assert rec.writer.next_id_preview() == 6
    finally:
        rec.close()
    assert all(path.read_bytes() == content for path, content in orphans.items() if path.exists())


def test_retention_makes_an_events_deletions_durable_before_its_row_goes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Retention unlinked an event's files and deleted its row (a synchronous commit) without fsyncing the
    directories: after a power cut the row stayed deleted while the files came back, named by no event: never
    listed, never deleted, their space never reclaimed. Each directory that lost a file is fsync'd before the
    row goes."""
    from edgevision.recorder import retention
    from edgevision.recorder.retention import RetentionPolicy, apply_retention

    index = EventIndex(tmp_path)
    files = ["clips/20240101/000001.mp4", "snapshots/000001.jpg", "snapshots/000001-thumb.jpg"]
    for rel in files:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    index.create(
        "cam", "person", 0.0, 0, start_wall=1000.0, status="finalized",
        clip_path=files[0], snapshot_path=files[1], thumb_path=files[2],
    )  # fmt: skip
    steps: list[str] = []
    real_delete = index.delete

    def delete(event_id: int) -> None:
        steps.append("delete")
        real_delete(event_id)

    monkeypatch.setattr(retention, "fsync_dir", lambda path: steps.append(f"fsync {path.name}"))
    monkeypatch.setattr(index, "delete", delete)
    policy = RetentionPolicy(max_age_s=10.0, min_free_bytes=None, keep_newest=0)
    assert apply_retention(index, tmp_path, 5000.0, 1 << 40, policy) == [(1, "max_age")]
    assert sorted(steps[:-1]) == ["fsync 20240101", "fsync snapshots"] and steps[-1] == "delete"
    assert index.list() == [] and not any((tmp_path / rel).exists() for rel in files)
    index.close()


def test_close_never_closes_the_index_under_a_retention_pass_and_a_pass_stops_between_events(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``close()`` gave the retention timer 30 s to stop, then closed the index and released the directory lock
    even while a pass (thousands of deletions after ``max_age_days`` was lowered, minutes on an SD card) went on
    deleting: its next row delete failed on the closed index with the event's files already gone, and another
    process could take the directory meanwhile. A pass now stops between two events when asked; one that does not
    stop in time (a card that hangs) keeps the index open and the directory locked, and close() says so."""
    import threading

    import recorder_driver as drv

    from edgevision.recorder.recorder import Recorder
    from edgevision.recorder.retention import RetentionPolicy, RetentionTimer

    data = tmp_path / "data"
    index = EventIndex(data)
    clips = _finalized_clips(index, data, 3, 1, start=lambda i: 0.0)
    index.close()
    inside, release = threading.Event(), threading.Event()
    real_unlink, real_stop = Path.unlink, RetentionTimer.stop

    def slow_unlink(self: Path, *a: Any, **k: Any) -> None:
        if self == clips[0]:  # the card is slow on the first event's clip
            inside.set()
            release.wait()
        real_unlink(self, *a, **k)

    monkeypatch.setattr(Path, "unlink", slow_unlink)
    # the pass is held until released: the timeout only keeps the test short
    monkeypatch.setattr(RetentionTimer, "stop", lambda self, timeout=30.0: real_stop(self, 0.01))
    policy = RetentionPolicy(max_age_s=10.0, min_free_bytes=None, keep_newest=0)
    rec = Recorder(drv.settings(data, retention=policy), blocking=True)
    assert inside.wait(30)
    with pytest.raises(RuntimeError, match="retention"):
        rec.close()
    release.set()
    rec.retention._thread.join(30)
    assert rec.retention.error is None  # the event being deleted was deleted whole: files, then its row
    assert [r.id for r in rec.index.list()] == [2, 3] and clips[1].exists()  # then the pass stopped
    rec.index.close()
    rec._dir_lock.release()


@pytest.mark.parametrize("force", [False, True], ids=["periodic-check", "clip-about-to-start"])
def test_the_recorder_thread_never_waits_for_the_timers_pass_and_deletes_for_space_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, force: bool
) -> None:
    """Below ``min_free`` the recorder thread's space check — the periodic one, and the forced one at an
    event's start — waited for the timer thread's retention pass (thousands of deletions after
    ``max_age_days`` was lowered: an unlink and a synchronous index delete each, minutes on an SD card): no
    packet moved, the capture's bounded feed overflowed and the clip lost its video (or its start).
    Uncontended, it ran the whole pass itself, age and size rules included, on the recorder thread. It now
    leaves the space to a pass that runs (it measures again next time), and its own pass deletes for free
    space alone."""
    import threading

    from edgevision.recorder import space
    from edgevision.recorder.retention import RetentionPolicy
    from edgevision.recorder.space import DiskSpace

    inside, release = threading.Event(), threading.Event()
    passes: list[tuple[str, RetentionPolicy]] = []

    def slow_pass(
        index: EventIndex, data: Path, now: float, free: int, policy: RetentionPolicy, **k: Any
    ) -> list:
        passes.append((threading.current_thread().name, policy))
        if len(passes) == 1:
            inside.set()
            release.wait()
        return []

    monkeypatch.setattr(space, "apply_retention", slow_pass)
    index = EventIndex(tmp_path)
    policy = RetentionPolicy(max_age_s=86400.0, max_total_bytes=1 << 30, min_free_bytes=1000)
    disk = DiskSpace(tmp_path, policy, index, lambda p: 10, lambda: 0.0, 1.0)
    timer = threading.Thread(target=disk.retention_pass, name="retention")
    timer.start()
    assert inside.wait(30)
    checker = threading.Thread(target=disk.check, kwargs={"force": force}, name="recorder")
    checker.start()
    checker.join(30)  # a failure detector, not a time limit: on the old code it waits until release
    waited = checker.is_alive()
    release.set()
    timer.join(30)
    checker.join(30)
    assert not waited and [name for name, _ in passes] == ["retention"]
    assert disk.mode is Mode.SNAPSHOTS_ONLY  # measured below the floor all the same: no clip
    disk.check(force=True)  # no pass runs: the recorder thread's own deletes for free space alone
    assert [name for name, _ in passes] == ["retention", "MainThread"]
    assert passes[1][1] == RetentionPolicy(max_age_s=None, max_total_bytes=None, min_free_bytes=1000)
    assert passes[0][1] == policy  # the timer's pass applies every rule
    index.close()


def test_the_close_log_says_what_becomes_of_writes_a_full_disk_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Closed while the index could not be written, the recorder logged that start-up recovery would close the
    events its queued writes belonged to. Recovery only closes rows that landed: an event whose row never did has
    nothing to close. The log now counts those apart and says what the next start does (gives their files a
    row back), which the next start then does."""
    import recorder_driver as drv

    from edgevision.recorder.index_rebuild import ADOPTED_NOTE
    from edgevision.recorder.recorder import Recorder
    from edgevision.recorder.recovery import recover

    data = tmp_path / "data"
    index = FlakyIndex(data)
    index.full = True
    rec = Recorder(drv.settings(data), blocking=True, index=index)
    with caplog.at_level("ERROR"):
        drv.record(data, 10.0, 6.0, [(1.0, 4.0)], recorder=rec)
    (line,) = [r.getMessage() for r in caplog.records if "could not be saved" in r.getMessage()]
    assert "1 event(s) whose row never landed" in line and "given a row from their files" in line
    again = EventIndex(data)  # the next start, with room on the disk
    assert again.list() == []
    assert recover(again, data).adopted == 1  # does what the log said
    (row,) = again.list()
    assert row.note == ADOPTED_NOTE and row.clip_path and row.snapshot_path
    again.close()


def test_an_events_start_is_stamped_when_its_trigger_frame_was_captured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A row's ``start_wall`` (and its boot clock, which ages it for retention) was read when the recorder thread
    got to the event's start: after the detector's latency and the hand-off queue, seconds late on a busy Pi. It
    is now the clock when the trigger frame left the camera (``captured_at``)."""
    import recorder_driver as drv

    from edgevision.recorder import index_writer, wallclock
    from edgevision.recorder.recorder import Recorder
    from edgevision.recorder.wallclock import BootClock
    from edgevision.results import FrameResult, Latency

    now = BootClock("boot", 100_000.0, 1_000_000_000.0)  # the clocks when the recorder reads them
    monkeypatch.setattr(wallclock, "read_boot_clock", lambda *a: now)
    monkeypatch.setattr(index_writer, "read_boot_clock", lambda *a: now, raising=False)
    data = tmp_path / "data"
    rec = Recorder(drv.settings(data), blocking=True)
    for r in drv.results(10.0, 3.0, [(0.5, 3.0)]):
        frame = r.frame
        late = Frame(frame.image, frame.ts, frame.index, frame.source_id, captured_at=time.monotonic() - 5.0)
        rec.on_result(FrameResult(late, r.detections, Latency(), "m"))  # each frame reaches it 5 s late
    rec.close()
    (row,) = EventIndex(data).list()
    assert row.start_wall <= now.wall - 5.0  # not when the recorder got to it
    assert row.start_boot is not None and row.start_boot - now.boottime == pytest.approx(
        row.start_wall - now.wall
    )


@pytest.mark.parametrize("seconds", [6.0, 3.0], ids=["ended-by-a-frame", "ended-at-close"])
def test_an_events_end_is_stamped_when_it_ended_not_when_the_recorder_got_to_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seconds: float
) -> None:
    """``end_wall`` (MQTT's ``end_time``, ``events show``) was read when the recorder thread closed the row: after
    the detector's latency and the hand-off queue, as the start was. It is now the clock as of the capture of the
    frame the end came with, moved by where the end lies from that frame on the frame clock: an event ends its
    frame-clock length after it started, however late its frames reach the recorder (here 5 s each)."""
    import recorder_driver as drv

    from edgevision.recorder import wallclock
    from edgevision.recorder.recorder import Recorder
    from edgevision.recorder.wallclock import BootClock
    from edgevision.results import FrameResult, Latency

    t0 = time.monotonic()

    def clock(*a: Any) -> BootClock:  # a wall clock far from the real one, running with time.monotonic()
        return BootClock("boot", 100_000.0 + time.monotonic() - t0, 1_000_000_000.0 + time.monotonic() - t0)

    monkeypatch.setattr(wallclock, "read_boot_clock", clock)
    data = tmp_path / "data"
    rec = Recorder(drv.settings(data), blocking=True)
    base = t0 - 5.0 - seconds  # a live camera: frame ts and capture time advance together
    for r in drv.results(10.0, seconds, [(0.5, 2.0)]):  # a person from 0.5 s to 2 s, post-roll 1 s
        frame = r.frame
        late = Frame(frame.image, frame.ts, frame.index, frame.source_id, captured_at=base + frame.ts)
        rec.on_result(FrameResult(late, r.detections, Latency(), "m"))
    rec.close()
    (row,) = EventIndex(data).list()
    assert row.end_ts is not None and row.end_wall is not None
    assert row.end_wall - row.start_wall == pytest.approx(row.end_ts - row.start_ts, abs=1e-3)
    assert row.end_wall < clock().wall - 4.0  # not when the recorder got to it (about now)


def _finalized_clips(
    index: EventIndex, root: Path, n: int, size: int, start: Callable[[int], float]
) -> list[Path]:
    """``n`` finalized events (ids 1..n, recorded at wall 1000 + i) each with a clip of ``size`` bytes."""
    clips = []
    for i in range(n):
        rel = f"clips/20240101/{i + 1:06d}.mp4"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x" * size)
        clips.append(root / rel)
        index.create("cam", "person", start(i), 0, start_wall=1000.0 + i, status="finalized", clip_path=rel)
    return clips
