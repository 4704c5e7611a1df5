"""systemd integration: sd_notify on a real socket, the progress watchdog, the unit file, install, Pi health."""

from __future__ import annotations

import itertools
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import EDGEVISION, WALKING, run_cli
from fakes import CameraScript, frames_from

from edgevision.capture.runner import LiveRunner
from edgevision.capture.sources import OpenCVSource
from edgevision.config import ServiceConfig, load_config
from edgevision.detection.detector import FixedDetect
from edgevision.detection.factory import build_detector
from edgevision.pipeline.loop import Pipeline
from edgevision.recorder.recovery import check_allowance_s
from edgevision.results import Frame, FrameResult, Latency
from edgevision.service.health import PiHealth, budget_factor, parse_throttled, read_health
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


@pytest.mark.parametrize(
    ("under", "said"),
    [
        ("systemd", "service: ready (first frame processed)"),
        ("shell", None),  # a manual run has no service to be ready: it used to log this line too
        ("systemd-gone", "READY=1 could not be sent"),
    ],
)
def test_ready_is_logged_only_when_systemd_is_told(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, under: str, said: str | None
) -> None:
    addr = str(tmp_path / "notify.sock")
    lst = Listener(addr) if under == "systemd" else None
    monitor = ServiceMonitor(Notifier("" if under == "shell" else addr), ping_interval=None)
    try:
        with caplog.at_level("INFO", logger="edgevision.service.monitor"):
            monitor.on_result(
                FrameResult(Frame(np.zeros((8, 8, 3), np.uint8), 0.0, 0, "t"), [], Latency(), "m")
            )
    finally:
        monitor.close()
        if lst is not None:
            lst.close()
    lines = [r.getMessage() for r in caplog.records if "service:" in r.getMessage()]
    if said is None:
        assert lines == []
    else:
        assert len(lines) == 1 and said in lines[0], lines


@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_notifier_speaks_the_protocol(tmp_path: Path, abstract: bool) -> None:
    addr = f"@edgevision-test-{os.getpid()}" if abstract else str(tmp_path / "notify.sock")
    lst = Listener(addr)
    n = Notifier(addr)
    assert n.ready("starting") and n.watchdog() and n.status("12 fps") and n.extend_timeout(90.5, "checking")
    assert n.stopping()
    time.sleep(0.3)
    lst.close()
    assert [m for _, m in lst.messages] == [
        "READY=1\nSTATUS=starting",
        "WATCHDOG=1",
        "STATUS=12 fps",
        "EXTEND_TIMEOUT_USEC=90500000\nSTATUS=checking",
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
    proc = subprocess.Popen(
        [
            *EDGEVISION,
            "run",
            "--config",
            str(cfg),
            "--video",
            str(WALKING),
            "--realtime",
            "--detections",
            str(det),
            "--max-frames",
            "100",
        ],
        env=e,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
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


def test_start_up_recovery_extends_the_start_timeout_before_it_decodes_a_clip(
    env: dict[str, str], tmp_path: Path
) -> None:
    """A crash left a clip open: before recovery decodes it (minutes for a long clip on a Pi), the service asks
    systemd for the time that takes, so TimeoutStartSec does not kill and restart it mid-check."""
    data = tmp_path / "data"
    killed = subprocess.run(
        [sys.executable, str(REPO / "tests" / "recorder_driver.py"), str(data)],
        env=dict(env, EDGEVISION_FAULT_POINT="finish.synced"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    (partial,) = data.rglob("*.partial")
    size = partial.stat().st_size
    addr = str(tmp_path / "notify.sock")
    lst = Listener(addr)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"recorder:\n  enabled: true\n  data_dir: {data}\n")
    r = run_cli(
        ["run", "--config", str(cfg), "--video", str(WALKING), "--max-frames", "5"],
        env=dict(env, NOTIFY_SOCKET=addr),
    )
    time.sleep(0.3)
    lst.close()
    assert r.returncode == 0, r.stderr
    extend = [(t, m) for t, m in lst.messages if m.startswith("EXTEND_TIMEOUT_USEC=")]
    assert len(extend) == 1 and lst.times("READY=1") and extend[0][0] < lst.times("READY=1")[0]
    usec, status = extend[0][1].split("\n")
    assert int(usec.split("=")[1]) == int(check_allowance_s(size) * 1e6)
    assert status == f"STATUS=checking {partial.name} ({size >> 20} MiB) after a crash"
    assert "recovery: 1 clip(s) salvaged" in r.stderr and not list(data.rglob("*.partial"))


def test_no_watchdog_while_the_camera_is_stalled(models_dir: Path, tmp_path: Path) -> None:
    addr = str(tmp_path / "notify.sock")
    lst = Listener(addr)
    frames = frames_from(str(WALKING), 3)
    script = CameraScript(frames, connections=[(30, "stall")])
    detector = build_detector(load_config(None, {"models.dir": str(models_dir)}))
    runner = LiveRunner(
        lambda: OpenCVSource(0, capture_factory=script.factory), detector.prepare, stall_timeout=60.0
    )
    monitor = ServiceMonitor(
        Notifier(addr), ping_interval=0.1, config=ServiceConfig(progress_timeout_s=0.5, status_interval_s=10)
    )
    pipe = Pipeline(runner, FixedDetect(detector), [monitor])
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
