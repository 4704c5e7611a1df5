"""Sharing: web view and events page (auth, traversal, slow clients, Chromium), metrics, MQTT with outages."""

from __future__ import annotations

import http.client
import json
import select
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from browser import CHROMIUM, Browser, free_port
from conftest import EDGEVISION, WALKING, mjpeg_source, run_cli
from media import splice
from prometheus_client.parser import text_string_to_metric_families

from edgevision.config import WebConfig
from edgevision.publish.live import LiveView
from edgevision.publish.metrics import Metrics
from edgevision.publish.web import WebServer
from edgevision.recorder.index import EventIndex
from edgevision.results import FrameResult, Latency
from edgevision.results.detection import BBox, Detection
from edgevision.results.frame import Frame

TOKEN = "test-token-0123456789"
Site = tuple[WebServer, LiveView, Metrics]


def result(i: int) -> FrameResult:
    img = np.full((360, 640, 3), (i * 7) % 255, np.uint8)
    det = Detection("person", 0, 0.9, BBox(0.1, 0.1, 0.3, 0.8))
    return FrameResult(
        Frame(img, i / 25, i, "test"), [det], Latency(invoke=10.0, total=15.0), "m", rung="m@300"
    )


@pytest.fixture()
def site(tmp_path: Path) -> Iterator[Site]:
    data = tmp_path / "data"
    index = EventIndex(data)
    eid = index.create("cam", "person", 1.0, 10, status="recording")
    (data / "clips").mkdir()
    (data / "clips" / "1.mp4").write_bytes(bytes(range(256)) * 40)
    index.update(eid, clip_path="clips/1.mp4", status="finalized")
    index.close()
    (tmp_path / "secret.txt").write_text("do not serve")
    live = LiveView(fps=50)
    metrics = Metrics(budget_ms=12.0)
    web = WebServer(WebConfig(port=0, token=TOKEN), live, metrics, data)
    for i in range(5):
        live.on_result(result(i))
        metrics.on_result(result(i))
        time.sleep(0.03)
    yield web, live, metrics
    web.close()
    live.close()


def get(
    web: WebServer, path: str, token: str | None = TOKEN, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", web.port, timeout=5)
    h = dict(headers or {})
    if token:
        h["Authorization"] = f"Bearer {token}"
    conn.request("GET", path, headers=h)
    resp = conn.getresponse()
    if (
        "mjpg" in path and resp.status == 200
    ):  # an endless stream: read up to the start of the first JPEG part
        body = b""
        while b"\r\n\r\n" not in body or len(body) < body.index(b"\r\n\r\n") + 6:
            chunk = resp.read1(4096)
            if not chunk:
                break
            body += chunk
    else:
        body = resp.read()
    conn.close()
    return resp.status, dict(resp.getheaders()), body


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/stream.mjpg",
        "/snapshot.jpg",
        "/metrics",
        "/api/events",
        "/events/1/clip.mp4",
        "/events/1/snapshot.jpg",
        "/nope",
    ],
)
def test_every_endpoint_but_healthz_needs_the_token(site: Site, path: str) -> None:
    web, _, _ = site
    for token in (None, "wrong-token-0000"):
        status, headers, _ = get(web, path, token)
        assert status == 401 and headers.get("WWW-Authenticate", "").startswith("Bearer")
    assert get(web, "/healthz", None)[0] == 200
    assert get(web, path.replace("/nope", "/"), None, {})[0] == 401


@pytest.mark.parametrize(
    "path",
    [
        "/events/1/../../secret.txt",
        "/events/%2e%2e/secret.txt",
        "/events/1/clip.mp4/../../../secret.txt",
        "/../secret.txt",
        "/events/abc/clip.mp4",
        "/events/1/other.mp4",
        "/events/99/clip.mp4",
        "/events/1/snapshot.jpg",
        "/clips/1.mp4",
        "/events/-1/clip.mp4",
        "/events/1/clip.mp4%00.jpg",
    ],
)
def test_traversal_and_unknown_ids_are_rejected(site: Site, path: str) -> None:
    web, _, _ = site
    status, _, body = get(web, path)
    assert status == 404 and b"do not serve" not in body


def test_clip_by_id_with_ranges(site: Site) -> None:
    web, _, _ = site
    status, headers, body = get(web, "/events/1/clip.mp4")
    assert status == 200 and len(body) == 10240 and headers["Accept-Ranges"] == "bytes"
    status, headers, body = get(web, "/events/1/clip.mp4", headers={"Range": "bytes=100-199"})
    assert (
        status == 206
        and body == (bytes(range(256)) * 40)[100:200]
        and headers["Content-Range"] == "bytes 100-199/10240"
    )
    # ?token= is exchanged once for a session cookie and a redirect to the same URL without it
    status, headers, _ = get(web, "/events/1/clip.mp4?token=" + TOKEN, None)
    assert status == 303 and headers["Location"] == "/events/1/clip.mp4"
    cookie = headers["Set-Cookie"].split(";")[0]
    assert get(web, "/events/1/clip.mp4", None, {"Cookie": cookie, "Range": "bytes=0-9"})[0] == 206


