"""MQTT transport (paho-mqtt), laid out like Frigate's topics so Home Assistant automations carry over.

Two kinds of messages:

* **events** (``<prefix>/events``, occupancy ON/OFF) go through the persistent outbox and a sender thread
  (QoS 2 in a persistent session: each message arrives once, also across broker outages and restarts);
* **state** (counts, snapshot, stats, switch states) is retained, sent only while connected and re-sent on
  every (re)connect: only the latest value matters, so nothing stale queues up.

Switches: ``<prefix>/<camera>/{detect,recordings}/set`` (``ON`` / ``OFF``) flip the run's :class:`Controls`.

One camera name, one device: ``<prefix>/<camera>/device`` (retained) names the device publishing as that camera.
Two devices left at the same default name (every Pi's first camera is ``camera0``) would merge into one Home
Assistant device and mix their events; each says so in its log as soon as it sees the other's marker. A
retained discovery config this run does not announce is removed only when it is this device's (its serial
number is this device id, or it has none, as before device ids). Client ids carry the device id, so such a pair
at least does not knock each other off the broker in turn.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from edgevision.config import MqttConfig
from edgevision.naming import device_id, topic_name
from edgevision.pipeline.control import Controls
from edgevision.publish.outbox import Outbox

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Topics:
    """Every topic of one camera. ``camera`` is already topic-safe (:func:`edgevision.naming.topic_name`)."""

    prefix: str
    camera: str

    @property
    def base(self) -> str:
        return f"{self.prefix}/{self.camera}"

    @property
    def events(self) -> str:
        return f"{self.prefix}/events"  # one topic for every camera, as Frigate: the camera is in the payload

    @property
    def available(self) -> str:
        return f"{self.base}/available"

    @property
    def stats(self) -> str:
        return f"{self.base}/stats"

    @property
    def device(self) -> str:
        return f"{self.base}/device"

    def count(self, label: str) -> str:
        return f"{self.base}/{topic_name(label)}"

    def occupancy(self, label: str) -> str:
        return f"{self.base}/{topic_name(label)}/occupancy"

    def snapshot(self, label: str) -> str:
        return f"{self.base}/{topic_name(label)}/snapshot"

    def switch_set(self, name: str) -> str:
        return f"{self.base}/{name}/set"

    def switch_state(self, name: str) -> str:
        return f"{self.base}/{name}/state"


class Publisher(Protocol):
    """What event and presence producers need of :class:`MqttPublisher`."""

    topics: Topics

    def queue(self, topic: str, payload: bytes, retain: bool = False) -> bool: ...

    def state(self, topic: str, value: bytes, force: bool = False) -> None: ...


def on_off(on: bool) -> bytes:
    return b"ON" if on else b"OFF"


class MqttPublisher:
    """Owns the paho client, its network thread and the outbox sender thread."""

    def __init__(
        self,
        config: MqttConfig,
        outbox: Outbox,
        topics: Topics,
        discovery: Sequence[tuple[str, dict[str, Any] | None]] = (),
        controls: Controls | None = None,
        switches: Sequence[str] = (),
        device: str | None = None,
    ) -> None:
        """Connect (in the background) as the ``mqtt:`` section says: broker, credentials, client id, QoS,
        reconnect backoff, drain timeout. ``device`` is this machine's :func:`~edgevision.naming.device_id`."""
        c = config
        try:
            import paho.mqtt.client as mqtt
        except ImportError as exc:  # pragma: no cover - paho is a dependency
            raise RuntimeError("paho-mqtt is not installed") from exc
        self.outbox = outbox
        self.topics = topics
        self.qos = c.qos
        self.discovery = list(discovery)
        # This device's discovery configs, as subscriptions: a retained one that this run does not announce (a
        # label taken out of recorder.labels) is removed, or Home Assistant would keep its entity for good.
        self._announced = {topic for topic, _ in self.discovery}
        self._device_configs = sorted(  # <prefix, maybe of several levels>/<component>/<node>/<object>/config
            {f"{p[0]}/+/{p[2]}/+/config" for p in (t.rsplit("/", 4) for t in self._announced) if len(p) == 5}
        )
        self.device = device or device_id()
        self._marker = json.dumps({"device": self.device, "host": socket.gethostname()})
        self.clashes: set[str] = set()  # other devices seen publishing as this camera (paho's network thread)
        self.controls = controls
        self.switches = tuple(switches)  # the switches this run can honour (recordings needs a recorder)
        self.sent = 0
        self.drain_timeout = c.drain_timeout_s
        self._connected = threading.Event()
        self._links = 0  # successful connections so far (paho's network thread counts them)
        self._broker = f"{c.host}:{c.port}"
        self._unreachable_said = False  # the current outage was logged (paho's network thread)
        self._stop = threading.Event()
        self._state_lock = threading.Lock()  # guards _state (written by pipeline, recorder, paho threads)
        self._state: dict[str, bytes] = {}
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=c.client_id or f"edgevision-{topics.camera}-{self.device[:8]}",
            clean_session=False,
        )
        if c.username:
            self.client.username_pw_set(c.username, c.password)
        self.client.will_set(topics.available, "offline", qos=1, retain=True)
        self.client.reconnect_delay_set(min_delay=1, max_delay=max(1, round(c.reconnect_max_s)))
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_connect_fail = self._on_connect_fail
        for name in self.switches:
            self.client.message_callback_add(topics.switch_set(name), self._on_set)
        if controls is not None:
            for name in ("detect", "recordings"):
                self._set_state(
                    topics.switch_state(name), on_off(name in self.switches and controls.get(name))
                )
            controls.listeners.append(self._switched)
        self.client.connect_async(c.host, c.port, keepalive=30)
        self.client.loop_start()
        self._thread = threading.Thread(target=self._send_loop, name="mqtt-outbox", daemon=True)
        self._thread.start()

    # -- paho callbacks (network thread) -------------------------------------------------------------
    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if getattr(reason, "is_failure", False):
            log.warning("mqtt: connection refused: %s", reason)
            return
        log.info("mqtt: connected")
        self._unreachable_said = False
        client.publish(self.topics.available, "online", qos=1, retain=True)
        # ours first, then subscribed: the retained marker we are sent back is ours unless another device
        # publishes as this camera meanwhile
        client.publish(self.topics.device, self._marker, qos=1, retain=True)
        client.message_callback_add(self.topics.device, self._on_device_marker)
        client.subscribe(self.topics.device, qos=1)
        for topic, payload in self.discovery:  # None: an empty config removes the entity
            client.publish(topic, "" if payload is None else json.dumps(payload), qos=1, retain=True)
        for pattern in self._device_configs:
            client.message_callback_add(pattern, self._on_device_config)
            client.subscribe(pattern, qos=1)
        if self.switches:
            client.subscribe([(self.topics.switch_set(name), 1) for name in self.switches])
        # The latest state (the broker may have restarted without it), and "connected", under the state lock: a
        # state() call either lands in this snapshot or sees the link up and publishes itself, after it; never an
        # older value published over a newer one. publish() only queues (paho's network thread sends).
        with self._state_lock:
            for topic, value in self._state.items():
                client.publish(topic, value, qos=1, retain=True)
            self._links += 1
            self._connected.set()

    def _on_connect_fail(self, client: Any, userdata: Any) -> None:
        if not self._unreachable_said:  # once per outage: paho retries every reconnect_max_s at most
            self._unreachable_said = True
            log.warning(
                "mqtt: cannot reach the broker at %s; retrying, events wait in the outbox (%d queued)",
                self._broker,
                len(self.outbox),
            )

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if self._connected.is_set():
            log.warning(
                "mqtt: disconnected (%s); events wait in the outbox (%d queued)", reason, len(self.outbox)
            )
        self._connected.clear()

    def _on_device_marker(self, client: Any, userdata: Any, message: Any) -> None:
        """Another device's marker on this camera's topic: said once per device, and ours published again so
        that the other device sees the clash too (once each: no ping-pong)."""
        try:
            other = json.loads(message.payload)
            device, host = str(other["device"]), str(other.get("host", "?"))
        except (ValueError, TypeError, KeyError):
            return  # not a marker (an empty one clears the retained topic)
        if device == self.device or device in self.clashes:
            return
        self.clashes.add(device)
        log.error(
            "mqtt: another edgevision (host %s, device %s) also publishes as camera '%s': Home Assistant merges "
            "the two and their events mix; give each camera its own name (recorder.camera in the config)",
            host[:64],
            device[:16],
            self.topics.camera,
        )
        client.publish(self.topics.device, self._marker, qos=1, retain=True)

    def _on_device_config(self, client: Any, userdata: Any, message: Any) -> None:
        """A retained discovery config of this device that this run does not announce: removed (an empty
        retained config). One another device announced under the same camera name is left alone."""
        if message.retain and message.payload and message.topic not in self._announced:
            try:
                serial = json.loads(message.payload).get("device", {}).get("serial_number")
            except (ValueError, AttributeError):
                serial = None  # not JSON we wrote: nothing says whose it is, so it is this node's
            if serial not in (None, self.device):
                return
            log.info("mqtt: removing the Home Assistant entity %s (no longer announced)", message.topic)
            client.publish(message.topic, "", qos=1, retain=True)

    def _on_set(self, client: Any, userdata: Any, message: Any) -> None:
        name = message.topic.rsplit("/", 2)[-2]
        value = message.payload.decode(errors="replace").strip().upper()
        if value not in ("ON", "OFF") or self.controls is None:
            log.warning("mqtt: %s: expected ON or OFF, got %r", message.topic, value[:20])
            return
        self.controls.set(name, value == "ON")

    def _switched(self, name: str, on: bool) -> None:
        self.state(self.topics.switch_state(name), on_off(on))

    # -- producer side (pipeline, recorder and snapshot threads) ------------------------------------
    def queue(self, topic: str, payload: bytes, retain: bool = False) -> bool:
        """Queue a message in the outbox (delivered once, in order); False when the outbox was full."""
        ok = self.outbox.put(topic, payload, self.qos, retain=retain)
        if not ok:
            log.warning(
                "mqtt: outbox full (%d): message dropped (%d dropped so far)",
                self.outbox.max,
                self.outbox.dropped,
            )
        return ok

    def _set_state(self, topic: str, value: bytes) -> bool:
        with self._state_lock:
            changed = self._state.get(topic) != value
            self._state[topic] = value
        return changed

    def state(self, topic: str, value: bytes, force: bool = False) -> None:
        """Retained state: published now when connected and changed (or ``force``), and again on reconnect."""
        with self._state_lock:  # see _on_connect: set, check and publish as one step
            changed = self._state.get(topic) != value
            self._state[topic] = value
            if (changed or force) and self._connected.is_set():
                self.client.publish(topic, value, qos=1, retain=True)

    def stats(self, data: dict[str, Any]) -> None:
        """Periodic stats (fps, rung, ...), retained."""
        self.state(self.topics.stats, json.dumps(data).encode(), force=True)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

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
        link = self._links
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            raise RuntimeError(mqtt.error_string(info.rc))
        # Wait for the broker's acknowledgement. paho keeps a QoS 1/2 message (also one published just as the link
        # dropped, rc NO_CONN) and sends it again after reconnecting, so the outbox row is deleted once, when
        # delivered. paho's is_published() raises for NO_CONN even after such a delivery: read the flag it sets.
        # A QoS 0 message paho could not write before the link dropped is gone from paho: it stays in the outbox
        # and is published again once connected (it is marked published as soon as it is written).
        while not self._stop.is_set() and not getattr(info, "_published", False):
            if qos == 0 and (
                info.rc == mqtt.MQTT_ERR_NO_CONN or not self._connected.is_set() or self._links != link
            ):
                self._stop.wait(0.5)
                return
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
            info = self.client.publish(self.topics.available, "offline", qos=1, retain=True)
            try:
                info.wait_for_publish(2)
            except (RuntimeError, ValueError) as exc:  # the link dropped before paho's on_disconnect said so
                log.debug("mqtt: 'offline' not sent: %s (the broker's will says it)", exc)
        self.client.disconnect()
        self.client.loop_stop()
        self.outbox.close()
