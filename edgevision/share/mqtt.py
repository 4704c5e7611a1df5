"""MQTT (paho-mqtt): event start / update / end, periodic stats, availability with a last will, optional
Home Assistant discovery. Publishing never blocks the pipeline: messages go to the persistent outbox and a
sender thread delivers them (QoS 2, persistent session, so each message arrives once) when the broker is up.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

from edgevision.share.outbox import Outbox

log = logging.getLogger(__name__)


class MqttPublisher:
    """Owns the paho client, its network thread and the outbox sender thread."""

    def __init__(self, host: str, port: int, outbox: Outbox, camera: str, prefix: str = "edgevision",
                 client_id: str | None = None, username: str | None = None, password: str | None = None,
                 qos: int = 2, discovery: bool = False, discovery_prefix: str = "homeassistant",
                 reconnect_max_s: float = 30.0, drain_timeout_s: float = 10.0) -> None:  # fmt: skip
        try:
            import paho.mqtt.client as mqtt
        except ImportError as exc:  # pragma: no cover - paho is a dependency
            raise RuntimeError("paho-mqtt is not installed") from exc
        self.outbox = outbox
        self.camera = camera
        self.base = f"{prefix}/{camera}"
        self.qos = qos
        self.discovery = discovery
        self.discovery_prefix = discovery_prefix
        self.sent = 0
        self.drain_timeout = drain_timeout_s
        self._connected = threading.Event()
        self._stop = threading.Event()
        cid = client_id or f"edgevision-{camera}"
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid, clean_session=False)
        if username:
            self.client.username_pw_set(username, password)
        self.client.will_set(f"{self.base}/availability", "offline", qos=1, retain=True)
        self.client.reconnect_delay_set(min_delay=1, max_delay=max(1, round(reconnect_max_s)))
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.connect_async(host, port, keepalive=30)
        self.client.loop_start()
        self._thread = threading.Thread(target=self._send_loop, name="mqtt-outbox", daemon=True)
        self._thread.start()

    # -- paho callbacks (network thread) -------------------------------------------------------------
    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if getattr(reason, "is_failure", False):
            log.warning("mqtt: connection refused: %s", reason)
            return
        log.info("mqtt: connected")
        client.publish(f"{self.base}/availability", "online", qos=1, retain=True)
        if self.discovery:
            self._publish_discovery(client)
        self._connected.set()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if self._connected.is_set():
            log.warning(
                "mqtt: disconnected (%s); events wait in the outbox (%d queued)", reason, len(self.outbox)
            )
        self._connected.clear()

    def _publish_discovery(self, client: Any) -> None:
        device = {"identifiers": [f"edgevision_{self.camera}"], "name": f"edgevision {self.camera}",
                  "manufacturer": "edgevision"}  # fmt: skip
        avail = {"availability_topic": f"{self.base}/availability"}
        person = {"name": "Person", "unique_id": f"edgevision_{self.camera}_person", "device_class": "occupancy",
                  "state_topic": f"{self.base}/person", "payload_on": "ON", "payload_off": "OFF", "device": device, **avail}  # fmt: skip
        fps = {"name": "FPS", "unique_id": f"edgevision_{self.camera}_fps", "state_topic": f"{self.base}/stats",
               "value_template": "{{ value_json.fps }}", "unit_of_measurement": "fps", "device": device, **avail}  # fmt: skip
        client.publish(f"{self.discovery_prefix}/binary_sensor/edgevision_{self.camera}/person/config",
                       json.dumps(person), qos=1, retain=True)  # fmt: skip
        client.publish(f"{self.discovery_prefix}/sensor/edgevision_{self.camera}/fps/config", json.dumps(fps),
                       qos=1, retain=True)  # fmt: skip

    # -- producer side (recorder / pipeline threads) ------------------------------------------------
    def event(self, kind: str, data: dict[str, Any]) -> bool:
        """Queue an event message (``start`` / ``update`` / ``end``); False when the outbox was full."""
        payload = {"type": kind, "camera": self.camera, "sent_at": time.time(), **data}
        ok = self.outbox.put(f"{self.base}/events", json.dumps(payload).encode(), self.qos)
        if kind in ("start", "end"):
            ok &= self.outbox.put(
                f"{self.base}/person", b"ON" if kind == "start" else b"OFF", self.qos, retain=True
            )
        if not ok:
            log.warning(
                "mqtt: outbox full (%d): message dropped (%d dropped so far)",
                self.outbox.max,
                self.outbox.dropped,
            )
        return ok

    def stats(self, data: dict[str, Any]) -> None:
        """Periodic stats: sent directly when connected (stale stats are not worth queueing)."""
        if self._connected.is_set():
            self.client.publish(f"{self.base}/stats", json.dumps(data), qos=0, retain=True)

    # -- sender thread -------------------------------------------------------------------------------
    def _send_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._send_one()
            except Exception as exc:  # keep delivering: a failed attempt stays in the outbox and is retried
                log.error("mqtt: sending failed: %s; retrying", exc)
                self._stop.wait(1.0)

    def _send_one(self) -> None:
        import paho.mqtt.client as mqtt

        if not self._connected.wait(0.5):
            return
        msg = self.outbox.peek(timeout=0.5)
        if msg is None:
            return
        msg_id, topic, payload, qos, retain = msg
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            raise RuntimeError(mqtt.error_string(info.rc))
        # Wait for the broker's acknowledgement. paho keeps the message (also one published just as the link
        # dropped, rc NO_CONN) and sends it again after reconnecting, so the outbox row is deleted once, when
        # delivered. paho's is_published() raises for NO_CONN even after such a delivery: read the flag it sets.
        while not self._stop.is_set() and not getattr(info, "_published", False):
            self._stop.wait(0.05)
        if getattr(info, "_published", False):
            self.outbox.delete(msg_id)
            self.sent += 1

    def close(self) -> None:
        """Give queued events ``drain_timeout`` seconds to go out (they stay in the outbox otherwise, and are
        sent at the next start), then say offline and disconnect."""
        deadline = time.monotonic() + self.drain_timeout
        while len(self.outbox) and time.monotonic() < deadline:
            time.sleep(0.1)
        if len(self.outbox):
            log.warning("mqtt: %d message(s) kept in the outbox for the next start", len(self.outbox))
        self._stop.set()
        self._thread.join(timeout=5)
        if self._connected.is_set():
            self.client.publish(f"{self.base}/availability", "offline", qos=1, retain=True).wait_for_publish(
                2
            )
        self.client.disconnect()
        self.client.loop_stop()
        self.outbox.close()
