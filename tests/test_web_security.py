"""The web view on a LAN: token exchange for a session cookie, failed-token back-off, Host/Origin checks, binding
early (exit 78), and credentials kept out of URLs, names and logs."""

from __future__ import annotations

import http.client
import json
import logging
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest

from edgevision.app.compose import preflight
from edgevision.config import WebConfig, load_config
from edgevision.errors import ConfigError
from edgevision.publish.http_server import MAX_PER_CLIENT, listen
from edgevision.publish.live import LiveView
from edgevision.publish.web import Progress, WebServer
from edgevision.publish.webauth import (
    FREE_FAILURES,
    SESSION_MAX_S,
    FailureLimiter,
    Sessions,
    host_allowed,
    origin_allowed,
    split_host,
)
from edgevision.redact import RedactingFilter, camera_name_from_url, redact
from edgevision.service.watchdog import State

TOKEN = "lan-token-0123456789abcdef"


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


# --- pure logic ---------------------------------------------------------------------------------------------


def test_sessions_expire_when_idle_and_at_the_hard_limit() -> None:
    clock = Clock()
    s = Sessions(ttl_s=60, clock=clock)
    sid = s.create()
    assert len(sid) >= 40 and s.valid(sid) and not s.valid("forged") and not s.valid(None)
    clock.t += 59
    assert s.valid(sid)  # use renews the idle timeout
    clock.t += 59
    assert s.valid(sid)
    clock.t += 61
    assert not s.valid(sid)  # idle too long
    sid = s.create()
    for _ in range(int(SESSION_MAX_S // 50) + 1):
        clock.t += 50
        if not s.valid(sid):
            break
    assert not s.valid(sid) and clock.t - 1000.0 <= SESSION_MAX_S + 200  # however active, it ends
    s.end(sid)


def test_sessions_are_bounded() -> None:
    s = Sessions(ttl_s=60, clock=Clock(), max_sessions=3)
    ids = [s.create() for _ in range(5)]
    assert len(s) == 3 and not s.valid(ids[0]) and s.valid(ids[-1])


def test_failure_limiter_backs_off_exponentially_per_client() -> None:
    clock = Clock()
    lim = FailureLimiter(free=3, base_s=1.0, max_s=8.0, clock=clock)
    waits = []
    for _ in range(8):
        assert lim.retry_after("a") == 0.0
        waits.append(lim.failed("a"))
        clock.t += waits[-1]  # the client waits exactly as long as it is told
    assert waits == [0, 0, 0, 1, 2, 4, 8, 8]
    lim.failed("a")
    assert lim.retry_after("a") == 8.0 and lim.retry_after("b") == 0.0  # other clients are unaffected
    clock.t += 3
    assert lim.retry_after("a") == 5.0
    lim.succeeded("a")
    assert lim.retry_after("a") == 0.0 and lim.failed("a") == 0.0  # a success forgets the past


def test_failure_limiter_memory_is_bounded() -> None:
    lim = FailureLimiter(clock=Clock(), max_clients=10)
    for i in range(1000):
        lim.failed(f"10.0.{i // 256}.{i % 256}")
    assert len(lim._clients) == 10


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("pi:8080", ("pi", "8080")),
        ("[::1]:80", ("::1", "80")),
        ("[::1]", ("::1", None)),
        ("Example.COM", ("example.com", None)),
        ("::1", ("::1", None)),
    ],
)
def test_split_host(value: str, expected: tuple[str, str | None]) -> None:
    assert split_host(value) == expected


