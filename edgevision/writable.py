"""Whether a path can be written: a directory to write in (created when missing), or a file to write.

Checked by trying, not from permission bits: a probe file (in an existing directory) or a probe directory (in
the nearest existing ancestor of one still to be created) is made and removed at once, so root, read-only mounts
and pseudo file systems such as ``/proc`` answer truthfully. A check leaves nothing behind.

``*_problem`` say why not (or None); ``check_output_*`` refuse a command's output path with exit 2, before
anything runs. The data directory's check (exit 78) is :func:`dir_problem` too.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from edgevision.errors import UsageError
from edgevision.safe_read import file_kind


def _what(mode: int) -> str:
    return "a file" if stat.S_ISREG(mode) else file_kind(mode)


def dir_problem(path: Path) -> str | None:
    """Why ``path`` is not, and cannot be created as, a directory this process can write in; None when it is
    one or can be made one."""
    probe = path
    while True:
        try:
            st = probe.stat()
            break
        except (FileNotFoundError, NotADirectoryError):
            if probe.parent == probe:
                return f"{path}: no existing parent directory"
            probe = probe.parent
        except OSError as exc:
            return f"{probe}: {exc.strerror}"
    if not stat.S_ISDIR(st.st_mode):
        if probe == path:
            return f"{path} is {_what(st.st_mode)}, not a directory"
        return f"{path} cannot be created: {probe} is {_what(st.st_mode)}, not a directory"
    try:
        if probe == path:
            fd, name = tempfile.mkstemp(prefix=".probe-", dir=probe)
            os.close(fd)
            os.unlink(name)
        else:
            os.rmdir(tempfile.mkdtemp(prefix=".probe-", dir=probe))
    except OSError as exc:
        if probe == path:
            return f"{path} is not writable by this user (uid {os.getuid()}): {exc.strerror}"
        return f"{path} cannot be created in {probe}: {exc.strerror}"
    return None


def file_problem(path: Path) -> str | None:
    """Why a file cannot be written at ``path`` (its missing parent directories created), or None. An existing
    FIFO or device (``/dev/stdout``) is the writer's to open."""
    try:
        st = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return dir_problem(path.parent)
    except OSError as exc:
        return f"{path}: {exc.strerror}"
    if stat.S_ISDIR(st.st_mode):
        return f"{path} is a directory"
    if stat.S_ISREG(st.st_mode) and not os.access(path, os.W_OK):
        return f"{path} is not writable by this user (uid {os.getuid()})"
    return None


def check_output_file(flag: str, path: Path) -> None:
    """Refuse (exit 2) an output file ``flag`` names that cannot be written."""
    problem = file_problem(path)
    if problem:
        raise UsageError(f"{flag} {path}: {problem}")


def check_output_dir(flag: str, path: Path) -> None:
    """Refuse (exit 2) an output directory ``flag`` names that cannot be written in or created."""
    problem = dir_problem(path)
    if problem:
        raise UsageError(f"{flag} {path}: {problem}")
