"""A source absent at start under the service: waited for with capped backoff forever, READY/STATUS/healthz say
so, and the watchdog pings a waiting process but not a hung one (service/watchdog.py)."""

from __future__ import annotations

import dataclasses
import http.client
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from conftest import WALKING, run_cli
from fakes import CameraScript, FakeCapture, FakePicamera2, frames_from
from test_service import Listener

from edgevision.capture.runner import LiveRunner, SourceWait, should_log_attempt
from edgevision.capture.sources import OpenCVSource, Picamera2Source, redact_url
from edgevision.config import ServiceConfig, WebConfig, load_config
from edgevision.detection.detector import FixedDetect
from edgevision.detection.factory import build_detector
from edgevision.errors import InputError
from edgevision.pipeline.loop import Pipeline
from edgevision.publish.live import LiveView
from edgevision.publish.web import WebServer
from edgevision.service.monitor import ServiceMonitor
from edgevision.service.notify import Notifier, supervised
from edgevision.service.watchdog import Liveness, State, should_ping, state


def _wait(
    last_attempt: float, retry_in: float = 30.0, attempting: bool = False, open_timeout: float = 10.0
) -> SourceWait:
    return SourceWait(
        "camera0", "cannot open camera", 0.0, 3, last_attempt, retry_in, attempting, open_timeout
    )


# now = 100, progress_timeout = 10
@pytest.mark.parametrize(
    ("last_frame", "last_poll", "wait", "expected"),
    [
        (99.0, 99.5, None, State.OK),  # processing
        (None, 99.5, None, State.STARTING),  # models loaded, first frame not yet
        (80.0, 99.5, None, State.STALLED),  # hung inference or a wedged capture: restart
        (None, 99.0, _wait(95.0), State.WAITING),  # camera absent, retried, main loop alive
        (80.0, 99.0, _wait(95.0), State.WAITING),  # camera lost mid-run, being retried
        (None, 85.0, _wait(95.0), State.STALLED),  # the main loop hung while waiting
        (None, None, _wait(95.0), State.STALLED),  # the main loop never polled
        (None, 99.0, _wait(85.0, attempting=True), State.WAITING),  # an open in progress (15 s <= 10 + 10)
        (None, 99.0, _wait(75.0, attempting=True), State.STALLED),  # an open that never returns
        (None, 99.0, _wait(65.0, retry_in=30.0), State.WAITING),  # next attempt due at 95 (+10 grace)
        (None, 99.0, _wait(55.0, retry_in=30.0), State.STALLED),  # the retry loop died
        (99.0, 50.0, _wait(10.0), State.OK),  # a recent frame wins
    ],
)
def test_watchdog_state_table(
    last_frame: float | None, last_poll: float | None, wait: SourceWait | None, expected: State
) -> None:
    live = Liveness(last_frame, last_poll, wait)
    assert state(100.0, live, 10.0) is expected
    assert should_ping(100.0, live, 10.0) == (expected in (State.OK, State.WAITING))


def test_wait_text_and_log_throttle() -> None:
    w = _wait(95.0, retry_in=8.0)
    assert w.text(100.0) == (
        "waiting for source camera0 for 100 s: cannot open camera (3 attempt(s), next try in 3 s)"
    )
    assert "opening now" in dataclasses.replace(w, attempting=True).text(100.0)
    assert [n for n in range(1, 41) if should_log_attempt(n)] == [1, 2, 3, 10, 20, 30, 40]
    assert supervised({"NOTIFY_SOCKET": "/run/systemd/notify"}) and not supervised({})


def test_redacted_stream_ids() -> None:
    assert redact_url("rtsp://admin:pw@10.0.0.2:554/s") == "rtsp://***@10.0.0.2:554/s"
    assert redact_url("http://host/a@b") == "http://host/a@b"
    assert OpenCVSource("rtsp://u:secret@h/x").source_id == "rtsp://***@h/x"


class LateCamera:
    """A camera that is not enumerated for the first ``absent`` open attempts, then delivers frames."""

    def __init__(self, frames: list[Any], absent: int) -> None:
        self.script = CameraScript(frames, connections=[(10_000, "unplug")])
        self.absent = absent
        self.attempts = 0
        self.lock = threading.Lock()

    def factory(self, target: Any, api: int | None = None, params: Any = None) -> FakeCapture:
        with self.lock:
            self.attempts += 1
            if self.attempts <= self.absent:
                return FakeCapture(self.script, None)
        return self.script.factory(target, api, params)


