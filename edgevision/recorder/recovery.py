"""Start-up recovery, run before capture under the data-directory lock: nothing is left open after a crash.

The index row is the commit point; recovery completes whatever step a kill interrupted, and never deletes a
clip file it cannot prove broken. For each event still ``recording``:

* its ``.partial`` is cut back to the last fragment that decodes and renamed to the clip name (status
  ``recovered``); a ``.partial`` with no decodable fragment is proven broken and removed;
* a complete clip (the process died between the rename and the index row) is adopted: verified by decoding,
  hashed, status ``finalized``;
* only when no playable media exists is the event marked ``lost``; its statistics (kept current while it ran)
  stay either way, and ``end_sent = 0`` so the recorder announces its end like a live one.

Every step is idempotent, so recovery killed half-way is completed by the next one. A clip that cannot be *read*
(an I/O error from a failing card, no memory, on any of the event's files) proves nothing, and a row a full disk
does not take cannot be closed: its event and files stay as they are, for the next start to check. A ``finalized`` event whose
clip vanished is marked ``lost``; stray snapshot ``.tmp`` files and unreferenced ``.partial`` files with nothing
decodable are removed. Clips and snapshots whose id has no row (a row that never landed, files a power cut
brought back after retention deleted their row) are given one, so nothing on disk escapes ``events list`` and
retention; a playable ``.partial`` among them is then checked like any open event.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from edgevision.fsutil import fsync_dir, sha256_file
from edgevision.recorder.clip import PARTIAL_SUFFIX
from edgevision.recorder.clip_check import ClipUnreadable, inspect_clip, salvage_fragmented_mp4
from edgevision.recorder.faults import fault_point
from edgevision.recorder.index import EventIndex, EventRow
from edgevision.recorder.index_rebuild import adopt_orphans
from edgevision.recorder.index_writer import is_disk_error
from edgevision.recorder.lock import DataDirLock
from edgevision.recorder.snapshots import write_snapshot
from edgevision.recorder.space import DISK_ERRNOS

log = logging.getLogger(__name__)


@dataclass
class RecoveryReport:
    """What recovery did; ``closed`` lists the ids of events it closed (their ends are owed to listeners)."""

    recovered: int = 0
    completed: int = 0
    lost: int = 0
    orphans_removed: int = 0
    unchecked: int = 0  # events whose files could not be read (I/O error): left as they are
    adopted: int = 0  # events whose files had no row: given one
    closed: list[int] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"recovery: {self.recovered} clip(s) salvaged, {self.completed} finished, {self.lost} lost, "
            f"{self.orphans_removed} stray file(s) removed"
            + (f", {self.adopted} found without a row and given one" if self.adopted else "")
            + (f", {self.unchecked} left unchecked (read errors)" if self.unchecked else "")
        )


def _stills_landed(data_dir: Path, row: EventRow) -> dict[str, str]:
    """The snapshot, thumbnail and face crop a finish wrote for ``row`` before it was killed (they land before the
    row names them): their index columns, or {} when the row names its snapshot already or none landed."""
    snap, thumb = f"snapshots/{row.id:06d}.jpg", f"snapshots/{row.id:06d}-thumb.jpg"
    face = f"snapshots/{row.id:06d}-face.jpg"
    try:
        if row.snapshot_path and (data_dir / row.snapshot_path).exists():
            return {}
        if not ((data_dir / snap).exists() and (data_dir / thumb).exists()):
            return {}
        values = {"snapshot_path": snap, "thumb_path": thumb}
        if (data_dir / face).exists():
            values["face_path"] = face
    except OSError as exc:  # a still that cannot be looked at is not named; the event is closed all the same
        log.error("recovery: event %d: cannot look for its snapshot: %s", row.id, exc)
        return {}
    return values


def _end_wall(row: EventRow, end_ts: float) -> float:
    """When a closed event ended by the wall clock: its start plus its length on the frame clock (recovery runs
    at the next start, maybe hours after the kill or power cut: that is not when the event ended)."""
    return row.end_wall if row.end_wall is not None else row.start_wall + max(0.0, end_ts - row.start_ts)


def _mark_lost(index: EventIndex, data_dir: Path, row: EventRow, note: str, report: RecoveryReport) -> None:
    end_ts = row.end_ts if row.end_ts is not None else max(row.start_ts, row.best_ts or 0.0)
    # stills that landed stay named by the row: retention deletes them with it, and pages show them
    index.update(
        row.id,
        **_stills_landed(data_dir, row),
        status="lost",
        clip_path=None,
        end_wall=_end_wall(row, end_ts),
        end_sent=0,
        end_ts=end_ts,
        note=note,
    )
    report.lost += 1
    report.closed.append(row.id)
    log.warning("recovery: event %d lost (%s)", row.id, note)


def _exists(path: Path) -> bool:
    """Whether ``path`` exists; an error asking (EIO from a failing card) proves nothing: :class:`ClipUnreadable`."""
    try:
        return path.exists()
    except OSError as exc:
        raise ClipUnreadable(f"{path}: cannot be read: {exc}") from exc


def _exists_or_unreadable(path: Path) -> bool:
    """Whether ``path`` exists, True when asking fails (a file that cannot be read is not proven missing)."""
    try:
        return _exists(path)
    except ClipUnreadable as exc:
        log.error("recovery: %s", exc)
        return True


def _proves_nothing(exc: BaseException) -> bool:
    """Whether an error met recovering an event is the disk's (unreadable, full, read-only, failing), which
    proves nothing about the event's files: it is left for the next start. Anything else is a bug and raised."""
    if isinstance(exc, ClipUnreadable):
        return True
    if isinstance(exc, OSError):
        return exc.errno in DISK_ERRNOS
    return is_disk_error(exc)


