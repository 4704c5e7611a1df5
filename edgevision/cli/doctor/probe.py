"""What ``edgevision doctor`` observes on this machine, read from an injectable root (``/`` in production).

Each function reads one kind of fact (sysfs, ``/dev``, ``/etc/os-release``, group database, ``systemctl``,
``timedatectl``) and returns plain values for :mod:`edgevision.cli.doctor.checks`. Tools that are absent
(systemctl, timedatectl, vcgencmd) give None, never an exception; every subprocess has a timeout.
"""

from __future__ import annotations

import ctypes.util
import grp
import importlib.util
import os
import platform
import pwd
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from edgevision.cli.doctor.checks import CORAL_USB_IDS

COMMAND_TIMEOUT_S = 3.0


def _run(cmd: list[str]) -> str | None:
    """stdout of a short command, or None when it is missing, fails to start or times out."""
    if shutil.which(cmd[0]) is None:
        return None
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip()


def python_facts(root: Path = Path("/")) -> tuple[tuple[int, int, int], str, int, str]:
    """(Python version, machine, pointer bits of this userland, OS name from os-release)."""
    version = (sys.version_info.major, sys.version_info.minor, sys.version_info.micro)
    os_name = platform.system()
    try:
        text = (root / "etc/os-release").read_text()
        m = re.search(r'^PRETTY_NAME="?([^"\n]*)"?', text, re.M)
        os_name = m.group(1) if m else os_name
    except OSError:
        pass
    return version, platform.machine(), struct.calcsize("P") * 8, os_name


def v4l2_devices(root: Path = Path("/")) -> list[tuple[str, str]]:
    """``/dev/videoN`` nodes with their driver-given names from sysfs (e.g. a Pi's codec and ISP nodes)."""
    out = []
    for dev in sorted((root / "dev").glob("video*"), key=lambda p: (len(p.name), p.name)):
        if not re.fullmatch(r"video\d+", dev.name):
            continue
        try:
            name = (root / "sys/class/video4linux" / dev.name / "name").read_text().strip()
        except OSError:
            name = ""
        out.append((f"/dev/{dev.name}", name))
    return out


def picamera2_error() -> str | None:
    """None when picamera2 can be imported here (found on the path), else why not."""
    return None if importlib.util.find_spec("picamera2") is not None else "picamera2 not installed"


def libcamera_present(root: Path = Path("/")) -> bool:
    return importlib.util.find_spec("libcamera") is not None or any(
        (root / "usr/lib").glob("*/libcamera.so*")
    )


def usb_ids(root: Path = Path("/")) -> list[tuple[str, str]]:
    """(idVendor, idProduct) of every USB device in sysfs."""
    out = []
    for dev in sorted((root / "sys/bus/usb/devices").glob("*")):
        try:
            out.append(((dev / "idVendor").read_text().strip(), (dev / "idProduct").read_text().strip()))
        except OSError:
            continue
    return out


def coral_usb_nodes(root: Path = Path("/")) -> list[str]:
    """``/dev/bus/usb/BBB/DDD`` of Coral USB accelerators (opened by libedgetpu: plugdev via udev rules)."""
    out = []
    for dev in sorted((root / "sys/bus/usb/devices").glob("*")):
        try:
            ids = ((dev / "idVendor").read_text().strip(), (dev / "idProduct").read_text().strip())
            if ids not in CORAL_USB_IDS:
                continue
            bus, num = int((dev / "busnum").read_text()), int((dev / "devnum").read_text())
        except (OSError, ValueError):
            continue
        out.append(f"/dev/bus/usb/{bus:03d}/{num:03d}")
    return out


def apex_nodes(root: Path = Path("/")) -> list[str]:
    """PCIe / M.2 Coral devices (the gasket/apex driver)."""
    return [f"/dev/{p.name}" for p in sorted((root / "dev").glob("apex_*"))]


def libedgetpu_present() -> bool:
    return ctypes.util.find_library("edgetpu") is not None


def device_access(paths: list[str], root: Path = Path("/")) -> list[tuple[str, str, bool]]:
    """(path, owning group, readable and writable by this process) for each device node."""
    out = []
    for p in paths:
        real = root / p.lstrip("/")
        try:
            gid = real.stat().st_gid
        except OSError:
            continue
        try:
            group = grp.getgrgid(gid).gr_name
        except KeyError:
            group = str(gid)
        out.append((p, group, os.access(real, os.R_OK | os.W_OK)))
    return out


def render_nodes(root: Path = Path("/")) -> list[str]:
    return [f"/dev/dri/{p.name}" for p in sorted((root / "dev/dri").glob("renderD*"))]


def user_facts() -> tuple[str, bool, set[str]]:
    """(user name, is root, names of the process's groups)."""
    uid = os.getuid()
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = str(uid)
    names = set()
    for gid in {os.getgid(), *os.getgroups()}:
        try:
            names.add(grp.getgrgid(gid).gr_name)
        except KeyError:
            names.add(str(gid))
    return user, uid == 0, names


def data_dir_facts(path: Path) -> tuple[int | None, str | None]:
    """(free bytes, None when writable else why) for the data directory (or, if absent, where it would go)."""
    existing = path
    try:
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
    except OSError as exc:  # a directory on the way this user may not enter (the service's is 0750)
        return None, f"{exc.filename or path}: {exc.strerror or exc}"
    try:
        free: int | None = shutil.disk_usage(existing).free
    except OSError:
        free = None
    if existing != path:
        if not os.access(existing, os.W_OK | os.X_OK):
            return free, f"{path} does not exist and {existing} is not writable"
        return free, None
    try:
        with tempfile.NamedTemporaryFile(dir=path, prefix=".doctor-"):
            pass
    except OSError as exc:
        return free, exc.strerror or str(exc)
    return free, None


def service_facts(unit: str) -> tuple[bool, str | None, str | None]:
    """(systemd running, ``systemctl is-active``, ``systemctl is-enabled``)."""
    if not Path("/run/systemd/system").is_dir() or shutil.which("systemctl") is None:
        return False, None, None
    return True, _run(["systemctl", "is-active", unit]), _run(["systemctl", "is-enabled", unit])


def clock_facts() -> tuple[int, bool | None]:
    """(current UTC year, NTP synchronized per timedatectl, or None when unknown)."""
    synced = _run(["timedatectl", "show", "-p", "NTPSynchronized", "--value"])
    return time.gmtime().tm_year, {"yes": True, "no": False}.get(synced or "")
