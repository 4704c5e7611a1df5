"""The recorder's disk: its recording mode, the free-space checks that move it, and the retention passes.

A pass runs on the retention timer's thread (every rule) and on the recorder thread when free space is below
``min_free`` (the free-space rule alone: a clip's packets wait while it runs). Passes take turns and each
measures free space under the lock, so two never both delete for the same shortfall; the recorder thread never
waits for the timer's pass (which may take minutes), it measures again at its next check.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import threading
from collections.abc import Callable
from pathlib import Path

from edgevision.recorder.index import EventIndex
from edgevision.recorder.index_writer import is_disk_error
from edgevision.recorder.mode import Mode, after_failure, after_space_check, record_floor
from edgevision.recorder.retention import RetentionPolicy, apply_retention
from edgevision.recorder.wallclock import read_boot_clock

log = logging.getLogger(__name__)

# Errors that say the disk is full, over quota, read-only or failing: they degrade recording instead of failing it.
DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO}


class DiskSpace:
    """The recording :class:`~edgevision.recorder.mode.Mode` and what moves it.

    ``mode`` is written by the recorder thread only (a failure, a space check); the retention lock guards the
    passes, which the timer thread runs too.
    """

    def __init__(
        self,
        data_dir: Path,
        retention: RetentionPolicy,
        index: EventIndex,
        free_bytes: Callable[[Path], int],
        clock: Callable[[], float],
        check_every_s: float,
    ) -> None:
        self.data_dir = data_dir
        self.policy = retention
        self.index = index
        self.free_bytes = free_bytes
        self.clock = clock
        self.check_every_s = check_every_s
        self.mode = Mode.NORMAL
        self.floor = record_floor(retention.min_free_bytes)
        self._next_check = 0.0
        self._lock = threading.Lock()  # one retention pass at a time (timer and recorder threads)
        self.stopping = threading.Event()  # set when the recorder closes: a pass ends between two events

    def degrade(self, mode: Mode, exc: OSError) -> None:
        """A write failed in a way that forces ``mode`` (never less degraded than now)."""
        new = after_failure(self.mode, mode)
        if new != self.mode:
            self.mode = new
            log.error(
                "recorder: disk problem (%s): degraded to %s until space returns", exc.strerror or exc, new
            )

    def check(self, force: bool = False) -> None:
        """Measure free space (every ``check_every_s``, or now with ``force``: a clip is about to start): below
        ``min_free`` run a free-space pass first, unless a pass runs; then below the floor no clip starts, and
        space back resumes full recording. Called by the recorder thread only."""
        now = self.clock()
        if not force and now < self._next_check:
            return
        self._next_check = now + self.check_every_s
        need = self.policy.min_free_bytes or 0
        free = self._free()
        # a pass deletes only when that reaches min_free (see plan_retention). The recorder thread never waits for
        # the timer's pass, which may take minutes (no packet would move into the clip, the capture's feed would
        # overflow and a starting clip lose its start): that pass frees the space. Its own deletes for space alone.
        if free is not None and free < need and self.retention_pass(wait=False, space_only=True):
            free = self._free()
        if free is None:
            return
        new = after_space_check(self.mode, free, self.floor)
        if new == self.mode:
            return
        if new == Mode.NORMAL:
            log.warning("recorder: free space is back (%d MiB): full recording resumed", free >> 20)
            self.mode = new
        else:
            self.degrade(new, OSError(errno.ENOSPC, f"free space below {self.floor >> 20} MiB"))

    def retention_pass(self, wait: bool = True, space_only: bool = False) -> bool:
        """One retention pass on the free space measured under the lock; ``space_only``: the free-space rule
        alone (the recorder thread's: mass deletions for age or size are the timer's). Without ``wait``, nothing
        is done while another pass runs; returns whether this pass ran."""
        if not self._lock.acquire(blocking=wait):
            return False
        try:
            free = self._free()
            if free is None:
                return True
            try:
                clock = read_boot_clock()
                policy = self.policy
                if space_only:
                    policy = dataclasses.replace(policy, max_age_s=None, max_total_bytes=None)
                apply_retention(
                    self.index, self.data_dir, clock.wall, free, policy, clock=clock, stop=self.stopping
                )
            except Exception as exc:
                if not is_disk_error(exc):
                    raise
                log.warning("recorder: retention skipped: the index cannot be written (%s)", exc)
            return True
        finally:
            self._lock.release()

    def _free(self) -> int | None:
        """Free bytes now; None (and a warning) when they cannot be read: a statfs that fails once must not stop
        the recorder or the retention timer, the next check measures again."""
        try:
            return self.free_bytes(self.data_dir)
        except OSError as exc:
            log.warning("recorder: cannot read free space: %s", exc)
            return None
