"""Reading files that may not be what they claim: regular files only, never blocking, never unbounded.

A path from a config file or the command line may name a FIFO (a plain ``open()`` blocks forever), a device
(``/dev/zero`` never ends), a directory, or a huge file. :func:`open_regular` opens with ``O_NONBLOCK`` and
checks the type with ``fstat`` before anything is read; :func:`read_bounded` also stops at a size limit.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from edgevision.errors import InputError

_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0)


def file_kind(mode: int) -> str:
    """A human name for a non-regular file type (for "X is a FIFO, not a regular file")."""
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def read_bounded(path: Path, limit: int, what: str = "file") -> bytes:
    """Read a regular file of at most ``limit`` bytes without blocking or reading more than ``limit + 1``.

    Raises :class:`OSError` subclasses for missing/unreadable files and :class:`ValueError` (with the reason)
    for a file that is not regular or is too large.
    """
    fd = open_regular(path, what)
    try:
        st = os.fstat(fd)
        if st.st_size > limit:
            raise ValueError(f"{what} is {st.st_size} bytes; the limit is {limit} bytes")
        chunks: list[bytes] = []
        total = 0
        while total <= limit:
            block = os.read(fd, limit + 1 - total)
            if not block:
                break
            chunks.append(block)
            total += len(block)
        if total > limit:
            raise ValueError(f"{what} is larger than the limit of {limit} bytes")
        return b"".join(chunks)
    finally:
        os.close(fd)


def open_regular(path: Path, what: str = "file") -> int:
    """A read-only descriptor of the regular file ``path`` (opened without blocking; the caller closes it).

    Raises :class:`OSError` (e.g. ``FileNotFoundError``) when it cannot be opened and :class:`ValueError`
    ("<what> is a FIFO (named pipe), not a regular file") when it is not a regular file.
    """
    fd = os.open(path, _FLAGS)
    try:
        st = os.fstat(fd)
    except OSError:
        os.close(fd)
        raise
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise ValueError(f"{what} is {file_kind(st.st_mode)}, not a regular file")
    return fd


def read_image(path: Path) -> Any:
    """Decode an image file as BGR uint8 (``numpy`` ``[H, W, 3]``); a missing, non-regular, undecodable or
    too large file is an :class:`InputError` naming it.

    Too large is OpenCV's own limit, ``OPENCV_IO_MAX_IMAGE_PIXELS`` (the CLI sets 2^27, 134 megapixels, before
    cv2 is imported): it is checked from the header, before any pixel is decoded."""
    import cv2

    if not path.exists():
        raise InputError(f"{path}: no such file")
    if not path.is_file():
        raise InputError(f"{path}: not a file")
    try:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    except cv2.error as exc:
        if "CV_IO_MAX_IMAGE" in str(exc):
            limit = os.environ.get("OPENCV_IO_MAX_IMAGE_PIXELS", str(1 << 30))
            shown = f"{int(limit) / 1e6:.0f}" if limit.isdigit() else repr(limit)  # the user's own setting
            raise InputError(
                f"{path}: image too large to decode here (over {shown} megapixels, or a side over "
                "1048576 px; scale it down, or raise OPENCV_IO_MAX_IMAGE_PIXELS if this machine has the memory)"
            ) from None
        raise InputError(f"{path}: cannot decode image ({str(exc).strip().splitlines()[-1]})") from None
    if image is None:
        raise InputError(f"{path}: cannot decode image (unsupported or corrupt file)")
    return image