@pytest.mark.parametrize(
    ("header", "bind", "ok"),
    [
        ("127.0.0.1:8080", "127.0.0.1", True),
        ("localhost:8080", "127.0.0.1", True),
        ("[::1]:8080", "::1", True),
        ("evil.example:8080", "127.0.0.1", False),  # DNS rebinding against a localhost instance
        ("192.168.1.5:8080", "127.0.0.1", False),
        ("cam.example", "127.0.0.1", True),  # listed in allowed_hosts
        ("[fe80::1]:8080", "127.0.0.1", True),  # listed in brackets, as web.allowed_hosts accepts it
        ("192.168.1.5:8080", "0.0.0.0", True),
        ("[fe80::1]:8080", "::", True),
        ("raspberrypi.local:8080", "0.0.0.0", True),
        ("raspberrypi:8080", "0.0.0.0", True),
        ("evil.example:8080", "0.0.0.0", False),
        ("127.0.0.1.evil.example", "0.0.0.0", False),
        ("", "0.0.0.0", False),
        (None, "127.0.0.1", False),
    ],
)
def test_host_allowed(header: str | None, bind: str, ok: bool) -> None:
    names = {"raspberrypi", "raspberrypi.local"}
    assert host_allowed(header, bind, ["cam.example", "[FE80::1]"], names) is ok


@pytest.mark.parametrize(
    ("origin", "host", "ok"),
    [
        (None, "pi:8080", True),
        ("http://pi:8080", "pi:8080", True),
        ("http://pi", "pi:80", True),
        ("https://pi", "pi:443", True),
        ("http://evil.example", "pi:8080", False),
        ("http://pi:9999", "pi:8080", False),
        ("null", "pi:8080", False),
        ("http://pi:8080", None, False),
    ],
)
def test_origin_allowed(origin: str | None, host: str | None, ok: bool) -> None:
    assert origin_allowed(origin, host) is ok


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("rtsp://admin:pw@cam.lan:554/live", "rtsp://***@cam.lan:554/live"),
        (
            "open failed: rtsp://admin:p@ss@10.0.0.2/s (timeout)",
            "open failed: rtsp://***@10.0.0.2/s (timeout)",
        ),
        ("GET /?token=abc&x=1 HTTP/1.1", "GET /?token=***&x=1 HTTP/1.1"),
        ("http://cam/x?user=a&password=b", "http://cam/x?user=a&password=***"),
        ("rtsp://cam.lan/live and a@b.example", "rtsp://cam.lan/live and a@b.example"),
    ],
)
def test_redact(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("rtsp://admin:pw@cam.lan:554/Streaming/Channels/101?token=x", "cam.lan_554_Streaming_Channels_101"),
        ("http://user:secret@127.0.0.1:8080/stream.mjpg", "127.0.0.1_8080_stream.mjpg"),
        ("rtsps://cam.lan/", "cam.lan"),
        ("rtsp://u:p@/", "stream"),
    ],
)
def test_camera_names_never_carry_credentials(url: str, name: str) -> None:
    assert camera_name_from_url(url) == name


def test_camera_name_of_a_url_source_has_no_credentials() -> None:
    from edgevision.config import load_config
    from edgevision.naming import camera_name
    from edgevision.recorder.factory import recorder_settings

    cfg = load_config(None, {"source.kind": "url", "source.url": "rtsp://admin:hunter22@cam.lan:554/live"})
    name = camera_name(cfg)
    assert "hunter22" not in name and "admin" not in name and "/" not in name
    assert recorder_settings(cfg, name, None).camera == "cam.lan_554_live"


def test_log_lines_are_redacted() -> None:
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(self.format(record))

    handler = Keep()
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger("edgevision.test.redact")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("cannot open %s", "rtsp://admin:hunter22@cam/live")
        try:
            raise OSError("connect rtsp://admin:hunter22@cam/live refused")
        except OSError:
            logger.exception("stream failed for %s?token=%s", "http://x/", "hunter22")
    finally:
        logger.removeHandler(handler)
    text = "\n".join(records)
    assert "hunter22" not in text and "rtsp://***@cam/live" in text and "Traceback" in text


