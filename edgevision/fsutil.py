"""Crash-safe file primitives shared by model installation and recording."""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import time
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """fsync a directory so a rename inside it survives a power cut."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def mkdir_synced(path: Path) -> None:
    """``mkdir -p`` whose new directories survive a power cut: the parent of each directory made is fsync'd (a
    file's rename or creation is made durable by fsyncing its own directory, which does not hold its name)."""
    if path.is_dir():
        return
    mkdir_synced(path.parent)
    try:
        path.mkdir()
    except FileExistsError:
        return  # made meanwhile, by whoever syncs it
    fsync_dir(path.parent)


def install_atomically(tmp: Path, final: Path) -> None:
    """fsync ``tmp``, rename it over ``final`` and fsync the directory: readers see the old or the new file."""
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, final)
    fsync_dir(final.parent)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            block = fh.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def unlink_quietly(path: Path) -> None:
    """Remove a temporary file that may not exist (never used on a finalized recording)."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


SQLITE_CORRUPT, SQLITE_NOTADB = 11, 26


def is_sqlite_damage(exc: BaseException) -> bool:
    """Whether SQLite says its file is damaged (``SQLITE_CORRUPT`` "malformed", ``SQLITE_NOTADB`` "not a
    database"): the one case a database may be set aside. A locked or unreadable file, a full disk
    (``OperationalError``) or a bug (an integrity or programming error) proves nothing about the file."""
    if not isinstance(exc, sqlite3.DatabaseError) or isinstance(exc, sqlite3.OperationalError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (SQLITE_CORRUPT, SQLITE_NOTADB)
    return type(exc) is sqlite3.DatabaseError


def set_aside(path: Path, why: str = "damaged") -> Path:
    """Rename an SQLite file (and its ``-wal`` / ``-shm``) to ``<name>.<why>-<UTC stamp>``, kept for a look
    rather than deleted; returns the new path of the database file.

    A kill at any instant leaves it recoverable: the kept name is written durably to a marker
    (``<name>.set-aside``) before the first rename, and :func:`finish_set_aside`, called by the directory's owner
    before it opens the database, completes a set-aside a kill interrupted. Without it, the database left alone
    at its name would be opened without the rows committed in its write-ahead log (renamed first), and a log left
    alone (the database renamed first) would be replayed into a new database."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    kept = path.with_name(f"{path.name}.{why}-{stamp}")
    n = 1
    while kept.exists() or kept.with_name(kept.name + "-wal").exists():  # twice within a second
        n += 1
        kept = path.with_name(f"{path.name}.{why}-{stamp}-{n}")
    marker = _set_aside_marker(path)
    tmp = marker.with_name(marker.name + ".tmp")
    tmp.write_text(kept.name + "\n")
    install_atomically(tmp, marker)  # the intent is durable before anything moves
    _move_aside(path, kept)
    return kept


def finish_set_aside(path: Path) -> Path | None:
    """Complete a :func:`set_aside` of ``path`` that a kill interrupted (its marker is there): the parts still at
    their names join the kept ones. Returns the kept database's path, or None when there was nothing to finish.
    Only the directory's owner calls it, before it opens the database."""
    marker = _set_aside_marker(path)
    try:
        name = marker.read_text().strip()
    except FileNotFoundError:
        return None
    kept = path.with_name(name)
    _move_aside(path, kept)
    return kept


def _set_aside_marker(path: Path) -> Path:
    return path.with_name(path.name + ".set-aside")


def _move_aside(path: Path, kept: Path) -> None:
    """Rename the parts of ``path`` still at their names to ``kept``'s, then drop the marker. The write-ahead log
    goes first and the database last (its name is what an opener looks for); a part whose kept name is taken
    already stays (after a kill, a reader may have made a new, empty log beside the database alone)."""
    for suffix in ("-wal", "-shm", ""):
        part, dest = path.with_name(path.name + suffix), kept.with_name(kept.name + suffix)
        if part.exists() and not dest.exists():
            part.rename(dest)
    fsync_dir(path.parent)
    _set_aside_marker(path).unlink()
    fsync_dir(path.parent)
