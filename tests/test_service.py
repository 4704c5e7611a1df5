"""systemd integration: sd_notify on a real socket, the progress watchdog, the unit file, install, Pi health."""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import SHARED_MODELS, WALKING, run_cli
from fakes import CameraScript, frames_from

from edgevision.capture.runner import LiveRunner
from edgevision.capture.sources import OpenCVSource
from edgevision.config import load_config
from edgevision.detection.factory import build_detector
from edgevision.pipeline.loop import Pipeline, make_prepare
from edgevision.service.health import PiHealth, budget_factor, parse_throttled, read_health
from edgevision.service.install import render_unit
from edgevision.service.monitor import ServiceMonitor
from edgevision.service.notify import Notifier, watchdog_interval

REPO = Path(__file__).resolve().parent.parent


class Listener:
    """A unix datagram socket standing in for systemd's notify socket; records (time, message)."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            self.messages.append((time.monotonic(), data.decode()))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()

    def times(self, key: str) -> list[float]:
        return [t for t, m in self.messages if key in m.split("\n")]


@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_notifier_speaks_the_protocol(tmp_path: Path, abstract: bool) -> None:
    addr = f"@edgevision-test-{os.getpid()}" if abstract else str(tmp_path / "notify.sock")
    lst = Listener(addr)
    n = Notifier(addr)
    assert n.ready("starting") and n.watchdog() and n.status("12 fps") and n.stopping()
    time.sleep(0.3)
    lst.close()
    assert [m for _, m in lst.messages] == [
        "READY=1\nSTATUS=starting",
        "WATCHDOG=1",
        "STATUS=12 fps",
        "STOPPING=1",
    ]
    assert not Notifier("").enabled and not Notifier("").ready()


def test_watchdog_interval() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert (
        watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    )  # meant for another pid
    assert watchdog_interval({}) is None


def test_service_run_ready_watchdog_status_stopping(env: dict[str, str], tmp_path: Path) -> None:
    addr = str(tmp_path / "notify.sock")
    lst = Listener(addr)
    det = tmp_path / "d.jsonl"
    e = dict(env, NOTIFY_SOCKET=addr, WATCHDOG_USEC="400000")  # ping every 0.2 s
    cfg = tmp_path / "c.yaml"
    cfg.write_text("service:\n  status_interval_s: 1\n")
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "edgevision", "run", "--config", str(cfg), "--video", str(WALKING),
                             "--realtime", "--detections", str(det), "--max-frames", "100"], env=e,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    lines_at_ready = None
    while proc.poll() is None and time.monotonic() - t0 < 60:
        if lst.times("READY=1") and lines_at_ready is None:
            lines_at_ready = len(det.read_text().splitlines()) if det.exists() else 0
        time.sleep(0.02)
    _, err = proc.communicate(timeout=60)
    time.sleep(0.3)
    lst.close()
    assert proc.returncode == 0, err
    ready, pings, stopping = lst.times("READY=1"), lst.times("WATCHDOG=1"), lst.times("STOPPING=1")
    assert (
        len(ready) == 1 and lines_at_ready is not None and lines_at_ready >= 1
    )  # READY after the first frame
    assert pings and all(p >= ready[0] for p in pings)
    assert len(pings) >= 10 and 0.1 < statistics.median(b - a for a, b in itertools.pairwise(pings)) < 0.4
    assert len(stopping) == 1 and stopping[0] >= pings[-1] - 0.05
    statuses = [m for _, m in lst.messages if m.startswith("STATUS=")]
    assert statuses and "fps" in statuses[-1] and "rung ssd_mobilenet_v1_coco_quant" in statuses[-1]


def test_no_watchdog_while_the_camera_is_stalled(models_dir: Path, tmp_path: Path) -> None:
    addr = str(tmp_path / "notify.sock")
    lst = Listener(addr)
    frames = frames_from(str(WALKING), 3)
    script = CameraScript(frames, connections=[(30, "stall")])
    detector = build_detector(load_config(None, {"models.dir": str(models_dir)}))
    runner = LiveRunner(lambda: OpenCVSource(0, capture_factory=script.factory), make_prepare(lambda: detector),
                        stall_timeout=60.0)  # fmt: skip
    monitor = ServiceMonitor(Notifier(addr), ping_interval=0.1, progress_timeout=0.5, status_interval=10)
    pipe = Pipeline(runner, detector, [monitor])
    stop = threading.Event()
    th = threading.Thread(target=pipe.run, args=(stop,), daemon=True)
    th.start()
    time.sleep(3.0)  # 30 frames (~0.3 s), then the camera hangs inside read()
    stop.set()
    script.stall_release.set()
    th.join(10)
    lst.close()
    pings = lst.times("WATCHDOG=1")
    assert monitor.last_progress is not None and pings
    last_frame = monitor.last_progress
    assert all(p <= last_frame + 0.5 + 0.15 for p in pings)  # nothing after progress_timeout (+ one interval)
    assert lst.times("STOPPING=1")


def test_unit_file_has_what_the_service_needs() -> None:
    unit = (REPO / "systemd" / "edgevision.service").read_text()
    for line in ["Type=notify", "WatchdogSec=30", "Restart=on-failure", "RestartPreventExitStatus=78",
                 "StartLimitBurst=5", "SupplementaryGroups=video", "ProtectSystem=strict",
                 "ReadWritePaths=/var/lib/edgevision", "PrivateTmp=yes", "NoNewPrivileges=yes", "ProtectHome=yes",
                 "ProtectKernelTunables=yes", "User=edgevision", "ExecStart=@EXEC@ run --config /etc/edgevision/config.yaml"]:  # fmt: skip
        assert line in unit.splitlines(), line
    assert "PrivateDevices=yes" not in unit  # cameras and the Coral are devices


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    unit = tmp_path / "edgevision.service"
    unit.write_text(render_unit(str(Path(sys.executable).parent / "edgevision")))
    r = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "edgevision.service" not in r.stderr  # no warnings about our unit


def _install(env: dict[str, str], root: Path, *extra: str):  # type: ignore[no-untyped-def]
    e = dict(env, EDGEVISION_MODEL_MIRROR=str(SHARED_MODELS))
    return run_cli(["service", "install", "--root", str(root), *extra], e)


def _tree(root: Path) -> dict[str, tuple[int, bytes]]:
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.read_bytes() if p.is_file() else b"")
            for p in sorted(root.rglob("*")) if not p.is_symlink()}  # fmt: skip


def test_install_dry_run_then_install_then_idempotent(env: dict[str, str], tmp_path: Path) -> None:
    root = tmp_path / "root"
    r = _install(env, root, "--dry-run")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    for expected in ["useradd --system", "would create " + str(root / "etc/edgevision/config.yaml"),
                     "would fetch model ssd_mobilenet_v1_coco_quant", "would create " + str(root / "etc/systemd/system/edgevision.service"),
                     "systemctl --root " + str(root) + " enable edgevision.service", "systemctl start edgevision.service"]:  # fmt: skip
        assert expected in out, expected
    assert not root.exists() or not any(root.rglob("*.yaml"))  # the dry run changed nothing
    r = _install(env, root)
    assert r.returncode == 0, r.stderr
    unit = (root / "etc/systemd/system/edgevision.service").read_text()
    assert f"ExecStart={Path(sys.executable).parent / 'edgevision'} run" in unit
    assert (root / "etc/systemd/system/multi-user.target.wants/edgevision.service").is_symlink()
    assert (root / "var/lib/edgevision/models/ssd_mobilenet_v1_1.0_coco_quant_detect.tflite").exists()
    before = _tree(root)
    r = _install(env, root)
    assert r.returncode == 0 and "0 change(s)" in r.stdout and "would" not in r.stdout
    assert _tree(root) == before  # the second run changed nothing
    (root / "etc/edgevision/config.yaml").write_text("detector:\n  threshold: 0.7\n")
    r = _install(env, root, "--config", str(REPO / "configs" / "pi4.yaml"))
    assert "kept" in r.stdout and "threshold: 0.7" in (root / "etc/edgevision/config.yaml").read_text()


def test_coral_config_adds_the_coral_groups_and_twin(env: dict[str, str], tmp_path: Path) -> None:
    root = tmp_path / "root"
    r = _install(env, root, "--config", str(REPO / "configs" / "coral.yaml"))
    assert r.returncode == 0, r.stderr
    assert (
        "SupplementaryGroups=video plugdev apex"
        in (root / "etc/systemd/system/edgevision.service.d/coral.conf").read_text()
    )
    models = root / "var/lib/edgevision/models"
    assert (models / "ssd_mobilenet_v2_coco_quant_postprocess_edgetpu.tflite").exists()
    assert (models / "ssd_mobilenet_v2_coco_quant_postprocess.tflite").exists()


def test_uninstall_keeps_recordings_unless_purged(env: dict[str, str], tmp_path: Path) -> None:
    root = tmp_path / "root"
    assert _install(env, root).returncode == 0
    (root / "var/lib/edgevision/events.db").write_bytes(b"keep me")
    r = run_cli(["service", "uninstall", "--root", str(root)], env)
    assert r.returncode == 0, r.stderr
    assert not (root / "etc/systemd/system/edgevision.service").exists()
    assert not (root / "etc/systemd/system/multi-user.target.wants/edgevision.service").exists()
    assert (root / "var/lib/edgevision/events.db").read_bytes() == b"keep me"
    r = run_cli(["service", "uninstall", "--root", str(root), "--purge"], env)
    assert r.returncode == 0 and not (root / "var/lib/edgevision").exists()


def test_install_refuses_a_bad_config(env: dict[str, str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("detector:\n  treshold: 2\n")
    r = _install(env, tmp_path / "root", "--config", str(bad))
    assert r.returncode == 78 and "unknown key" in r.stderr and not (tmp_path / "root").exists()


def test_pi_health_from_sysfs(tmp_path: Path) -> None:
    thr, temp = tmp_path / "get_throttled", tmp_path / "temp"
    thr.write_text("50005\n")
    temp.write_text("71234\n")
    h = read_health((thr,), temp, use_vcgencmd=False)
    assert h.under_voltage and h.throttling and h.temperature_c == pytest.approx(71.234)
    assert "UNDER-VOLTAGE" in h.text() and "THROTTLED" in h.text() and "71C" in h.text()
    assert budget_factor(h, 0.8) == 0.8
    assert parse_throttled("throttled=0x0") == 0
    none = read_health((tmp_path / "nope",), tmp_path / "nope", use_vcgencmd=False)
    assert none == PiHealth(None, None) and none.text() == "" and budget_factor(none) == 1.0


def test_all_configs_validate(env: dict[str, str]) -> None:
    configs = sorted((REPO / "configs").glob("*.yaml"))
    assert {c.name for c in configs} >= {"default.yaml", "pi4.yaml", "pi5.yaml", "coral.yaml"}
    r = run_cli(["config", "check", *map(str, configs)], env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count(": ok") == len(configs)