def test_the_cli_installs_log_redaction(tmp_path: Path) -> None:
    """Whatever logs through the CLI's handler (a reconnect warning naming the stream, ...) is redacted."""
    import subprocess
    import sys

    cfg = tmp_path / "c.yaml"
    cfg.write_text("{}\n")
    code = (
        "import logging, sys; from edgevision.cli.main import main; main(['config', 'check', sys.argv[1]]); "
        "logging.getLogger('edgevision.capture').warning('reconnecting to %s', 'rtsp://admin:hunter22@cam/x')"
    )
    r = subprocess.run([sys.executable, "-c", code, str(cfg)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "reconnecting to rtsp://***@cam/x" in r.stderr and "hunter22" not in r.stderr


# --- the server ---------------------------------------------------------------------------------------------


@pytest.fixture()
def server(request: pytest.FixtureRequest) -> Iterator[WebServer]:
    host = getattr(request, "param", "127.0.0.1")
    live = LiveView(10, 80)
    web = WebServer(
        WebConfig(host=host, port=0, token=TOKEN, allowed_hosts=["cam.example"]), live, None, None
    )
    yield web
    web.close()
    live.close()


def req(
    web: WebServer,
    method: str,
    path: str,
    headers: dict[str, str] | None = None,
    body: str | None = None,
    host: str | None = None,
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", web.port, timeout=5)
    h = {"Host": host or f"127.0.0.1:{web.port}", **(headers or {})}
    if body is not None:
        h["Content-Type"] = "application/x-www-form-urlencoded"
    conn.request(method, path, body=body, headers=h)
    resp = conn.getresponse()
    data = resp.read() if "mjpg" not in path or resp.status != 200 else resp.read1(64)
    conn.close()
    return resp.status, dict(resp.getheaders()), data


def test_token_exchange_sets_a_session_cookie_and_cleans_the_url(server: WebServer) -> None:
    status, headers, _ = req(server, "GET", f"/?token={TOKEN}&x=1")
    assert status == 303 and headers["Location"] == "/?x=1" and TOKEN not in headers["Location"]
    cookie = headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and TOKEN not in cookie
    jar = {"Cookie": cookie.split(";")[0]}
    status, _, page = req(server, "GET", "/", jar)
    assert status == 200 and b"stream.mjpg" in page and b"token=" not in page
    assert req(server, "GET", "/api/events", jar)[0] == 200
    assert req(server, "GET", "/api/events", {"Cookie": "ev_session=forged"})[0] == 401
    assert req(server, "GET", "/api/events", {"Authorization": f"Bearer {TOKEN}"})[0] == 200  # scripts
    status, headers, _ = req(server, "POST", "/logout", jar, body="")
    assert status == 303 and "Max-Age=0" in headers["Set-Cookie"]
    assert req(server, "GET", "/api/events", jar)[0] == 401


def test_login_form(server: WebServer) -> None:
    status, headers, page = req(server, "GET", "/")
    assert status == 401 and b'<form method="post" action="/login">' in page
    status, headers, page = req(server, "POST", "/login", body=f"token={TOKEN}&next=/api/events")
    assert status == 303 and headers["Location"] == "/api/events" and "HttpOnly" in headers["Set-Cookie"]
    status, headers, _ = req(server, "POST", "/login", body=f"token={TOKEN}&next=//evil.example/")
    assert status == 303 and headers["Location"] == "/"  # never redirected off this server
    status, _, page = req(server, "POST", "/login", body="token=wrong&next=/")
    assert status == 401 and b"wrong token" in page
    assert req(server, "POST", "/login", body="x" * 10000)[0] == 413


def test_wrong_tokens_are_rate_limited_per_client(server: WebServer) -> None:
    _, headers, _ = req(server, "GET", f"/?token={TOKEN}")
    jar = {"Cookie": headers["Set-Cookie"].split(";")[0]}
    wrong = {"Authorization": "Bearer wrong-token-000000000"}
    codes = [req(server, "GET", "/api/events", wrong)[0] for _ in range(FREE_FAILURES + 1)]
    assert codes == [401] * (FREE_FAILURES + 1)
    status, headers, _ = req(server, "GET", "/api/events", wrong)
    assert status == 429 and int(headers["Retry-After"]) >= 1
    # while locked out even the right token is not checked, in any form ...
    assert req(server, "GET", "/api/events", {"Authorization": f"Bearer {TOKEN}"})[0] == 429
    assert req(server, "GET", f"/?token={TOKEN}")[0] == 429
    assert req(server, "POST", "/login", body=f"token={TOKEN}")[0] == 429
    # ... but a session made before keeps working, and /healthz never needs a token
    assert req(server, "GET", "/api/events", jar)[0] == 200
    assert req(server, "GET", "/healthz")[0] == 200


def test_loopback_bind_refuses_foreign_host_names(server: WebServer) -> None:
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    assert req(server, "GET", "/api/events", bearer, host="evil.example")[0] == 403
    assert req(server, "GET", "/api/events", bearer, host=f"localhost:{server.port}")[0] == 200
    assert req(server, "GET", "/api/events", bearer, host="cam.example")[0] == 200  # web.allowed_hosts
    assert req(server, "GET", "/healthz", host="evil.example")[0] == 200
    cross = {**bearer, "Origin": "http://evil.example"}
    assert req(server, "GET", "/api/events", cross)[0] == 403
    same = {**bearer, "Origin": f"http://127.0.0.1:{server.port}"}
    assert req(server, "GET", "/api/events", same)[0] == 200
    assert req(server, "POST", "/login", {"Origin": "http://evil.example"}, body=f"token={TOKEN}")[0] == 403


@pytest.mark.parametrize("server", ["0.0.0.0"], indirect=True)
def test_lan_bind_checks_host_names(server: WebServer) -> None:
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    assert req(server, "GET", "/api/events", bearer, host=f"192.168.1.5:{server.port}")[0] == 200
    assert req(server, "GET", "/api/events", bearer, host=f"{socket.gethostname()}.local")[0] == 200
    assert req(server, "GET", "/api/events", bearer, host="evil.example")[0] == 403


def test_the_token_never_reaches_the_log(server: WebServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="edgevision.publish.web")
    req(server, "GET", f"/snapshot.jpg?token={TOKEN}")
    assert "snapshot.jpg" in caplog.text and TOKEN not in caplog.text


def test_listen_failures_are_config_errors() -> None:
    busy = listen("127.0.0.1", 0)
    port = busy.getsockname()[1]
    try:
        with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{port}"):
            listen("127.0.0.1", port)
    finally:
        busy.close()
    with pytest.raises(ConfigError, match=re.escape("web.host no-such-host.invalid: cannot resolve")):
        listen("no-such-host.invalid", 8080)


@pytest.mark.parametrize("entry", ["run", "server"])
def test_a_loopback_name_resolving_to_the_network_needs_a_token(
    monkeypatch: pytest.MonkeyPatch, entry: str
) -> None:
    """``web.host: cam.localhost`` is a loopback name, so the config asks for no token; but where nothing
    resolves ``*.localhost`` locally (no nss-myhostname) a hosts file or a DNS answer gives its address, and the
    view was served to the network without a token."""
    real = socket.getaddrinfo
    monkeypatch.setattr(
        socket,
        "getaddrinfo",
        lambda host, *a, **k: real("0.0.0.0" if host == "cam.localhost" else host, *a, **k),
    )
    with pytest.raises(ConfigError, match=re.escape("web.host cam.localhost resolves to 0.0.0.0, reachable")):
        if entry == "run":
            cfg = load_config(None, {"web.enabled": True, "web.host": "cam.localhost", "web.port": 0})
            opened = preflight(cfg)
            if opened is not None:
                opened.close()
        else:
            live = LiveView(10, 80)
            try:
                WebServer(WebConfig(host="cam.localhost", port=0), live, None, None).close()
            finally:
                live.close()


@pytest.fixture()
def watched_stream() -> Iterator[tuple[str, socket.socket]]:
    """An rtsp:// URL whose "camera" is a socket we watch: a connection means the source was opened."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(4)
    sock.setblocking(False)
    yield f"rtsp://admin:hunter22@127.0.0.1:{sock.getsockname()[1]}/live", sock
    sock.close()


def _was_opened(sock: socket.socket) -> bool:
    try:
        conn, _ = sock.accept()
    except BlockingIOError:
        return False
    conn.close()
    return True


@pytest.mark.parametrize("case", ["port-in-use", "unresolvable"])
def test_bind_failure_is_exit_78_before_recovery_and_the_source(
    env: dict[str, str], tmp_path: Path, watched_stream: tuple[str, socket.socket], case: str
) -> None:
    from conftest import run_cli

    url, camera = watched_stream
    busy = listen("127.0.0.1", 0)
    host, port = ("127.0.0.1", busy.getsockname()[1]) if case == "port-in-use" else ("no-such.invalid", 8080)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"web:\n  enabled: true\n  host: {host}\n  port: {port}\n  token: {TOKEN}\n")
    data = tmp_path / "data"
    try:
        r = run_cli(
            ["run", "--config", str(cfg), "--video", url, "--record", "--data-dir", str(data)], env, 60
        )
    finally:
        busy.close()
    assert r.returncode == 78, r.stderr[-2000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgevision: error: web"), r.stderr
    assert not data.exists()  # recovery (which opens the index) never ran
    assert not _was_opened(camera)
    assert "hunter22" not in r.stderr


def test_a_model_that_cannot_run_is_exit_78_before_the_source_opens(
    env: dict[str, str], tmp_path: Path, watched_stream: tuple[str, socket.socket]
) -> None:
    from conftest import SHARED_MODELS, run_cli
    from tflite_surgery import corrupt_postprocess_options

    from edgevision.errors import ModelError
    from edgevision.inference.backends import open_interpreter

    bad = tmp_path / "ssd_corrupt_postprocess.tflite"
    real = (SHARED_MODELS / "ssd_mobilenet_v1_1.0_coco_quant_detect.tflite").read_bytes()
    bad.write_bytes(corrupt_postprocess_options(real))
    open_interpreter(bad, probe=False)  # it loads and allocates: only running it shows the damage
    with pytest.raises(ModelError, match="cannot run it"):
        open_interpreter(bad)
    url, camera = watched_stream
    r = run_cli(["run", "--model", str(bad), "--video", url], env, 60)
    assert r.returncode == 78, r.stderr[-2000:]
    assert "cannot run it" in r.stderr and "Traceback" not in r.stderr
    assert not _was_opened(camera)


@pytest.mark.parametrize("kind", ["directory", "fifo"])
def test_a_directory_or_fifo_given_as_a_model_says_what_it_is(
    env: dict[str, str], tmp_path: Path, kind: str
) -> None:
    from conftest import IMAGES, run_cli

    from edgevision.catalog.resolve import resolve_model
    from edgevision.errors import ModelError

    path = tmp_path / "model.tflite"
    if kind == "directory":
        path.mkdir()
    else:
        import os

        os.mkfifo(path)
    what = "a directory" if kind == "directory" else "a FIFO (named pipe)"
    with pytest.raises(ModelError, match=re.escape(f"is {what}, not a regular file")):
        resolve_model(str(path), tmp_path)
    image = next(IMAGES.glob("*.jpg"))
    r = run_cli(["detect", "--model", str(path), str(image)], env, 60)
    assert r.returncode == 78 and f"is {what}" in r.stderr and "not found" not in r.stderr


def test_stream_credentials_stay_out_of_topics_index_and_logs(env: dict[str, str], tmp_path: Path) -> None:
    """A real stream with credentials in its URL (another edgevision's MJPEG view), recorded with MQTT queued
    to a broker that is down: neither the event index, the MQTT outbox (topics, payloads) nor the log has them."""

    from browser import free_port
    from conftest import mjpeg_source, run_cli

    with mjpeg_source(env, tmp_path) as port:
        data = tmp_path / "data"
        cfg = tmp_path / "c.yaml"
        cfg.write_text(
            f"mqtt:\n  enabled: true\n  port: {free_port()}\n  drain_timeout_s: 0\n"
            "recorder:\n  trigger_frames: 2\n  window_frames: 3\n  post_roll_s: 0.5\n  pre_roll_s: 0\n"
        )
        url = f"http://viewer:hunter22@127.0.0.1:{port}/stream.mjpg"
        r = run_cli(
            [
                "-v",
                "run",
                "--config",
                str(cfg),
                "--video",
                url,
                "--max-frames",
                "6",
                "--record",
                "--data-dir",
                str(data),
            ],
            env,
            timeout=120,
        )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "hunter22" not in r.stderr and "viewer" not in r.stderr
    from edgevision.recorder.index import EventIndex

    index = EventIndex(data)
    try:
        rows = index.list()
    finally:
        index.close()
    name = f"127.0.0.1_{port}_stream.mjpg"
    assert rows and {row.camera for row in rows} == {name}
    import sqlite3

    con = sqlite3.connect(data / "mqtt-outbox.db")
    dump = "\n".join(con.iterdump())
    con.close()
    from edgevision.naming import topic_name

    # the queued messages and their topics: the camera's topic level is its name, without credentials
    assert f"edgevision/{topic_name(name)}/person/occupancy" in dump and "edgevision/events" in dump
    for f in data.rglob("*"):
        if f.is_file():
            assert b"hunter22" not in f.read_bytes(), f


def login_cookie(web: WebServer) -> tuple[str, str]:
    """The (name, value) of the session cookie one token exchange sets."""
    _, headers, _ = req(web, "GET", f"/?token={web.token}")
    name, value = headers["Set-Cookie"].split(";")[0].split("=", 1)
    return name, value


def test_other_apps_cookies_on_the_same_host_do_not_hide_the_session(server: WebServer) -> None:
    """Cookies are per host, not per port: a Pi's other web apps' cookies come along, in any syntax."""
    own = "=".join(login_cookie(server))
    for other in ('prefs={"theme":"dark"}', "name=a b", "path=C:\\x", "a=1; b"):
        for cookie in (f"{other}; {own}", f"{own}; {other}"):
            assert req(server, "GET", "/api/events", {"Cookie": cookie})[0] == 200, cookie
    assert req(server, "GET", "/api/events", {"Cookie": 'prefs={"a":1}; ev=x'})[0] == 401


def test_two_instances_on_one_host_keep_their_own_sessions() -> None:
    """edgevision@door and edgevision@yard on one Pi (two ports): a browser keeps one cookie per name and host, so
    signing in to one view must not sign the user out of the other."""
    live = LiveView(10, 80)
    views = [WebServer(WebConfig(port=0, token=TOKEN + suffix), live, None, None) for suffix in ("a", "b")]
    try:
        jar = dict(login_cookie(web) for web in views)
        cookie = "; ".join(f"{k}={v}" for k, v in jar.items())
        assert [req(web, "GET", "/api/events", {"Cookie": cookie})[0] for web in views] == [200, 200]
    finally:
        for web in views:
            web.close()
        live.close()


@pytest.mark.parametrize(
    "next_path", ["/\\evil.example/", "/%5C%5Cevil.example", "/%09/evil.example", "/%0D%0AX:%20y"]
)
def test_login_never_redirects_off_this_server(server: WebServer, next_path: str) -> None:
    """Browsers read a backslash as a slash and drop tabs and newlines in a Location: ``/\\evil.example`` is
    ``//evil.example``, another server (a phishing page asking for the token again)."""
    body = f"token={TOKEN}&next={next_path}"
    status, headers, _ = req(server, "POST", "/login", body=body)
    assert status == 303 and headers["Location"] == "/" and "X" not in headers


def test_one_client_cannot_hold_every_connection(server: WebServer) -> None:
    """Each connection has its own thread, and a client that trickles its request line in byte by byte keeps one
    for hours: one address gets at most MAX_PER_CLIENT at once (the others are answered 503 at once), so it
    cannot pile up threads without bound, and others are still served."""
    socks = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(MAX_PER_CLIENT + 3)]
    try:
        for s in socks:
            s.sendall(b"G")  # a request line that never ends
        time.sleep(0.5)
        answers = []
        for s in socks:
            s.settimeout(0.1)
            try:
                answers.append(s.recv(64))
            except TimeoutError:
                answers.append(b"")
        assert sum(a.startswith(b"HTTP/1.1 503") for a in answers) == 3, answers
        other = socket.create_connection(("127.0.0.1", server.port), source_address=("127.0.0.2", 0))
        other.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        other.settimeout(5)
        assert other.recv(64).startswith(b"HTTP/1.1 200")
        other.close()
    finally:
        for s in socks:
            s.close()


def test_a_non_ascii_token_works_as_a_bearer_header() -> None:
    """The config accepts any token of 16+ characters; one with a non-ASCII letter worked in the login form but
    never as ``Authorization: Bearer`` (curl, a Prometheus scraper send it as UTF-8; http.server reads headers as
    Latin-1), so every scrape was a 401 and counted towards the wrong-token lock-out."""
    token = "pässwort-0123456789"
    web = WebServer(WebConfig(port=0, token=token), LiveView(fps=5), None, None)
    try:
        for given, expected in ((token, b"200"), ("passwort-0123456789", b"401")):
            with socket.create_connection(("127.0.0.1", web.port), timeout=5) as s:
                s.sendall(
                    b"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                    b"Authorization: Bearer " + given.encode() + b"\r\n\r\n"
                )
                assert s.recv(64).split(b" ")[1] == expected, given
    finally:
        web.close()


def test_streams_closed_before_the_first_frame_free_their_connections(server: WebServer) -> None:
    """While the source is still absent (no frame yet) a stream thread only waited and never wrote, so it never
    noticed its client had gone: a page reloaded MAX_PER_CLIENT times while the camera was unplugged locked that
    browser out (every request 503) until a first frame came."""
    head = f"GET /stream.mjpg HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode()
    for _ in range(MAX_PER_CLIENT):
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
            s.sendall(head)
            assert s.recv(64).startswith(b"HTTP/1.1 200")  # the stream started; the client leaves
    time.sleep(6.5)  # past the stream's wait for a frame (5 s)
    assert req(server, "GET", "/api/events", {"Authorization": f"Bearer {TOKEN}"})[0] == 200


def test_a_chunked_form_is_refused_and_the_connection_closed(server: WebServer) -> None:
    """A POST with ``Transfer-Encoding: chunked`` had Content-Length 0 taken for its length: its body stayed in
    the connection and was read as the next request (and the empty form counted as a wrong token)."""
    body = "token=" + TOKEN
    head = (
        "POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n\r\n"
    )
    chunked = f"{len(body):x}\r\n{body}\r\n0\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall((head + chunked).encode())
        answer = b""
        while chunk := s.recv(4096):  # the server closes the connection: no second answer follows
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 411") and answer.count(b"HTTP/1.1 ") == 1, answer[:300]


@pytest.mark.parametrize(
    "head",
    [
        # a GET's body is never read: it was parsed as the next request on the connection
        f"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: %d",
        # a POST refused for its Host before its form was read
        "POST /login HTTP/1.1\r\nHost: evil.example\r\nContent-Length: %d",
    ],
)
def test_an_unread_body_is_never_read_as_the_next_request(server: WebServer, head: str) -> None:
    """A body the server does not read stayed in the kept-alive connection and was answered as a request of its
    own (behind a reverse proxy that reuses connections, another client's answer would be out of step)."""
    body = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(((head % len(body)) + "\r\n\r\n" + body).encode())
        answer = b""
        while chunk := s.recv(4096):  # the server closes the connection after its one answer
            answer += chunk
    assert answer.count(b"HTTP/1.1 ") == 1, answer[:400]


def test_healthz_names_the_source_only_under_an_allowed_host() -> None:
    """``/healthz`` answers any Host, so a page of a DNS-rebinding site (Host: its own name) could read what it
    said of the source: the stream's host, path and query (only some parameter names are masked). Under a Host
    that is not allowed it now says only the state."""
    waiting = (
        "waiting for source rtsp://cam.lan/live?pw=hunter2 for 5 s: timeout (2 attempt(s), next try in 3 s)"
    )
    progress = SimpleNamespace(
        last_progress=None, frames=0, waiting_text=lambda: waiting, state=lambda: State.WAITING
    )
    live = LiveView(10, 80)
    web = WebServer(WebConfig(port=0, token=TOKEN), live, None, None, cast(Progress, progress))
    try:
        code, _, body = req(web, "GET", "/healthz", host="evil.example")
        assert code == 200 and json.loads(body) == {
            "status": "waiting",
            "frames": 0,
            "last_frame_age_s": None,
        }
        code, _, body = req(web, "GET", "/healthz")
        assert code == 200 and json.loads(body)["source"] == waiting
    finally:
        web.close()
        live.close()
