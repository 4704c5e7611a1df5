"""The HTTP server: live MJPEG, events page, clips and snapshots by event id, ``/healthz``, ``/metrics``.

Off by default and bound to 127.0.0.1 unless configured otherwise. With a token every endpoint but
``/healthz`` needs ``Authorization: Bearer <token>`` or a session cookie; a browser gets the cookie by one token
exchange (the login form, or ``?token=`` on the first load, answered with a redirect to the same URL without
it), so no page or media URL carries the token. Wrong tokens are rate-limited per client and the ``Host`` /
``Origin`` headers are checked against DNS rebinding (:mod:`edgevision.publish.webauth`).

The listening socket is bound early in a run and handed to :class:`WebServer`, which serves it with a thread per
connection, connections bounded per address (:mod:`edgevision.publish.http_server`). Files are served by event
id from the index, never by a path taken from the request. Each client has a send timeout, so a slow client is
dropped, never waited for.
"""

from __future__ import annotations

import html
import json
import logging
import os
import re
import select
import socket
import sqlite3
import threading
import time
from importlib import resources
from pathlib import Path
from typing import BinaryIO, Protocol
from urllib.parse import parse_qs, urlencode, urlparse

from edgevision.config import WebConfig, is_loopback
from edgevision.paths import events_index
from edgevision.publish.http_server import BoundedServer, DeadlineHandler, listen
from edgevision.publish.live import LiveView
from edgevision.publish.metrics import Metrics
from edgevision.publish.webauth import (
    FailureLimiter,
    Sessions,
    cookie_name,
    cookie_value,
    host_allowed,
    local_path,
    machine_names,
    origin_allowed,
    token_matches,
)
from edgevision.recorder.index import EventIndex
from edgevision.recorder.wallclock import shown_starts
from edgevision.redact import redact
from edgevision.service.watchdog import State

log = logging.getLogger(__name__)

