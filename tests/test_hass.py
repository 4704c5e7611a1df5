"""Home Assistant MQTT discovery: every payload checked against the schema Home Assistant documents."""

from __future__ import annotations

from typing import Any

import pytest

from edgevision import __version__
from edgevision.publish.hass import discovery_configs
from edgevision.publish.mqtt import Topics

TOPICS = Topics("edgevision", "porch")


# -- Home Assistant discovery against its documented schema ------------------------------------------------
# From Home Assistant's MQTT integration docs (home-assistant.io/integrations/<component>.mqtt and
# /integrations/mqtt#mqtt-discovery): keys every MQTT entity accepts, then per component its required and
# optional keys. Abbreviations (stat_t, uniq_id, ...) are expanded before checking.
COMMON = {
    "availability",
    "availability_mode",
    "availability_template",
    "availability_topic",
    "device",
    "enabled_by_default",
    "encoding",
    "entity_category",
    "entity_picture",
    "icon",
    "json_attributes_template",
    "json_attributes_topic",
    "name",
    "object_id",
    "default_entity_id",
    "origin",
    "payload_available",
    "payload_not_available",
    "qos",
    "unique_id",
}
COMPONENTS: dict[str, dict[str, set[str]]] = {
    "camera": {"required": {"topic"}, "optional": {"image_encoding"}},
    "binary_sensor": {
        "required": {"state_topic"},
        "optional": {
            "device_class",
            "expire_after",
            "force_update",
            "off_delay",
            "payload_off",
            "payload_on",
            "value_template",
        },
    },
    "sensor": {
        "required": {"state_topic"},
        "optional": {
            "device_class",
            "expire_after",
            "force_update",
            "last_reset_value_template",
            "options",
            "state_class",
            "suggested_display_precision",
            "unit_of_measurement",
            "value_template",
        },
    },
    "switch": {
        "required": set(),
        "optional": {
            "command_template",
            "command_topic",
            "device_class",
            "optimistic",
            "payload_off",
            "payload_on",
            "retain",
            "state_off",
            "state_on",
            "state_topic",
            "value_template",
        },
    },
}
DEVICE_KEYS = {
    "configuration_url",
    "connections",
    "hw_version",
    "identifiers",
    "manufacturer",
    "model",
    "model_id",
    "name",
    "serial_number",
    "suggested_area",
    "sw_version",
    "via_device",
}
ORIGIN_KEYS = {"name", "sw_version", "support_url"}
ABBREVIATIONS = {
    "avty_t": "availability_topic",
    "pl_avail": "payload_available",
    "pl_not_avail": "payload_not_available",
    "dev": "device",
    "uniq_id": "unique_id",
    "stat_t": "state_topic",
    "cmd_t": "command_topic",
    "dev_cla": "device_class",
    "stat_cla": "state_class",
    "unit_of_meas": "unit_of_measurement",
    "val_tpl": "value_template",
    "pl_on": "payload_on",
    "pl_off": "payload_off",
    "t": "topic",
    "ent_cat": "entity_category",
    "sug_dsp_prc": "suggested_display_precision",
    "o": "origin",
    "ids": "identifiers",
    "mf": "manufacturer",
    "mdl": "model",
    "sw": "sw_version",
}
TYPES: dict[str, type | tuple[type, ...]] = {
    "suggested_display_precision": int,
    "qos": int,
    "expire_after": int,
    "off_delay": int,
    "force_update": bool,
    "optimistic": bool,
    "retain": bool,
    "enabled_by_default": bool,
    "device": dict,
    "origin": dict,
}
STATE_CLASSES = {"measurement", "measurement_angle", "total", "total_increasing"}
ENTITY_CATEGORIES = {"config", "diagnostic"}
BINARY_SENSOR_CLASSES = {"occupancy", "motion", "presence", "connectivity", "problem", "running"}


def _expand(d: dict[str, Any]) -> dict[str, Any]:
    return {ABBREVIATIONS.get(k, k): (_expand(v) if isinstance(v, dict) else v) for k, v in d.items()}


