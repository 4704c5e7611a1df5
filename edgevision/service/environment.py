"""The environment the installed unit gives the service, so ``service install`` checks a config's ``${NAME}``
variables as the service will expand them, not with the installing shell's (``sudo -E`` passes the user's).

A service's variables are what systemd sets for every unit with ``User=`` (``PATH``, ``HOME``, ``USER`` …), the
directories it asks for (``STATE_DIRECTORY``, ``CONFIGURATION_DIRECTORY``, ``CREDENTIALS_DIRECTORY`` with
``LoadCredential=``), and its unit's and drop-ins' ``Environment=`` and ``EnvironmentFile=`` lines.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from pathlib import Path

from edgevision.config import EdgeVisionConfig, load_config
from edgevision.config_load import expanding_from
from edgevision.errors import ConfigError
from edgevision.paths import data_file
from edgevision.service.units import CONFIG_DIR, UNIT_DIR, USER, Instance

#: What systemd sets for a system service running as ``USER`` (the values of the per-start ones are stand-ins).
SYSTEMD_SETS = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin",
    "USER": USER,
    "LOGNAME": USER,
    "HOME": "/var/lib/edgevision",
    "SHELL": "/usr/sbin/nologin",
    "INVOCATION_ID": "0" * 32,
    "JOURNAL_STREAM": "0:0",
    "NOTIFY_SOCKET": "/run/systemd/notify",
    "SYSTEMD_EXEC_PID": "1",
}
_DIRECTORIES = {
    "StateDirectory": ("STATE_DIRECTORY", "/var/lib"),
    "ConfigurationDirectory": ("CONFIGURATION_DIRECTORY", "/etc"),
    "RuntimeDirectory": ("RUNTIME_DIRECTORY", "/run"),
    "CacheDirectory": ("CACHE_DIRECTORY", "/var/cache"),
    "LogsDirectory": ("LOGS_DIRECTORY", "/var/log"),
}
_CREDENTIALS = ("LoadCredential", "LoadCredentialEncrypted", "SetCredential", "SetCredentialEncrypted")


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def _environment_file(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines (comments and blank lines skipped), as systemd reads an ``EnvironmentFile=``."""
    try:
        text = path.read_text()
    except OSError:
        return {}  # systemd fails the unit (or, with "-", ignores the file): nothing provided either way
    found = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key and not key.startswith(("#", ";")):
            found[key.strip()] = _unquote(value)
    return found


def service_environment(root: Path, inst: Instance) -> dict[str, str]:
    """The variables ``inst``'s unit gives the service: the unit as installed here, then its drop-ins in
    ``/etc/systemd/system`` under ``root`` (an ``EnvironmentFile=`` read from under ``root`` too)."""
    env = dict(SYSTEMD_SETS)
    name = inst.name or ""
    dirs = [f"{UNIT_DIR}/{inst.unit_file}.d", inst.dropin_dir] if inst.name else [inst.dropin_dir]
    texts = [data_file(f"systemd/{inst.unit_file}").read_text()]
    for d in dict.fromkeys(dirs):
        folder = root / d.lstrip("/")
        texts += (
            [f.read_text() for f in sorted(folder.glob("*.conf")) if f.is_file()] if folder.is_dir() else []
        )
    for text in texts:
        for line in text.splitlines():
            key, sep, value = line.partition("=")
            key, value = key.strip(), value.strip().replace("%i", name).replace("%%", "%")
            if not sep or key.startswith(("#", ";")):
                continue
            if key == "Environment":
                for assignment in shlex.split(value):
                    var, _, val = assignment.partition("=")
                    env[var] = val
            elif key == "EnvironmentFile" and value:
                env.update(_environment_file(root / value.removeprefix("-").lstrip("/")))
            elif key in _DIRECTORIES and value:
                var, base = _DIRECTORIES[key]
                env[var] = ":".join(f"{base}/{d}" for d in value.split())
            elif key in _CREDENTIALS:
                env["CREDENTIALS_DIRECTORY"] = f"/run/credentials/{inst.unit}"
    return env


def load_as_service(path: Path, environ: Mapping[str, str], inst: Instance) -> EdgeVisionConfig:
    """``path`` loaded and validated with the service's variables ``environ`` (:func:`service_environment`);
    a variable the service would not have is refused, saying how to give it one."""
    try:
        with expanding_from(environ):
            return load_config(path)
    except ConfigError as exc:
        if "environment variable" not in str(exc):
            raise
        env_file = f"{CONFIG_DIR}/{inst.name or 'edgevision'}.env"
        raise ConfigError(
            f"{exc}\n  the service gets only its unit's variables (Environment=, EnvironmentFile=), not this "
            f"shell's (nor sudo -E's): put NAME=value lines in {env_file} (root, 0600) and name it in a "
            f"drop-in {inst.dropin_dir}/environment.conf:\n    [Service]\n    EnvironmentFile={env_file}\n"
            "  then run service install again"
        ) from None
