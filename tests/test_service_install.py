"""``service install`` on an installed tree (``--root``), seen as the service user sees it: ownership, modes,
every path the unit needs reachable by uid/gid ``edgevision`` (from the stat modes, and for real through
``setpriv`` when root), group drop-ins only for groups that exist, a location the sandbox can reach, and
several cameras as instances of ``edgevision@.service``."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from conftest import SHARED_MODELS, WALKING, run_cli

from edgevision.config import load_config
from edgevision.naming import camera_name
from edgevision.service import access
from edgevision.service.install import service_principal
from edgevision.service.preflight import FIX_LOCATION, location_problems

REPO = Path(__file__).resolve().parent.parent
EXEC = "/opt/edgevision/venv/bin/edgevision"  # where the README's Pi route installs; --exec for --root trees
IS_ROOT = os.geteuid() == 0
HAVE_SYSUSERS = shutil.which("systemd-sysusers") is not None
needs_root = pytest.mark.skipif(not (IS_ROOT and HAVE_SYSUSERS), reason="needs root and systemd-sysusers")
PI_GROUPS = "root:x:0:\nvideo:x:44:\nplugdev:x:46:\nrender:x:105:\n"  # Raspberry Pi OS, no PCIe Coral driver


def _install(env: dict[str, str], root: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    e = dict(env, EDGEVISION_MODEL_MIRROR=str(SHARED_MODELS))
    extra = extra if "--exec" in extra else (*extra, "--exec", EXEC)
    return run_cli(["service", "install", "--root", str(root), *extra], e)


def _tree(root: Path) -> dict[str, tuple[int, bytes]]:
    return {
        str(p.relative_to(root)): (p.stat().st_mtime_ns, p.read_bytes() if p.is_file() else b"")
        for p in sorted(root.rglob("*"))
        if not p.is_symlink()
    }


@pytest.fixture()
def tree() -> Iterator[Path]:
    """A target root whose ancestors any user may traverse (tmp_path is 0700), with a Pi's groups."""
    base = Path(
        tempfile.mkdtemp(prefix="edgevision-root-", dir="/var/tmp" if Path("/var/tmp").is_dir() else None)
    )
    base.chmod(0o755)
    root = base / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/group").write_text(PI_GROUPS)
    yield root
    shutil.rmtree(base)


