"""Hostile or mistaken config input: every case is exit 78 with one ``file[:line] key: message`` line, bounded in
time (a subprocess timeout) and memory (an address-space limit), never a traceback, a hang or a MemoryError."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import WALKING

from edgevision.config import MIN_TOKEN_LENGTH, is_loopback, load_config
from edgevision.config_check import check_config
from edgevision.config_load import MAX_BYTES, parse_yaml
from edgevision.errors import ConfigError

MEMORY_LIMIT = 512 << 20  # the CLI needs ~150 MB; an expanding alias bomb needs gigabytes
TOKEN = "0123456789abcdef0123"


def alias_bomb() -> str:
    """The classic "billion laughs": 9 levels of 9 aliases each, 9**9 leaves from ~330 bytes."""
    lines = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    prev = "a"
    for c in "bcdefghi":
        lines.append(f"{c}: &{c} [{', '.join(['*' + prev] * 9)}]")
        prev = c
    return "\n".join(lines) + "\n"


def _limited() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def run_limited(
    args: list[str], env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """The CLI under an address-space limit and a timeout (a hang raises TimeoutExpired: the test fails)."""
    return subprocess.run(
        [sys.executable, "-m", "edgevision", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=_limited,
    )


def _hostile(kind: str, tmp: Path) -> Path:
    if kind == "dev-zero":
        return Path("/dev/zero")
    path = tmp / f"{kind}.yaml"
    if kind == "alias-bomb":
        path.write_text(alias_bomb())
    elif kind == "deep-flow":
        path.write_text("web: " + "[" * 20000 + "]" * 20000 + "\n")
    elif kind == "deep-block":
        path.write_text("web:\n  " + "- " * 20000 + "x\n")
    elif kind == "huge":
        with path.open("w") as f:
            f.write("recorder:\n  zones:\n")
            while f.tell() < 5_000_000:
                f.write("  - [[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]]\n")
    elif kind == "many-values":  # under the size cap, but far more values than any config has
        path.write_text("recorder:\n  zones:\n" + "  - [[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]]\n" * 20000)
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    elif kind == "binary":
        path.write_bytes(b"web:\n  host: \xff\xfe\n")
    return path


HOSTILE = [
    ("alias-bomb", ":2: YAML aliases are not allowed"),
    ("deep-flow", ":1: nested more than"),
    ("deep-block", ":2: nested more than"),
    ("huge", ": config file is 5000"),
    ("many-values", ": more than 20000 values"),
    ("dev-zero", "/dev/zero: config file is a character device, not a regular file"),
    ("fifo", ": config file is a FIFO (named pipe), not a regular file"),
    ("directory", ": config file is a directory, not a regular file"),
    ("binary", ":2: not UTF-8 text"),
]


@pytest.mark.parametrize(("kind", "message"), HOSTILE)
def test_hostile_config_is_exit_78_in_bounded_time_and_memory(
    env: dict[str, str], tmp_path: Path, kind: str, message: str
) -> None:
    path = _hostile(kind, tmp_path)
    r = run_limited(["config", "check", str(path)], env)
    assert r.returncode == 78, r.stderr[-2000:]
    assert "Traceback" not in r.stderr and "MemoryError" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"edgevision: error: {path}"), r.stderr
    assert message in lines[0]


@pytest.mark.parametrize("kind", ["alias-bomb", "fifo", "deep-flow"])
def test_run_refuses_a_hostile_config_before_anything_opens(
    env: dict[str, str], tmp_path: Path, kind: str
) -> None:
    path = _hostile(kind, tmp_path)
    r = run_limited(["run", "--config", str(path), "--video", str(WALKING), "--max-frames", "1"], env)
    assert r.returncode == 78, r.stderr[-2000:]
    assert "Traceback" not in r.stderr and "model " not in r.stderr


def test_reading_never_takes_more_than_the_cap(tmp_path: Path) -> None:
    from edgevision.config_load import read_bounded

    path = tmp_path / "grows.yaml"
    path.write_bytes(b"#" * (MAX_BYTES + 10))
    with pytest.raises(ValueError, match="limit"):
        read_bounded(path, MAX_BYTES)
    assert read_bounded(path, MAX_BYTES + 10) == b"#" * (MAX_BYTES + 10)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("web: {host: 127.0.0.1, host: 0.0.0.0}\n", "x.yaml:1 web.host: duplicate key"),
        (
            "web:\n  port: 1\n  enabled: true\n  port: 2\n",
            "x.yaml:4 web.port: duplicate key (first at line 2)",
        ),
        ("web: {}\nmqtt: {}\nweb: {}\n", "x.yaml:3 web: duplicate key"),
        (
            "recorder:\n  zones: [[[0, 0], [1, 0], [1, 1]]]\n  zones: []\n",
            "x.yaml:3 recorder.zones: duplicate key",
        ),
        ("? [a, b]\n: 1\n", "x.yaml:1 (top level): a key must be a plain value"),
        ("web: &w {port: 1}\nmqtt: *w\n", "x.yaml:2: YAML aliases are not allowed"),
        # a merge key's values come first and the mapping's own keys silently override them: a duplicate key
        ("web:\n  port: 1\n  <<: {port: 2}\n", "x.yaml:3 web: YAML merge keys (<<) are not allowed"),
    ],
)
def test_duplicate_keys_and_aliases_are_refused(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_yaml(text, "x.yaml")
    assert message in str(info.value)


def test_duplicate_key_from_a_file_with_file_and_line(env: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "dup.yaml"
    path.write_text("web: {host: 127.0.0.1, host: 0.0.0.0}\n")
    r = run_limited(["config", "check", str(path)], env)
    assert r.returncode == 78 and f"{path}:1 web.host: duplicate key" in r.stderr


def test_environment_variables_expand_in_string_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EV_TEST_PW", "s3cret $ value")
    monkeypatch.setenv("EV_TEST_PORT", "1884")
    monkeypatch.setenv("EV_TEST_HOST", "broker.lan")
    path = tmp_path / "c.yaml"
    path.write_text(
        "mqtt:\n  username: ev\n  password: ${EV_TEST_PW}\n  port: ${EV_TEST_PORT}\n  host: '${EV_TEST_HOST}'\n"
        "  topic_prefix: 'cost$${x}'\n"
    )
    cfg = load_config(path)
    assert cfg.mqtt.password == "s3cret $ value" and cfg.mqtt.port == 1884 and cfg.mqtt.host == "broker.lan"
    assert cfg.mqtt.topic_prefix == "cost${x}"


def test_environment_variables_cannot_grow_the_config_past_its_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The 1 MiB bound held for the file, not for what its variables expand to: a file of ``${LONG}`` references
    (14 bytes each, here a 100 KB variable) grew to gigabytes in memory before any check could refuse it."""
    monkeypatch.setenv("EV_TEST_LONG", "x" * 100_000)
    path = tmp_path / "c.yaml"
    path.write_text("mqtt:\n  username: u\n  password: '" + "${EV_TEST_LONG}" * 11 + "'\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert f"{path}:3 mqtt.password: environment variables expand the config past" in str(info.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "mqtt:\n  enabled: false\n  password: ${EV_TEST_UNSET_VAR}\n",
            "c.yaml:3 mqtt.password: environment variable EV_TEST_UNSET_VAR is not set",
        ),
        ("source:\n  url: rtsp://u:${EV_TEST_UNSET_VAR}@cam/\n", "c.yaml:2 source.url: environment variable"),
        ("mqtt:\n  password: ab${c\n", "c.yaml:2 mqtt.password: malformed '${'"),
    ],
)
def test_a_missing_environment_variable_is_a_config_error(tmp_path: Path, text: str, message: str) -> None:
    os.environ.pop("EV_TEST_UNSET_VAR", None)
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert message in str(info.value)


