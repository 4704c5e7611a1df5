"""What ``edgevision service install`` refuses before it writes anything: a command, interpreter or file the unit's
sandbox hides, a path it cannot write, and another installed service that would share a port, camera name or
camera. Each function returns the problems (empty when there are none); the installer reports them with exit 78.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgevision.capture.sources import redact_url
from edgevision.config import EdgeVisionConfig, load_config
from edgevision.config_check import model_keys
from edgevision.config_load import SECRET_FILE_KEYS, expanding_from, parse_yaml
from edgevision.errors import ConfigError, UsageError
from edgevision.service import access
from edgevision.service.environment import service_environment
from edgevision.service.units import CONFIG_DIR, MODELS_DIR, UNIT_DIR, Instance

FIX_LOCATION = (  # the README's commands ("Running as a service on a Pi"), run in the edgevision checkout
    "install edgevision where the service can reach it, from the edgevision checkout: "
    "sudo python3 -m venv --system-site-packages /opt/edgevision/venv && "
    "sudo /opt/edgevision/venv/bin/pip install . "
    "\"numpy==$(python3 -c 'import numpy; print(numpy.__version__)')\" && "
    "sudo /opt/edgevision/venv/bin/edgevision service install"
)


def location_problems(exec_cmd: str, root: Path, this_installation: bool) -> list[str]:
    """Why the unit could not start ``exec_cmd`` under its sandbox (empty when it can): the command, its
    interpreter and — for this installation — the package itself must lie outside the hidden directories."""
    paths = {"the edgevision command": exec_cmd}
    script = root / exec_cmd.lstrip("/")
    interpreter = access.shebang_interpreter(script)
    if interpreter:
        paths["its Python"] = interpreter
    if root == Path("/"):
        paths.update({f"{k} (resolved)": os.path.realpath(v) for k, v in list(paths.items())})
    if this_installation:
        import edgevision

        paths["the edgevision package"] = str(Path(edgevision.__file__).resolve().parent)
    problems = []
    for what, path in paths.items():
        hidden = access.hidden_by_sandbox(path)
        if hidden:
            problems.append(f"{what} {path}: {hidden}")
    return problems


def installed_instances(root: Path) -> dict[str, Path]:
    """Installed services and their configs: ``edgevision.service`` → config.yaml, ``edgevision@NAME.service`` →
    NAME.yaml (an instance counts when its config and an enable link or drop-in exist)."""
    found: dict[str, Path] = {}
    single = root / UNIT_DIR.lstrip("/") / "edgevision.service"
    if single.exists() and (root / CONFIG_DIR.lstrip("/") / "config.yaml").exists():
        found["edgevision.service"] = root / CONFIG_DIR.lstrip("/") / "config.yaml"
    units = root / UNIT_DIR.lstrip("/")
    for link in sorted(units.glob("*/edgevision@*.service")) + sorted(units.glob("edgevision@?*.service.d")):
        name = link.name.split("@", 1)[1].split(".service", 1)[0]
        cfg = root / CONFIG_DIR.lstrip("/") / f"{name}.yaml"
        if name and cfg.exists():
            found[f"edgevision@{name}.service"] = cfg
    return found


def _identity(cfg: EdgeVisionConfig, inst_camera: str | None) -> tuple[int | None, str | None, str | None]:
    """(web port, camera name, device or stream) — what two services must not share."""
    port = cfg.web.port if cfg.web.enabled and cfg.web.port != 0 else None
    s = cfg.source
    source = {"camera": f"/dev/video{s.camera}", "picamera2": f"Pi camera {s.camera}", "url": s.url}.get(
        s.kind
    )
    return port, cfg.recorder.camera or inst_camera, source


def clashes(cfg: EdgeVisionConfig, inst: Instance, root: Path) -> list[str]:
    """Another installed service that would bind the same web port, publish under the same camera name or open
    the same camera (the second would wait for it forever)."""
    port, camera, source = _identity(cfg, inst.camera)
    problems = []
    for unit, path in installed_instances(root).items():
        if unit == inst.unit:
            continue
        other_name = unit.split("@", 1)[1].removesuffix(".service") if "@" in unit else None
        try:
            with expanding_from(service_environment(root, Instance(other_name))):  # as that service reads it
                other = load_config(path)
        except (ConfigError, UsageError):  # a config (or an instance name) that service cannot start with
            continue
        other_port, other_camera, other_source = _identity(other, other_name)
        if port is not None and port == other_port:
            problems.append(f"web.port {port} is already used by {unit} ({path}); choose another web.port")
        if camera is not None and camera == other_camera:
            problems.append(f"camera name {camera!r} is already used by {unit} ({path}); set recorder.camera")
        cid = cfg.mqtt.client_id if cfg.mqtt.enabled else None
        if cid is not None and other.mqtt.enabled and cid == other.mqtt.client_id:
            problems.append(
                f"mqtt.client_id {cid!r} is already used by {unit} ({path}): the broker would drop one"
            )
        if source is not None and source == other_source:
            problems.append(f"source {redact_url(source)} is already opened by {unit} ({path}); set source.*")
    return problems


def secret_files(config: Path) -> list[tuple[str, str]]:
    """The ``*_file`` secrets of ``config`` (already validated) as the installed service reads them: ``(key,
    path)``, a relative path resolved beside the installed config in /etc/edgevision, not beside ``config``."""
    raw = parse_yaml(config.read_text(), str(config))
    found = []
    for section, key in SECRET_FILE_KEYS:
        sec = raw.data.get(section)
        value = sec.get(key) if isinstance(sec, dict) else None
        if isinstance(value, str) and value:
            found.append((f"{section}.{key}", value if os.path.isabs(value) else f"{CONFIG_DIR}/{value}"))
    return found


def sandbox_problems(
    cfg: EdgeVisionConfig, inst: Instance, secrets: Sequence[tuple[str, str]] = ()
) -> list[str]:
    """Config paths the unit's sandbox would not let the service write (ProtectSystem=strict) or see (the
    ``*_file`` secrets in ``secrets`` among them: :func:`secret_files`)."""
    problems = []
    for secret_key, secret in secrets:
        hidden = access.hidden_by_sandbox(secret)
        if hidden:
            problems.append(f"{secret_key} {secret}: {hidden}; put it in {CONFIG_DIR} (root:edgevision 0640)")
    data = cfg.recorder.data_dir
    if data is not None and Path(os.path.normpath(data)) != Path(inst.data_dir):
        problems.append(
            f"recorder.data_dir {data}: the service can only write {inst.data_dir} (ProtectSystem=strict); "
            "remove recorder.data_dir from the config to use it"
        )
    # install fetches the models into MODELS_DIR and the run writes their int8 copies and derived rungs beside
    # them: another models.dir holds none of them (exit 78 at every start) and is read-only (ProtectSystem=strict)
    dirs = (("models.dir", cfg.models.dir, False), ("scheduler.derived_dir", cfg.scheduler.derived_dir, True))
    for dir_key, where, below in dirs:
        if where is None:
            continue
        p = Path(os.path.normpath(where))
        if p != Path(MODELS_DIR) and not (below and {Path(MODELS_DIR), Path(inst.data_dir)} & set(p.parents)):
            problems.append(
                f"{dir_key} {where}: the service reads and writes its models in {MODELS_DIR}, where install "
                f"fetches them (ProtectSystem=strict makes the rest read-only); remove {dir_key}"
            )
    # Files read by path: hidden by the sandbox (or relative to this shell) the service says "not found" (78).
    files: list[tuple[tuple[Any, ...], str | Path | None]] = [
        (key, spec) for key, spec in model_keys(cfg) if "/" in spec or spec.endswith(".tflite")
    ]
    files += [
        (("detector", "labels_file"), cfg.detector.labels_file),
        (("scheduler", "profile"), cfg.scheduler.profile),
    ]
    for key, path in files:
        if path is None:
            continue
        hidden = access.hidden_by_sandbox(path) or (
            None if os.path.isabs(path) else f"a relative path (the service runs in {inst.data_dir})"
        )
        if hidden:
            problems.append(f"{'.'.join(map(str, key))} {path}: {hidden}; put it in {MODELS_DIR}")
    # Files written: only the data directory (the unit's working directory, where a relative path lands).
    for name in ("detections", "save_video"):
        out = getattr(cfg.output, name)
        if out is None or str(out) in ("-", "/dev/stdout", "/dev/stderr"):
            continue
        where = Path(os.path.normpath(Path(inst.data_dir) / out))
        if where != Path(inst.data_dir) and Path(inst.data_dir) not in where.parents:
            problems.append(
                f"output.{name} {out}: the service can only write {inst.data_dir} (ProtectSystem=strict); "
                "use a path in it (a relative one lands there) or remove it"
            )
    return problems
