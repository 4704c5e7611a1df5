"""The progress bar: pure rendering by table; drawn only on a terminal; out of the way of log records."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from edgevision.cli import progress
from edgevision.cli.progress import LogHandler, Progress, render


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture(autouse=True)
def _enabled() -> Iterator[None]:
    progress.configure(True)
    yield
    progress.configure(True)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("fetch", 0, 100, "", 0.0), "fetch   0% [..............................] 0/100  0s"),
        (("fetch", 50, 100, "", 5.0), "fetch  50% [###############...............] 50/100  eta 5s"),
        (("fetch", 100, 100, "", 10.0), "fetch 100% [##############################] 100/100  10s"),
        (
            ("dl", 3 << 20, 6 << 20, "B", 3.0),
            "dl  50% [###############...............] 3.0/6.0 MiB  1.0 MiB/s  eta 3s",
        ),
        (("dl", 1536, None, "B", 2.0), "dl 1.5 KiB  768 B/s  2s"),
        (("replay", 7, None, "frames", 75.0), "replay 7 frames  1m15s"),
        (("x", 1, 4, "rungs", 4000.0), "x  25% [#######.......................] 1/4 rungs  eta 3h20m"),
        (("x", 9, 4, "", 1.0), "x 100% [##############################] 9/4  1s"),  # overshoot is clamped
    ],
)
def test_render(args: tuple[str, float, float | None, str, float], expected: str) -> None:
    assert render(*args, width=100) == expected


def test_render_fits_narrow_terminals() -> None:
    text = render("a-long-label", 5, 10, "B", 1.0, width=30, note="mirror")
    assert len(text) <= 30 and text.startswith("a-long-label  50%") and "[" not in text


def test_bar_draws_on_a_terminal_and_erases_at_close() -> None:
    tty, clock = Tty(), Clock()
    with Progress("work", 4, stream=tty, clock=clock) as bar:
        for _ in range(4):
            clock.t += 1
            bar.update()
    out = tty.getvalue()
    assert out.count("\r\x1b[K") == 5  # four draws and the final erase
    assert "work 100%" in out and out.endswith("\r\x1b[K")


def test_redraws_are_rate_limited_but_the_last_one_shows() -> None:
    tty, clock = Tty(), Clock()
    bar = Progress("n", 1000, stream=tty, clock=clock, min_interval=0.1)
    for _ in range(1000):
        clock.t += 0.001  # 1000 updates in 1 s
        bar.update()
    draws = tty.getvalue().count("\r\x1b[K")
    assert 5 <= draws <= 12
    assert tty.getvalue().endswith("1000/1000  1s")


@pytest.mark.parametrize(
    ("tty", "enabled", "configured"), [(False, None, True), (True, False, True), (True, None, False)]
)
def test_nothing_is_written_when_disabled(tty: bool, enabled: bool | None, configured: bool) -> None:
    progress.configure(configured)
    stream = Tty() if tty else io.StringIO()
    with Progress("x", 3, stream=stream, enabled=enabled) as bar:
        bar.update(3)
        bar.note("done")
    assert stream.getvalue() == "" and not bar.enabled


def test_log_records_clear_the_bar_and_it_comes_back() -> None:
    tty, clock = Tty(), Clock()
    logger = logging.getLogger("test-progress")
    handler = LogHandler(tty)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.propagate = False
    try:
        bar = Progress("work", 10, stream=tty, clock=clock)
        clock.t += 1
        bar.update(5)
        logger.warning("a status line")
        after = tty.getvalue()
        bar.close()
    finally:
        logger.removeHandler(handler)
    drawn = "work  50%"
    i = after.index("a status line")
    assert after[:i].endswith("\r\x1b[K")  # bar erased before the record
    assert after[i:].startswith("a status line\n\r\x1b[K" + drawn)  # and redrawn under it