def test_secret_files(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "mqtt").write_text("pw from file\n")
    (tmp_path / "token").write_text(TOKEN + "\n")
    (tmp_path / "url").write_text("rtsp://admin:pw@cam.lan/stream\n")
    path = tmp_path / "c.yaml"
    path.write_text(
        "mqtt:\n  username: ev\n  password_file: secrets/mqtt\n"
        f"web:\n  enabled: true\n  host: 0.0.0.0\n  token_file: {tmp_path / 'token'}\n"
        "source:\n  kind: url\n  url_file: url\n"
    )
    cfg = load_config(path)
    assert cfg.mqtt.password == "pw from file" and cfg.web.token == TOKEN
    assert cfg.source.url == "rtsp://admin:pw@cam.lan/stream"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "mqtt:\n  password: x\n  password_file: pw\n",
            "c.yaml:3 mqtt.password_file: set either mqtt.password or",
        ),
        ("mqtt:\n  password_file: missing\n", "c.yaml:2 mqtt.password_file: {tmp}/missing: file not found"),
        ("mqtt:\n  password_file: fifo\n", "c.yaml:2 mqtt.password_file: {tmp}/fifo: secret file is a FIFO"),
        (
            "web:\n\n  token_file: /dev/zero\n",
            "c.yaml:3 web.token_file: /dev/zero: secret file is a character device",
        ),
        ("web:\n  token_file: short\n", "c.yaml:2 web.token: a token needs at least 16 characters"),
        # as a YAML value a NUL is refused; from a file it passed the check, and a URL or path with it crashes
        ("source:\n  url_file: nul\n", "c.yaml:2 source.url_file: {tmp}/nul: contains a NUL character"),
    ],
)
def test_bad_secret_files(tmp_path: Path, text: str, message: str) -> None:
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "pw").write_text("x")
    (tmp_path / "nul").write_text("rtsp://cam.lan/live\0\n")
    (tmp_path / "short").write_text("abc\n")
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert message.format(tmp=tmp_path) in str(info.value)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("localhost", True),
        ("::1", True),
        ("[::1]", True),
        ("app.localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.5", False),
        ("pi.local", False),
        ("localhost.evil.com", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@pytest.mark.parametrize(
    ("web", "error"),
    [
        ({"enabled": True, "host": "0.0.0.0"}, "reachable from the network: set web.token"),
        ({"enabled": True, "host": "192.168.1.5", "token": " " * 20}, "no spaces"),
        ({"enabled": True, "host": "0.0.0.0", "token": "        "}, "at least 16 characters"),
        ({"enabled": True, "host": "0.0.0.0", "token": "short-token"}, "at least 16 characters"),
        ({"enabled": True, "host": "0.0.0.0", "token": "0123456789 abcdef"}, "no spaces"),
        ({"enabled": True, "host": "127.0.0.1", "token": "x" * 8}, "at least 16 characters"),
        ({"enabled": True, "host": "0.0.0.0", "token": "x" * MIN_TOKEN_LENGTH}, None),
        ({"enabled": True, "host": "127.0.0.1"}, None),
        ({"enabled": True, "host": "localhost"}, None),
        ({"enabled": False, "host": "0.0.0.0"}, None),
    ],
)
def test_token_rules(tmp_path: Path, web: dict[str, object], error: str | None) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(json.dumps({"web": web}))
    if error is None:
        load_config(path)
        return
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert error in str(info.value) and str(info.value).startswith(f"{path}:1 web")


def _check(tmp_path: Path, text: str, models_dir: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(f"models:\n  dir: {models_dir}\n" + text)
    check_config(load_config(path))


def test_check_config_model_names(tmp_path: Path, models_dir: Path) -> None:
    _check(tmp_path, "detector:\n  model: ssd_mobilenet_v2_coco_quant\n", models_dir)
    real = next(models_dir.glob("*.tflite"))
    _check(tmp_path, f"detector:\n  model: {real}\n", models_dir)
    bad = [
        (
            "detector:\n  model: ssd_mobilenet_v9\n",
            "c.yaml:4 detector.model: unknown model 'ssd_mobilenet_v9'",
        ),
        ("faces:\n  landmark_model: face_mesh_xl\n", "c.yaml:4 faces.landmark_model: unknown model"),
        (
            "detector:\n  model: ssd_mobilenet_v1_coco_quantt\n",
            "c.yaml:4 detector.model: unknown model 'ssd_mobilenet_v1_coco_quantt'; "
            "did you mean 'ssd_mobilenet_v1_coco_quant'?",
        ),
        (
            "scheduler:\n  models: [ssd_mobilenet_v1_coco_quant, nope]\n",
            "c.yaml:4 scheduler.models.1: unknown",
        ),
        (f"detector:\n  model: {tmp_path}\n", f"detector.model: model file {tmp_path} is a directory"),
        (f"detector:\n  model: {tmp_path}/gone.tflite\n", "gone.tflite not found"),
    ]
    os.mkfifo(tmp_path / "fifo.tflite")
    bad.append((f"detector:\n  model: {tmp_path}/fifo.tflite\n", "fifo.tflite is a FIFO (named pipe)"))
    for text, message in bad:
        with pytest.raises(ConfigError) as info:
            _check(tmp_path, text, models_dir)
        assert message in str(info.value), (message, str(info.value))


def test_check_config_accepts_a_model_made_on_the_device(tmp_path: Path) -> None:
    from edgevision.catalog.local import local_dir

    models = tmp_path / "models"
    local = local_dir(models)
    local.mkdir(parents=True)
    (local / "student.tflite").write_bytes(b"\0" * 100)
    manifest = {
        "name": "student",
        "file": "student.tflite",
        "size": 100,
        "sha256": "0" * 64,
        "threshold": 0.4,
        "architecture": {
            "family": "mobilenet_v1",
            "alpha": 0.25,
            "input": [160, 160],
            "quantization": "uint8",
            "head": "ssd",
            "postprocess": True,
        },
        "teacher": {"name": "ssd_mobilenet_v1_coco_quant", "sha256": "1" * 64},
    }
    (local / "student.json").write_text(json.dumps(manifest))
    from edgevision.catalog.local import list_local_models

    assert "student" in list_local_models(models)
    _check(tmp_path, "detector:\n  model: student\n", models)
    with pytest.raises(ConfigError, match="unknown model 'teacher'"):
        _check(tmp_path, "detector:\n  model: teacher\n", models)


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("file", "c.yaml:7 recorder.data_dir: {d} is a file, not a directory"),
        ("under-file", "c.yaml:7 recorder.data_dir: {d} cannot be created: {tmp}/blocker is a file"),
        ("read-only", "c.yaml:7 recorder.data_dir: {d} is not writable"),
        ("ok-missing", None),
        ("ok-dir", None),
    ],
)
def test_check_config_data_dir(tmp_path: Path, models_dir: Path, setup: str, message: str | None) -> None:
    d = tmp_path / "data"
    if setup == "file":
        d.write_text("not a dir")
    elif setup == "under-file":
        (tmp_path / "blocker").write_text("x")
        d = tmp_path / "blocker" / "data"
    elif setup == "read-only":
        if os.geteuid() == 0:
            pytest.skip("root can write anywhere")
        d.mkdir()
        d.chmod(0o500)
    elif setup == "ok-dir":
        d.mkdir()
    text = f"recorder:\n  enabled: true\n  camera: c\n\n  data_dir: {d}\n"
    if message is None:
        _check(tmp_path, text, models_dir)
        assert setup != "ok-missing" or not d.exists()  # checking never creates anything
        return
    with pytest.raises(ConfigError) as info:
        _check(tmp_path, text, models_dir)
    assert message.format(d=d, tmp=tmp_path) in str(info.value)


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("{tmp}/data", "{tmp}/data is a file, not a directory"),
        # root may write in /proc by its permission bits, yet nothing can be created there: found by trying
        ("/proc/forbidden", "/proc/forbidden cannot be created in /proc"),
    ],
    ids=["a-file", "uncreatable"],
)
def test_config_check_and_run_refuse_an_unusable_data_dir(
    env: dict[str, str], tmp_path: Path, where: str, message: str
) -> None:
    if where.startswith("/proc") and not Path("/proc/self").is_dir():
        pytest.skip("needs Linux /proc")
    (tmp_path / "data").write_text("a file")
    path = tmp_path / "c.yaml"
    path.write_text(f"recorder:\n  enabled: true\n  data_dir: {where.format(tmp=tmp_path)}\n")
    message = message.format(tmp=tmp_path)
    r = run_limited(["config", "check", str(path)], env)
    assert r.returncode == 78 and f"{path}:3 recorder.data_dir: {message}" in r.stderr, r.stderr
    r = run_limited(
        ["run", "--config", str(path), "--video", str(WALKING), "--record", "--max-frames", "2"], env
    )
    assert r.returncode == 78 and message in r.stderr, r.stderr[-2000:]
    assert "Traceback" not in r.stderr


