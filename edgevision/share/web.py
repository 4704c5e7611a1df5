"""The HTTP server: live MJPEG, events page, clips and snapshots by event id, ``/healthz``, ``/metrics``.

Off by default and bound to 127.0.0.1 unless configured otherwise; with a token every endpoint but
``/healthz`` needs ``Authorization: Bearer <token>`` (or ``?token=`` for the browser's ``<img>``/``<video>``).
Files are served by event id from the index, never by a path taken from the request. Each client has its own
thread and a send timeout, so a slow client is dropped, never waited for.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from edgevision.recorder.index import EventIndex
from edgevision.share.live import LiveView
from edgevision.share.metrics import Metrics

log = logging.getLogger(__name__)

EVENT_FILE = re.compile(r"^/events/(\d{1,12})/(clip\.mp4|snapshot\.jpg|thumb\.jpg)$")
SEND_TIMEOUT_S = 2.0
CHUNK = 1 << 16


class WebServer:
    """Owns the listening socket and its thread; ``close()`` stops it."""

    def __init__(self, host: str, port: int, live: LiveView, metrics: Metrics | None, data_dir: Path | None,
                 token: str | None = None, progress: object | None = None) -> None:  # fmt: skip
        self.live = live
        self.metrics = metrics
        self.data_dir = data_dir.resolve() if data_dir else None
        self.token = token
        self.progress = progress  # a ServiceMonitor (last_progress, frames) for /healthz
        self.page = resources.files("edgevision.share").joinpath("page.html").read_bytes()
        handler = type("Handler", (_Handler,), {"server_ref": self})
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="web", daemon=True)
        self._thread.start()
        log.info("web: http://%s:%d/ (%s)", host, self.port, "token required" if token else "no token")

    def index(self) -> EventIndex | None:
        if self.data_dir is None or not (self.data_dir / "events.db").exists():
            return None
        return EventIndex(self.data_dir)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=5)


class _Handler(BaseHTTPRequestHandler):
    server_ref: WebServer
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt: str, *args: object) -> None:
        log.debug("web: %s %s", self.address_string(), fmt % args)

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(SEND_TIMEOUT_S)  # a client that stops reading is dropped

    def _authorized(self, query: dict[str, list[str]]) -> bool:
        token = self.server_ref.token
        if not token:
            return True
        header = self.headers.get("Authorization", "")
        given = header[7:] if header.startswith("Bearer ") else (query.get("token") or [""])[0]
        return hmac.compare_digest(given.encode(), token.encode())

    def _send(self, code: int, body: bytes, ctype: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, code: int, text: str) -> None:
        extra = {"WWW-Authenticate": 'Bearer realm="edgevision"'} if code == 401 else None
        self._send(code, (json.dumps({"error": text}) + "\n").encode(), "application/json", extra)

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        url = urlparse(self.path)
        query = parse_qs(url.query)
        path = url.path
        try:
            if path == "/healthz":
                return self._healthz()
            if not self._authorized(query):
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
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.close_connection = True

    def _healthz(self) -> None:
        mon = self.server_ref.progress
        last = getattr(mon, "last_progress", None)
        age = None if last is None else round(time.monotonic() - last, 3)
        body = {"status": "ok" if age is not None and age < 30 else "starting" if last is None else "stalled",
                "frames": getattr(mon, "frames", 0), "last_frame_age_s": age}  # fmt: skip
        waiting = mon.waiting_text() if hasattr(mon, "waiting_text") else ""
        if waiting:  # source absent and retried: "waiting" (healthy) or "stalled" (hung), service/watchdog.py
            body.update(status=getattr(mon, "state")().value, source=waiting)  # noqa: B009
        self._send(
            200 if body["status"] != "stalled" else 503,
            (json.dumps(body) + "\n").encode(),
            "application/json",
        )

    def _events(self, query: dict[str, list[str]]) -> None:
        index = self.server_ref.index()
        rows = []
        if index is not None:
            try:
                limit = min(1000, int((query.get("limit") or ["200"])[0]))
            except ValueError:
                return self._error(400, "limit must be a number")
            try:
                all_rows = index.list()
            finally:
                index.close()
            rows = [r.to_dict() for r in all_rows[-limit:]]
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
        self._file(path, "video/mp4" if name.endswith(".mp4") else "image/jpeg")

    def _file(self, path: Path, ctype: str) -> None:
        size = path.stat().st_size
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
        with open(path, "rb") as fh:
            fh.seek(start)
            left = end - start + 1
            while left > 0:
                block = fh.read(min(CHUNK, left))
                if not block:
                    break
                self.wfile.write(block)
                left -= len(block)

    def _stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        seq = -1
        live = self.server_ref.live
        while not live.closed:
            seq, jpeg = live.wait(seq, 5.0)
            if jpeg is None:
                continue
            self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(jpeg))
            self.wfile.write(jpeg)
            self.wfile.write(b"\r\n")