def _recover_row(index: EventIndex, data_dir: Path, row: EventRow, report: RecoveryReport) -> None:
    if not row.clip_path:
        _mark_lost(index, data_dir, row, "process stopped while recording; no clip was being written", report)
        return
    clip = data_dir / row.clip_path
    partial = clip.with_name(clip.name + PARTIAL_SUFFIX)
    salvaged = 0
    if _exists(partial):
        salvaged = salvage_fragmented_mp4(partial)  # idempotent: cuts to fragments that decode
        fault_point("recover.salvaged")
        if salvaged == 0:
            log.warning("recovery: event %d: %s holds no decodable fragment; removed", row.id, partial.name)
            partial.unlink()
        elif _exists(clip) and inspect_clip(clip, want_middle=False).playable:
            # both exist only if something outside us copied files around: the renamed clip is the later state
            log.warning("recovery: event %d: both %s and its .partial exist; keeping the clip", row.id, clip)
            partial.unlink()
        else:
            os.replace(partial, clip)
            fault_point("recover.renamed")
            fsync_dir(clip.parent)
    if not _exists(clip):
        _mark_lost(
            index, data_dir, row, "process stopped while recording; no complete fragment survived", report
        )
        return
    check = inspect_clip(clip)
    if not check.playable:
        clip.unlink()  # proven broken: no header or not one fragment decodes
        fsync_dir(clip.parent)
        _mark_lost(index, data_dir, row, "process stopped while recording; the clip does not decode", report)
        return
    # a damaged tail is cut; damage inside the clip stays (the fragments after it play)
    if check.last_good < check.fragments:
        salvaged = salvage_fragmented_mp4(clip)
    try:
        sha, size = sha256_file(clip), clip.stat().st_size
    except OSError as exc:  # a read error proves nothing: the row and its clip stay for the next start
        raise ClipUnreadable(f"{clip}: cannot be read: {exc}") from exc
    fault_point("recover.hashed")
    start = row.clip_start_ts if row.clip_start_ts is not None else row.start_ts
    if salvaged:
        status, note = "recovered", f"salvaged after a crash: {salvaged} fragment(s), {check.frames} frame(s)"
    else:
        status, note = "finalized", "finished by start-up recovery (the process stopped before its index row)"
    end_ts = row.end_ts if row.end_ts is not None else start + check.duration_s
    values: dict[str, object] = {
        "status": status,
        "end_ts": end_ts,
        "end_wall": _end_wall(row, end_ts),
        "clip_frames": check.frames,
        "clip_start_ts": start,
        "clip_size": size,
        "clip_sha256": sha,
        "note": note,
        "end_sent": 0,
    }
    snap, thumb = f"snapshots/{row.id:06d}.jpg", f"snapshots/{row.id:06d}-thumb.jpg"
    if row.snapshot_path and _exists_or_unreadable(data_dir / row.snapshot_path):
        pass  # named already (a snapshot that cannot be looked at is not proven missing: still named)
    elif landed := _stills_landed(data_dir, row):  # written just before the kill
        values.update(landed)
    elif check.middle is not None:
        try:
            write_snapshot(data_dir / snap, data_dir / thumb, check.middle, [])
            values.update(snapshot_path=snap, thumb_path=thumb)
        except OSError as exc:
            log.error("recovery: event %d: cannot write snapshot: %s", row.id, exc)
    index.update(row.id, **values)
    report.closed.append(row.id)
    if salvaged:
        report.recovered += 1
        log.warning("recovery: event %d salvaged (%d frames)", row.id, check.frames)
    else:
        report.completed += 1
        log.warning("recovery: event %d: complete clip kept and finished (%d frames)", row.id, check.frames)


# How long checking a clip may take, by its size: every frame is decoded on one thread, up to three times when a
# fragment is damaged (clip_check.inspect_clip). Measured: 23 s for a 61 MB, 300 s 720p clip (one pass) on this x86
# core; a Pi 4 core is about 5x slower. So 60 s plus 6 s per MB (a 300 s clip: about 7 min).
CHECK_BASE_S = 60.0
CHECK_S_PER_MB = 6.0

Checking = Callable[[Path, int], None]  # (clip file, bytes) just before recovery decodes it


def check_allowance_s(size_bytes: int) -> float:
    """Seconds recovery may need to check a clip of ``size_bytes`` on a slow board (what a service manager's
    start timeout must allow)."""
    return CHECK_BASE_S + CHECK_S_PER_MB * size_bytes / 1e6


