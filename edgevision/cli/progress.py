"""One-line progress bars for long CLI work, drawn on stderr only when it is a terminal.

Usage (any command; stdlib only)::

    from edgevision.cli.progress import Progress

    with Progress("fetch ssd_v1", total=nbytes, unit="B") as bar:
        for block in blocks:
            bar.update(len(block))          # or bar.set(done, total) from a (done, total) callback
            bar.note("mirror")              # optional short text after the figures

A bar draws nothing when stderr is not a terminal, when the user asked for ``-q`` / ``--no-progress`` or a
command runs in ``--json`` mode (``edgevision.cli.main`` calls :func:`configure` once per command), so callers
never test for those themselves. Redraws are rate-limited (10 per second); :func:`render` is the pure
formatting, tested by a table. Log records emitted while a bar is shown go through :class:`LogHandler`, which
clears the bar, writes the record and redraws the bar below it, so the two never share a line.
"""

from __future__ import annotations

import logging
import shutil
import sys
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import TextIO

_enabled = True
_lock = threading.Lock()  # guards _active and every write of a bar to its stream
_active: Progress | None = None


def configure(enabled: bool) -> None:
    """Turn every bar of this process on (still only on a terminal) or off (``-q``, ``--no-progress``, JSON)."""
    global _enabled
    _enabled = enabled


def _human(value: float, unit: str) -> str:
    if unit == "B":
        for scale, suffix in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
            if value >= scale:
                return f"{value / scale:.1f} {suffix}"
        return f"{value:.0f} B"
    text = f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"
    return f"{text} {unit}".rstrip()


def _duration(seconds: float) -> str:
    s = round(seconds)
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def render(
    label: str, done: float, total: float | None, unit: str, elapsed: float, width: int = 80, note: str = ""
) -> str:
    """The bar's text, at most ``width`` characters: ``label  42% [####......] 12/27 MiB  2.1 MiB/s  eta 7s``."""
    rate = done / elapsed if elapsed > 0 else 0.0
    speed = f"{_human(rate, unit)}/s" if unit == "B" and rate > 0 else ""
    if total:
        frac = min(max(done / total, 0.0), 1.0)
        figures = f"{_human(done, unit).split(' ')[0]}/{_human(total, unit)}"
        eta = f"eta {_duration((total - done) / rate)}" if rate > 0 and done < total else _duration(elapsed)
        tail = "  ".join(x for x in (figures, speed, eta, note) if x)
        head = f"{label} {frac * 100:3.0f}% "
        room = width - len(head) - len(tail) - 3
        if room >= 10:
            bar_w = min(room, 30)
            filled = int(frac * bar_w)
            return f"{head}[{'#' * filled}{'.' * (bar_w - filled)}] {tail}"[:width]
        return f"{head}{tail}"[:width]
    tail = "  ".join(x for x in (_human(done, unit), speed, _duration(elapsed), note) if x)
    return f"{label} {tail}"[:width]


class Progress:
    """A progress bar on ``stream`` (stderr); a no-op when disabled or not on a terminal.

    ``total`` may be None (unknown size: counts and elapsed time only) and can be set later through
    :meth:`set`. ``clock`` is injectable for tests. Thread-safe: a callback may update it from any thread.
    """

    def __init__(
        self,
        label: str,
        total: float | None = None,
        *,
        unit: str = "",
        enabled: bool | None = None,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
        min_interval: float = 0.1,
    ) -> None:
        self.label = label
        self.total = total
        self.unit = unit
        self.done = 0.0
        self.stream = stream if stream is not None else sys.stderr
        tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.enabled = (_enabled if enabled is None else enabled) and tty
        self._clock = clock
        self._start = clock()
        self._last_draw = -1e9
        self._min_interval = min_interval
        self._note = ""
        self._shown = False
        self._closed = False

    # -- updates -------------------------------------------------------------------------------------------
    def update(self, advance: float = 1) -> None:
        """Add ``advance`` units of work done."""
        self.set(self.done + advance)

    def set(self, done: float, total: float | None = None) -> None:
        """Set the absolute amount done (and the total, when it becomes known)."""
        self.done = done
        if total is not None:
            self.total = total
        self._maybe_draw()

    def note(self, text: str) -> None:
        """Short text shown after the figures (the current item, say)."""
        self._note = text
        self._maybe_draw(force=True)

    def close(self) -> None:
        """Erase the bar (the command prints its own result line)."""
        global _active
        if self._closed:
            return
        self._closed = True
        with _lock:
            if self._shown:
                self._erase()
            if _active is self:
                _active = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- drawing -------------------------------------------------------------------------------------------
    def text(self) -> str:
        width = max(20, shutil.get_terminal_size((80, 24)).columns - 1)
        return render(
            self.label, self.done, self.total, self.unit, self._clock() - self._start, width, self._note
        )

    def _maybe_draw(self, force: bool = False) -> None:
        global _active
        if not self.enabled or self._closed:
            return
        now = self._clock()
        finished = self.total is not None and self.done >= self.total
        if not force and not finished and now - self._last_draw < self._min_interval:
            return
        self._last_draw = now
        with _lock:
            _active = self
            self._draw()

    def _draw(self) -> None:  # caller holds _lock
        self.stream.write("\r\x1b[K" + self.text())
        self.stream.flush()
        self._shown = True

    def _erase(self) -> None:  # caller holds _lock
        self.stream.write("\r\x1b[K")
        self.stream.flush()


class LogHandler(logging.StreamHandler):
    """A stderr log handler that moves an active progress bar out of the way of each record."""

    def emit(self, record: logging.LogRecord) -> None:
        with _lock:
            bar = _active
            if bar is not None and bar._shown and bar.stream is self.stream:
                bar._erase()
            super().emit(record)
            if bar is not None and bar._shown and bar.stream is self.stream and not bar._closed:
                bar._draw()
