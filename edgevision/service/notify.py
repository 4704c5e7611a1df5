"""sd_notify(3) over the real protocol: datagrams to ``$NOTIFY_SOCKET`` (a path, or ``@name`` for an abstract
socket). A few lines of socket code instead of a dependency; a no-op when not started by systemd."""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


class Notifier:
    """Sends ``READY=1``, ``WATCHDOG=1``, ``STATUS=…``, ``EXTEND_TIMEOUT_USEC=…`` and ``STOPPING=1`` to systemd.
    Thread-safe (one sendto)."""

    def __init__(self, address: str | None = None) -> None:
        self.address = address if address is not None else os.environ.get("NOTIFY_SOCKET")
        self._sock: socket.socket | None = None
        if self.address:
            addr = self.address
            if addr.startswith("@"):
                addr = "\0" + addr[1:]
            self._target = addr
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._sock.setblocking(False)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def send(self, *fields: str) -> bool:
        """Send ``KEY=value`` lines as one datagram; False (and a debug log) when it could not be delivered."""
        if self._sock is None:
            return False
        try:
            self._sock.sendto("\n".join(fields).encode(), self._target)
        except OSError as exc:  # systemd gone or socket full: the watchdog will notice; we must not block
            log.debug("sd_notify failed: %s", exc)
            return False
        return True

    def ready(self, status: str = "") -> bool:
        return self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def status(self, text: str) -> bool:
        return self.send(f"STATUS={text}")

    def extend_timeout(self, seconds: float, status: str = "") -> bool:
        """``EXTEND_TIMEOUT_USEC=``: the start (or stop) may take ``seconds`` more from now (systemd >= 236;
        ignored where the current timeout already reaches that far)."""
        return self.send(
            f"EXTEND_TIMEOUT_USEC={int(seconds * 1e6)}", *([f"STATUS={status}"] if status else [])
        )

    def stopping(self) -> bool:
        return self.send("STOPPING=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def watchdog_interval(env: dict[str, str] | None = None) -> float | None:
    """Seconds between pings: half of ``$WATCHDOG_USEC`` (when meant for this process), else None."""
    env = dict(os.environ) if env is None else env
    usec = env.get("WATCHDOG_USEC")
    pid = env.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return max(0.05, int(usec) / 1e6 / 2)
    except ValueError:
        return None


def supervised(env: dict[str, str] | None = None) -> bool:
    """Started by systemd as a notify service (``$NOTIFY_SOCKET`` set): live sources absent at start are then
    waited for instead of being an error (a Pi's camera or Wi-Fi may come up after the service)."""
    env = dict(os.environ) if env is None else env
    return bool(env.get("NOTIFY_SOCKET"))