def recover(
    index: EventIndex,
    data_dir: Path,
    checking: Checking | None = None,
    owner: tuple[str, str] | None = None,
) -> RecoveryReport:
    """Close every event a crash left open; returns what was done (also logged).

    Takes the data-directory lock (re-entrant for the recorder that holds it); raises
    :class:`~edgevision.recorder.lock.DataDirBusy` when another process owns the directory. ``checking`` is
    called with each clip file and its size before it is decoded (minutes for a long clip on a Pi: the service
    extends its start timeout by :func:`check_allowance_s`). Clips and snapshots whose id has no row are given
    one (:func:`~edgevision.recorder.index_rebuild.adopt_orphans`) with ``owner``'s camera and label (default:
    the newest row's), so retention manages them; a ``.partial`` among them is checked like any open event.
    """
    report = RecoveryReport()
    announced: set[Path] = set()

    def announce(*paths: Path) -> None:  # the files about to be decoded, at once: their allowance adds up
        there = [p for p in paths if p not in announced and _exists(p)]
        announced.update(there)  # a stray .partial checked before it was adopted is not announced twice
        if checking is not None and there:
            try:
                size = sum(p.stat().st_size for p in there)
            except OSError as exc:
                raise ClipUnreadable(f"{there[0]}: cannot be read: {exc}") from exc
            checking(there[0], size)

    with DataDirLock(data_dir, "recovery"):
        _remove_strays(index, data_dir, report, announce)
        try:
            adopted = adopt_orphans(index, data_dir, *(owner or _newest_owner(index)))
        except sqlite3.OperationalError as exc:  # a full disk: they are adopted at a later start
            if not is_disk_error(exc):
                raise
            log.error("recovery: files without a row cannot be given one now: %s", exc)
            adopted = []
        if adopted:
            report.adopted = len(adopted)
            log.warning("recovery: files of %d event(s) had no row; given one: %s", len(adopted), adopted)
        for row in index.list(status="recording"):
            try:
                if row.clip_path:
                    clip = data_dir / row.clip_path
                    announce(clip.with_name(clip.name + PARTIAL_SUFFIX), clip)
                _recover_row(index, data_dir, row, report)
            except (OSError, sqlite3.OperationalError) as exc:
                # a read error proves nothing (an unreadable clip, EIO asking for, renaming or removing any of the
                # event's files), and a row the full disk does not take cannot be closed: files and row stay for
                # the next start (raised, a failing card or a full disk stopped every start, and with it the
                # retention that would have freed the space)
                if not _proves_nothing(exc):
                    raise
                report.unchecked += 1
                log.error(
                    "recovery: event %d left as it is: %s; checked again at the next start", row.id, exc
                )
        for row in index.list():
            if (
                row.status == "finalized"
                and row.clip_path
                and not _exists_or_unreadable(data_dir / row.clip_path)
            ):
                try:
                    index.update(row.id, status="lost", note="clip file missing at start-up")
                except sqlite3.OperationalError as exc:
                    if not is_disk_error(exc):
                        raise
                    log.error("recovery: event %d: its missing clip cannot be noted: %s", row.id, exc)
                    continue
                report.lost += 1
    if report.recovered or report.completed or report.lost or report.orphans_removed or report.adopted:
        log.warning("%s", report.line())
    return report


def _newest_owner(index: EventIndex) -> tuple[str, str]:
    """The camera and label of the newest row, for files found without theirs."""
    rows = index.list()
    return (rows[-1].camera, rows[-1].label) if rows else ("camera", "person")


def _remove_strays(
    index: EventIndex, data_dir: Path, report: RecoveryReport, announce: Callable[..., None]
) -> None:
    """Remove half-written snapshots and the ``.partial`` files no row names that hold nothing decodable (before
    files without a row are adopted: junk never becomes an event); a playable one stays, to be adopted."""
    referenced: set[Path] = set()
    for row in index.list():
        for rel in (row.clip_path, row.snapshot_path, row.thumb_path, row.face_path):
            if rel:
                referenced.add(data_dir / rel)
                referenced.add(data_dir / (rel + PARTIAL_SUFFIX))
    # half-written snapshots (the real file is written by rename); only in snapshots/: the data directory
    # may hold the models and other cameras' data directories (/var/lib/edgevision), their .tmp in flight
    for stray in data_dir.glob("snapshots/*.tmp"):
        stray.unlink(missing_ok=True)
        report.orphans_removed += 1
    for stray in data_dir.glob("clips/**/*" + PARTIAL_SUFFIX):
        if stray in referenced:
            continue
        try:
            announce(stray)
            kept = salvage_fragmented_mp4(stray)
        except ClipUnreadable as exc:
            log.error("recovery: %s left in place: %s", stray, exc)
            continue
        if kept == 0:
            stray.unlink(missing_ok=True)
            report.orphans_removed += 1
        else:
            log.warning("recovery: %s belongs to no event but holds playable video: kept", stray)