def test_camera_absent_at_start_is_an_error_when_not_supervised() -> None:
    cam = LateCamera(frames_from(str(WALKING), 2), absent=1)
    runner = LiveRunner(lambda: OpenCVSource(0, capture_factory=cam.factory))
    with pytest.raises(InputError, match="cannot open camera"):
        runner.start()


def test_camera_late_at_start_is_waited_for_with_ready_status_and_pings(
    models_dir: Path, tmp_path: Path
) -> None:
    lst = Listener(str(tmp_path / "notify.sock"))
    cam = LateCamera(frames_from(str(WALKING), 3), absent=6)
    detector = build_detector(load_config(None, {"models.dir": str(models_dir)}))
    runner = LiveRunner(
        lambda: OpenCVSource(0, capture_factory=cam.factory),
        detector.prepare,
        backoff_initial=0.1,
        backoff_max=0.4,
        wait_at_start=True,
        open_timeout=1.0,
    )
    monitor = ServiceMonitor(
        Notifier(str(tmp_path / "notify.sock")),
        ping_interval=0.05,
        config=ServiceConfig(progress_timeout_s=0.5, status_interval_s=10),
        capture=runner,
    )
    pipe = Pipeline(runner, FixedDetect(detector), [monitor])
    stop = threading.Event()
    th = threading.Thread(target=pipe.run, args=(stop, 20), daemon=True)
    th.start()
    th.join(30)
    monitor.close()
    lst.close()
    assert not th.is_alive() and monitor.frames == 20
    assert cam.attempts == 7 and runner.stats.reconnects == 0  # arriving late is not a reconnect
    ready = [(t, m) for t, m in lst.messages if m.startswith("READY=1")]
    assert len(ready) == 1 and "STATUS=waiting for source camera0" in ready[0][1]
    assert "cannot open camera" in ready[0][1]
    # Backoff 0.1, 0.2, 0.4, 0.4, 0.4 s: about 1.5 s of waiting with WATCHDOG pings all along.
    first_frame_at = monitor.last_progress
    assert first_frame_at is not None
    waiting_pings = [t for t in lst.times("WATCHDOG=1") if t < ready[0][0] + 1.0]
    assert len(waiting_pings) >= 10
    assert runner.waiting() is None and "fps" in monitor.status_text()
    assert "waiting" not in monitor.status_text() and monitor.state() is State.OK


def test_no_pings_when_the_main_loop_hangs_while_waiting(tmp_path: Path) -> None:
    lst = Listener(str(tmp_path / "notify.sock"))
    cam = LateCamera(frames_from(str(WALKING), 1), absent=10_000)  # never there
    runner = LiveRunner(
        lambda: OpenCVSource(0, capture_factory=cam.factory),
        backoff_initial=0.05,
        backoff_max=0.1,
        wait_at_start=True,
    )
    monitor = ServiceMonitor(
        Notifier(str(tmp_path / "notify.sock")),
        ping_interval=0.05,
        config=ServiceConfig(progress_timeout_s=0.5, status_interval_s=10),
        capture=runner,
    )
    web = WebServer(WebConfig(port=0), LiveView(fps=5), None, None, progress=monitor)
    runner.start()
    t_end = time.monotonic() + 1.5
    while time.monotonic() < t_end:  # the main loop polls while it waits
        assert runner.get(timeout=0.1) is None
    waiting_health = _healthz(web.port)
    hung_at = time.monotonic()  # ... and now it hangs (never polls again)
    time.sleep(1.5)
    state_now = monitor.state()
    hung_health = _healthz(web.port)
    web.close()
    runner.stop()
    monitor.close()
    lst.close()
    assert waiting_health[0] == 200 and waiting_health[1]["status"] == "waiting"
    assert waiting_health[1]["source"].startswith("waiting for source camera0")
    assert hung_health[0] == 503 and hung_health[1]["status"] == "stalled"
    pings = lst.times("WATCHDOG=1")
    assert len([p for p in pings if p < hung_at]) >= 15  # pinged while waiting and alive
    assert not [p for p in pings if p > hung_at + 0.5 + 0.15]  # nothing after progress_timeout (+ a period)
    assert state_now is State.STALLED and cam.attempts > 5  # the retry loop kept going: only the loop hung