def test_page_stream_snapshot_events_metrics(site: Site) -> None:
    web, _live, _metrics = site
    status, _, page = get(web, "/")
    assert status == 200 and b"stream.mjpg" in page and b"api/events" in page
    assert (
        b"token=" not in page and b"+ q" not in page
    )  # no generated URL carries the token (a session cookie does the job)
    status, headers, body = get(web, "/stream.mjpg")
    assert status == 200 and headers["Content-Type"].startswith("multipart/x-mixed-replace")
    start = body.index(b"\r\n\r\n") + 4
    assert body[start : start + 2] == b"\xff\xd8"  # a JPEG part follows the first boundary
    status, _, jpeg = get(web, "/snapshot.jpg")
    snapshot = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert status == 200 and snapshot is not None and snapshot.shape == (360, 640, 3)
    status, _, events = get(web, "/api/events")
    assert status == 200 and [e["id"] for e in json.loads(events)] == [1]
    status, _, text = get(web, "/metrics")
    families = {f.name: f for f in text_string_to_metric_families(text.decode())}
    assert families["edgevision_frames_processed"].samples[0].value == 5
    assert families["edgevision_budget_violations"].samples[0].value == 5  # 15 ms > 12 ms budget
    assert any(
        s.labels.get("rung") == "m@300" and s.value == 1 for s in families["edgevision_active_rung"].samples
    )
    assert "edgevision_stage_latency_seconds" in families  # names and units: tests/test_metrics.py


def test_head_of_the_stream_is_headers_only(site: Site) -> None:
    """A HEAD request (link checkers, curl -I) used to start the endless MJPEG stream."""
    web, _live, _metrics = site
    with socket.create_connection(("127.0.0.1", web.port), timeout=5) as sock:
        sock.sendall(_stream_request().replace(b"GET ", b"HEAD ", 1))
        got = b""
        while chunk := sock.recv(65536):  # the server closes the connection after the headers
            got += chunk
    head, _, rest = got.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200") or head.startswith(b"HTTP/1.1 200")
    assert b"multipart/x-mixed-replace" in head and rest == b""


def _stream_request() -> bytes:
    return f"GET /stream.mjpg HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode()


def _noise(i: int, rng: np.random.Generator) -> FrameResult:
    r = result(i)
    r.frame.image[:] = rng.integers(0, 255, r.frame.image.shape, dtype=np.uint8)  # incompressible: big JPEGs
    return r


def _socket_buffers_max() -> int:
    """The most bytes a server socket can hold unsent (the kernel's send-buffer ceiling)."""
    try:
        return int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])
    except (OSError, ValueError, IndexError):
        return 16 << 20


