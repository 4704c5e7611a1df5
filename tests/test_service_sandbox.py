"""The unit files and their sandbox: what they must contain, ``systemd-analyze verify`` and ``security`` (exposure
≤ 2.5 with the device drop-ins), and the pipeline running under the unit's seccomp policy
(``SystemCallFilter=@system-service ~@privileged``, ``RestrictAddressFamilies=``, ``MemoryDenyWriteExecute=``)
rebuilt with libseccomp from the syscall groups of the installed systemd."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import EDGEVISION, WALKING

from edgevision.service.units import render_unit

REPO = Path(__file__).resolve().parent.parent
UNITS = REPO / "systemd"
EXEC = "/opt/edgevision/venv/bin/edgevision"
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(not ANALYZE, reason="systemd-analyze not installed (.ci/run installs it)")
CORAL_DROPIN = "[Service]\nSupplementaryGroups=video plugdev apex\nDeviceAllow=char-usb_device rw\nDeviceAllow=char-apex rw\n"


@pytest.mark.parametrize("unit", ["edgevision.service", "edgevision@.service"])
def test_unit_file_has_what_the_service_needs(unit: str) -> None:
    lines = (UNITS / unit).read_text().splitlines()
    config = "/etc/edgevision/%i.yaml" if "@" in unit else "/etc/edgevision/config.yaml"
    for line in [
        "Type=notify",
        "WatchdogSec=30",
        "Restart=on-failure",
        "RestartPreventExitStatus=78",
        "StartLimitBurst=5",
        "ProtectSystem=strict",
        "PrivateTmp=yes",
        "NoNewPrivileges=yes",
        "ProtectHome=yes",
        "ProtectKernelTunables=yes",
        "User=edgevision",
        "CapabilityBoundingSet=",
        "DevicePolicy=closed",
        "DeviceAllow=char-video4linux rw",
        "DeviceAllow=char-media rw",
        "DeviceAllow=char-dma_heap rw",
        "SystemCallFilter=@system-service",
        "MemoryDenyWriteExecute=yes",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK",
        "CPUWeight=300",  # frames before the board's other work (bench/scheduler.py --nice)
        "Nice=-5",
        f"ExecStart=@EXEC@ run --config {config}",
    ]:
        assert line in lines, line
    assert not any(
        x.startswith(("PrivateDevices=yes", "SupplementaryGroups=")) for x in lines
    )  # drop-in only


def test_both_units_share_one_sandbox() -> None:
    """edgevision@.service differs from edgevision.service only in what names the instance."""

    def service(unit: str) -> set[str]:
        body = (UNITS / unit).read_text().split("\n[Service]\n", 1)[1].split("\n[Install]")[0]
        return {x for x in body.splitlines() if x and not x.startswith("#")}

    single, template = service("edgevision.service"), service("edgevision@.service")
    assert {x for x in single ^ template if "%i" not in x} == {
        "StateDirectory=edgevision",
        "WorkingDirectory=/var/lib/edgevision",
        "Environment=EDGEVISION_DATA_DIR=/var/lib/edgevision",
        "ExecStart=@EXEC@ run --config /etc/edgevision/config.yaml",
    }


def test_exec_paths_are_escaped_or_refused() -> None:
    assert "ExecStart=/opt/ev%%1/bin/edgevision run" in render_unit("/opt/ev%1/bin/edgevision")
    with pytest.raises(Exception, match="space or quote"):
        render_unit("/opt/my ev/bin/edgevision")


def _write_units(tmp: Path, dropin: str | None) -> list[Path]:
    """The single unit and one instance of the template, rendered as the installer writes them."""
    out = []
    for name, template in (("edgevision.service", False), ("edgevision@door.service", True)):
        path = tmp / name
        path.write_text(render_unit(sys.executable if not template else EXEC, template))
        if dropin is not None:
            (tmp / f"{name}.d").mkdir()
            (tmp / f"{name}.d" / "groups.conf").write_text(dropin)
        out.append(path)
    return out


@needs_analyze
@pytest.mark.parametrize(
    "dropin", [None, "[Service]\nSupplementaryGroups=video\n", CORAL_DROPIN], ids=["bare", "camera", "coral"]
)
def test_units_pass_systemd_analyze_verify(tmp_path: Path, dropin: str | None) -> None:
    single, instance = _write_units(tmp_path, dropin)
    r = subprocess.run([str(ANALYZE), "verify", str(single)], capture_output=True, text=True)
    assert r.returncode == 0 and "edgevision" not in r.stderr, r.stderr  # no warning about our unit
    r = subprocess.run([str(ANALYZE), "verify", str(instance)], capture_output=True, text=True)
    # The instance's ExecStart (/opt/...) does not exist here: that is the only complaint allowed.
    assert [x for x in r.stderr.splitlines() if "edgevision" in x and "is not executable" not in x] == []


def exposure(unit: Path) -> tuple[float, str]:
    """``systemd-analyze security --offline=yes`` on a unit file: (overall exposure, full report)."""
    r = subprocess.run(
        [str(ANALYZE), "security", "--offline=yes", "--no-pager", str(unit)], capture_output=True, text=True
    )
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", r.stdout)
    assert m, r.stdout + r.stderr
    return float(m.group(1)), r.stdout


@needs_analyze
@pytest.mark.parametrize("dropin", [None, CORAL_DROPIN], ids=["camera", "coral"])
def test_exposure_is_at_most_2_5_with_the_devices_still_allowed(tmp_path: Path, dropin: str | None) -> None:
    for unit in _write_units(tmp_path, dropin):
        score, report = exposure(unit)
        assert score <= 2.5, report
        acl = next(x for x in report.splitlines() if "DeviceAllow=" in x)
        for dev in ["char-video4linux:rw", "char-media:rw", "char-dma_heap:rw"]:
            assert dev in acl, acl  # V4L2 and libcamera
        if dropin:
            assert "char-usb_device:rw" in acl and "char-apex:rw" in acl  # USB and PCIe Coral


@needs_analyze
def test_exposure_check_can_fail(tmp_path: Path) -> None:
    """The score parser sees a weak unit as weak (the old unit rated 5.6)."""
    weak = tmp_path / "weak.service"
    weak.write_text("[Service]\nExecStart=/bin/true\nUser=nobody\n")
    assert exposure(weak)[0] > 2.5


# --- the pipeline under the unit's seccomp policy -----------------------------------------------------------

SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_CMP_EQ, SCMP_CMP_MASKED_EQ = 4, 7
PROT_WRITE, PROT_EXEC, SHM_EXEC = 0x2, 0x4, 0o100000
FAMILIES = {
    "AF_UNIX": socket.AF_UNIX,
    "AF_INET": socket.AF_INET,
    "AF_INET6": socket.AF_INET6,
    "AF_NETLINK": 16,
}


def _errno(code: int) -> int:
    return 0x00050000 | (code & 0xFFFF)


class ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("a", ctypes.c_uint64), ("b", ctypes.c_uint64)]


@functools.cache
def _libseccomp() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("seccomp")
    if not name:
        return None
    lib = ctypes.CDLL(name, use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_rule_add_array.argtypes = [
        ctypes.c_void_p,
        ctypes.c_uint32,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.POINTER(ArgCmp),
    ]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    return lib


def _groups() -> dict[str, list[str]]:
    """Every syscall group of the installed systemd (``systemd-analyze syscall-filter``)."""
    out = subprocess.run([str(ANALYZE), "syscall-filter"], capture_output=True, text=True, check=True).stdout
    groups: dict[str, list[str]] = {}
    current = ""
    for line in out.splitlines():
        if line.startswith("@"):
            current = line.strip()
            groups[current] = []
        elif line.strip() and not line.strip().startswith("#") and current:
            groups[current].append(line.strip())
    return groups


def syscall_set(spec: str, groups: dict[str, list[str]]) -> set[str]:
    """Expand ``@group`` (recursively) or a syscall name."""
    if not spec.startswith("@"):
        return {spec}
    return set().union(*(syscall_set(s, groups) for s in groups[spec]))


def unit_policy() -> tuple[set[str], list[str]]:
    """The syscalls the unit allows (its SystemCallFilter= lines, in order) and its address families."""
    lines = (UNITS / "edgevision.service").read_text().splitlines()
    groups = _groups()
    allowed: set[str] = set()
    for line in (x.split("=", 1)[1] for x in lines if x.startswith("SystemCallFilter=")):
        if line.startswith("~"):
            allowed -= set().union(*(syscall_set(s, groups) for s in line[1:].split()))
        else:
            allowed |= set().union(*(syscall_set(s, groups) for s in line.split()))
    # systemd always permits these (systemd.exec(5), SystemCallFilter=).
    allowed |= {
        "execve",
        "exit",
        "exit_group",
        "getrlimit",
        "rt_sigreturn",
        "sigreturn",
        "clock_gettime",
        "gettimeofday",
        "time",
        "nanosleep",
        "clock_nanosleep",
    }
    families = next(x for x in lines if x.startswith("RestrictAddressFamilies=")).split("=", 1)[1].split()
    return allowed, families


def sandbox(syscalls: set[str] | None, families: list[str] | None, mdwe: bool) -> Callable[[], None]:
    """A preexec_fn loading the policy into the child (denied calls fail with EPERM, as
    ``SystemCallErrorNumber=EPERM`` makes them)."""
    lib = _libseccomp()
    assert lib is not None

    def load() -> None:
        # Two filters, as systemd installs them: the kernel applies both, the stricter answer wins.
        if (
            mdwe
        ):  # systemd's MemoryDenyWriteExecute=: no W+X mapping, no adding X later, no executable SysV shm
            ctx = lib.seccomp_init(SCMP_ACT_ALLOW)
            rule(
                ctx,
                _errno(1),
                "mmap",
                (2, SCMP_CMP_MASKED_EQ, PROT_WRITE | PROT_EXEC, PROT_WRITE | PROT_EXEC),
            )
            for name in ("mprotect", "pkey_mprotect"):
                rule(ctx, _errno(1), name, (2, SCMP_CMP_MASKED_EQ, PROT_EXEC, PROT_EXEC))
            rule(ctx, _errno(1), "shmat", (2, SCMP_CMP_MASKED_EQ, SHM_EXEC, SHM_EXEC))
            if lib.seccomp_load(ctx) != 0:
                raise OSError("seccomp_load failed")
        if syscalls is not None:
            ctx = lib.seccomp_init(_errno(1))
            for name in sorted(syscalls):
                if name != "socket" or families is None:
                    rule(ctx, SCMP_ACT_ALLOW, name)
            for fam in families or ():
                rule(ctx, SCMP_ACT_ALLOW, "socket", (0, SCMP_CMP_EQ, FAMILIES[fam], 0))
            if lib.seccomp_load(ctx) != 0:
                raise OSError("seccomp_load failed")

    def rule(ctx: int, action: int, name: str, *cmps: tuple[int, int, int, int]) -> None:
        nr = lib.seccomp_syscall_resolve_name(name.encode())
        if nr < 0:
            return  # not a syscall of this architecture
        arr = (ArgCmp * max(1, len(cmps)))(*[ArgCmp(*c) for c in cmps])
        if lib.seccomp_rule_add_array(ctx, action, nr, len(cmps), arr) != 0 and cmps:
            raise OSError(f"seccomp rule for {name} refused")

    return load


@functools.cache
def _seccomp_works() -> bool:
    """libseccomp is there and this kernel/container lets a process load a filter."""
    if not ANALYZE or _libseccomp() is None:
        return False
    try:
        return (
            subprocess.run(
                [sys.executable, "-c", "pass"], preexec_fn=sandbox(None, None, mdwe=True)
            ).returncode
            == 0
        )
    except subprocess.SubprocessError:
        return False


needs_seccomp = pytest.mark.skipif(
    not _seccomp_works(), reason="needs libseccomp, seccomp and systemd-analyze"
)

W_X = "import mmap; mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC); print('w+x')"
RAW = "import socket; socket.socket(socket.AF_PACKET, socket.SOCK_RAW); print('packet')"
PRIV = "import os; os.chroot('/'); print('chroot')"


@needs_seccomp
@pytest.mark.parametrize("probe", [W_X, RAW, PRIV], ids=["w+x", "af_packet", "chroot"])
def test_the_rebuilt_policy_denies_what_the_unit_denies(probe: str) -> None:
    """The policy bites (so the pipeline run below proves something): each probe works without it, where the
    machine allows, and fails with it."""
    free = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    if free.returncode != 0:
        pytest.skip(f"not permitted here even without the policy: {free.stderr.strip().splitlines()[-1]}")
    allowed, families = unit_policy()
    r = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        preexec_fn=sandbox(allowed, families, mdwe=True),
    )
    assert r.returncode != 0 and ("PermissionError" in r.stderr or "Operation not permitted" in r.stderr), (
        r.stderr
    )


@needs_seccomp
def test_pipeline_runs_under_the_units_seccomp_policy(env: dict[str, str], tmp_path: Path) -> None:
    """LiteRT with XNNPACK, OpenCV, PyAV (recording), SQLite and the web server under the unit's syscall
    filter, address families and MemoryDenyWriteExecute=: no JIT or W+X mapping is needed."""
    allowed, families = unit_policy()
    cfg = tmp_path / "c.yaml"
    cfg.write_text("web:\n  enabled: true\n  port: 0\n")
    cmd = [
        *EDGEVISION,
        "run",
        "--config",
        str(cfg),
        "--video",
        str(WALKING),
        "--max-frames",
        "60",
        "--record",
        "--data-dir",
        str(tmp_path / "data"),
        "--budget-ms",
        "60",
    ]
    r = subprocess.run(
        cmd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=sandbox(allowed, families, mdwe=True),
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "processed 60 frames" in r.stderr and (tmp_path / "data/events.db").exists()