def _healthz(port: int) -> tuple[int, dict[str, Any]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", "/healthz")
    resp = conn.getresponse()
    return resp.status, json.loads(resp.read())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_service_run_waits_for_an_absent_stream(env: dict[str, str], tmp_path: Path) -> None:
    """The real CLI under a notify socket: an RTSP camera that is not up yet means READY, "waiting for
    source" in STATUS (credentials redacted), continuous watchdog pings, and a clean stop; never exit 66."""
    addr = str(tmp_path / "notify.sock")
    lst = Listener(addr)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "source:\n  open_timeout_s: 1\n  reconnect_initial_s: 0.2\n  reconnect_max_s: 0.5\n"
        "service:\n  status_interval_s: 0.5\n"
    )
    url = f"rtsp://admin:secret@127.0.0.1:{_free_port()}/stream"
    e = dict(env, NOTIFY_SOCKET=addr, WATCHDOG_USEC="400000")
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgevision", "run", "--config", str(cfg), "--video", url],
        env=e,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    t0 = time.monotonic()
    while time.monotonic() - t0 < 60 and proc.poll() is None and len(lst.times("WATCHDOG=1")) < 12:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    lst.close()
    assert proc.returncode == 0, err
    ready = [m for _, m in lst.messages if m.startswith("READY=1")]
    assert len(ready) == 1 and "STATUS=waiting for source rtsp://***@127.0.0.1" in ready[0]
    assert len(lst.times("WATCHDOG=1")) >= 12 and lst.times("STOPPING=1")
    statuses = [m for _, m in lst.messages if "STATUS=" in m]
    assert all("waiting for source" in s for s in statuses)
    assert "secret" not in err and not any("secret" in m for _, m in lst.messages)
    assert "waiting for it" in err and "Traceback" not in err


def test_service_run_missing_video_file_is_still_66(env: dict[str, str], tmp_path: Path) -> None:
    addr = str(tmp_path / "notify.sock")
    lst = Listener(addr)
    r = run_cli(["run", "--video", str(tmp_path / "missing.mp4")], dict(env, NOTIFY_SOCKET=addr), timeout=60)
    lst.close()
    assert r.returncode == 66 and "no such file" in r.stderr
    assert not lst.times("READY=1")


def test_busy_pi_camera_is_an_input_error_retried_not_a_crash() -> None:
    """picamera2 raises RuntimeError when another process holds the camera: that is "not there yet" (retried
    under the service), not a traceback."""

    class BusyCamera(FakePicamera2):
        def start(self) -> None:
            raise RuntimeError("Failed to acquire camera: Device or resource busy")

    src = Picamera2Source(0, module_loader=lambda: SimpleNamespace(Picamera2=BusyCamera))
    with pytest.raises(InputError, match=r"cannot start the camera .*busy"):
        src.open()
    assert FakePicamera2.instances[-1].calls[-1] == "close"  # released for the next attempt


# now = 100, progress_timeout = 10, the wait's open timeout 10: a replaced thread may take 20 s to return
@pytest.mark.parametrize(
    ("last_frame", "stuck_since", "expected"),
    [
        (None, None, State.WAITING),  # the source is retried, nothing is stuck
        (None, 85.0, State.WAITING),  # a replaced read still returning (15 s <= 10 + 10)
        (None, 75.0, State.STALLED),  # stuck 25 s in the driver, which holds the device: restart
        (99.0, 10.0, State.OK),  # frames flow: the new thread has the device, the old one is only a leak
    ],
)
def test_a_replaced_capture_thread_stuck_in_its_driver_stops_the_pings_while_waiting(
    last_frame: float | None, stuck_since: float | None, expected: State
) -> None:
    """A stall replaces the capture thread; if the old one never comes back from the driver it may hold the
    device, and the new thread's opens fail as "busy" for good. The pings used to go on ("waiting") forever."""
    live = Liveness(last_frame, 99.0, _wait(95.0), stuck_since)
    assert state(100.0, live, 10.0) is expected