def _python_for(who: access.Principal) -> str:
    """An interpreter of this Python version that ``who`` can execute (else skip)."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (f"/usr/bin/{version}", f"/usr/local/bin/{version}", os.path.realpath(sys.executable)):
        if Path(candidate).exists() and access.check_path(Path("/"), candidate, who, "rx") is None:
            return candidate
    pytest.skip(f"no {version} executable by the service user here")


def _mode(p: Path) -> tuple[str, int, int]:
    st = p.stat()
    return stat.filemode(st.st_mode), st.st_uid, st.st_gid


def test_install_dry_run_then_install_then_idempotent(env: dict[str, str], tree: Path) -> None:
    root = tree
    r = _install(env, root, "--dry-run")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    for expected in [
        "would create " + str(root / "etc/edgevision/config.yaml"),
        "would create " + str(root / "etc/sysusers.d/edgevision.conf"),
        "would create " + str(root / "etc/tmpfiles.d/edgevision.conf"),
        "would fetch model ssd_mobilenet_v1_coco_quant",
        "would create " + str(root / "etc/systemd/system/edgevision.service"),
        "systemctl --root " + str(root) + " enable edgevision.service",
        "systemctl start edgevision.service",
    ]:
        assert expected in out, expected
    assert not any(root.rglob("*.yaml")) and not (root / "etc/passwd").exists()  # the dry run changed nothing
    r = _install(env, root)
    assert r.returncode == 0, r.stderr
    unit = (root / "etc/systemd/system/edgevision.service").read_text()
    assert f"ExecStart={EXEC} run --config /etc/edgevision/config.yaml" in unit.splitlines()
    assert (root / "etc/systemd/system/multi-user.target.wants/edgevision.service").is_symlink()
    assert (root / "var/lib/edgevision/models/ssd_mobilenet_v1_1.0_coco_quant_detect.tflite").exists()
    before = _tree(root)
    r = _install(env, root)
    assert r.returncode == 0 and "0 change(s)" in r.stdout and "would" not in r.stdout, r.stdout
    assert _tree(root) == before  # the second run changed nothing
    (root / "etc/edgevision/config.yaml").write_text("detector:\n  threshold: 0.7\n")
    r = _install(env, root, "--config", str(REPO / "configs" / "pi4.yaml"))
    assert "kept" in r.stdout and "threshold: 0.7" in (root / "etc/edgevision/config.yaml").read_text()


@needs_root
def test_installed_tree_ownership_and_modes(env: dict[str, str], tree: Path) -> None:
    r = _install(env, tree)
    assert r.returncode == 0, r.stderr
    passwd = {line.split(":")[0]: line.split(":") for line in (tree / "etc/passwd").read_text().splitlines()}
    user = passwd["edgevision"]
    uid, gid = int(user[2]), int(user[3])
    assert user[5:] == ["/var/lib/edgevision", "/usr/sbin/nologin"] and uid < 1000  # a system user
    assert _mode(tree / "etc/edgevision") == ("drwxr-x---", 0, gid)
    assert _mode(tree / "etc/edgevision/config.yaml") == ("-rw-r-----", 0, gid)  # may hold secrets
    assert _mode(tree / "var/lib/edgevision") == ("drwxr-x---", uid, gid)
    assert _mode(tree / "var/lib/edgevision/models") == ("drwxr-x---", uid, gid)
    for model in (tree / "var/lib/edgevision/models").iterdir():
        assert _mode(model) == ("-rw-r-----", uid, gid), model
    for f in (
        "etc/sysusers.d/edgevision.conf",
        "etc/tmpfiles.d/edgevision.conf",
        "etc/systemd/system/edgevision.service",
        "etc/systemd/system/edgevision.service.d/groups.conf",
    ):
        assert _mode(tree / f) == ("-rw-r--r--", 0, 0), f
    # The install's own check, and the same check done here from the stat modes:
    assert "ok edgevision can r /etc/edgevision/config.yaml" in r.stdout
    assert "ok edgevision can r+w+x /var/lib/edgevision" in r.stdout
    who = service_principal(tree, load_config(tree / "etc/edgevision/config.yaml"))
    assert who is not None and who.uid == uid and {gid, 44} <= who.gids  # its group and video (drop-in)
    assert access.check_path(tree, "/etc/edgevision/config.yaml", who, "r") is None
    assert access.check_path(tree, "/etc/edgevision/config.yaml", who, "w") is not None  # root writes it
    assert access.check_path(tree, "/var/lib/edgevision", who, "rwx") is None
    # <models>/derived: the int8 copies and derived rungs the service makes at its first start
    assert access.check_path(tree, "/var/lib/edgevision/models", who, "rwx") is None
    stranger = access.Principal("pi", 1000, frozenset({1000, 44}))
    problem = access.check_path(tree, "/etc/edgevision/config.yaml", stranger, "r")
    assert problem is not None and "lacks x on /etc/edgevision (drwxr-x--- root:edgevision)" in problem


@needs_root
def test_the_service_user_really_reads_its_config_and_writes_its_data(
    env: dict[str, str], tree: Path
) -> None:
    """As uid/gid edgevision (setpriv, with the drop-in's groups): read the config and models, write data,
    not write the config; then run the pipeline with recording on the installed tree when this Python is
    reachable by that user."""
    assert _install(env, tree).returncode == 0
    who = service_principal(tree, load_config(tree / "etc/edgevision/config.yaml"))
    assert who is not None
    ids = access.user_ids(tree, "edgevision")
    assert ids is not None
    groups = ",".join(str(g) for g in sorted(who.gids))
    as_service = ["setpriv", f"--reuid={ids[0]}", f"--regid={ids[1]}", f"--groups={groups}", "--"]
    probe = (
        "import sys, pathlib\n"
        "root = pathlib.Path(sys.argv[1])\n"
        "text = (root / 'etc/edgevision/config.yaml').read_text()\n"
        "model = next((root / 'var/lib/edgevision/models').glob('*.tflite')).read_bytes()\n"
        "(root / 'var/lib/edgevision/probe').write_text('ok')\n"
        "try:\n"
        "    (root / 'etc/edgevision/config.yaml').write_text('x')\n"
        "    print('config writable')\n"
        "except PermissionError:\n"
        "    print('config read-only', len(text) > 0, len(model) > 0)\n"
    )
    python = _python_for(who)
    r = subprocess.run(
        [*as_service, python, "-c", probe, str(tree)], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0 and r.stdout.strip() == "config read-only True True", r.stdout + r.stderr
    assert (tree / "var/lib/edgevision/probe").stat().st_uid == who.uid
    other = subprocess.run(
        ["setpriv", "--reuid=54321", "--regid=54321", "--clear-groups", "--", python, "-c", probe, str(tree)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert other.returncode != 0 and "PermissionError" in other.stderr  # anyone else: no access

    # The pipeline itself, as the service runs it: this environment's packages under an interpreter the service
    # user can execute (a venv's own Python may live under /root, which is the point of the location check).
    paths = [sysconfig.get_paths()["purelib"], str(REPO), str(WALKING)]
    if any(access.check_path(Path("/"), p, who, "r" if p == str(WALKING) else "rx") for p in paths):
        pytest.skip("this environment or the shared media are not readable by other users here")
    e = dict(
        env,
        EDGEVISION_DATA_DIR=str(tree / "var/lib/edgevision"),
        PYTHONPATH=f"{REPO}:{paths[0]}",
        EDGEVISION_MODELS_DIR=str(tree / "var/lib/edgevision/models"),
        HOME=str(tree / "var/lib/edgevision"),
    )
    cmd = [
        python,
        "-m",
        "edgevision",
        "run",
        "--config",
        str(tree / "etc/edgevision/config.yaml"),
        "--video",
        str(WALKING),
        "--max-frames",
        "60",
        "--record",
    ]
    r = subprocess.run([*as_service, *cmd], capture_output=True, text=True, timeout=300, env=e, cwd="/")
    assert r.returncode == 0, r.stderr
    index = tree / "var/lib/edgevision/events.db"
    assert index.exists() and index.stat().st_uid == who.uid


@needs_root
def test_tmpfiles_restores_ownership_at_boot(env: dict[str, str], tree: Path) -> None:
    """The tmpfiles.d entry declares what install applied: scrambled ownership comes back."""
    assert _install(env, tree).returncode == 0
    want = {
        p: _mode(tree / p)
        for p in (
            "etc/edgevision",
            "etc/edgevision/config.yaml",
            "var/lib/edgevision",
            "var/lib/edgevision/models",
        )
    }
    for p in want:
        os.chown(tree / p, 0, 0)
        os.chmod(tree / p, 0o700)
    r = subprocess.run(
        ["systemd-tmpfiles", "--create", "--root", str(tree), str(tree / "etc/tmpfiles.d/edgevision.conf")],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert {p: _mode(tree / p) for p in want} == want


def test_group_dropin_names_only_groups_that_exist(env: dict[str, str], tree: Path) -> None:
    coral = str(REPO / "configs" / "coral.yaml")
    legacy = tree / "etc/systemd/system/edgevision.service.d/coral.conf"
    legacy.parent.mkdir(parents=True)
    legacy.write_text("[Service]\nSupplementaryGroups=video plugdev apex\n")  # what older versions wrote
    r = _install(env, tree, "--config", coral)
    assert r.returncode == 0, r.stderr
    dropin = (tree / "etc/systemd/system/edgevision.service.d/groups.conf").read_text()
    assert "SupplementaryGroups=video plugdev\n" in dropin and "DeviceAllow=char-usb_device rw" in dropin
    assert "apex" not in dropin and not legacy.exists()  # a USB-Coral Pi has no apex group
    assert "group apex does not exist: left out (PCIe/M.2 Coral" in r.stdout
    models = tree / "var/lib/edgevision/models"
    assert (models / "ssd_mobilenet_v2_coco_quant_postprocess_edgetpu.tflite").exists()
    assert (models / "ssd_mobilenet_v2_coco_quant_postprocess.tflite").exists()  # the CPU twin
    (tree / "etc/group").write_text(PI_GROUPS + "apex:x:998:\n")  # the gasket driver's package adds it
    r = _install(env, tree, "--config", coral)
    dropin = (tree / "etc/systemd/system/edgevision.service.d/groups.conf").read_text()
    assert "SupplementaryGroups=video plugdev apex\n" in dropin and "DeviceAllow=char-apex rw" in dropin
    (tree / "etc/group").write_text("root:x:0:\n")  # no video group at all
    r = _install(env, tree, "--config", coral)
    assert r.returncode == 0 and not (tree / "etc/systemd/system/edgevision.service.d/groups.conf").exists()
    assert "group video does not exist" in r.stdout


@pytest.mark.parametrize(
    ("exec_cmd", "hidden"),
    [
        ("/home/pi/ev/bin/edgevision", "ProtectHome=yes"),
        ("/root/ev/bin/edgevision", "ProtectHome=yes"),
        ("/tmp/ev/bin/edgevision", "PrivateTmp=yes"),
        ("/var/tmp/x/bin/edgevision", "PrivateTmp=yes"),
        ("/run/user/1000/ev/bin/edgevision", "ProtectHome=yes"),
        (EXEC, None),
        ("/usr/local/bin/edgevision", None),
    ],
)
def test_locations_the_sandbox_hides(exec_cmd: str, hidden: str | None, tmp_path: Path) -> None:
    problems = location_problems(exec_cmd, tmp_path, this_installation=False)
    assert (hidden in problems[0]) if hidden else problems == []


def test_install_refuses_a_venv_the_service_cannot_reach(env: dict[str, str], tree: Path) -> None:
    r = _install(env, tree, "--exec", "/home/pi/ev/bin/edgevision")
    assert r.returncode == 78 and "/home is hidden by ProtectHome=yes" in r.stderr
    assert (
        "fix: install edgevision where the service can reach it" in r.stderr
        and "/opt/edgevision/venv" in r.stderr
    )
    # from the checkout, as the README installs (``pip install edgevision`` would fetch another PyPI package)
    pip = next(p for p in FIX_LOCATION.split(" && ") if "/bin/pip install" in p)
    assert pip in r.stderr and pip in (REPO / "README.md").read_text()
    assert pip.startswith("sudo /opt/edgevision/venv/bin/pip install . ")
    assert not (tree / "etc/systemd").exists() and not (tree / "etc/edgevision").exists()
    script = tree / EXEC.lstrip("/")  # a venv in /opt made from a Python under /home (pyenv): also refused
    script.parent.mkdir(parents=True)
    script.write_text("#!/home/pi/.pyenv/versions/3.11.9/bin/python3.11\n")
    r = _install(env, tree)
    assert r.returncode == 78 and "its Python /home/pi/.pyenv" in r.stderr


def test_install_refuses_a_data_dir_the_sandbox_makes_read_only(env: dict[str, str], tree: Path) -> None:
    cfg = tree.parent / "c.yaml"
    cfg.write_text("recorder:\n  enabled: true\n  data_dir: /srv/recordings\n")
    r = _install(env, tree, "--config", str(cfg))
    assert r.returncode == 78 and "recorder.data_dir /srv/recordings" in r.stderr
    assert "ProtectSystem=strict" in r.stderr


def test_install_refuses_a_bad_config(env: dict[str, str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("detector:\n  treshold: 2\n")
    r = _install(env, tmp_path / "root", "--config", str(bad))
    assert r.returncode == 78 and "unknown key" in r.stderr and not (tmp_path / "root").exists()


def _camera(tmp: Path, name: str, port: int, camera: str | None = None, index: int = 0) -> str:
    cfg = tmp / f"{name}.yaml"
    extra = f"  camera: {camera}\n" if camera else ""
    cfg.write_text(
        f"source:\n  camera: {index}\nrecorder:\n  enabled: true\n{extra}web:\n  enabled: true\n  port: {port}\n"
    )
    return str(cfg)


def test_two_cameras_as_two_instances(env: dict[str, str], tree: Path) -> None:
    tmp = tree.parent
    for index, (name, port) in enumerate((("door", 8081), ("yard", 8082))):
        r = _install(env, tree, "--name", name, "--config", _camera(tmp, name, port, index=index))
        assert r.returncode == 0, r.stderr
    units = tree / "etc/systemd/system"
    template = (units / "edgevision@.service").read_text().splitlines()
    assert f"ExecStart={EXEC} run --config /etc/edgevision/%i.yaml" in template
    assert "StateDirectory=edgevision/%i edgevision/models" in template
    assert "Environment=EDGEVISION_DATA_DIR=/var/lib/edgevision/%i" in template
    assert "Environment=EDGEVISION_CAMERA=%i" in template
    for name, port in (("door", 8081), ("yard", 8082)):
        assert (units / f"multi-user.target.wants/edgevision@{name}.service").is_symlink()
        assert (units / f"edgevision@{name}.service.d/groups.conf").exists()
        assert load_config(tree / f"etc/edgevision/{name}.yaml").web.port == port
        assert (tree / f"var/lib/edgevision/{name}").is_dir()
        if IS_ROOT and HAVE_SYSUSERS:
            uid = int((tree / "etc/passwd").read_text().split("edgevision:x:", 1)[1].split(":")[0])
            assert _mode(tree / f"var/lib/edgevision/{name}")[:2] == ("drwxr-x---", uid)
            assert _mode(tree / f"etc/edgevision/{name}.yaml")[0] == "-rw-r-----"
    assert not (units / "edgevision.service").exists()  # the single-camera unit is not involved
    # A third camera on door's port, or under yard's name, is refused before anything is written.
    r = _install(env, tree, "--name", "gate", "--config", _camera(tmp, "gate", 8081, index=2))
    assert r.returncode == 78 and "web.port 8081 is already used by edgevision@door.service" in r.stderr
    r = _install(env, tree, "--name", "gate", "--config", _camera(tmp, "gate", 8083, camera="yard", index=2))
    assert r.returncode == 78 and "camera name 'yard' is already used by edgevision@yard.service" in r.stderr
    gate = Path(_camera(tmp, "gate", 8083, index=2))
    gate.write_text(gate.read_text() + "mqtt:\n  enabled: true\n  client_id: shop\n")
    (tree / "etc/edgevision/yard.yaml").write_text(
        (tree / "etc/edgevision/yard.yaml").read_text() + "mqtt:\n  enabled: true\n  client_id: shop\n"
    )
    r = _install(env, tree, "--name", "gate", "--config", str(gate))
    assert (
        r.returncode == 78 and "mqtt.client_id 'shop' is already used by edgevision@yard.service" in r.stderr
    )
    r = _install(env, tree, "--name", "gate", "--config", _camera(tmp, "gate", 8083, index=1))
    assert (
        r.returncode == 78 and "source /dev/video1 is already opened by edgevision@yard.service" in r.stderr
    )
    assert not (tree / "etc/edgevision/gate.yaml").exists()
    r = _install(env, tree, "--name", "config")
    assert r.returncode == 2 and "--name 'config'" in r.stderr
    r = run_cli(["service", "uninstall", "--root", str(tree), "--purge"], env)
    assert (
        r.returncode == 2 and "would delete the recordings and configs of edgevision@door.service" in r.stderr
    )
    # Removing one camera keeps the other and the shared template.
    r = run_cli(["service", "uninstall", "--root", str(tree), "--name", "door", "--purge"], env)
    assert r.returncode == 0, r.stderr
    assert not (units / "multi-user.target.wants/edgevision@door.service").exists()
    assert (
        not (tree / "var/lib/edgevision/door").exists() and not (tree / "etc/edgevision/door.yaml").exists()
    )
    assert (units / "edgevision@.service").exists() and (tree / "etc/edgevision/yard.yaml").exists()
    assert (units / "multi-user.target.wants/edgevision@yard.service").is_symlink()


def test_an_instance_names_its_camera(env: dict[str, str]) -> None:
    """``EDGEVISION_CAMERA`` (set by the template to the instance name) names the camera unless the config
    does: MQTT topics and the event index of two instances never collide."""
    env_before = os.environ.get("EDGEVISION_CAMERA")
    try:
        os.environ["EDGEVISION_CAMERA"] = "door"
        assert camera_name(load_config(None)) == "door"
        assert camera_name(load_config(None, {"recorder.camera": "front"})) == "front"
        del os.environ["EDGEVISION_CAMERA"]
        assert camera_name(load_config(None)) == "camera0"
    finally:
        if env_before is not None:
            os.environ["EDGEVISION_CAMERA"] = env_before


def test_uninstall_keeps_recordings_unless_purged(env: dict[str, str], tree: Path) -> None:
    assert _install(env, tree).returncode == 0
    (tree / "var/lib/edgevision/events.db").write_bytes(b"keep me")
    r = run_cli(["service", "uninstall", "--root", str(tree)], env)
    assert r.returncode == 0, r.stderr
    assert not (tree / "etc/systemd/system/edgevision.service").exists()
    assert not (tree / "etc/systemd/system/multi-user.target.wants/edgevision.service").exists()
    assert not (tree / "etc/systemd/system/edgevision.service.d").exists()
    assert (tree / "var/lib/edgevision/events.db").read_bytes() == b"keep me"
    r = run_cli(["service", "uninstall", "--root", str(tree), "--purge"], env)
    assert r.returncode == 0 and not (tree / "var/lib/edgevision").exists()
    assert not (tree / "etc/tmpfiles.d/edgevision.conf").exists()


def test_access_rule_follows_posix_classes() -> None:
    svc = access.Principal("edgevision", 999, frozenset({999, 44}))
    assert access.allowed(0o100640, 0, 999, svc, "r") and not access.allowed(0o100640, 0, 999, svc, "w")
    assert not access.allowed(0o100064, 999, 999, svc, "r")  # the owner class applies to the owner alone
    assert access.allowed(0o040750, 999, 999, svc, "rwx") and not access.allowed(0o040750, 0, 0, svc, "x")
    assert access.allowed(0o100604, 0, 0, svc, "r") and not access.allowed(0o100600, 0, 0, svc, "r")


def test_install_refuses_config_paths_the_sandbox_hides(
    env: dict[str, str], tree: Path, tmp_path: Path
) -> None:
    """A model or labels file in /home or /tmp exists for the installer but not for the service (ProtectHome=,
    PrivateTmp=): it would start, say "model file ... not found" and stop (exit 78)."""
    model = tmp_path / "mine.tflite"  # tmp_path is under /tmp: PrivateTmp=yes hides it
    shutil.copy(SHARED_MODELS / "ssd_mobilenet_v1_1.0_coco_quant_detect.tflite", model)
    (tmp_path / "labels.txt").write_text("person\n")
    cfg = tree.parent / "c.yaml"
    cfg.write_text(f"detector:\n  model: {model}\n  labels_file: {tmp_path / 'labels.txt'}\n")
    r = _install(env, tree, "--config", str(cfg))
    assert r.returncode == 78, r.stderr
    assert f"detector.model {model}: /tmp is hidden by PrivateTmp=yes" in r.stderr
    assert "detector.labels_file" in r.stderr and not (tree / "etc/systemd").exists()


@pytest.mark.parametrize(
    ("output", "refused"),
    [
        ("detections: /srv/d.jsonl", True),  # read-only under ProtectSystem=strict: the run would exit 2
        ("save_video: ../elsewhere.mp4", True),  # relative, but out of the data directory
        (
            "detections: d.jsonl",
            False,
        ),  # relative: lands in the data directory (the unit's working directory)
        ("detections: /var/lib/edgevision/d.jsonl", False),
        ("detections: '-'", False),  # the journal
    ],
)
def test_install_checks_output_paths_against_the_sandbox(output: str, refused: bool) -> None:
    import yaml

    from edgevision.config import EdgeVisionConfig
    from edgevision.service.preflight import sandbox_problems
    from edgevision.service.units import Instance

    cfg = EdgeVisionConfig.model_validate({"output": yaml.safe_load(output)})
    problems = sandbox_problems(cfg, Instance())
    assert bool(problems) == refused, problems
    if refused:
        assert "the service can only write /var/lib/edgevision (ProtectSystem=strict)" in problems[0]


def test_install_checks_what_the_service_user_reaches_before_enabling_and_starting(
    tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the live system a unit whose user cannot reach its command fails to start (systemctl start exits
    non-zero): the access check runs before ``enable`` and ``start``, so the user gets its exit 78 and the path
    that is wrong, not "systemctl start failed" (exit 1) and a service enabled to fail at every boot."""
    from edgevision.errors import ConfigError, EdgeVisionError
    from edgevision.service.install import Plan, install

    (tree / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\nedgevision:x:990:990::/:/usr/sbin/nologin\n")
    (tree / "etc/group").write_text(PI_GROUPS + "edgevision:x:990:\n")
    monkeypatch.setattr(Plan, "live", property(lambda self: True))  # as on / (the commands are faked)
    ran: list[list[str]] = []

    def runner(cmd: Sequence[str]) -> int:  # nothing enabled or running yet; the unit cannot start
        ran.append(list(cmd))
        return 0 if cmd[1] in ("daemon-reload", "enable") else 1

    with pytest.raises(EdgeVisionError) as caught:  # EXEC is not installed in the tree
        install(None, tree, False, str(SHARED_MODELS), runner=runner, exec_cmd=EXEC)
    assert isinstance(caught.value, ConfigError) and caught.value.exit_code == 78, caught.value
    assert "cannot reach" in str(caught.value) and EXEC in str(caught.value)
    assert not [c for c in ran if c[1] in ("enable", "start", "restart")], ran


@pytest.mark.parametrize("where", ["beside the source config", "in /tmp"])
@needs_root
def test_install_refuses_a_secret_file_the_service_cannot_read(
    env: dict[str, str], tree: Path, tmp_path: Path, where: str
) -> None:
    """``web.token_file`` (any ``*_file`` secret) was checked only as the installer reads it: a relative path
    beside the source config (the installed copy in /etc/edgevision looks beside itself) or a file in /tmp
    (PrivateTmp=) passed, and the installed service stopped at every start with "file not found" (exit 78)."""
    src = tree.parent / "src"
    src.mkdir()
    token = (src if where.startswith("beside") else tmp_path) / "token.txt"
    token.write_text("0123456789abcdef0123\n")
    cfg = src / "c.yaml"
    value = token.name if where.startswith("beside") else str(token)
    cfg.write_text(f"web:\n  enabled: true\n  token_file: {value}\n")
    r = _install(env, tree, "--config", str(cfg))
    assert r.returncode == 78 and "Traceback" not in r.stderr, r.stderr
    said = "/etc/edgevision/token.txt does not exist" if value == "token.txt" else "hidden by PrivateTmp=yes"
    assert "web.token_file" in r.stderr and said in r.stderr, r.stderr
    assert not (tree / "etc/systemd/system/multi-user.target.wants").exists()


@pytest.mark.parametrize(
    ("section", "refused"),
    [
        ({"models": {"dir": "/opt/edgevision/models"}}, True),  # read-only, and not where install fetched
        ({"models": {"dir": "/var/lib/edgevision/models/"}}, False),
        ({"scheduler": {"derived_dir": "/srv/derived"}}, True),  # int8 copies and rungs are written there
        ({"scheduler": {"derived_dir": "/var/lib/edgevision/models/derived"}}, False),
    ],
)
def test_install_refuses_a_models_dir_the_service_would_not_find_or_write(
    section: dict[str, dict[str, str]], refused: bool
) -> None:
    """``models.dir: /opt/edgevision/models`` passed: install fetched into /var/lib/edgevision/models and checked
    that, the service looked in models.dir ("not installed", exit 78 at every start) and could not write the
    int8 copies there (ProtectSystem=strict)."""
    from edgevision.config import EdgeVisionConfig
    from edgevision.service.preflight import sandbox_problems
    from edgevision.service.units import Instance

    problems = sandbox_problems(EdgeVisionConfig.model_validate(section), Instance())
    assert bool(problems) == refused, problems
    if refused:
        assert "/var/lib/edgevision/models" in problems[0] and "ProtectSystem=strict" in problems[0]


def test_a_config_is_never_readable_by_others_while_it_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The config (it may hold passwords) was written to its temporary file with the umask's 0644 and only then
    chmod'ed 0640: readable by any user in between wherever its directory lets them in."""
    from edgevision.service.install import Plan

    seen: list[int] = []

    def before(real: Any) -> Any:
        def spy(target: Any, mode: int, *args: Any, **kw: Any) -> None:
            seen.append(os.stat(target).st_mode & 0o777)  # the file as written, before its mode is set
            real(target, mode, *args, **kw)

        return spy

    monkeypatch.setattr(os, "chmod", before(os.chmod))
    monkeypatch.setattr(os, "fchmod", before(os.fchmod))
    old = os.umask(0o022)
    try:
        target = tmp_path / "etc/edgevision/edgevision.yaml"
        Plan(tmp_path, dry_run=False).write(target, "mqtt:\n  password: hunter2\n", 0o640)
    finally:
        os.umask(old)
    assert seen and all(m & 0o007 == 0 for m in seen), [oct(m) for m in seen]
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert [p.name for p in target.parent.iterdir()] == [target.name]


@pytest.mark.parametrize(
    "cmd",
    [
        ["systemctl", "start", "edgevision.service"],
        ["systemd-sysusers", "/etc/sysusers.d/edgevision.conf"],
        ["useradd", "--system", "edgevision"],
        ["no-such-command-edgevision", "x"],
    ],
)
def test_a_system_command_that_fails_is_exit_69_not_unexpected(tree: Path, cmd: list[str]) -> None:
    """A failed ``systemctl``, ``systemd-sysusers`` or ``useradd`` (or one not installed) ended ``service
    install`` with the base error, exit 1 ("unexpected": a bug), or a FileNotFoundError traceback; it is a tool
    the install needs that did not do its part: exit 69 (EX_UNAVAILABLE), naming the command and its status."""
    from edgevision.errors import EdgeVisionError
    from edgevision.service.install import Plan, _run

    plan = Plan(tree, False, runner=_run if cmd[0].startswith("no-such") else lambda c: 3)
    with pytest.raises(EdgeVisionError) as caught:
        plan.command(cmd, "the step", live_only=False)
    assert caught.value.exit_code == 69, caught.value
    assert str(caught.value).startswith(" ".join(cmd)) and len(str(caught.value).splitlines()) == 1


def test_install_checks_env_variables_as_the_service_will_see_them(env: dict[str, str], tree: Path) -> None:
    """``sudo -E edgevision service install`` validated ``${EV_CAMERA}`` with the installing shell's environment
    and installed a service that the unit (which has no such variable) stopped with exit 78 at every start; the
    config is now checked with the unit's environment, and an ``EnvironmentFile=`` drop-in provides it."""
    src = tree.parent / "c.yaml"
    src.write_text("recorder:\n  camera: ${EV_CAMERA}\n")
    r = _install(dict(env, EV_CAMERA="door"), tree, "--config", str(src))
    assert r.returncode == 78, r.stdout + r.stderr
    assert "EV_CAMERA" in r.stderr and "EnvironmentFile=" in r.stderr, r.stderr
    assert not (tree / "etc/edgevision/config.yaml").exists()
    # provided the way the message says: the variable in a file the unit names
    (tree / "etc/edgevision").mkdir(parents=True, exist_ok=True)
    (tree / "etc/edgevision/edgevision.env").write_text("# for the service\nEV_CAMERA='door'\n")
    dropin = tree / "etc/systemd/system/edgevision.service.d"
    dropin.mkdir(parents=True)
    (dropin / "environment.conf").write_text("[Service]\nEnvironmentFile=-/etc/edgevision/edgevision.env\n")
    r = _install({k: v for k, v in env.items() if k != "EV_CAMERA"}, tree, "--config", str(src))
    assert r.returncode == 0, r.stdout + r.stderr
    assert (dropin / "environment.conf").exists()
