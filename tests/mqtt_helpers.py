"""A real mosquitto broker for tests, a recording subscriber, and an in-memory stand-in for the publisher."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from browser import free_port

from edgevision.publish.mqtt import Topics

MOSQUITTO = shutil.which("mosquitto") or (
    "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
)


class Broker:
    """A real mosquitto on 127.0.0.1 with on-disk persistence, stoppable and restartable on the same port."""

    def __init__(self, tmp: Path) -> None:
        assert MOSQUITTO
        self.port = free_port()
        self.conf = tmp / "mosquitto.conf"
        (tmp / "persist").mkdir()
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
            f"persistence_location {tmp / 'persist'}/\nautosave_interval 1\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        assert MOSQUITTO
        self.proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start")

    def stop(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(10)


class Subscriber:
    """A persistent-session QoS 2 subscriber recording ``(topic, payload, retained)``; it can also publish."""

    def __init__(self, port: int, topic: str = "#", client_id: str = "test-sub") -> None:
        import paho.mqtt.client as mqtt

        self.messages: list[tuple[str, bytes, bool]] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
        self.client.on_connect = lambda c, u, f, r, p: c.subscribe(topic, qos=2)
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(1, 1)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, client: Any, userdata: Any, m: Any) -> None:
        with self._lock:
            self.messages.append((m.topic, bytes(m.payload), bool(m.retain)))

    def on(self, topic: str) -> list[bytes]:
        """Payloads received on ``topic``, in order."""
        with self._lock:
            return [p for t, p, _ in self.messages if t == topic]

    def live(self, topic: str) -> list[bytes]:
        """Payloads delivered live on ``topic`` (not re-sent as retained on a (re)subscription)."""
        with self._lock:
            return [p for t, p, retained in self.messages if t == topic and not retained]

    def last(self, topic: str) -> bytes | None:
        got = self.on(topic)
        return got[-1] if got else None

    def wait(self, check: Callable[[], object], timeout: float = 30.0) -> None:
        """Wait until ``check()`` is true; fail with the topics seen so far."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            time.sleep(0.05)
        with self._lock:
            seen = sorted({t for t, _, _ in self.messages})
        raise AssertionError(f"condition not met within {timeout} s; topics seen: {seen}")

    def publish(self, topic: str, payload: bytes | str, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class FakePublisher:
    """What :class:`EventRelay` and :class:`Presence` use of :class:`MqttPublisher`, in memory."""

    def __init__(self, topics: Topics) -> None:
        self.topics = topics
        self.queued: list[tuple[str, bytes, bool]] = []
        self.states: list[tuple[str, bytes]] = []

    def queue(self, topic: str, payload: bytes, retain: bool = False) -> bool:
        self.queued.append((topic, payload, retain))
        return True

    def state(self, topic: str, value: bytes, force: bool = False) -> None:
        self.states.append((topic, value))
