"""``edgevision service install | uninstall``: user, directories, ownership, config, models, units, systemctl.

Every step checks first and acts only when something is missing or different, so a second run changes
nothing; ``--dry-run`` prints every step without doing it. ``--root DIR`` installs the files under DIR (for
images and tests): ``systemd-sysusers --root`` and ``systemd-tmpfiles --root`` create the user and apply
ownership inside DIR, ``systemctl --root`` enables the unit there; daemon-reload and start — which need the
live system — are listed as skipped.

Ownership is declared once, for systemd to re-apply at every boot (``/etc/sysusers.d/edgevision.conf``,
``/etc/tmpfiles.d/edgevision.conf``), and also set here explicitly so the result does not wait for a reboot:
config ``root:edgevision 0640`` (it may hold secrets), data ``edgevision:edgevision 0750``, models readable.
The install ends by checking, from the stat modes, that the service user reaches every path its unit needs.
"""

from __future__ import annotations

import enum
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from edgevision.catalog.entries import load_catalog
from edgevision.catalog.fetch import fetch_entry, verify_installed
from edgevision.config import EdgeVisionConfig
from edgevision.config_check import check_models, models_loaded
from edgevision.config_load import expanding_from
from edgevision.errors import ConfigError, SystemCommandFailed, UsageError
from edgevision.paths import data_file, model_mirror
from edgevision.service import access
from edgevision.service.environment import load_as_service, service_environment
from edgevision.service.preflight import (
    FIX_LOCATION,
    clashes,
    installed_instances,
    location_problems,
    sandbox_problems,
    secret_files,
)
from edgevision.service.units import (
    CONFIG_DIR,
    DATA_DIR,
    MODELS_DIR,
    UNIT_DIR,
    USER,
    Instance,
    device_dropin,
    render_unit,
)

Runner = Callable[[Sequence[str]], int]
SYSUSERS = "/etc/sysusers.d/edgevision.conf"
TMPFILES = "/etc/tmpfiles.d/edgevision.conf"
LEGACY_DROPIN = "coral.conf"  # earlier versions named apex unconditionally there


def _run(cmd: Sequence[str]) -> int:
    return subprocess.run(list(cmd), check=False).returncode