def validate_discovery(topic: str, raw: dict[str, Any]) -> list[str]:
    """Problems with one discovery message, checked against the table above (empty list: valid)."""
    parts = topic.split("/")
    component = parts[1]
    p = _expand(raw)
    spec = COMPONENTS.get(component)
    if spec is None or len(parts) != 5 or parts[-1] != "config":
        return [f"{topic}: not <prefix>/<component>/<node_id>/<object_id>/config for a known component"]
    errors = [f"{component}: missing {k}" for k in spec["required"] - set(p)]
    errors += [f"{component}: unknown key {k}" for k in set(p) - spec["required"] - spec["optional"] - COMMON]
    for k, v in p.items():
        want = TYPES.get(k, str)
        if not isinstance(v, want) or (want is int and isinstance(v, bool)):
            errors.append(f"{component}: {k} should be {want}")
    dev = p.get("device", {})
    errors += [f"device: unknown key {k}" for k in set(dev) - DEVICE_KEYS]
    for k, v in dev.items():  # identifiers: a string or a list of them; connections: a list of pairs
        if k == "identifiers":
            ok = isinstance(v, str) or (isinstance(v, list) and all(isinstance(i, str) for i in v))
        else:
            ok = isinstance(v, list) if k == "connections" else isinstance(v, str)
        if not ok:
            errors.append(f"device: {k} has the wrong type")
    errors += [f"origin: unknown key {k}" for k in set(p.get("origin", {})) - ORIGIN_KEYS]
    if not dev.get("identifiers") and not dev.get("connections"):
        errors.append("device: needs identifiers or connections")
    if p.get("state_class") is not None and p["state_class"] not in STATE_CLASSES:
        errors.append(f"bad state_class {p['state_class']}")
    if p.get("entity_category") is not None and p["entity_category"] not in ENTITY_CATEGORIES:
        errors.append(f"bad entity_category {p['entity_category']}")
    if component == "binary_sensor" and p.get("device_class") not in (None, *BINARY_SENSOR_CLASSES):
        errors.append(f"bad binary_sensor device_class {p['device_class']}")
    if ("state_class" in p or "unit_of_measurement" in p) and component != "sensor":
        errors.append("state_class / unit_of_measurement only on sensors")
    if "availability" in p and "availability_topic" in p:
        errors.append("availability and availability_topic are exclusive")
    return errors


def test_discovery_validator_rejects_what_home_assistant_would() -> None:
    good = {"state_topic": "a/b", "unique_id": "u", "device": {"identifiers": ["x"]}}
    assert validate_discovery("homeassistant/sensor/n/o/config", good) == []
    assert (
        validate_discovery("homeassistant/sensor/n/o/config", {"stat_t": "a/b", "dev": {"ids": ["x"]}}) == []
    )
    for bad in (
        {**good, "state_topic": None},
        {**good, "unit": "fps"},
        {**good, "state_class": "gauge"},
        {k: v for k, v in good.items() if k != "state_topic"},
        {**good, "device": {"sw": 1.0, "ids": "x"}},
        {**good, "suggested_display_precision": "1"},
        {**good, "device": {"name": "no id"}},
    ):
        assert validate_discovery("homeassistant/sensor/n/o/config", bad), bad
    assert validate_discovery("homeassistant/camera/n/o/config", good)  # a camera needs `topic`


@pytest.mark.parametrize("switches", [("detect", "recordings"), ("detect",)])
def test_discovery_payloads_follow_home_assistants_schema(switches: tuple[str, ...]) -> None:
    announced = discovery_configs(
        TOPICS, "Porch cam", ["person", "traffic light"], switches, model="ev (ssd)"
    )
    configs = [(t, p) for t, p in announced if p is not None]
    removed = [t for t, p in announced if p is None]
    assert removed == (
        [] if "recordings" in switches else ["homeassistant/switch/edgevision_porch/recordings/config"]
    )
    by_object = {t.split("/")[3]: (t.split("/")[1], p) for t, p in configs}
    expected = {
        "person_snapshot": "camera",
        "person_occupancy": "binary_sensor",
        "person_count": "sensor",
        "traffic_light_count": "sensor",
        "fps": "sensor",
        "rung": "sensor",
        **dict.fromkeys(switches, "switch"),
    }
    assert {k: c for k, (c, _) in by_object.items()} == expected
    uids = [p["unique_id"] for _, p in configs]
    assert len(set(uids)) == len(uids) and all(u.startswith("edgevision_porch_") for u in uids)
    for topic, payload in configs:
        assert validate_discovery(topic, payload) == [], topic
        dev = payload["device"]
        assert dev["sw_version"] == __version__ and dev["identifiers"] == ["edgevision_porch"]
        assert {"name", "model", "manufacturer"} <= set(dev)
        assert payload["availability_topic"] == "edgevision/porch/available"
        component = topic.split("/")[1]
        numeric = component == "sensor" and not topic.endswith("/rung/config")
        assert ("state_class" in payload) == ("unit_of_measurement" in payload) == numeric, topic
    cam = by_object["person_snapshot"][1]
    assert cam["topic"] == "edgevision/porch/person/snapshot"
    assert by_object["person_occupancy"][1]["device_class"] == "occupancy"
    assert by_object["person_count"][1]["state_topic"] == "edgevision/porch/person"
    assert by_object["traffic_light_count"][1]["state_topic"] == "edgevision/porch/traffic_light"
    for name in switches:
        sw = by_object[name][1]
        assert sw["command_topic"] == f"edgevision/porch/{name}/set"
        assert sw["state_topic"] == f"edgevision/porch/{name}/state"
