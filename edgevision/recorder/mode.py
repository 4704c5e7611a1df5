"""Recording modes and their transitions: a pure function of what the disk did, no clock, no I/O."""

from __future__ import annotations

from enum import Enum


class Mode(str, Enum):
    """How much of an event is written. Later members are more degraded."""

    NORMAL = "normal"  # clip, snapshot, thumbnail, index row
    SNAPSHOTS_ONLY = "snapshots-only"  # no clip: the disk failed a clip write or is below the floor
    INDEX_ONLY = "index-only"  # no file at all: even a snapshot failed

    def __str__(self) -> str:
        return self.value

    @property
    def rank(self) -> int:
        return list(Mode).index(self)


# Free space below which a new clip is not started. Retention's ``min_free`` is a housekeeping target, not a
# reason to stop recording: a card with 800 MB free still records (a 5-minute 720p clip is ~75 MB).
RECORD_FLOOR_BYTES = 128 << 20
# After a failure, full recording resumes only with at least this much free (a disk error with 0 bytes floor
# must not flip back to "normal" at the next check while the disk is still full).
RESUME_MIN_BYTES = 8 << 20


def record_floor(min_free_bytes: int | None) -> int:
    """The free space a clip needs: the retention target, capped at :data:`RECORD_FLOOR_BYTES`."""
    return min(min_free_bytes or 0, RECORD_FLOOR_BYTES)


def after_failure(current: Mode, failed: Mode) -> Mode:
    """The mode after a write failed: ``failed`` is the mode the failure forces (never less degraded)."""
    return failed if failed.rank > current.rank else current


def after_space_check(current: Mode, free_bytes: int, floor_bytes: int) -> Mode:
    """The mode after measuring free space: below the floor no clip starts; at or above it, full recording
    resumes (whatever degraded it: a failure with space available again is worth retrying)."""
    if free_bytes < floor_bytes:
        return after_failure(current, Mode.SNAPSHOTS_ONLY)
    if current != Mode.NORMAL and free_bytes < max(floor_bytes, RESUME_MIN_BYTES):
        return current
    return Mode.NORMAL
