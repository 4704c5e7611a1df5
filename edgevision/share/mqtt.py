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
                 qos: int = 2, discovery: bool = False, discovery_prefix: str = "homeassistant") -> None:  # fmt: skip
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
        self._connected = threading.Event()
        self._stop = threading.Event()
        cid = client_id or f"edgevision-{camera}"
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid, clean_session=False)
        if username:
            self.client.username_pw_set(username, password)
        self.client.will_set(f"{self.base}/availability", "offline", qos=1, retain=True)
        self.client.reconnect_delay_set(min_delay=1, max_delay=30)
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
            if not self._connected.wait(0.5):
                continue
            msg = self.outbox.peek(timeout=0.5)
            if msg is None:
                continue
            msg_id, topic, payload, qos, retain = msg
            info = self.client.publish(topic, payload, qos=qos, retain=retain)
            # Wait for the broker's acknowledgement; across a reconnect paho re-sends this same message in the
            # persistent session, so it is deleted from the outbox only once, when delivered.
            while not self._stop.is_set() and not info.is_published():
                info.wait_for_publish(timeout=0.5)
                if info.rc not in (0, 4):  # 4 = MQTT_ERR_NO_CONN: queued inside paho until reconnect
                    break
            if info.is_published():
                self.outbox.delete(msg_id)
                self.sent += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        if self._connected.is_set():
            self.client.publish(f"{self.base}/availability", "offline", qos=1, retain=True).wait_for_publish(
                2
            )
        self.client.disconnect()
        self.client.loop_stop()
        self.outbox.close()
