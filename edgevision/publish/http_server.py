"""The web server's socket and threads: bound early, one thread per connection, connections bounded.

:func:`listen` binds the port at the start of a run (a port in use or an unresolvable host is a config error,
exit 78, before anything else starts); :class:`BoundedServer` serves it with a thread per connection, at most
:data:`MAX_PER_CLIENT` per address and :data:`MAX_CONNECTIONS` in all, further ones answered 503 at once; its
handlers (:class:`DeadlineHandler`) drop a request that has not arrived whole within :data:`REQUEST_DEADLINE_S`.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from edgevision.config import is_loopback
from edgevision.errors import ConfigError

log = logging.getLogger(__name__)

MAX_PER_CLIENT = 16  # connections (threads) one address may hold at once
MAX_CONNECTIONS = 128
REQUEST_DEADLINE_S = 10.0  # request line, headers and body must have arrived by then


def listen(host: str, port: int, backlog: int = 16, *, loopback_only: bool = False) -> socket.socket:
    """Bind and listen on ``host:port`` now; a failure is a :class:`ConfigError` (exit 78) in one line.

    ``loopback_only`` (no token): the address the name resolves to must be a loopback one. The config allows
    no token for a loopback *name*, and a ``*.localhost`` name is looked up like any other where nothing
    resolves it locally (a hosts file, a DNS answer may give a LAN address)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ConfigError(f"web.host {host}: cannot resolve this address ({reason})") from None
    family, kind, proto, _, addr = infos[0]
    if loopback_only and not is_loopback(str(addr[0])):
        raise ConfigError(
            f"web.host {host} resolves to {addr[0]}, reachable from the network: set web.token (or "
            "web.token_file), or bind to 127.0.0.1"
        )
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as http.server does
        sock.bind(addr)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"web: cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


class BoundedServer(ThreadingHTTPServer):
    """A thread per connection, at most :data:`MAX_PER_CLIENT` per address and :data:`MAX_CONNECTIONS` in all."""

    daemon_threads = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._open: dict[str, int] = {}
        self._open_lock = threading.Lock()

    def _release(self, client: str) -> None:
        with self._open_lock:
            self._open[client] -= 1
            if not self._open[client]:
                del self._open[client]

    def process_request(self, request: Any, client_address: Any) -> None:
        client = str(client_address[0])
        with self._open_lock:
            full = self._open.get(client, 0) >= MAX_PER_CLIENT or sum(self._open.values()) >= MAX_CONNECTIONS
            if not full:
                self._open[client] = self._open.get(client, 0) + 1
        if full:
            with contextlib.suppress(OSError):
                request.sendall(
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                )
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._release(client)
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._release(str(client_address[0]))


class DeadlineHandler(BaseHTTPRequestHandler):
    """A request handler whose every request must arrive whole (request line, headers, body) within
    :data:`REQUEST_DEADLINE_S`. The socket's timeout bounds each read only: a client trickling a byte a second
    held its thread for good, and a few addresses doing so filled :data:`MAX_CONNECTIONS` (503 for everyone)."""

    _deadline: threading.Timer | None = None

    def handle_one_request(self) -> None:
        # the timer's thread only shuts the socket down: the blocked read returns and this thread ends the request
        timer = self._deadline = threading.Timer(REQUEST_DEADLINE_S, self._too_slow)
        timer.daemon = True
        timer.start()
        try:
            super().handle_one_request()
        finally:
            timer.cancel()

    def send_response(self, code: int, message: str | None = None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()  # the request is in: answering is not bounded (a live stream lasts hours)
        super().send_response(code, message)

    def _too_slow(self) -> None:
        log.debug("web: %s: request not in after %.0f s; dropped", self.client_address[0], REQUEST_DEADLINE_S)
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)