def test_a_stuck_client_never_holds_up_the_pipeline_or_other_clients(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client that reads nothing stays connected for the whole test (no send timeout), so its handler is stuck
    in ``send`` once the socket buffers are full. The pipeline keeps handing frames over and another client
    keeps getting each new one: it receives more than twice what the stuck connection's buffers can hold, so
    the stuck handler was blocked during most of it. An implementation that sends to clients from
    ``on_result``, or from one thread in turn, never gets there (pytest-timeout fails it)."""
    import edgevision.publish.web as web_mod

    web, live, _ = site
    monkeypatch.setattr(web_mod, "SEND_TIMEOUT_S", 3600.0)
    stuck = socket.socket()
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.connect(("127.0.0.1", web.port))
    stuck.sendall(_stream_request())
    healthy = socket.create_connection(("127.0.0.1", web.port), timeout=60)
    healthy.sendall(_stream_request())
    reader = healthy.makefile("rb")
    while reader.readline() not in (b"\r\n", b""):  # the response header
        pass

    def next_jpeg() -> bytes:
        assert reader.readline() == b"--frame\r\n"
        assert reader.readline() == b"Content-Type: image/jpeg\r\n"
        length = int(reader.readline().split(b":")[1])
        assert reader.readline() == b"\r\n"
        jpeg = reader.read(length)
        assert reader.readline() == b"\r\n"
        return jpeg

    rng = np.random.default_rng(0)
    limit = 2 * (_socket_buffers_max() + (64 << 10))
    received, distinct, last, i = 0, 0, b"", 0
    while received < limit:
        live.on_result(_noise(i, rng))  # the pipeline's hand-over: returns while the stuck client blocks
        i += 1
        jpeg = next_jpeg()
        if jpeg != last:
            received, distinct, last = received + len(jpeg), distinct + 1, jpeg
    assert distinct >= 2 and jpeg[:2] == b"\xff\xd8"
    # The stuck client is still connected, with unread data waiting: its handler was never dropped.
    assert stuck.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b""
    healthy.close()
    stuck.close()


def test_a_client_that_stops_reading_is_dropped(site: Site) -> None:
    web, live, _ = site
    before = threading.active_count()
    stuck = socket.socket()
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.connect(("127.0.0.1", web.port))
    stuck.sendall(_stream_request())
    rng = np.random.default_rng(0)
    i = 0
    while threading.active_count() <= before:  # its handler thread starts
        live.on_result(_noise(i, rng))
        i += 1
        time.sleep(0.02)
    while threading.active_count() > before:  # ... and ends: the send timed out (pytest-timeout bounds this)
        live.on_result(_noise(i, rng))
        i += 1
        time.sleep(0.05)
    assert get(web, "/healthz", None)[0] == 200  # the server still answers
    stuck.close()


def test_a_client_trickling_its_request_is_dropped_at_the_deadline(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A byte every 0.2 s never trips the 2-s read timeout: such a client held its thread for good (16 per
    address, 128 in all, then 503 for everyone). The whole request must now arrive within the deadline."""
    import edgevision.publish.http_server as http_mod

    web, _, _ = site
    monkeypatch.setattr(http_mod, "REQUEST_DEADLINE_S", 1.0)
    slow = socket.create_connection(("127.0.0.1", web.port), timeout=5)
    slow.sendall(b"GET /healthz HTTP/1.1\r\n")
    dropped = False
    for _ in range(150):  # up to 30 s of trickling (pytest-timeout bounds it too); the deadline is 1 s
        time.sleep(0.2)
        try:
            slow.sendall(b"X")
            if select.select([slow], [], [], 0)[0] and slow.recv(64) == b"":
                dropped = True
                break
        except OSError:  # reset by the server
            dropped = True
            break
    slow.close()
    assert dropped
    assert get(web, "/healthz", None)[0] == 200  # a whole request is still answered (its deadline cancelled)


@pytest.mark.skipif(not CHROMIUM, reason="chromium not installed (CI installs it)")
def test_page_in_headless_chromium(env: dict[str, str], tmp_path: Path) -> None:
    video = tmp_path / "two.avi"
    # the live view and the clip need the run still going when the browser looks: 40 s of empty hallway at the
    # end, so a slow browser start on a busy machine does not meet a run that has ended (SIGTERM ends it sooner)
    splice(video, [("empty", 30), ("people", 40), ("empty", 160), ("people", 200), ("empty", 1000)])
    port = free_port()
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"web:\n  enabled: true\n  port: {port}\n  token: {TOKEN}\nrecorder:\n  post_roll_s: 2.0\n"
    )
    proc = subprocess.Popen(
        [
            *EDGEVISION,
            "run",
            "--config",
            str(cfg),
            "--video",
            str(video),
            "--realtime",
            "--record",
            "--data-dir",
            str(tmp_path / "data"),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    browser = None
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # wait until the first event is finalized
            try:
                req = urllib.request.Request(
                    f"http://127.0.0.1:{port}/api/events", headers={"Authorization": f"Bearer {TOKEN}"}
                )
                with urllib.request.urlopen(req, timeout=2) as r:
                    if any(e["status"] == "finalized" for e in json.load(r)):
                        break
            except OSError:
                pass
            time.sleep(0.3)
        browser = Browser()
        browser.goto(f"http://127.0.0.1:{port}/?token={TOKEN}")
        live = 0
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and live != 640:  # the first live frame may take a moment
            time.sleep(0.2)
            live = browser.js("document.getElementById('live').naturalWidth") or 0
        played = 0.0
        deadline = time.monotonic() + 40  # a loaded machine: the page's poll, the clip's fetch, its decoder
        while time.monotonic() < deadline and played < 1.0:
            time.sleep(0.5)
            played = float(browser.js("document.getElementById('clip').currentTime") or 0)
        shot = browser.screenshot()
        (tmp_path / "page.png").write_bytes(shot)
        assert played >= 1.0  # the clip plays in the browser
        # the token was exchanged for an HttpOnly cookie: gone from the address bar, invisible to scripts
        assert "token" not in browser.js("location.href") and browser.js("document.cookie") == ""
        media = browser.js("[...document.querySelectorAll('img,video')].map(e => e.src).join(' ')")
        assert "stream.mjpg" in media and "token" not in media
        assert live == 640  # a live frame is shown
        assert browser.js("document.querySelectorAll('tr.event').length") >= 1  # and the event list
        img = cv2.imdecode(np.frombuffer(shot, np.uint8), cv2.IMREAD_COLOR)
        assert img is not None and img.shape[1] == 1280 and img[120:560, 20:820].std() > 5  # not a blank page
    finally:
        if browser is not None:
            browser.close()
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)


def test_web_and_metrics_move_during_a_replay(env: dict[str, str], tmp_path: Path) -> None:
    port = free_port()
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"web:\n  enabled: true\n  port: {port}\n")
    proc = subprocess.Popen(
        [
            *EDGEVISION,
            "run",
            "--config",
            str(cfg),
            "--video",
            str(WALKING),
            "--realtime",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        values: list[float] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(values) < 2:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                    fams = {f.name: f for f in text_string_to_metric_families(r.read().decode())}
                n = fams["edgevision_frames_processed"].samples[0].value
                if n > 0 and (not values or n > values[-1]):
                    values.append(n)
            except OSError:
                pass
            time.sleep(1.0)
        assert len(values) == 2 and values[1] > values[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
            assert json.load(r)["status"] == "ok"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    assert run_cli(["config", "check", str(cfg)], env).returncode == 0


def test_an_http_stream_is_a_source(env: dict[str, str], tmp_path: Path) -> None:
    """`run --video http://…` reads a real network stream: another edgevision's MJPEG live view."""
    with mjpeg_source(env, tmp_path) as port:
        out = tmp_path / "d.jsonl"
        r = run_cli(
            [
                "run",
                "--video",
                f"http://127.0.0.1:{port}/stream.mjpg",
                "--max-frames",
                "15",
                "--detections",
                str(out),
            ],
            env,
            timeout=120,
        )
        assert r.returncode == 0, r.stderr
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        assert len(rows) == 15 and all(any(d["label"] == "person" for d in row["detections"]) for row in rows)
        assert "on url" in r.stderr


def test_events_limit_is_honoured_at_zero_and_refused_below(site: Site) -> None:
    """``limit=0`` is no rows (it was every row: ``rows[-0:]``), a negative limit is an error (it was every row
    but the first ones)."""
    web, _, _ = site
    assert json.loads(get(web, "/api/events?limit=0")[2]) == []
    assert len(json.loads(get(web, "/api/events?limit=1")[2])) == 1
    assert get(web, "/api/events?limit=-1")[0] == 400


def test_a_clip_deleted_while_it_is_being_served_is_a_404(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Retention may delete a clip between the server's check and its open: the client used to get no answer at
    all (the connection dropped, a FileNotFoundError traceback in the service log)."""
    web, _, _ = site
    is_file = Path.is_file

    def then_pruned(self: Path) -> bool:
        found = is_file(self)
        if self.name == "1.mp4":
            self.unlink(missing_ok=True)  # retention, just after the check
        return found

    monkeypatch.setattr(Path, "is_file", then_pruned)
    status, _, body = get(web, "/events/1/clip.mp4")
    assert status == 404 and b"no clip.mp4" in body


def test_the_events_api_reads_only_the_rows_it_returns(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    """The page polls /api/events every 10 s: it used to read every row of the index (100k events: ~1 s of CPU
    per poll here, several on a Pi) to return the last 200."""
    from edgevision.recorder import index as index_module

    web, _, _ = site
    assert web.data_dir is not None
    idx = EventIndex(web.data_dir)
    for i in range(300):
        idx.create("cam", "person", 2.0 + i, 20 + i, status="finalized")
    idx.close()
    built = []

    class Counted(index_module.EventRow):
        def __init__(self, *args: Any) -> None:
            super().__init__(*args)
            built.append(self.id)

    monkeypatch.setattr(index_module, "EventRow", Counted)
    status, _, body = get(web, "/api/events?limit=5")
    rows = json.loads(body)
    assert status == 200 and [r["id"] for r in rows] == [297, 298, 299, 300, 301]  # the newest, oldest first
    assert len(built) == 5


def test_a_damaged_event_index_is_a_503_not_a_dropped_connection(tmp_path: Path) -> None:
    """An events.db SQLite cannot read (damaged, or locked past its timeout) used to drop the connection with no
    answer at all (the page's event list just failed; a traceback per poll in the service log)."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "events.db").write_bytes(b"not a database" * 400)
    web = WebServer(WebConfig(port=0), LiveView(fps=5), None, data)
    try:
        for path in ("/api/events", "/events/1/clip.mp4"):
            status, _, body = get(web, path, None)
            assert status == 503 and b"event index" in body, (path, body)
    finally:
        web.close()
