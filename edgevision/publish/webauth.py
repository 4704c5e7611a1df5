"""Who may use the web view: token exchange sessions, a failed-attempt limiter, Host and Origin checks.

Pure logic over an injected clock (the HTTP handler in :mod:`edgevision.publish.web` only wires it in):

* :class:`Sessions` — a valid token, presented once (``?token=`` on the first page load, or the login form),
  buys a random session id kept in an ``HttpOnly; SameSite=Lax`` cookie, so no URL ever carries the token.
  The cookie is named after the port (:func:`cookie_name`): browsers send a host's cookies to every port, and
  two cameras' views on one Pi must not overwrite each other's session. :func:`cookie_value` reads it from a
  ``Cookie`` header whatever the other cookies there (other apps on the host) look like.
  A session expires after ``ttl_s`` without use (every request renews it) and after :data:`SESSION_MAX_S`
  whatever happens; at most ``max_sessions`` live at once (the oldest goes first).
* :class:`FailureLimiter` — per client address: the first :data:`FREE_FAILURES` wrong tokens cost nothing,
  then each further failure doubles a lock-out (1 s, 2 s, 4 s, ... capped at ``max_s``) during which every
  token attempt is answered 429 without being checked; a success forgets the client.
* :func:`host_allowed` / :func:`origin_allowed` — DNS rebinding defence: a browser tricked into sending
  requests for ``evil.example`` to this server sends ``Host: evil.example``, which is refused. A loopback
  bind accepts only loopback names; a LAN bind accepts IP literals, this machine's host names and
  ``web.allowed_hosts``. An ``Origin`` header, when sent, must name the same host and port as ``Host``.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
import socket
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from edgevision.config import is_loopback

Clock = Callable[[], float]

COOKIE = "ev_session"  # + "_<port>": see cookie_name
FREE_FAILURES = 5
SESSION_MAX_S = 12 * 3600.0


def token_matches(given: str, token: str) -> bool:
    """Constant-time comparison of a presented token with the configured one."""
    return hmac.compare_digest(given.encode("utf-8", "replace"), token.encode("utf-8"))


def cookie_name(port: int) -> str:
    """The session cookie's name for the view on ``port`` (cookies are per host, not per port)."""
    return f"{COOKIE}_{port}"


def cookie_value(header: str | None, name: str) -> str | None:
    """The value of cookie ``name`` in a ``Cookie`` header, or None.

    Split on ``;`` by hand: :class:`http.cookies.SimpleCookie` drops every cookie of a header once one of them
    is not to its liking (a space or a quote in a value), and the other cookies belong to whatever else runs on
    this host."""
    for part in (header or "").split(";"):
        key, sep, value = part.partition("=")
        if sep and key.strip() == name:
            return value.strip().strip('"') or None
    return None


def local_path(value: str) -> str:
    """``value`` when it is a path on this server, else ``/`` (what a redirect after signing in may name).

    Browsers read ``\\`` as ``/`` and drop tabs and newlines in a ``Location``, so ``/\\evil.example`` would
    leave this server as surely as ``//evil.example``; a CR or LF would also end the header."""
    printable = value.isascii() and value.isprintable() and "\\" not in value
    return value if printable and value.startswith("/") and not value.startswith("//") else "/"


@dataclass
class _Session:
    created: float
    expires: float


class Sessions:
    """Random session ids with an idle timeout and a hard maximum age."""

    def __init__(self, ttl_s: float, clock: Clock = time.monotonic, max_sessions: int = 256) -> None:
        self.ttl_s = ttl_s
        self.clock = clock
        self.max_sessions = max_sessions
        self._live: OrderedDict[str, _Session] = OrderedDict()

    def create(self) -> str:
        """A new session id (256 random bits)."""
        now = self.clock()
        self._prune(now)
        while len(self._live) >= self.max_sessions:
            self._live.popitem(last=False)
        sid = secrets.token_urlsafe(32)
        self._live[sid] = _Session(now, now + self.ttl_s)
        return sid

    def valid(self, sid: str | None) -> bool:
        """True (and the idle timeout renewed) when ``sid`` is a live session."""
        if not sid:
            return False
        now = self.clock()
        s = self._live.get(sid)
        if s is None:
            return False
        if now >= s.expires or now - s.created >= SESSION_MAX_S:
            del self._live[sid]
            return False
        s.expires = now + self.ttl_s
        return True

    def end(self, sid: str | None) -> None:
        if sid:
            self._live.pop(sid, None)

    def __len__(self) -> int:
        return len(self._live)

    def _prune(self, now: float) -> None:
        for sid in [k for k, s in self._live.items() if now >= s.expires or now - s.created >= SESSION_MAX_S]:
            del self._live[sid]


