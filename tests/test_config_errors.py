"""How a config error reads: one ``file:line key: message`` per bad value, whatever pydantic's shape of it."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgevision.config import load_config
from edgevision.errors import ConfigError, UsageError


@pytest.mark.parametrize(
    ("yaml", "message"),
    [
        # a union (`auto` or an int from 1 to 16): one line naming both, not one per member with its tag
        (
            "runtime:\n  parallel: fast\n",
            "c.yaml:2 runtime.parallel: Input should be 'auto' or a valid integer",
        ),
        (
            "runtime:\n  parallel: 0\n",
            "c.yaml:2 runtime.parallel: Input should be 'auto' or greater than or equal",
        ),
        ("runtime:\n  threads: many\n", "c.yaml:2 runtime.threads: Input should be a valid integer"),
        ("runtime:\n  thread: 2\n", "c.yaml:2 runtime.thread: unknown key"),
        # paho raises ValueError('Invalid host.') when the run starts: a traceback and exit 1, not 78
        ('mqtt:\n  enabled: true\n  host: ""\n', "c.yaml:3 mqtt.host: "),
        ("mqtt:\n  host: ' '\n", "c.yaml:2 mqtt.host: "),
        # a wildcard in a will topic makes the broker refuse the connection, silently, for the whole run
        ("mqtt:\n  topic_prefix: 'home/#'\n", "c.yaml:2 mqtt.topic_prefix: "),
        ("mqtt:\n  topic_prefix: ''\n", "c.yaml:2 mqtt.topic_prefix: "),
        ("mqtt:\n  discovery_prefix: ha/+\n", "c.yaml:2 mqtt.discovery_prefix: "),
        # paho takes a name or address: a URL (Zigbee2MQTT's 'mqtt://host') or host:port never connected
        ("mqtt:\n  host: mqtt://broker.lan\n", "c.yaml:2 mqtt.host: "),
        ("mqtt:\n  host: broker.lan:1883\n", "c.yaml:2 mqtt.host: "),
        ("mqtt:\n  host: '[::1]'\n", "c.yaml:2 mqtt.host: "),
        # a password alone is not sent (MQTT 3.1.1 has no password without a user name): no credentials at all
        ("mqtt:\n  enabled: true\n  password: pw-only\n", "c.yaml:3 mqtt.password: "),
        ("mqtt:\n  username: ''\n  password: pw-only\n", "c.yaml:3 mqtt.password: "),
        # OpenCV takes a C int: 2**31 used to validate, then crash the run with a cv2.error traceback (exit 1)
        ("source:\n  camera: 2147483648\n", "c.yaml:2 source.camera: "),
        ("source:\n  camera: 256\n", "c.yaml:2 source.camera: "),  # /dev/video255 is V4L2's last node
        # compared with the Host header's name: a URL or a name:port never matched, every request was a 403
        ("web:\n  allowed_hosts:\n    - https://cam.example.com\n", "c.yaml:3 web.allowed_hosts.0: "),
        ("web:\n  allowed_hosts: [cam.example.com:8443]\n", "c.yaml:2 web.allowed_hosts.0: "),
        ("web:\n  allowed_hosts: ['']\n", "c.yaml:2 web.allowed_hosts.0: "),
        # no pattern matching: '*.example.com' (or '*' for any) never matched, every request through it a 403
        ("web:\n  allowed_hosts: ['*.example.com']\n", "c.yaml:2 web.allowed_hosts.0: "),
        ("web:\n  allowed_hosts: ['*']\n", "c.yaml:2 web.allowed_hosts.0: "),
        # a check across a section's keys points at the key it names, not at the section's first line
        ("web:\n  enabled: true\n  port: 8080\n  host: 0.0.0.0\n", "c.yaml:4 web.host: web.host 0.0.0.0 is "),
        (
            "recorder:\n  labels: [person]\n  trigger_frames: 9\n  window_frames: 5\n",
            "c.yaml:3 recorder.trigger_frames: trigger_frames must be <= window_frames",
        ),
        (
            "source:\n  reconnect_initial_s: 5\n  reconnect_max_s: 1\n",
            "c.yaml:3 source.reconnect_max_s: reconnect_max_s must be >=",
        ),
        ("source:\n  width: 640\n  kind: video\n", "c.yaml:3 source.kind: source.kind 'video' needs"),
    ],
)
def test_one_line_per_bad_value(tmp_path: Path, yaml: str, message: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml)
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    lines = str(exc.value).splitlines()
    assert len(lines) == 1 and lines[0].startswith(str(tmp_path / message)), lines


def test_allowed_hosts_take_names_and_ip_literals(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "web:\n  allowed_hosts: [cam.example.com, Proxy.Local., 192.168.1.5, '::1', '[fe80::1]']\n"
    )
    assert len(load_config(path).web.allowed_hosts) == 5


@pytest.mark.parametrize("host", ["broker.lan", "192.168.1.10", "::1", "localhost"])
def test_mqtt_host_takes_names_and_addresses(tmp_path: Path, host: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(f"mqtt:\n  host: '{host}'\n")
    assert load_config(path).mqtt.host == host


def test_a_bad_flag_value_reads_the_same_and_is_a_usage_error() -> None:
    with pytest.raises(UsageError) as exc:
        load_config(None, {"runtime.parallel": 0})
    assert (
        str(exc.value)
        == "command line runtime.parallel: Input should be 'auto' or greater than or equal to 1"
    )
