"""``edgevision doctor``: every rule by a table over injected facts, the probes over a fake root, one real run."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import WALKING, run_cli

from edgevision.cli.doctor import checks as c
from edgevision.cli.doctor import probe
from edgevision.cli.doctor.checks import Status

OK, WARN, FAIL = Status.OK, Status.WARN, Status.FAIL
GIB = 1 << 30

TABLE: list[tuple[Callable[..., c.Check], tuple[Any, ...], Status, str]] = [
    # python and the 64-bit OS
    (c.check_python, ((3, 11, 2), "aarch64", 64, "Debian GNU/Linux 12 (bookworm)"), OK, "64-bit"),
    (c.check_python, ((3, 9, 2), "aarch64", 64, "Debian 11"), FAIL, "Python >= 3.10"),
    (c.check_python, ((3, 11, 2), "armv7l", 32, "Raspbian 12"), FAIL, "64-bit Raspberry Pi OS"),
    (c.check_python, ((3, 11, 2), "aarch64", 32, "Raspbian 12"), FAIL, "32-bit userland"),
    # runtime and its speed
    (c.check_runtime, (["litert"], "ssd", 12.5, None), OK, "12.5 ms per invoke"),
    (c.check_runtime, (["litert"], "ssd", 900.0, None), WARN, "Coral"),
    (c.check_runtime, ([], "ssd", None, None), FAIL, "pip install ai-edge-litert"),
    (c.check_runtime, (["litert"], "ssd", None, "not installed"), FAIL, "models fetch ssd"),
    (c.check_runtime, (["litert", "tflite-runtime"], "ssd", None, None), OK, "tflite-runtime"),
    # cameras
    (c.check_cameras, ("camera", 0, [("/dev/video0", "UVC Camera")], "no", False), OK, "UVC Camera"),
    (c.check_cameras, ("camera", 1, [("/dev/video0", "UVC")], "no", False), FAIL, "/dev/video1 missing"),
    (c.check_cameras, ("picamera2", 0, [], None, True), OK, "picamera2 importable"),
    (c.check_cameras, ("picamera2", 0, [], "missing", False), FAIL, "--system-site-packages"),
    (c.check_cameras, ("video", 0, [], "missing", False), WARN, "no camera found"),
    (c.check_cameras, ("video", 0, [("/dev/video0", "")], "missing", False), OK, "/dev/video0"),
    # groups
    (c.check_access, ("pi", False, {"pi", "video"}, [("/dev/video0", "video", True)]), OK, "pi in"),
    (c.check_access, ("pi", False, {"pi"}, [("/dev/video0", "video", False)]), FAIL, "usermod -aG video pi"),
    (
        c.check_access,
        ("pi", False, {"pi"}, [("/dev/apex_0", "apex", False), ("/dev/dri/renderD128", "render", False)]),
        FAIL,
        "usermod -aG apex,render pi",
    ),
    (c.check_access, ("root", True, set(), [("/dev/video0", "video", False)]), OK, "root"),
    # coral
    (c.check_coral, ("cpu", True, [], [], False), OK, "none"),
    (c.check_coral, ("edgetpu", True, [("18d1", "9302")], [], True), OK, "Coral USB"),
    (c.check_coral, ("edgetpu", True, [("1a6e", "089a")], [], True), OK, "before firmware load"),
    (c.check_coral, ("edgetpu", False, [], ["/dev/apex_0"], True), OK, "PCIe /dev/apex_0"),
    (c.check_coral, ("edgetpu", True, [], [], True), WARN, "CPU twin"),
    (c.check_coral, ("edgetpu", False, [("046d", "0825")], [], True), FAIL, "runtime.device: cpu"),
    (c.check_coral, ("edgetpu", True, [("18d1", "9302")], [], False), FAIL, "libedgetpu1-std"),
    (c.check_coral, ("cpu", True, [("18d1", "9302")], [], False), WARN, "libedgetpu1-std"),
    # power and temperature
    (c.check_pi_health, (None, None), OK, "not a Raspberry Pi"),
    (c.check_pi_health, (0x0, 48.0), OK, "soc 48 C"),
    (c.check_pi_health, (0x50005, 60.0), FAIL, "official supply"),
    (c.check_pi_health, (0x4, 82.0), WARN, "throttled now"),
    (c.check_pi_health, (0x50000, 55.0), WARN, "since boot: under-voltage, throttled"),
    (c.check_pi_health, (0x80000, 55.0), WARN, "heatsink"),
    (c.check_pi_health, (0x0, 83.0), WARN, "hot"),
    # disk
    (c.check_disk, ("/d", 20 * GIB, None, 1.0), OK, "20.0 GiB free"),
    (c.check_disk, ("/d", 20 * GIB, "Permission denied", 1.0), FAIL, "sudo install -d"),
    (c.check_disk, ("/d", 100 << 20, None, 1.0), FAIL, "events prune"),
    (c.check_disk, ("/d", GIB // 2, None, None), WARN, "< 1.0 GiB"),
    (c.check_disk, ("/d", 3 * GIB, None, 5.0), WARN, "< 5.0 GiB"),
    (c.check_disk, ("/d", None, None, 1.0), WARN, "df -h"),
    # models
    (c.check_models, ([("ssd", True, "ok"), ("face", True, "ok")], "/m"), OK, "2 verified"),
    (
        c.check_models,
        ([("ssd", True, "ok"), ("face", False, "not installed")], "/m"),
        FAIL,
        "models fetch face (offline: add --mirror",
    ),
    # config
    (c.check_config, (None, None), OK, "defaults"),
    (c.check_config, ("/etc/e.yaml", None), OK, "/etc/e.yaml: valid"),
    (
        c.check_config,
        ("c.yaml", "c.yaml:3 detector.threshold: too big\nmore"),
        FAIL,
        "c.yaml:3 detector.threshold",
    ),
    # service
    (c.check_service, (False, None, None, "edgevision"), OK, "systemd not available"),
    (c.check_service, (True, "active", "enabled", "edgevision"), OK, "edgevision active, enabled"),
    (c.check_service, (True, "inactive", "not-found", "edgevision"), OK, "not installed"),
    (c.check_service, (True, "failed", "enabled", "edgevision"), FAIL, "journalctl -u edgevision"),
    (c.check_service, (True, "activating", "enabled", "edgevision"), WARN, "journalctl"),
    (c.check_service, (True, "inactive", "enabled", "edgevision"), WARN, "systemctl start"),
    # clock
    (c.check_clock, (2026, True), OK, "NTP-synchronized"),
    (c.check_clock, (2026, None), OK, "year 2026"),
    (c.check_clock, (1970, None), FAIL, "clock is wrong"),
    (c.check_clock, (2026, False), WARN, "set-ntp true"),
]


@pytest.mark.parametrize(("check", "facts", "status", "text"), TABLE)
def test_check_rules(
    check: Callable[..., c.Check], facts: tuple[Any, ...], status: Status, text: str
) -> None:
    result = check(*facts)
    assert result.status is status, result
    assert text in result.detail + " | " + result.fix, result
    assert bool(result.fix) == (status is not OK), "warn and fail say how to fix; ok says nothing"


def test_overall_is_the_worst() -> None:
    ok, warn, fail = c.ok("a", ""), c.warn("b", "", "x"), c.fail("c", "", "y")
    assert c.overall([ok, ok]) is OK and c.overall([ok, warn]) is WARN and c.overall([warn, fail, ok]) is FAIL


def _fake_root(tmp: Path) -> Path:
    root = tmp / "root"
    for n, name in ((0, "UVC Camera (046d:0825)"), (10, "bcm2835-codec-decode"), (2, "")):
        (root / "dev" / f"video{n}").parent.mkdir(parents=True, exist_ok=True)
        (root / "dev" / f"video{n}").write_text("")
        if name:
            d = root / "sys/class/video4linux" / f"video{n}"
            d.mkdir(parents=True)
            (d / "name").write_text(name + "\n")
    (root / "dev" / "video-bogus").write_text("")
    (root / "dev" / "apex_0").write_text("")
    for dev, vendor, product, bus, num in (("1-1", "18d1", "9302", 1, 4), ("1-2", "046d", "0825", 1, 5)):
        d = root / "sys/bus/usb/devices" / dev
        d.mkdir(parents=True)
        for key, value in (("idVendor", vendor), ("idProduct", product), ("busnum", bus), ("devnum", num)):
            (d / key).write_text(f"{value}\n")
    (root / "sys/bus/usb/devices/usb1").mkdir()  # a root hub without ids is skipped
    (root / "etc").mkdir()
    (root / "etc/os-release").write_text('NAME="Debian"\nPRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\n')
    return root


def test_probes_read_a_fake_root(tmp_path: Path) -> None:
    root = _fake_root(tmp_path)
    assert probe.v4l2_devices(root) == [
        ("/dev/video0", "UVC Camera (046d:0825)"),
        ("/dev/video2", ""),
        ("/dev/video10", "bcm2835-codec-decode"),
    ]
    assert probe.usb_ids(root) == [("18d1", "9302"), ("046d", "0825")]
    assert probe.coral_usb_nodes(root) == ["/dev/bus/usb/001/004"]
    assert probe.apex_nodes(root) == ["/dev/apex_0"]
    assert probe.python_facts(root)[3] == "Debian GNU/Linux 12 (bookworm)"
    access = probe.device_access(["/dev/video0", "/dev/missing"], root)
    assert [a[0] for a in access] == ["/dev/video0"] and access[0][2] is True


def test_data_dir_facts(tmp_path: Path) -> None:
    free, error = probe.data_dir_facts(tmp_path)
    assert error is None and free and free > 0
    assert probe.data_dir_facts(tmp_path / "not" / "yet")[1] is None  # would be created under a writable dir
    assert list(tmp_path.iterdir()) == []  # the probe file is gone and nothing was created


def test_doctor_end_to_end(env: dict[str, str], tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"source:\n  kind: video\n  path: {WALKING}\nrecorder:\n  data_dir: {tmp_path / 'data'}\n")
    r = run_cli(["doctor", "--config", str(cfg), "--json"], env)
    doc = json.loads(r.stdout)
    by = {x["check"]: x for x in doc["checks"]}
    assert list(by) == [
        "python",
        "runtime",
        "cameras",
        "groups",
        "coral",
        "power",
        "disk",
        "models",
        "config",
        "service",
        "clock",
    ]
    assert by["python"]["status"] == "ok" and by["config"]["status"] == "ok"
    assert by["models"]["status"] == "ok" and "ssd_mobilenet_v1_coco_quant" in by["models"]["detail"]
    assert by["runtime"]["status"] == "ok" and "ms per invoke" in by["runtime"]["detail"]
    assert "ssd_mobilenet_v1_coco_quant (its int8 copy)" in by["runtime"]["detail"]  # what run runs is timed
    assert by["disk"]["status"] == "ok" and str(tmp_path / "data") in by["disk"]["detail"]
    assert r.returncode == (78 if doc["status"] == "fail" else 0)
    text = run_cli(["doctor", "--config", str(cfg), "--no-speed"], env)
    assert text.stdout.splitlines()[0].startswith("ok    python")
    assert "doctor: " in text.stdout.splitlines()[-1]


def test_doctor_fails_on_missing_models_and_bad_config(env: dict[str, str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("detector:\n  treshold: 0.5\n")
    e = dict(env, EDGEVISION_MODELS_DIR=str(tmp_path / "empty"))
    r = run_cli(["doctor", "--config", str(bad), "--json", "--no-speed"], e)
    assert r.returncode == 78
    by = {x["check"]: x for x in json.loads(r.stdout)["checks"]}
    assert by["config"]["status"] == "fail" and "treshold" in by["config"]["detail"]
    assert (
        by["models"]["status"] == "fail" and "models fetch ssd_mobilenet_v1_coco_quant" in by["models"]["fix"]
    )
