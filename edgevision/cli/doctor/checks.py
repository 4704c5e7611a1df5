"""The checks of ``edgevision doctor``: pure functions from observed facts to one ok / warn / fail line.

Each function takes what :mod:`edgevision.cli.doctor.probe` observed (versions, device nodes, USB ids, group
lists, throttle bits, free bytes, ``systemctl`` answers …) and returns a :class:`Check` whose ``fix`` says
what to do. Nothing here touches the system, so every rule is tested by a table
(``tests/test_doctor.py``).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

MIN_PYTHON = (3, 10)
CORAL_USB_IDS = {("1a6e", "089a"): "Coral USB (before firmware load)", ("18d1", "9302"): "Coral USB"}
SLOW_INVOKE_MS = 250.0
DISK_FAIL_BYTES = 200 << 20
DISK_WARN_BYTES = 1 << 30
PLAUSIBLE_YEAR = 2025  # a Pi without a battery-backed clock boots in the past until NTP syncs


class Status(enum.Enum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True)
class Check:
    """One line of the report: what was checked, what was found, and how to fix it (warn / fail)."""

    name: str
    status: Status
    detail: str
    fix: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"check": self.name, "status": self.status.value, "detail": self.detail, "fix": self.fix}


def ok(name: str, detail: str) -> Check:
    return Check(name, Status.OK, detail)


def warn(name: str, detail: str, fix: str) -> Check:
    return Check(name, Status.WARN, detail, fix)


def fail(name: str, detail: str, fix: str) -> Check:
    return Check(name, Status.FAIL, detail, fix)


# -- platform -----------------------------------------------------------------------------------------------
def check_python(version: tuple[int, int, int], machine: str, pointer_bits: int, os_name: str) -> Check:
    """Python >= 3.10 on a 64-bit userland (LiteRT and OpenCV wheels exist for aarch64 and x86_64 only)."""
    v = ".".join(map(str, version))
    where = f"Python {v}, {pointer_bits}-bit {os_name} ({machine})"
    if version[:2] < MIN_PYTHON:
        return fail("python", where, "install Python >= 3.10 (Raspberry Pi OS Bookworm ships 3.11)")
    if pointer_bits != 64:
        return fail(
            "python",
            where,
            "use the 64-bit Raspberry Pi OS (Bookworm): LiteRT and OpenCV wheels are 64-bit only"
            + (
                " (this is a 64-bit kernel with a 32-bit userland)" if machine in ("aarch64", "arm64") else ""
            ),
        )
    return ok("python", where)


def check_runtime(runtimes: Sequence[str], model: str, invoke_ms: float | None, error: str | None) -> Check:
    """A TFLite runtime is installed and runs the configured detector; one timed invoke shows its speed."""
    if not runtimes:
        return fail("runtime", "no TFLite runtime installed", "pip install ai-edge-litert")
    have = ", ".join(runtimes)
    if error is not None:
        return fail("runtime", f"{have}; {model}: {error}", f"edgevision models fetch {model}")
    if invoke_ms is None:
        return ok("runtime", have)
    detail = f"{have}; {model}: {invoke_ms:.1f} ms per invoke"
    if invoke_ms > SLOW_INVOKE_MS:
        return warn(
            "runtime",
            detail + " (slow)",
            "a smaller or faster model (--budget-ms lets the scheduler pick), more --threads, or a Coral",
        )
    return ok("runtime", detail)


def check_cameras(
    source_kind: str,
    camera_index: int,
    v4l2: Sequence[tuple[str, str]],
    picamera2: str | None,
    libcamera: bool,
) -> Check:
    """The configured source exists: ``/dev/videoN`` for a V4L2 camera, picamera2 for the Pi camera.

    ``v4l2`` is (device, name) pairs; ``picamera2`` is None when importable, else the import error.
    """
    names = ", ".join(f"{d} ({n})" if n else d for d, n in v4l2) or "no /dev/video*"
    pi = "picamera2 importable" if picamera2 is None else "no picamera2"
    detail = f"{names}; {pi}" + ("; libcamera present" if libcamera else "")
    if source_kind == "picamera2":
        if picamera2 is not None:
            return fail(
                "cameras",
                detail,
                "sudo apt install python3-picamera2, and make the venv with --system-site-packages",
            )
        return ok("cameras", detail)
    if source_kind == "camera":
        wanted = f"/dev/video{camera_index}"
        if not any(d == wanted for d, _ in v4l2):
            return fail("cameras", f"{wanted} missing; {detail}", "plug in the camera; `ls /dev/video*`")
        return ok("cameras", detail)
    if not v4l2 and picamera2 is not None:
        return warn("cameras", detail, "no camera found: plug one in (or use --video FILE|URL)")
    return ok("cameras", detail)


def check_access(user: str, is_root: bool, groups: set[str], nodes: Sequence[tuple[str, str, bool]]) -> Check:
    """The user can open the device nodes the product needs; ``nodes`` is (path, owning group, accessible)."""
    if is_root:
        return ok("groups", f"{user} is root")
    blocked = [(p, g) for p, g, accessible in nodes if not accessible]
    member = ", ".join(sorted(groups)) or "-"
    if blocked:
        need = sorted({g for _, g in blocked})
        paths = ", ".join(p for p, _ in blocked[:3])
        return fail(
            "groups",
            f"{user} cannot open {paths} (groups: {member})",
            f"sudo usermod -aG {','.join(need)} {user}, then log out and back in",
        )
    return ok("groups", f"{user} in {member}")


def check_coral(
    device: str, cpu_fallback: bool, usb: Sequence[tuple[str, str]], apex: Sequence[str], libedgetpu: bool
) -> Check:
    """Coral presence (USB ids, ``/dev/apex_*``) against ``runtime.device`` and ``libedgetpu``."""
    found = [CORAL_USB_IDS[i] for i in usb if i in CORAL_USB_IDS] + [f"PCIe {a}" for a in apex]
    detail = ", ".join(found) or "none"
    detail += "; libedgetpu.so.1 " + ("present" if libedgetpu else "missing")
    if found and not libedgetpu:
        status = fail if device == "edgetpu" else warn
        return status("coral", detail, "install the Edge TPU runtime: sudo apt install libedgetpu1-std")
    if device == "edgetpu" and not found:
        if cpu_fallback:
            return warn("coral", detail, "plug in the Coral; until then the CPU twin runs (cpu_fallback)")
        return fail("coral", detail, "plug in the Coral, or set runtime.device: cpu")
    return ok("coral", detail if found else "none (runtime.device: cpu)")


# Bits of the firmware's get_throttled: now (0-3) and since boot (16-19).
_NOW = {0x1: "under-voltage", 0x2: "frequency capped", 0x4: "throttled", 0x8: "soft temperature limit"}


def check_pi_health(throttled: int | None, temperature_c: float | None) -> Check:
    """Under-voltage and throttling, now and since boot, and the SoC temperature (Pi only)."""
    if throttled is None and temperature_c is None:
        return ok("power", "not a Raspberry Pi (no throttle sensor)")
    temp = f"soc {temperature_c:.0f} C" if temperature_c is not None else "soc temperature unknown"
    bits = throttled or 0
    now = [t for b, t in _NOW.items() if bits & b]
    past = [t for b, t in _NOW.items() if bits & (b << 16)]
    supply = "use the official supply (5 V 3 A for a Pi 4, 5 V 5 A for a Pi 5) and a short, thick cable"
    cooling = "add a heatsink or fan; keep the case ventilated"
    if bits & 0x1:
        return fail("power", f"{temp}; UNDER-VOLTAGE now (0x{bits:x})", supply)
    if now:
        return warn("power", f"{temp}; {', '.join(now)} now (0x{bits:x})", cooling)
    if past:
        fix = supply if bits & 0x10000 else cooling
        return warn("power", f"{temp}; since boot: {', '.join(past)} (0x{bits:x})", fix)
    if temperature_c is not None and temperature_c >= 80:
        return warn("power", f"{temp}; hot", cooling)
    return ok("power", f"{temp}; no under-voltage or throttling")


def check_disk(
    path: str, free_bytes: int | None, writable_error: str | None, min_free_gb: float | None
) -> Check:
    """The data directory is writable and has room (``retention.min_free_gb`` or 1 GiB)."""
    if writable_error is not None:
        return fail(
            "disk",
            f"{path}: not writable ({writable_error})",
            f"create it and give it to the user that runs edgevision: sudo install -d -o $USER {path}",
        )
    if free_bytes is None:
        return warn("disk", f"{path}: free space unknown", "check `df -h`")
    gib = free_bytes / (1 << 30)
    detail = f"{path}: writable, {gib:.1f} GiB free"
    want = int((min_free_gb or 0) * (1 << 30)) or DISK_WARN_BYTES
    if free_bytes < DISK_FAIL_BYTES:
        return fail("disk", detail, "free some space (`edgevision events prune`, or a larger card)")
    if free_bytes < want:
        return warn("disk", detail + f" (< {want / (1 << 30):.1f} GiB)", "free some space or lower retention")
    return ok("disk", detail)


def check_models(results: Sequence[tuple[str, bool, str]], models_dir: str) -> Check:
    """The models the config needs are installed and verify (size, sha256, TFLite structure)."""
    bad = [(n, m) for n, good, m in results if not good]
    if bad:
        names = " ".join(n for n, _ in bad)
        return fail(
            "models",
            "; ".join(f"{n}: {m}" for n, m in bad) + f" (in {models_dir})",
            f"edgevision models fetch {names} (offline: add --mirror DIR|URL)",
        )
    return ok("models", f"{len(results)} verified in {models_dir}: " + ", ".join(n for n, _, _ in results))


def check_config(path: str | None, error: str | None) -> Check:
    """The config file validates (strict: unknown keys, types, ranges)."""
    if error is not None:
        return fail("config", error.splitlines()[0], "fix the key named above (see configs/default.yaml)")
    return ok("config", f"{path}: valid" if path else "no config file: defaults")


def check_service(systemctl: bool, active: str | None, enabled: str | None, unit: str) -> Check:
    """The systemd service's state, when systemd is there at all."""
    if not systemctl:
        return ok("service", "systemd not available (no service here)")
    if active in (None, "", "unknown") or enabled in ("not-found",):
        return ok("service", f"{unit} not installed (edgevision service install)")
    detail = f"{unit} {active}" + (f", {enabled}" if enabled else "")
    if active == "failed":
        return fail("service", detail, f"journalctl -u {unit} -e; then sudo systemctl restart {unit}")
    if active in ("activating", "deactivating", "reloading"):
        return warn("service", detail, f"journalctl -u {unit} -f")
    if active == "inactive" and enabled == "enabled":
        return warn("service", detail, f"sudo systemctl start {unit}")
    return ok("service", detail)


def check_clock(year: int, ntp_synced: bool | None) -> Check:
    """The clock is plausible (event times, TLS) and NTP-synchronized when timedatectl can tell."""
    if year < PLAUSIBLE_YEAR:
        return fail(
            "clock",
            f"year {year}: the clock is wrong",
            "connect to the network so NTP can set it (timedatectl), or: sudo date -s 'YYYY-MM-DD HH:MM'",
        )
    if ntp_synced is False:
        return warn(
            "clock",
            f"year {year}; not NTP-synchronized",
            "sudo timedatectl set-ntp true (and check the network)",
        )
    return ok("clock", f"year {year}" + ("; NTP-synchronized" if ntp_synced else ""))


def overall(checks: Sequence[Check]) -> Status:
    """The worst status of all checks."""
    statuses = {c.status for c in checks}
    return Status.FAIL if Status.FAIL in statuses else Status.WARN if Status.WARN in statuses else Status.OK
