"""When an event really started by the wall clock, for the age limit of retention.

A Raspberry Pi has no real-time clock (a Pi 5 has one only with a battery): it boots with the time saved at the
last shutdown (systemd-timesyncd's clock file, fake-hwclock) and steps to the true time when NTP first answers,
which may be minutes or, offline, hours later. An event recorded before that step has a ``start_wall`` that is
behind by as long as the Pi was off; after the step, the age limit would see it as that much older and delete a
recording minutes old (a Pi off for a summer holiday, ``max_age_days: 30``).

So each row also records its boot (``boot_id``) and the boot clock at its start (``start_boot``,
``CLOCK_BOOTTIME``, which counts suspend and never steps). An event of the running boot is exactly
``boottime now - start_boot`` old, whatever the wall clock did. For an earlier boot, each retention pass saved
that boot's last known offset (wall - boottime, taken after the step if the boot ever synced), which places its
events on the true wall clock. Rows without either (written before this existed, or by another tool) fall back
to ``start_wall``. Then, since ids grow in recording order, no event can have started before one recorded
earlier: for the age limit each start is raised to at least the one before it, which only ever keeps a
recording longer. So an event is deleted for its age only when its age as far as it can be known (exactly, for
the running boot) is past the limit.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

BOOT_ID_PATH = Path("/proc/sys/kernel/random/boot_id")


@dataclass(frozen=True)
class BootClock:
    """The running boot's id and its two clocks, read together."""

    boot_id: str | None  # None where the kernel does not say (not Linux): rows then age by the wall clock
    boottime: float  # seconds since boot, counting suspend; never steps
    wall: float  # seconds since the epoch, as the system believes now

    @property
    def offset(self) -> float:
        """Wall time at boot, as the wall clock says now (changes when the clock steps)."""
        return self.wall - self.boottime


@functools.lru_cache(maxsize=4)
def boot_id(path: Path = BOOT_ID_PATH) -> str | None:
    """The kernel's id of the running boot (one per boot: read once per process)."""
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def read_boot_clock(boot_id_path: Path = BOOT_ID_PATH) -> BootClock:
    """The boot clock now (``CLOCK_BOOTTIME`` where the platform has it, else the monotonic clock)."""
    boottime = getattr(time, "CLOCK_BOOTTIME", None)
    now = time.clock_gettime(boottime) if boottime is not None else time.monotonic()
    return BootClock(boot_id(boot_id_path), now, time.time())


def boot_clock_at(monotonic_ts: float | None) -> BootClock:
    """The boot clock as it read at ``monotonic_ts``, a past instant of ``time.monotonic()`` (when a frame left
    the camera): now, less the time since. Now when None or not in the past."""
    clock = read_boot_clock()
    age = 0.0 if monotonic_ts is None else max(0.0, time.monotonic() - monotonic_ts)
    return BootClock(clock.boot_id, clock.boottime - age, clock.wall - age)


@dataclass(frozen=True)
class StartStamp:
    """What a row says about its start: the wall clock then, and its boot and boot clock when recorded."""

    id: int
    start_wall: float
    boot_id: str | None = None
    start_boot: float | None = None


def true_starts(
    rows: Sequence[StartStamp], clock: BootClock, offsets: Mapping[str, float], monotone: bool = True
) -> dict[int, float]:
    """Each row's start on the wall clock as it reads now (see the module docstring), by id.

    ``offsets`` maps earlier boots to their last saved offset (wall - boottime). ``monotone`` (for the age
    limit) raises each start to at least the one before it; a start shown to a user is not raised."""
    out: dict[int, float] = {}
    floor = float("-inf")
    for r in sorted(rows, key=lambda r: r.id):
        start = r.start_wall
        if r.boot_id is not None and r.start_boot is not None:
            if r.boot_id == clock.boot_id:
                start = clock.offset + r.start_boot
            elif r.boot_id in offsets:
                start = offsets[r.boot_id] + r.start_boot
        # never older than an event recorded before it (a row recorded with the clock ahead raises the rows
        # after it: they are kept longer, never deleted sooner)
        floor = max(floor, start) if monotone else start
        out[r.id] = floor
    return out


def shown_starts(rows: Sequence[StartStamp], offsets: Mapping[str, float]) -> dict[int, float]:
    """The starts to show (``events list``, the web page): on the wall clock as it reads now, so an event
    recorded before the clock stepped shows when it really happened, not the date the Pi booted with."""
    return true_starts(rows, read_boot_clock(), offsets, monotone=False)