class _Wedging:
    """A camera whose first connection gives one frame, then blocks in ``read()`` until ``release`` is set; every
    later open fails as busy while that read is stuck."""

    def __init__(self, release: threading.Event, opened: list[int]) -> None:
        self.release, self.opened = release, opened
        self.reads = 0
        self.source_id, self.live = "camera0", True
        self.fps: float | None = 25.0

    def open(self) -> None:
        if self.opened and not self.release.is_set():
            raise InputError("camera0: device busy")
        self.opened.append(1)

    def read(self) -> tuple[np.ndarray, float, None] | None:
        self.reads += 1
        if self.reads == 1:
            return np.zeros((8, 8, 3), np.uint8), 0.0, None
        self.release.wait(30)
        return None

    def close(self) -> None:
        pass


def test_the_runner_reports_a_replaced_thread_stuck_in_its_source_until_it_returns(tmp_path: Path) -> None:
    release, opened = threading.Event(), list[int]()
    now = [0.0]
    runner = LiveRunner(
        lambda: _Wedging(release, opened), stall_timeout=5.0, backoff_initial=0.01, clock=lambda: now[0]
    )
    monitor = ServiceMonitor(
        Notifier(str(tmp_path / "notify.sock")),
        ping_interval=0.05,
        config=ServiceConfig(progress_timeout_s=10.0, status_interval_s=10),
        capture=runner,
    )
    try:
        runner.start()
        assert runner.get(timeout=5) is not None and runner.stuck_since() is None
        now[0] = (
            6.0  # no frame for 6 s: a stall; the thread stays in read(), its replacement finds the camera busy
        )
        assert runner.get(timeout=0.05) is None
        deadline = time.monotonic() + 10
        while runner.waiting() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert runner.stuck_since() == 6.0 and monitor.liveness().stuck_since == 6.0
        assert runner.waiting() is not None and "busy" in runner.waiting().reason  # type: ignore[union-attr]
        release.set()  # the driver returns: the old thread ends, nothing is stuck any more
        deadline = time.monotonic() + 10
        while runner.stuck_since() is not None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert runner.stuck_since() is None
    finally:
        release.set()
        runner.stop()
        monitor.close()


class _FailsLate:
    """A camera whose first connection gives one frame, then blocks in ``read()`` until ``release`` is set and
    raises (the driver gave up); every later connection delivers frames."""

    def __init__(self, release: threading.Event, connection: int) -> None:
        self.release, self.connection = release, connection
        self.reads = 0
        self.source_id, self.live = "camera0", True
        self.fps: float | None = 25.0

    def open(self) -> None:
        pass

    def read(self) -> tuple[np.ndarray, float, None] | None:
        self.reads += 1
        if self.connection == 0 and self.reads > 1:
            self.release.wait(30)
            raise OSError(19, "No such device")
        time.sleep(0.005)
        return np.zeros((8, 8, 3), np.uint8), self.reads / 25, None

    def close(self) -> None:
        pass


def test_a_replaced_capture_thread_failing_late_does_not_stop_its_replacement(
    caplog: pytest.LogCaptureFixture,
) -> None:
    release, connections = threading.Event(), iter(range(100))
    now = [0.0]
    runner = LiveRunner(
        lambda: _FailsLate(release, next(connections)),
        stall_timeout=5.0,
        backoff_initial=0.01,
        clock=lambda: now[0],
    )
    try:
        runner.start()
        assert runner.get(timeout=5) is not None
        now[0] = 6.0  # a stall: the first thread stays in read(), a second one captures
        runner.get(timeout=0.05)
        assert runner.get(timeout=5) is not None and runner.stuck_since() == 6.0
        release.set()  # the old read fails now
        deadline = time.monotonic() + 10
        while runner.stuck_since() is not None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert runner.stuck_since() is None
        for _ in range(5):  # capture goes on, and the old thread's error is not the program's
            assert runner.get(timeout=5) is not None
        assert "replaced after a stall failed: [Errno 19] No such device" in caplog.text
    finally:
        release.set()
        runner.stop()
