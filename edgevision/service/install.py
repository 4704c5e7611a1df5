"""``edgevision service install | uninstall``: user, directories, config, models, unit file, systemctl.

Every step checks first and acts only when something is missing or different, so a second run changes
nothing; ``--dry-run`` prints every step without doing it. ``--root DIR`` installs the files under DIR (for
images and tests): ``systemctl --root`` still enables the unit there, while user creation, ownership,
daemon-reload and start — which need the live system — are listed as skipped.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from edgevision.catalog.entries import load_catalog
from edgevision.catalog.fetch import fetch_entry, verify_installed
from edgevision.config import EdgeVisionConfig, load_config
from edgevision.config_check import check_models
from edgevision.errors import ConfigError, EdgeVisionError
from edgevision.settings import data_file

USER = "edgevision"
UNIT = "edgevision.service"
CORAL_GROUPS = "plugdev apex"  # libedgetpu's udev rules: USB Coral -> plugdev, PCIe/M.2 (gasket) -> apex

Runner = Callable[[Sequence[str]], int]


def _run(cmd: Sequence[str]) -> int:
    return subprocess.run(list(cmd), check=False).returncode


@dataclass
class Plan:
    root: Path
    dry_run: bool
    runner: Runner = _run
    lines: list[str] = field(default_factory=list)
    changed: int = 0

    def p(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    @property
    def live(self) -> bool:
        return self.root == Path("/")

    def say(self, verb: str, what: str) -> None:
        prefix = "would " if self.dry_run and verb not in ("unchanged", "kept", "skipped") else ""
        self.lines.append(f"{prefix}{verb} {what}")
        print(self.lines[-1], flush=True)

    def command(self, cmd: list[str], what: str, live_only: bool = True) -> None:
        if live_only and not self.live:
            self.say("skipped", f"{what} (--root: needs the live system): {' '.join(cmd)}")
            return
        self.say("run", " ".join(cmd))
        self.changed += 1
        if not self.dry_run and self.runner(cmd) != 0:
            raise EdgeVisionError(f"{' '.join(cmd)} failed")

    def write(self, path: Path, content: str, mode: int = 0o644) -> bool:
        if path.exists() and path.read_text() == content:
            self.say("unchanged", str(path))
            return False
        self.say("write" if path.exists() else "create", str(path))
        self.changed += 1
        if not self.dry_run:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text(content)
            os.chmod(tmp, mode)
            os.replace(tmp, path)
        return True

    def mkdir(self, path: Path, mode: int = 0o750, owner: str | None = None) -> None:
        if path.is_dir():
            self.say("unchanged", f"{path}/")
        else:
            self.say("create", f"{path}/")
            self.changed += 1
            if not self.dry_run:
                path.mkdir(parents=True, mode=mode, exist_ok=True)
        if owner and self.live and not self.dry_run and path.exists() and path.owner() != owner:
            shutil.chown(path, owner, owner)


def user_exists(name: str, root: Path) -> bool:
    if root == Path("/"):
        try:
            pwd.getpwnam(name)
            return True
        except KeyError:
            return False
    passwd = root / "etc/passwd"
    return passwd.exists() and any(line.split(":", 1)[0] == name for line in passwd.read_text().splitlines())


def exec_path() -> str:
    """The installed ``edgevision`` command next to this interpreter (what ExecStart must run)."""
    candidate = Path(sys.executable).parent / "edgevision"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("edgevision")
    if not found:
        raise ConfigError(
            "cannot find the installed edgevision command for ExecStart (is the package installed?)"
        )
    return str(Path(found).resolve())


def render_unit(exec_cmd: str) -> str:
    return data_file("systemd/edgevision.service").read_text().replace("@EXEC@", exec_cmd)


def models_needed(cfg: EdgeVisionConfig) -> list[str]:
    """Catalog models the configuration will load (so the service never downloads at start-up)."""
    cat = load_catalog()
    names = [cfg.detector.model]
    if cfg.runtime.device == "edgetpu":
        names += [n for n, m in cat.models.items() if m.cpu_twin == cfg.detector.model]
    if cfg.faces.enabled or cfg.privacy.blur_faces:
        names += [cfg.faces.model] + ([cfg.faces.landmark_model] if cfg.faces.landmarks else [])
        if cfg.privacy.blur_faces:
            names.append(cfg.faces.frame_model)
    if cfg.scheduler.enabled:
        names += cfg.scheduler.models
        if cfg.scheduler.person_gate.enabled:
            names.append(cfg.scheduler.person_gate.model)
    return [n for i, n in enumerate(names) if n in cat.models and n not in names[:i]]


def install(
    config: Path | None, root: Path, dry_run: bool, mirror: str | None, runner: Runner = _run
) -> Plan:
    plan = Plan(root, dry_run, runner)
    src = config or data_file("configs/default.yaml")
    cfg = load_config(src)  # refuse to install a config that would not start (exit 78)
    check_models(cfg)  # ... including a model name the catalog does not know
    if user_exists(USER, root):
        plan.say("unchanged", f"user {USER}")
    else:
        plan.command(["useradd", "--system", "--user-group", "--home-dir", "/var/lib/edgevision", "--shell",
                      "/usr/sbin/nologin", "--groups", "video", USER], f"create user {USER}")  # fmt: skip
    plan.mkdir(plan.p("/etc/edgevision"), 0o755)
    data = plan.p("/var/lib/edgevision")
    plan.mkdir(data, 0o750, USER)
    plan.mkdir(data / "models", 0o750, USER)
    target = plan.p("/etc/edgevision/config.yaml")
    if target.exists():
        plan.say("kept", f"{target} (an existing config is never overwritten)")
    else:
        plan.write(target, src.read_text(), 0o640)
    cat = load_catalog()
    for name in models_needed(cfg):
        for entry in cat.files_for(name):
            if verify_installed(entry, data / "models")[0]:
                plan.say("unchanged", f"model {entry.name}")
                continue
            plan.say("fetch", f"model {entry.name} into {data / 'models'}")
            plan.changed += 1
            if not dry_run:
                fetch_entry(entry, data / "models", mirror or cfg.models.mirror)
    unit_changed = plan.write(plan.p(f"/etc/systemd/system/{UNIT}"), render_unit(exec_path()))
    dropin = plan.p(f"/etc/systemd/system/{UNIT}.d/coral.conf")
    if cfg.runtime.device == "edgetpu":
        unit_changed |= plan.write(dropin, f"[Service]\nSupplementaryGroups=video {CORAL_GROUPS}\n")
    if unit_changed:
        plan.command(["systemctl", "daemon-reload"], "reload unit files")
    enabled = plan.runner(["systemctl", *(["--root", str(root)] if not plan.live else []), "is-enabled", "--quiet",
                           UNIT]) == 0 if (root / f"etc/systemd/system/{UNIT}").exists() else False  # fmt: skip
    if enabled:
        plan.say("unchanged", f"{UNIT} enabled")
    else:
        plan.command(["systemctl", *(["--root", str(root)] if not plan.live else []), "enable", UNIT],
                     f"enable {UNIT}", live_only=False)  # fmt: skip
    active = plan.live and plan.runner(["systemctl", "is-active", "--quiet", UNIT]) == 0
    if active and not unit_changed:
        plan.say("unchanged", f"{UNIT} running")
    else:
        plan.command(["systemctl", "restart" if active else "start", UNIT], f"start {UNIT}")
    return plan


def uninstall(root: Path, dry_run: bool, purge: bool, runner: Runner = _run) -> Plan:
    plan = Plan(root, dry_run, runner)
    unit = plan.p(f"/etc/systemd/system/{UNIT}")
    if unit.exists():
        plan.command(["systemctl", *(["--root", str(root)] if not plan.live else []), "disable", UNIT],
                     f"disable {UNIT}", live_only=False)  # fmt: skip
        plan.command(["systemctl", "stop", UNIT], f"stop {UNIT}")
        for path in (plan.p(f"/etc/systemd/system/{UNIT}.d/coral.conf"), unit):
            if path.exists():
                plan.say("remove", str(path))
                plan.changed += 1
                if not dry_run:
                    path.unlink()
        plan.command(["systemctl", "daemon-reload"], "reload unit files")
    else:
        plan.say("unchanged", f"{UNIT} not installed")
    data, conf = plan.p("/var/lib/edgevision"), plan.p("/etc/edgevision")
    if purge:
        for d in (data, conf):
            if d.exists():
                plan.say("remove", f"{d}/ (recordings, models, config)")
                plan.changed += 1
                if not dry_run:
                    shutil.rmtree(d)
        if user_exists(USER, root):
            plan.command(["userdel", USER], f"remove user {USER}")
    else:
        plan.say("kept", f"{data}/ and {conf}/ (recordings and config; --purge removes them)")
    return plan
