"""Raspberry Pi health: throttling, under-voltage and SoC temperature, where the Pi exposes them.

Read from sysfs (``get_throttled`` of the firmware driver, ``thermal_zone0``), falling back to
``vcgencmd get_throttled``; on machines that are not a Pi every field is None and nothing is logged.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

THROTTLED_SYSFS = (
    Path("/sys/devices/platform/soc/soc:firmware/get_throttled"),
    Path("/sys/devices/platform/soc/soc:firmware/raspberrypi-hwmon/get_throttled"),
)
TEMP_SYSFS = Path("/sys/class/thermal/thermal_zone0/temp")

UNDER_VOLTAGE, FREQ_CAPPED, THROTTLED, SOFT_TEMP_LIMIT = 0x1, 0x2, 0x4, 0x8


@dataclass(frozen=True)
class PiHealth:
    throttled_bits: int | None
    temperature_c: float | None

    @property
    def under_voltage(self) -> bool:
        return bool(self.throttled_bits and self.throttled_bits & UNDER_VOLTAGE)

    @property
    def throttling(self) -> bool:
        """Throttled or frequency-capped right now (bits 1-3): inference is slower than profiled."""
        return bool(self.throttled_bits and self.throttled_bits & (FREQ_CAPPED | THROTTLED | SOFT_TEMP_LIMIT))

    def text(self) -> str:
        """Short status text, empty when nothing is known (not a Pi)."""
        parts = []
        if self.temperature_c is not None:
            parts.append(f"soc {self.temperature_c:.0f}C")
        if self.under_voltage:
            parts.append("UNDER-VOLTAGE")
        if self.throttling:
            parts.append("THROTTLED")
        return " ".join(parts)


def parse_throttled(text: str) -> int | None:
    """``throttled=0x50005`` (vcgencmd) or ``50005`` (sysfs, hex) → int."""
    value = text.strip().split("=", 1)[-1].strip()
    try:
        return int(value, 16)
    except ValueError:
        return None


def read_health(
    throttled_paths: tuple[Path, ...] = THROTTLED_SYSFS,
    temp_path: Path = TEMP_SYSFS,
    use_vcgencmd: bool = True,
) -> PiHealth:
    bits = None
    for p in throttled_paths:
        try:
            bits = parse_throttled(p.read_text())
            break
        except OSError:
            continue
    if bits is None and use_vcgencmd and shutil.which("vcgencmd"):
        try:
            out = subprocess.run(
                ["vcgencmd", "get_throttled"], capture_output=True, text=True, timeout=2
            ).stdout
            bits = parse_throttled(out)
        except (OSError, subprocess.TimeoutExpired):
            bits = None
    temp = None
    try:
        temp = int(temp_path.read_text().strip()) / 1000.0
    except (OSError, ValueError):
        temp = None
    return PiHealth(bits, temp)


def budget_factor(health: PiHealth, tighten: float = 0.8) -> float:
    """When the Pi is throttling, the scheduler treats the budget as ``tighten`` times as large."""
    return tighten if health.throttling else 1.0


class HealthState:
    """The last Pi health reading, shared by the one who refreshes it and those who read it.

    The service monitor refreshes it every status interval (in its thread); the scheduler reads its budget factor
    every frame and the metrics read it at scrape time. One reference assignment per refresh: a reader sees the
    old or the new reading, never a mix.
    """

    def __init__(self, read: Callable[[], PiHealth] = read_health, tighten: float = 0.8) -> None:
        self._read = read
        self.tighten = tighten
        self.current = read()

    def refresh(self) -> PiHealth:
        """Read the health again and keep it."""
        self.current = self._read()
        return self.current

    def budget_factor(self) -> float:
        """:func:`budget_factor` of the last reading."""
        return budget_factor(self.current, self.tighten)
