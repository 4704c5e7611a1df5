"""Crash-safe file primitives shared by model installation and recording."""

from __future__ import annotations

import contextlib
import hashlib
import os
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


def set_aside(path: Path, why: str = "damaged") -> Path:
    """Rename an SQLite file (and its ``-wal`` / ``-shm``) to ``<name>.<why>-<UTC stamp>``, kept for a look
    rather than deleted; returns the new path of the database file. The database is renamed last: its name is
    what a reader opens."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    kept = path.with_name(f"{path.name}.{why}-{stamp}")
    n = 1
    while kept.exists():  # twice within a second
        n += 1
        kept = path.with_name(f"{path.name}.{why}-{stamp}-{n}")
    for suffix in ("-wal", "-shm", ""):
        part = path.with_name(path.name + suffix)
        if part.exists():
            part.rename(kept.with_name(kept.name + suffix))
    return kept