EVENT_FILE = re.compile(r"^/events/(\d{1,12})/(clip\.mp4|snapshot\.jpg|thumb\.jpg)$")
SEND_TIMEOUT_S = 2.0
CHUNK = 1 << 16
MAX_FORM_BYTES = 4096
LOGIN_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>edgevision: sign in</title></head>
<body style="font-family:system-ui,sans-serif;background:#111;color:#eee;padding:2em">
<form method="post" action="/login"><p><strong>edgevision</strong> needs its access token (web.token).</p>
<input type="hidden" name="next" value="{next}">
<input name="token" type="password" autocomplete="current-password" size="40" autofocus>
<button type="submit">Sign in</button><p style="color:#e88">{error}</p></form></body></html>
"""


class Progress(Protocol):
    """What ``/healthz`` reads from the service monitor."""

    last_progress: float | None
    frames: int

    def waiting_text(self) -> str: ...

    def state(self) -> State: ...


class WebServer:
    """Owns the listening socket and its thread; ``close()`` stops it.

    ``sock`` is a socket from :func:`listen` (bound early by the run); without it the server binds
    ``host:port`` itself. ``allowed_hosts`` are extra ``Host`` names accepted (e.g. a reverse proxy's).
    """

    def __init__(
        self,
        config: WebConfig,
        live: LiveView,
        metrics: Metrics | None,
        data_dir: Path | None,
        progress: Progress | None = None,
        *,
        sock: socket.socket | None = None,
    ) -> None:
        """Serve the ``web:`` section's view (host, port, token, allowed hosts, session lifetime) on ``sock``
        when given (bound early by the caller), else on a socket bound here."""
        host, port, token = config.host, config.port, config.token
        self.live = live
        self.metrics = metrics
        self.data_dir = data_dir.resolve() if data_dir else None
        self.token = token
        self.progress = progress  # a ServiceMonitor (last_progress, frames) for /healthz
        self.host = host
        self.allowed_hosts = tuple(config.allowed_hosts)
        self.names = machine_names()
        self.sessions = Sessions(config.session_ttl_s)
        self.limiter = FailureLimiter()
        self.auth_lock = threading.Lock()  # sessions and limiter are touched by every client thread
        self.page = resources.files("edgevision.publish").joinpath("page.html").read_bytes()
        handler = type("Handler", (_Handler,), {"server_ref": self})
        if sock is None:
            sock = listen(host, port, loopback_only=not token)
        self.httpd = BoundedServer(sock.getsockname()[:2], handler, bind_and_activate=False)
        self.httpd.socket.close()
        self.httpd.socket = sock
        self.httpd.server_address = sock.getsockname()
        self.port = self.httpd.server_address[1]
        self.cookie = cookie_name(self.port)
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="web", daemon=True)
        self._thread.start()
        log.info("web: http://%s:%d/ (%s)", host, self.port, "token required" if token else "no token")
        if not token and not is_loopback(host):  # config validation refuses this; a direct caller is warned
            log.warning("web: %s is reachable from the network and no token is set", host)

    def index(self) -> EventIndex | None:
        if self.data_dir is None or not events_index(self.data_dir).exists():
            return None
        return EventIndex(self.data_dir)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=5)


class _Handler(DeadlineHandler):
    server_ref: WebServer
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt: str, *args: object) -> None:
        log.debug("web: %s %s", self.address_string(), redact(fmt % args))

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(SEND_TIMEOUT_S)  # a client that stops reading is dropped

    def _client(self) -> str:
        return str(self.client_address[0])

    def _session_id(self) -> str | None:
        return cookie_value(self.headers.get("Cookie"), self.server_ref.cookie)

    def _check_token(self, given: str) -> bool | None:
        """True/False for a right/wrong token; None when this client must wait (429 already sent)."""
        srv = self.server_ref
        assert srv.token is not None
        with srv.auth_lock:
            wait = srv.limiter.retry_after(self._client())
            if wait > 0:
                self._error(
                    429, "too many wrong tokens; try again later", {"Retry-After": str(int(wait) + 1)}
                )
                return None
            ok = token_matches(given, srv.token)
            if ok:
                srv.limiter.succeeded(self._client())
            else:
                wait = srv.limiter.failed(self._client())
                if wait > 0:
                    log.warning("web: wrong token from %s; next attempt in %.0f s", self._client(), wait)
        return ok

    def _authorized(self) -> bool | None:
        """Bearer header or session cookie: True (go on), False (send 401) or None (response already sent)."""
        srv = self.server_ref
        if not srv.token:
            return True
        header = self.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            # http.server reads header bytes as Latin-1; clients send a non-ASCII token as UTF-8
            given = header[7:].strip().encode("latin-1", "replace").decode("utf-8", "replace")
            return self._check_token(given)
        with srv.auth_lock:
            return srv.sessions.valid(self._session_id())

    def _start_session(self, location: str) -> None:
        srv = self.server_ref
        with srv.auth_lock:
            sid = srv.sessions.create()
        cookie = f"{srv.cookie}={sid}; Path=/; HttpOnly; SameSite=Lax"
        self._send(303, b"", "text/plain", {"Location": location, "Set-Cookie": cookie})

    def _login_page(self, code: int, next_path: str = "/", error: str = "") -> None:
        body = LOGIN_PAGE.format(next=html.escape(next_path), error=html.escape(error)).encode()
        extra = {"WWW-Authenticate": 'Bearer realm="edgevision"'} if code == 401 else None
        self._send(code, body, "text/html; charset=utf-8", extra)

    def _has_body(self) -> bool:
        """Whether the request says a body follows (a GET's is never read)."""
        length = (self.headers.get("Content-Length") or "0").strip()
        return bool(self.headers.get("Transfer-Encoding")) or length != "0"

    def _host_ok(self) -> bool:
        srv = self.server_ref
        host = self.headers.get("Host")
        if not host_allowed(host, srv.host, srv.allowed_hosts, srv.names):
            self._error(403, f"Host '{host}' is not allowed here (add it to web.allowed_hosts)")
            return False
        if not origin_allowed(self.headers.get("Origin"), host):
            self._error(403, "cross-origin request refused")
            return False
        return True

    def _send(self, code: int, body: bytes, ctype: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        if self.close_connection:  # say so: a proxy must not send the next request on this connection
            self.send_header("Connection", "close")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, code: int, text: str, extra: dict[str, str] | None = None) -> None:
        extra = dict(extra or {})
        if code == 401:
            extra["WWW-Authenticate"] = 'Bearer realm="edgevision"'
        self._send(code, (json.dumps({"error": text}) + "\n").encode(), "application/json", extra)

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        url = urlparse(self.path)
        query = parse_qs(url.query)
        path = url.path
        if self._has_body():  # never read here: it must not be taken for the next request
            self.close_connection = True
        try:
            if path == "/healthz":  # unauthenticated and reachable under any Host name: the state alone
                return self._healthz()
            if not self._host_ok():
                return None
            if "token" in query and self.server_ref.token:
                # One token exchange: a session cookie and a redirect to the same URL without the token.
                ok = self._check_token(query["token"][0])
                if ok is None:
                    return None
                if not ok:
                    return self._login_page(401, path, "wrong token")
                rest = urlencode([(k, v) for k, vs in query.items() if k != "token" for v in vs])
                return self._start_session(local_path(path + (f"?{rest}" if rest else "")))
            auth = self._authorized()
            if auth is None:
                return None
            if not auth:
                if path in ("/", "/index.html") and "Authorization" not in self.headers:
                    return self._login_page(401)
                return self._error(401, "unauthorized")
            if path in ("/", "/index.html"):
                return self._send(200, self.server_ref.page, "text/html; charset=utf-8")
            if path == "/stream.mjpg":
                return self._stream()
            if path == "/snapshot.jpg":
                _, jpeg = self.server_ref.live.wait(-1, 0)
                return self._send(200, jpeg, "image/jpeg") if jpeg else self._error(503, "no frame yet")
            if path == "/metrics" and self.server_ref.metrics is not None:
                return self._send(
                    200, self.server_ref.metrics.render(), "text/plain; version=0.0.4; charset=utf-8"
                )
            if path == "/api/events":
                return self._events(query)
            m = EVENT_FILE.match(path)
            if m:
                return self._event_file(int(m.group(1)), m.group(2))
            return self._error(404, "not found")
        except sqlite3.Error as exc:  # events.db damaged, or locked past its timeout: say so, keep serving
            log.warning("web: event index: %s", exc)
            return self._error(503, f"event index unavailable: {exc}")
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.close_connection = True

    def do_POST(self) -> None:
        url = urlparse(self.path)
        try:
            if not self._host_ok():
                self.close_connection = True  # the form was not read
                return None
            if self.headers.get("Transfer-Encoding"):  # a chunked body would be read as the next request
                self.close_connection = True
                return self._error(411, "send the form with a Content-Length")
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_FORM_BYTES or length < 0:
                self.close_connection = True
                return self._error(413, "form too large")
            form = parse_qs(self.rfile.read(length).decode("utf-8", "replace"))
            if url.path == "/logout":
                with self.server_ref.auth_lock:
                    self.server_ref.sessions.end(self._session_id())
                expired = f"{self.server_ref.cookie}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0"
                return self._send(303, b"", "text/plain", {"Location": "/", "Set-Cookie": expired})
            if url.path != "/login":
                return self._error(404, "not found")
            next_path = local_path((form.get("next") or ["/"])[0])  # never redirect off this server
            if not self.server_ref.token:
                return self._send(303, b"", "text/plain", {"Location": next_path})
            ok = self._check_token((form.get("token") or [""])[0])
            if ok is None:
                return None
            if not ok:
                return self._login_page(401, next_path, "wrong token")
            return self._start_session(next_path)
        except ValueError:
            self.close_connection = True  # a Content-Length that is no number: the form's end is unknown
            return self._error(400, "bad request")
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.close_connection = True

    def _healthz(self) -> None:
        mon = self.server_ref.progress
        last = mon.last_progress if mon is not None else None
        age = None if last is None else round(time.monotonic() - last, 3)
        status = (
            State.OK if age is not None and age < 30 else State.STARTING if last is None else State.STALLED
        )
        waiting = mon.waiting_text() if mon is not None else ""
        if mon is not None and waiting:  # source absent and retried: waiting (healthy) or stalled (hung)
            status = mon.state()
        body: dict[str, object] = {
            "status": status.value,
            "frames": mon.frames if mon is not None else 0,
            "last_frame_age_s": age,
        }
        srv = self.server_ref
        if waiting and host_allowed(self.headers.get("Host"), srv.host, srv.allowed_hosts, srv.names):
            body["source"] = waiting  # not to a DNS-rebinding page (any Host): it names the stream
        self._send(
            503 if status is State.STALLED else 200, (json.dumps(body) + "\n").encode(), "application/json"
        )

    def _events(self, query: dict[str, list[str]]) -> None:
        index = self.server_ref.index()
        rows = []
        if index is not None:
            try:
                limit = min(1000, int((query.get("limit") or ["200"])[0]))
            except ValueError:
                limit = -1
            if limit < 0:
                return self._error(400, "limit must be a number from 0 to 1000")
            try:
                shown = index.latest(limit)  # not every row: the page polls this
                started = shown_starts([r.stamp for r in shown], index.boot_offsets())
            finally:
                index.close()
            # start_time: when it really started, also for an event recorded before the clock stepped
            rows = [{**r.to_dict(), "start_time": started[r.id]} for r in shown]
        self._send(200, json.dumps(rows).encode(), "application/json")

    def _event_file(self, event_id: int, name: str) -> None:
        index = self.server_ref.index()
        row = None
        if index is not None:
            try:
                row = index.get(event_id)
            finally:
                index.close()
        if row is None:
            return self._error(404, f"no event {event_id}")
        rel = {"clip.mp4": row.clip_path, "snapshot.jpg": row.snapshot_path, "thumb.jpg": row.thumb_path}[
            name
        ]
        root = self.server_ref.data_dir
        if not rel or root is None:
            return self._error(404, f"event {event_id} has no {name}")
        path = (root / rel).resolve()
        if root not in path.parents or not path.is_file():  # the index is ours, but check anyway
            return self._error(404, f"event {event_id} has no {name}")
        try:  # opened before any header goes out: retention may have deleted it since the check
            fh = open(path, "rb")  # noqa: SIM115 - closed by _file
        except OSError:
            return self._error(404, f"event {event_id} has no {name}")
        with fh:
            self._file(fh, "video/mp4" if name.endswith(".mp4") else "image/jpeg")

    def _file(self, fh: BinaryIO, ctype: str) -> None:
        size = os.fstat(fh.fileno()).st_size
        start, end = 0, size - 1
        m = re.match(r"bytes=(\d*)-(\d*)$", self.headers.get("Range", ""))
        partial = bool(m and (m.group(1) or m.group(2)))
        if m and partial:
            if m.group(1):
                start = int(m.group(1))
                end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
            else:
                start = max(0, size - int(m.group(2)))
            if start > end:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        self.send_response(206 if partial else 200)
        self.send_header("Content-Type", ctype)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(end - start + 1))
        if partial:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if self.command == "HEAD":
            return
        fh.seek(start)
        left = end - start + 1
        while left > 0:
            block = fh.read(min(CHUNK, left))
            if not block:
                break
            self.wfile.write(block)
            left -= len(block)

    def _client_left(self) -> bool:
        """Whether the client closed its end (a stream's client sends nothing more, so readable means EOF)."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        if self.command == "HEAD":  # the headers only: a HEAD must not become an endless stream
            return
        seq = -1
        live = self.server_ref.live
        while not live.closed:
            seq, jpeg = live.wait(seq, 5.0)
            if jpeg is None:  # no frame yet (source absent): nothing written, so look whether the client left
                if self._client_left():
                    return
                continue
            self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(jpeg))
            self.wfile.write(jpeg)
            self.wfile.write(b"\r\n")