@dataclass
class _Failures:
    count: int
    until: float
    last: float


class FailureLimiter:
    """Exponential back-off on wrong tokens, per client address; bounded in memory."""

    def __init__(
        self,
        free: int = FREE_FAILURES,
        base_s: float = 1.0,
        max_s: float = 300.0,
        clock: Clock = time.monotonic,
        max_clients: int = 1024,
    ) -> None:
        self.free = free
        self.base_s = base_s
        self.max_s = max_s
        self.clock = clock
        self.max_clients = max_clients
        self._clients: OrderedDict[str, _Failures] = OrderedDict()

    def retry_after(self, client: str) -> float:
        """Seconds this client must wait before a token is checked again (0: go ahead)."""
        f = self._clients.get(client)
        if f is None:
            return 0.0
        return max(0.0, f.until - self.clock())

    def failed(self, client: str) -> float:
        """Count a wrong token; returns the lock-out it starts (0 while still within the free attempts)."""
        now = self.clock()
        f = self._clients.pop(client, None)
        if f is None or now - f.last > self.max_s * 2:  # long quiet: start over
            f = _Failures(0, now, now)
        f.count += 1
        f.last = now
        wait = 0.0
        if f.count > self.free:
            wait = min(self.max_s, self.base_s * 2 ** (f.count - self.free - 1))
        f.until = now + wait
        self._clients[client] = f
        while len(self._clients) > self.max_clients:
            self._clients.popitem(last=False)
        return wait

    def succeeded(self, client: str) -> None:
        self._clients.pop(client, None)


def split_host(value: str) -> tuple[str, str | None]:
    """``host[:port]`` (IPv6 in brackets) -> (host, port or None), host lower-cased without brackets."""
    value = value.strip()
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return value.lower(), None
        host, rest = value[1:end], value[end + 1 :]
        return host.lower(), rest[1:] if rest.startswith(":") else None
    if value.count(":") == 1:
        host, port = value.split(":")
        return host.lower(), port
    return value.lower(), None


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def machine_names() -> set[str]:
    """This machine's own names (what a LAN user types: ``raspberrypi``, ``raspberrypi.local``); no DNS lookup."""
    name = socket.gethostname().lower().rstrip(".")
    return {name, f"{name}.local", f"{name}.lan"} if name else set()


def host_allowed(
    header: str | None, bind_host: str, allowed: Iterable[str], names: Iterable[str] = ()
) -> bool:
    """Whether a request's ``Host`` header may be served (see the module docstring)."""
    if not header:
        return False
    host, _ = split_host(header)
    host = host.rstrip(".")
    extra = {a.lower().strip("[]").rstrip(".") for a in allowed}  # web.allowed_hosts takes [v6] literals
    if host in extra:
        return True
    if is_loopback(bind_host):
        return is_loopback(host)
    return _is_ip(host) or is_loopback(host) or host in {n.lower() for n in names}


def origin_allowed(origin: str | None, host_header: str | None) -> bool:
    """An ``Origin`` header, when present, must be ``http(s)://`` + the request's own ``Host``."""
    if origin is None:
        return True
    if not host_header:
        return False
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return False
    o_host, o_port = split_host(parts.netloc)
    h_host, h_port = split_host(host_header)
    default = "443" if parts.scheme == "https" else "80"
    return o_host == h_host and (o_port or default) == (h_port or default)
