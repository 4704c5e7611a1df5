"""Home Assistant MQTT discovery: one device per camera with its entities (full key names, no abbreviations).

Entities: a camera showing the event snapshot, an occupancy binary_sensor, a count sensor per label, fps and
active-rung sensors, and the detect / recordings switches. Every entity carries ``unique_id``, the ``device``
(with ``sw_version``), ``origin`` and the availability topic; numeric sensors carry ``state_class`` and
``unit_of_measurement``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from edgevision import __version__
from edgevision.naming import topic_name
from edgevision.publish.mqtt import Topics

SWITCHES = ("detect", "recordings")


def discovery_configs(
    topics: Topics,
    display_name: str,
    labels: Sequence[str],
    switches: Sequence[str],
    discovery_prefix: str = "homeassistant",
    model: str = "edgevision",
    device_id: str | None = None,
) -> list[tuple[str, dict[str, Any] | None]]:
    """``(config topic, payload)`` for every entity of this camera; ``labels[0]`` is the event label. A switch
    this run cannot honour gets ``None`` (an empty config: Home Assistant removes an entity a previous run
    announced). ``device_id`` (:func:`~edgevision.naming.device_id`) is the device's serial number: it tells
    this machine's configs from another's published under the same camera name."""
    node = f"edgevision_{topics.camera}"
    device = {
        "identifiers": [node],
        "name": display_name,
        "manufacturer": "edgevision",
        "model": model,
        "sw_version": __version__,
    }
    if device_id:
        device["serial_number"] = device_id
    common = {
        "device": device,
        "availability_topic": topics.available,
        "payload_available": "online",
        "payload_not_available": "offline",
        "origin": {"name": "edgevision", "sw_version": __version__},
    }
    out: list[tuple[str, dict[str, Any] | None]] = []

    def add(component: str, object_id: str, payload: dict[str, Any]) -> None:
        object_id = topic_name(object_id)
        out.append(
            (
                f"{discovery_prefix}/{component}/{node}/{object_id}/config",
                {"unique_id": f"{node}_{object_id}", **payload, **common},
            )
        )

    event_label = labels[0]
    title = event_label.capitalize()
    add(
        "camera",
        f"{event_label}_snapshot",
        {"name": f"{title} snapshot", "topic": topics.snapshot(event_label)},
    )
    add(
        "binary_sensor",
        f"{event_label}_occupancy",
        {
            "name": f"{title} occupancy",
            "device_class": "occupancy",
            "state_topic": topics.occupancy(event_label),
            "payload_on": "ON",
            "payload_off": "OFF",
        },
    )
    for label in labels:
        add(
            "sensor",
            f"{label}_count",
            {
                "name": f"{label.capitalize()} count",
                "state_topic": topics.count(label),
                "state_class": "measurement",
                "unit_of_measurement": f"{label}s",
                "icon": "mdi:account-multiple" if label == "person" else "mdi:counter",
            },
        )
    add(
        "sensor",
        "fps",
        {
            "name": "Frames per second",
            "state_topic": topics.stats,
            "value_template": "{{ value_json.fps }}",
            "state_class": "measurement",
            "unit_of_measurement": "fps",
            "suggested_display_precision": 1,
            "entity_category": "diagnostic",
            "icon": "mdi:speedometer",
        },
    )
    add(
        "sensor",
        "rung",
        {  # text: no state_class / unit (Home Assistant would expect a number)
            "name": "Active rung",
            "state_topic": topics.stats,
            "value_template": "{{ value_json.rung }}",
            "entity_category": "diagnostic",
            "icon": "mdi:stairs",
        },
    )
    for name in switches:
        add(
            "switch",
            name,
            {
                "name": "Detection" if name == "detect" else "Recordings",
                "command_topic": topics.switch_set(name),
                "state_topic": topics.switch_state(name),
                "payload_on": "ON",
                "payload_off": "OFF",
                "entity_category": "config",
                "icon": "mdi:motion-sensor" if name == "detect" else "mdi:record-rec",
            },
        )
    out += [
        (f"{discovery_prefix}/switch/{node}/{name}/config", None) for name in SWITCHES if name not in switches
    ]
    return out