def test_service_install_refuses_a_model_name_not_in_the_catalog(env: dict[str, str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("detector:\n  model: ssd_mobilenet_v1_coco_quantt\n")
    root = tmp_path / "root"
    r = run_limited(["service", "install", "--root", str(root), "--dry-run", "--config", str(bad)], env)
    assert r.returncode == 78 and f"{bad}:2 detector.model: unknown model" in r.stderr
    assert not root.exists()


@pytest.mark.parametrize(
    "text, message",
    [
        ("web:\n  port: " + "9" * 5000 + "\n", "x.yaml:2 web.port: "),  # int() refuses > 4300 digits
        ("mqtt: {}\nrecorder:\n  pre_roll_s: 2001-13-45\n", "x.yaml:3 recorder.pre_roll_s: "),  # a bad date
        ("web:\n  port: !!float 1e\n", "x.yaml:2 web.port: "),
        ("web:\n  port: !!int x\n", "x.yaml:2 web.port: "),
    ],
)
def test_a_scalar_yaml_cannot_construct_is_a_config_error(text: str, message: str) -> None:
    """PyYAML's constructors raise ValueError, not a YAMLError, for these: it used to escape as a traceback
    (exit 1, so systemd kept restarting the service) instead of exit 78 with file:line key."""
    with pytest.raises(ConfigError) as info:
        parse_yaml(text, "x.yaml")
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    "text, message",
    [
        ('detector:\n  model: "x/\\0.tflite"\n', "x.yaml:2 detector.model: "),
        ('recorder:\n  enabled: true\n  data_dir: "/tmp/\\0x"\n', "x.yaml:3 recorder.data_dir: "),
        ('source:\n  kind: video\n  path: "clip\\0.mp4"\n', "x.yaml:3 source.path: "),
        ('scheduler:\n  models: [ssd_mobilenet_v1_coco_quant, "b/\\0"]\n', "x.yaml:2 scheduler.models.1: "),
    ],
)
def test_a_nul_character_in_a_value_is_a_config_error(tmp_path: Path, text: str, message: str) -> None:
    """A double-quoted YAML string may hold \\0; as a path it used to crash config check and run with
    'ValueError: embedded null byte' (a traceback, exit 1) or pass the check and fail when the file was opened."""
    path = tmp_path / "x.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        check_config(load_config(path))
    assert str(info.value).startswith(str(tmp_path / message)) and "NUL" in str(info.value)


def test_a_long_base_60_number_is_refused_at_once() -> None:
    """YAML 1.1 reads 1:59:59 as a base-60 integer, and PyYAML builds it with big-integer arithmetic that is
    quadratic in its length: a 900 KB config (under MAX_BYTES) of '1:59:59:...' took 23 s of CPU here (minutes on
    a Pi) before any check; a number that long is refused before it is built."""
    import time

    text = "web:\n  port: 1" + ":59" * 100_000 + "\n"
    t0 = time.process_time()
    with pytest.raises(ConfigError) as info:
        parse_yaml(text, "x.yaml")
    assert time.process_time() - t0 < 1.0
    assert str(info.value).startswith("x.yaml:2 web.port: ")
