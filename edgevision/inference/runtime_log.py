"""Keep the TFLite runtimes' own C++ INFO lines out of edgevision's output.

LiteRT and tflite-runtime print ``INFO: Created TensorFlow Lite XNNPACK delegate for CPU.`` (and similar) with
their C++ logger straight to file descriptor 2 when an interpreter is built; no environment variable or Python
API of either runtime turns it off (``TF_CPP_MIN_LOG_LEVEL`` does not reach this logger).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator
from typing import IO

log = logging.getLogger(__name__)

_RUNTIME_INFO = re.compile(
    rb"^INFO: (Created TensorFlow Lite|Replacing \d+ node|Initialized TensorFlow Lite)"
)
_FD2_LOCK = threading.Lock()  # one redirection of fd 2 at a time


@contextlib.contextmanager
def quiet_runtime_info() -> Iterator[None]:
    """Hold fd 2 in a temporary file while an interpreter is built; replay everything but the runtime's INFO.

    Whatever else reaches stderr meanwhile (a runtime ERROR, another thread's log record) is written out,
    in order, when the block ends; the INFO lines go to the debug log instead.
    """
    with _FD2_LOCK:
        tmp, saved = _redirect_fd2()
        if tmp is None or saved is None:
            yield  # nothing to filter with: the runtime's lines go straight to stderr
            return
        with tmp:
            try:
                yield
            finally:
                with contextlib.suppress(OSError, ValueError, AttributeError):
                    sys.stderr.flush()
                os.dup2(saved, 2)
                os.close(saved)
                tmp.seek(0)
                kept = []
                for line in tmp.read().splitlines(keepends=True):
                    if _RUNTIME_INFO.match(line):
                        log.debug("runtime: %s", line.decode(errors="replace").strip())
                    else:
                        kept.append(line)
                if kept:
                    os.write(2, b"".join(kept))


def _redirect_fd2() -> tuple[IO[bytes] | None, int | None]:
    """(temporary file now on fd 2, a dup of the old fd 2), or Nones with fd 2 untouched and nothing left open.

    No usable fd 2 (an embedded interpreter) or no temporary file (a read-only or full ``$TMPDIR`` under a
    service's sandbox) must not stop a model from loading: its INFO lines are then simply not filtered."""
    try:
        tmp = tempfile.TemporaryFile()  # noqa: SIM115 - closed by the caller's ``with tmp`` or below
    except OSError as exc:
        log.debug("runtime INFO lines not filtered: no temporary file (%s)", exc)
        return None, None
    with contextlib.suppress(OSError, ValueError, AttributeError):
        sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:
        tmp.close()
        return None, None
    try:
        os.dup2(tmp.fileno(), 2)
    except OSError:
        os.close(saved)
        tmp.close()
        return None, None
    return tmp, saved
