"""One process owns a data directory: an advisory ``fcntl.flock`` on ``<data_dir>/.lock``.

``run --record`` holds it for its whole life; ``events prune`` (and start-up recovery) take it for their work.
A second owner is refused with :class:`DataDirBusy` (exit code 75, EX_TEMPFAIL: try again when the other
process has stopped), naming the pid written in the lock file; so is (exit 2, :class:`ForeignDataDir`) a user
who does not own the directory — ``sudo`` on the service's: the index, its journal, recovered clips and new
recordings would be root's, and the service could no longer write them. The lock dies with its process, so a crash or
power cut never leaves a stale lock behind. Within one process the lock is re-entrant (a count per directory),
so recovery run by the recorder that already holds it just proceeds.
"""

from __future__ import annotations

import errno
import fcntl
import os
import threading
from pathlib import Path

from edgevision.errors import EdgeVisionError, UsageError

EXIT_BUSY = 75  # EX_TEMPFAIL (sysexits.h)
LOCK_NAME = ".lock"


class DataDirBusy(EdgeVisionError):
    """Another process owns the data directory."""

    exit_code = EXIT_BUSY


class ForeignDataDir(UsageError):
    """The data directory belongs to another user: run as its owner."""


def refuse_foreign_owner(data_dir: Path, purpose: str) -> None:
    """Raise :class:`ForeignDataDir` unless this user owns ``data_dir`` (or it does not exist yet: it is made
    now, by and for this user)."""
    import pwd

    try:
        owner = data_dir.stat().st_uid
    except FileNotFoundError:
        return
    if owner == os.geteuid():
        return
    try:
        name = who = pwd.getpwuid(owner).pw_name
    except KeyError:
        name, who = f"uid {owner}", f"'#{owner}'"
    raise ForeignDataDir(
        f"{data_dir}: owned by {name}, not this user: what {purpose} writes there (the index, clips) would not "
        f"be the owner's, who could then not write it; run as the owner, e.g. sudo -u {who} edgevision {purpose} ..."
    )


_held: dict[Path, tuple[int, int]] = {}  # resolved directory -> (fd, holders in this process)
_guard = threading.Lock()  # protects _held


def _owner(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        return os.read(fd, 64).decode("ascii", "replace").strip() or "?"
    except OSError:
        return "?"


class DataDirLock:
    """``with DataDirLock(path, "events prune"):`` or ``acquire()`` / ``release()``."""

    def __init__(self, data_dir: Path, purpose: str = "edgevision") -> None:
        self.dir = data_dir
        self.purpose = purpose
        self._key: Path | None = None

    def acquire(self) -> DataDirLock:
        """Take the lock or raise :class:`DataDirBusy` at once (never waits); :class:`ForeignDataDir` when
        another user owns the directory."""
        key = self.dir.resolve()
        with _guard:
            if key in _held:
                fd, n = _held[key]
                _held[key] = (fd, n + 1)
                self._key = key
                return self
            refuse_foreign_owner(key, self.purpose)
            self.dir.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(key / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except (
                PermissionError
            ):  # the service user's lock file, opened by another user: flock needs no write
                fd = os.open(key / LOCK_NAME, os.O_RDONLY | os.O_CLOEXEC)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                owner = _owner(fd)
                os.close(fd)
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise DataDirBusy(
                        f"{key}: data directory in use by process {owner}; stop it first "
                        f"({self.purpose} needs it alone)"
                    ) from None
                raise
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            except OSError:
                pass  # a full disk must not stop recording: the lock itself is what counts
            _held[key] = (fd, 1)
            self._key = key
        return self

    def release(self) -> None:
        """Give the lock back (the last holder in this process closes it)."""
        key, self._key = self._key, None
        if key is None:
            return
        with _guard:
            fd, n = _held[key]
            if n > 1:
                _held[key] = (fd, n - 1)
                return
            del _held[key]
            os.close(fd)  # closing the descriptor releases the flock

    def __enter__(self) -> DataDirLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
