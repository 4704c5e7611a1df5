"""Retention: which events to delete, as a pure function of the index, the clock and the free space.

Oldest first; never an event that is still recording. Age and total-size limits are the user's; the free-space
rule only deletes what is needed and always keeps the newest ``keep_newest`` events, so a disk filled by
something else never costs every recording. It deletes nothing at all when deleting every candidate would still
not reach ``min_free``: emptying a small card would not make room for anything (the recorder still records as
long as a clip fits). Deletions for space are logged at WARNING.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from edgevision.fsutil import fsync_dir
from edgevision.recorder.index import EventIndex, EventRow
from edgevision.recorder.wallclock import BootClock, read_boot_clock, true_starts

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetentionPolicy:
    """Limits; None disables a rule."""

    max_age_s: float | None = 30 * 86400.0
    max_total_bytes: int | None = None
    min_free_bytes: int | None = 1 << 30
    keep_newest: int = 1


@dataclass(frozen=True)
class StoredEvent:
    """What retention needs to know of one event."""

    id: int
    status: str
    start_wall: float  # the true start, as far as it is known (see recorder/wallclock.py)
    size: int


def plan_retention(
    events: Sequence[StoredEvent], now: float, free_bytes: int, policy: RetentionPolicy
) -> list[tuple[int, str]]:
    """Events to delete, oldest first, each with the rule that selected it.

    "Oldest" is recording order (the id, which only grows), not the wall clock: a Pi without a real-time clock
    starts from a saved time and jumps when it syncs, so ``start_wall`` can run backwards. Only the age limit
    reads the start, and :func:`apply_retention` gives it the true one
    (:func:`~edgevision.recorder.wallclock.true_starts`)."""
    candidates = sorted((e for e in events if e.status != "recording"), key=lambda e: e.id)
    chosen: dict[int, str] = {}
    if policy.max_age_s is not None:
        for e in candidates:
            if now - e.start_wall > policy.max_age_s:
                chosen[e.id] = "max_age"
    if policy.max_total_bytes is not None:
        total = sum(e.size for e in events) - sum(e.size for e in candidates if e.id in chosen)
        for e in candidates:
            if total <= policy.max_total_bytes:
                break
            if e.id not in chosen:
                chosen[e.id] = "max_total_size"
                total -= e.size
    if policy.min_free_bytes is not None:
        free = free_bytes + sum(e.size for e in candidates if e.id in chosen)
        protected = {e.id for e in candidates[-policy.keep_newest :]} if policy.keep_newest > 0 else set()
        deletable = [e for e in candidates if e.id not in chosen and e.id not in protected]
        if free < policy.min_free_bytes <= free + sum(e.size for e in deletable):
            for e in deletable:
                if free >= policy.min_free_bytes:
                    break
                chosen[e.id] = "min_free_space"
                free += e.size
    return [(e.id, chosen[e.id]) for e in candidates if e.id in chosen]


def event_files(row: EventRow, data_dir: Path) -> list[Path]:
    return [data_dir / p for p in (row.clip_path, row.snapshot_path, row.thumb_path, row.face_path) if p]


def event_size(row: EventRow, data_dir: Path) -> int:
    """Bytes the event's files hold; a file that is gone or cannot be measured (an I/O error) counts nothing."""
    size = 0
    for p in event_files(row, data_dir):
        try:
            size += p.stat().st_size
        except FileNotFoundError:
            continue
        except OSError as exc:  # one bad file must not stop retention (nor, through it, the recorder)
            log.warning("retention: cannot measure %s: %s", p, exc)
    return size


def free_space(path: Path) -> int:
    """Bytes available to this user on the filesystem holding ``path``."""
    return shutil.disk_usage(path).free


def apply_retention(
    index: EventIndex,
    data_dir: Path,
    now: float,
    free_bytes: int,
    policy: RetentionPolicy,
    dry_run: bool = False,
    clock: BootClock | None = None,
    stop: threading.Event | None = None,
) -> list[tuple[int, str]]:
    """Delete what :func:`plan_retention` selects: files first (their directories fsync'd), then the index row.
    Returns what was deleted (an event whose files cannot be deleted is kept), or with ``dry_run`` what would be.

    Events are aged on ``now`` from their true starts (``clock``: the boot clock, read now when not given), and
    the running boot's offset is saved for later boots (not by a dry run). With ``stop`` set, the pass ends
    between two events (one event's deletion, files then row, is never left half done by a stop)."""
    clock = clock or read_boot_clock()
    rows = {r.id: r for r in index.list()}
    starts = true_starts([r.stamp for r in rows.values()], clock, index.boot_offsets())
    stored = [StoredEvent(r.id, r.status, starts[r.id], event_size(r, data_dir)) for r in rows.values()]
    plan = plan_retention(stored, now, free_bytes, policy)
    if dry_run:
        return plan
    deleted: list[tuple[int, str]] = []
    for event_id, rule in plan:
        if (
            stop is not None and stop.is_set()
        ):  # the owner is closing: the index must not close under a delete
            break
        row = rows[event_id]
        try:
            files = event_files(row, data_dir)
            for path in files:
                path.unlink(missing_ok=True)
            # durable before the row goes: after a power cut, files whose row is gone would come back named by
            # no event (never listed, never deleted)
            for parent in sorted({path.parent for path in files}):
                with contextlib.suppress(FileNotFoundError):  # a directory gone brings nothing back
                    fsync_dir(parent)
        except OSError as exc:
            # a bad sector or a card remounted read-only: the row keeps naming what is left, a later pass
            # tries again, and the other events are still deleted (raised, it stopped the recorder)
            log.error("retention: event %d kept: cannot delete its files: %s", event_id, exc)
            continue
        index.delete(event_id)
        deleted.append((event_id, rule))
        if rule == "min_free_space":
            log.warning(
                "retention: deleted event %d to free space (%d MiB free, min_free %d MiB)",
                event_id,
                free_bytes >> 20,
                (policy.min_free_bytes or 0) >> 20,
            )
        else:
            log.info("retention: deleted event %d (%s)", event_id, rule)
    if clock.boot_id is not None:  # last: a disk too full to save it has had its deletions first
        index.note_boot(clock.boot_id, clock.offset)
    return deleted


class RetentionTimer:
    """Retention on its own thread and timer (as Frigate's cleanup runs beside its record maintainer): ``run`` is
    called at once and then every ``interval_s`` seconds until :meth:`stop`, so deleting old events never delays
    a clip. An exception from ``run`` stops the timer and is kept in ``error`` for the owner to raise.
    ``stopping`` is set by :meth:`stop`: a pass given it (:func:`apply_retention`) ends between two events."""

    def __init__(
        self, run: Callable[[], object], interval_s: float, stopping: threading.Event | None = None
    ) -> None:
        self.run = run
        self.interval_s = interval_s
        self.runs = 0
        self.error: BaseException | None = None
        self._stop = stopping or threading.Event()
        self._thread = threading.Thread(target=self._loop, name="retention", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _loop(self) -> None:
        try:
            while not self._stop.is_set():
                self.run()
                self.runs += 1
                if self._stop.wait(self.interval_s):
                    return
        except BaseException as exc:  # raised by the recorder at the next frame or at close
            log.error("retention failed: %s", exc)
            self.error = exc

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the timer, waiting up to ``timeout`` for a pass to end (see :attr:`running`)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        """Whether the timer's thread (a pass, maybe deleting) still runs."""
        return self._thread.is_alive()