class Verb(str, enum.Enum):
    """What one line of an install plan does."""

    CREATE = "create"
    WRITE = "write"
    CHOWN = "chown"
    FETCH = "fetch"
    REMOVE = "remove"
    RUN = "run"
    UNCHANGED = "unchanged"
    KEPT = "kept"
    SKIPPED = "skipped"
    OK = "ok"
    NOTE = "note"

    @property
    def changes(self) -> bool:
        """Whether the line changes the system (said as "would …" in a dry run)."""
        return self not in (Verb.UNCHANGED, Verb.KEPT, Verb.SKIPPED, Verb.OK, Verb.NOTE)


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

    def say(self, verb: Verb, what: str) -> None:
        """One line of the plan; a change is "would …" in a dry run."""
        prefix = "would " if self.dry_run and verb.changes else ""
        self.lines.append(f"{prefix}{verb.value} {what}")
        print(self.lines[-1], flush=True)

    def command(self, cmd: list[str], what: str, live_only: bool = True) -> None:
        if live_only and not self.live:
            self.say(Verb.SKIPPED, f"{what} (--root: needs the live system): {' '.join(cmd)}")
            return
        self.say(Verb.RUN, " ".join(cmd))
        self.changed += 1
        if self.dry_run:
            return
        try:
            status = self.runner(cmd)
        except OSError as exc:  # not installed (or not executable) here
            raise SystemCommandFailed(
                f"{' '.join(cmd)}: cannot run {cmd[0]}: {exc.strerror or exc}"
            ) from None
        if status != 0:
            raise SystemCommandFailed(
                f"{' '.join(cmd)} failed (exit status {status}); its output above says why"
            )

    def systemctl(self, *args: str) -> list[str]:
        return ["systemctl", *([] if self.live else ["--root", str(self.root)]), *args]

    def write(self, path: Path, content: str, mode: int = 0o644) -> bool:
        if path.exists() and path.read_text() == content:
            self.say(Verb.UNCHANGED, str(path))
            return False
        self.say(Verb.WRITE if path.exists() else Verb.CREATE, str(path))
        self.changed += 1
        if not self.dry_run:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.unlink(missing_ok=True)  # a killed run's leftover would keep its mode
            # created with no more than ``mode`` (a config may hold passwords: never readable by others
            # between its creation and its chmod), then set exactly, whatever the umask took away
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
            with os.fdopen(fd, "w") as fh:
                os.fchmod(fd, mode)
                fh.write(content)
            os.replace(tmp, path)
        return True

    def remove(self, path: Path, what: str = "") -> bool:
        if not path.exists():
            return False
        self.say(Verb.REMOVE, f"{path}{what}")
        self.changed += 1
        if not self.dry_run:
            path.unlink()
        return True

    def mkdir(self, path: Path) -> None:
        if path.is_dir():
            self.say(Verb.UNCHANGED, f"{path}/")
            return
        self.say(Verb.CREATE, f"{path}/")
        self.changed += 1
        if not self.dry_run:
            path.mkdir(parents=True, mode=0o750, exist_ok=True)

    def own(self, path: Path, uid: int, gid: int, mode: int) -> None:
        """chown/chmod ``path`` when it differs (reported; skipped with a note when not running as root)."""
        if not path.exists():
            return
        st = path.stat()
        if (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (uid, gid, mode):
            return
        self.say(Verb.CHOWN, f"{path} {uid}:{gid} {mode:04o}")
        self.changed += 1
        if self.dry_run:
            return
        try:
            os.chown(path, uid, gid)
            os.chmod(path, mode)
        except PermissionError:
            self.say(Verb.SKIPPED, f"ownership of {path} (not root; systemd-tmpfiles applies it at boot)")


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


def models_needed(cfg: EdgeVisionConfig) -> list[str]:
    """Catalog models the configuration will load (so the service never downloads at start-up)."""
    cat = load_catalog()
    return [n for n in models_loaded(cfg) if n in cat.models]


def install(
    config: Path | None,
    root: Path,
    dry_run: bool,
    mirror: str | None,
    runner: Runner = _run,
    name: str | None = None,
    exec_cmd: str | None = None,
) -> Plan:
    """Install (or bring up to date) one service: the single unit, or the instance ``name`` of the template."""
    inst = Instance(name)
    plan = Plan(root, dry_run, runner)
    src = config or data_file("configs/default.yaml")
    environ = service_environment(root, inst)  # ${NAME} as the unit's variables expand it, not this shell's
    cfg = load_as_service(src, environ, inst)  # refuse to install a config that would not start (exit 78)
    check_models(cfg)  # ... including a model name the catalog does not know
    target = plan.p(inst.config)
    if target.exists():
        try:
            cfg = load_as_service(target, environ, inst)  # what the service will really run
        except ConfigError as exc:
            raise ConfigError(f"the installed config does not validate; fix it first:\n{exc}") from None
    with expanding_from(environ):  # as the service reads them, beside target
        secrets = secret_files(target if target.exists() else src)
    command = exec_cmd or exec_path()
    location = location_problems(command, root, this_installation=exec_cmd is None)
    problems = location + sandbox_problems(cfg, inst, secrets) + clashes(cfg, inst, root)
    if problems:
        hint = f"\n  fix: {FIX_LOCATION}" if location else ""
        raise ConfigError("cannot install the service:\n  " + "\n  ".join(problems) + hint)

    _user(plan)
    ids = access.user_ids(root, USER)
    for d in dict.fromkeys((CONFIG_DIR, DATA_DIR, MODELS_DIR, inst.data_dir)):
        plan.mkdir(plan.p(d))
    if target.exists():
        plan.say(Verb.KEPT, f"{target} (an existing config is never overwritten)")
    else:
        plan.write(target, src.read_text(), 0o640)
    models = plan.p(MODELS_DIR)
    cat = load_catalog()
    for model in models_needed(cfg):
        for entry in cat.files_for(model):
            if verify_installed(entry, models)[0]:
                plan.say(Verb.UNCHANGED, f"model {entry.name}")
                continue
            plan.say(Verb.FETCH, f"model {entry.name} into {models}")
            plan.changed += 1
            if not dry_run:
                fetch_entry(entry, models, model_mirror(cfg, mirror))
    plan.write(plan.p(TMPFILES), data_file("systemd/edgevision.tmpfiles").read_text())
    if ids is not None:
        _ownership(plan, inst, *ids)

    unit_changed = plan.write(
        plan.p(f"{UNIT_DIR}/{inst.unit_file}"), render_unit(command, inst.name is not None)
    )
    unit_changed |= plan.remove(plan.p(f"{inst.dropin_dir}/{LEGACY_DROPIN}"), " (replaced by groups.conf)")
    dropin, notes = device_dropin(cfg, lambda g: access.group_id(root, g) is not None)
    for note in notes:
        plan.say(Verb.NOTE, note)
    dropin_path = plan.p(f"{inst.dropin_dir}/groups.conf")
    if dropin is not None:
        unit_changed |= plan.write(dropin_path, dropin)
    else:
        unit_changed |= plan.remove(dropin_path)
    if unit_changed:
        plan.command(["systemctl", "daemon-reload"], "reload unit files")
    if not dry_run:  # before enable and start: a unit that cannot reach its files fails at every start
        verify_reachable(plan, inst, cfg, command, secrets)
    wants = plan.p(f"{UNIT_DIR}/multi-user.target.wants/{inst.unit}")
    if wants.is_symlink() or (
        plan.live and plan.runner(plan.systemctl("is-enabled", "--quiet", inst.unit)) == 0
    ):
        plan.say(Verb.UNCHANGED, f"{inst.unit} enabled")
    else:
        plan.command(plan.systemctl("enable", inst.unit), f"enable {inst.unit}", live_only=False)
    active = plan.live and plan.runner(["systemctl", "is-active", "--quiet", inst.unit]) == 0
    if active and not unit_changed:
        plan.say(Verb.UNCHANGED, f"{inst.unit} running")
    else:
        plan.command(["systemctl", "restart" if active else "start", inst.unit], f"start {inst.unit}")
    return plan


def _user(plan: Plan) -> None:
    """The system user, declared in sysusers.d and created by systemd-sysusers (``useradd`` without it)."""
    plan.write(plan.p(SYSUSERS), data_file("systemd/edgevision.sysusers").read_text())
    if access.user_ids(plan.root, USER) is not None:
        plan.say(Verb.UNCHANGED, f"user {USER}")
    elif shutil.which("systemd-sysusers"):
        plan.command(
            ["systemd-sysusers", *([] if plan.live else ["--root", str(plan.root)]), str(plan.p(SYSUSERS))],
            f"create user {USER}",
            live_only=False,
        )
    else:
        plan.command(
            [
                "useradd",
                "--system",
                "--user-group",
                "--home-dir",
                DATA_DIR,
                "--shell",
                "/usr/sbin/nologin",
                USER,
            ],
            f"create user {USER}",
        )


def _ownership(plan: Plan, inst: Instance, uid: int, gid: int) -> None:
    """The modes and owners tmpfiles.d declares, applied now (and to what it cannot name: instance dirs,
    model files)."""
    plan.own(plan.p(CONFIG_DIR), 0, gid, 0o750)
    for cfg in sorted(plan.p(CONFIG_DIR).glob("*.yaml")):
        plan.own(cfg, 0, gid, 0o640)
    for d in dict.fromkeys((DATA_DIR, MODELS_DIR, inst.data_dir)):
        plan.own(plan.p(d), uid, gid, 0o750)
    for f in sorted(plan.p(MODELS_DIR).iterdir()) if plan.p(MODELS_DIR).is_dir() else []:
        if f.is_file() and not f.is_symlink():
            plan.own(f, uid, gid, 0o640)


def service_principal(root: Path, cfg: EdgeVisionConfig) -> access.Principal | None:
    """The service user with the groups its drop-in gives it."""
    _, groups = _dropin_groups(root, cfg)
    return access.principal(root, USER, groups)


def _dropin_groups(root: Path, cfg: EdgeVisionConfig) -> tuple[str | None, list[str]]:
    dropin, _ = device_dropin(cfg, lambda g: access.group_id(root, g) is not None)
    groups: list[str] = []
    for line in (dropin or "").splitlines():
        if line.startswith("SupplementaryGroups="):
            groups = line.split("=", 1)[1].split()
    return dropin, groups


def unit_paths(
    inst: Instance, cfg: EdgeVisionConfig, command: str, secrets: Sequence[tuple[str, str]] = ()
) -> list[tuple[str, str]]:
    """Every path the unit needs and how: (path, "r"/"rw"/"rx"/"rwx"); ``secrets`` are the config's ``*_file``
    secrets (key, path) as the service resolves them."""
    # the models dir is written too: <models>/derived holds the int8 copies (runtime.kernels) and derived rungs
    paths = [(inst.config, "r"), *((p, "r") for _, p in secrets)]
    paths += [(inst.data_dir, "rwx"), (MODELS_DIR, "rwx"), (command, "rx")]
    paths += [
        (f"{MODELS_DIR}/{e.file}", "r") for n in models_needed(cfg) for e in load_catalog().files_for(n)
    ]
    return paths


def verify_reachable(
    plan: Plan,
    inst: Instance,
    cfg: EdgeVisionConfig,
    command: str,
    secrets: Sequence[tuple[str, str]] = (),
) -> None:
    """Check from the stat modes that the service user reaches what the unit needs (``secrets``: the config's
    ``*_file`` secrets, key and path); refuse loudly if not."""
    who = service_principal(plan.root, cfg)
    if who is None:
        plan.say(Verb.SKIPPED, f"access check: user {USER} does not exist in {plan.root} yet")
        return
    keys = {path: f"{key} " for key, path in secrets}
    errors = []
    for path, want in unit_paths(inst, cfg, command, secrets):
        if not plan.live and path == command and not plan.p(path).exists():
            continue  # --root with --exec: the command is installed into the image separately
        problem = access.check_path(plan.root, path, who, want)
        if problem:
            errors.append(keys.get(path, "") + problem)
        else:
            plan.say(Verb.OK, f"{USER} can {'+'.join(want)} {path}")
    if errors:
        raise ConfigError("the service user cannot reach what the unit needs:\n  " + "\n  ".join(errors))


def uninstall(root: Path, dry_run: bool, purge: bool, runner: Runner = _run, name: str | None = None) -> Plan:
    inst = Instance(name)
    plan = Plan(root, dry_run, runner)
    others = [u for u in installed_instances(root) if "@" in u and u != inst.unit]
    if purge and inst.name is None and others:
        raise UsageError(
            f"--purge would delete the recordings and configs of {', '.join(others)} too; "
            "remove them first with `service uninstall --name NAME`"
        )
    unit = plan.p(f"{UNIT_DIR}/{inst.unit_file}")
    if unit.exists():
        plan.command(plan.systemctl("disable", inst.unit), f"disable {inst.unit}", live_only=False)
        plan.command(["systemctl", "stop", inst.unit], f"stop {inst.unit}")
        for dropin in ("groups.conf", LEGACY_DROPIN):
            plan.remove(plan.p(f"{inst.dropin_dir}/{dropin}"))
        if plan.p(inst.dropin_dir).is_dir() and not dry_run and not any(plan.p(inst.dropin_dir).iterdir()):
            plan.p(inst.dropin_dir).rmdir()
        if inst.name is None or not others:
            plan.remove(unit)
        plan.command(["systemctl", "daemon-reload"], "reload unit files")
    else:
        plan.say(Verb.UNCHANGED, f"{inst.unit} not installed")
    data, conf = plan.p(inst.data_dir), plan.p(inst.config)
    if not purge:
        plan.say(Verb.KEPT, f"{data}/ and {conf} (recordings and config; --purge removes them)")
        return plan
    if inst.name is not None:
        if data.exists():
            plan.say(Verb.REMOVE, f"{data}/ (recordings)")
            plan.changed += 1
            if not dry_run:
                shutil.rmtree(data)
        plan.remove(conf, " (config)")
        return plan
    for d in (plan.p(DATA_DIR), plan.p(CONFIG_DIR)):
        if d.exists():
            plan.say(Verb.REMOVE, f"{d}/ (recordings, models, config)")
            plan.changed += 1
            if not dry_run:
                shutil.rmtree(d)
    for f in (SYSUSERS, TMPFILES):
        plan.remove(plan.p(f))
    if access.user_ids(root, USER) is not None:
        plan.command(["userdel", USER], f"remove user {USER}")
    return plan
