"""The unit files the installer writes: the single-camera unit, the per-camera template, and the drop-in with the
device groups and device nodes the config needs (naming only groups that exist — systemd fails a unit whose
``SupplementaryGroups=`` names a missing group)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from edgevision.config import Device, EdgeVisionConfig
from edgevision.errors import ConfigError, UsageError
from edgevision.paths import data_file

USER = "edgevision"
CONFIG_DIR = "/etc/edgevision"
DATA_DIR = "/var/lib/edgevision"
MODELS_DIR = "/var/lib/edgevision/models"
UNIT_DIR = "/etc/systemd/system"
NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
RESERVED_NAMES = {"config", "models"}  # /etc/edgevision/config.yaml and /var/lib/edgevision/models


@dataclass(frozen=True)
class Instance:
    """Where one service lives: ``edgevision.service`` (``name`` None) or ``edgevision@NAME.service``."""

    name: str | None = None

    def __post_init__(self) -> None:
        if self.name is not None and (not NAME_RE.fullmatch(self.name) or self.name in RESERVED_NAMES):
            raise UsageError(
                f"--name {self.name!r}: use 1-32 lowercase letters, digits, '-' or '_' "
                f"(not {' or '.join(sorted(RESERVED_NAMES))}), e.g. --name door"
            )

    @property
    def unit(self) -> str:
        return "edgevision.service" if self.name is None else f"edgevision@{self.name}.service"

    @property
    def unit_file(self) -> str:
        """The file in /etc/systemd/system (the template for instances)."""
        return "edgevision.service" if self.name is None else "edgevision@.service"

    @property
    def config(self) -> str:
        return f"{CONFIG_DIR}/config.yaml" if self.name is None else f"{CONFIG_DIR}/{self.name}.yaml"

    @property
    def data_dir(self) -> str:
        return DATA_DIR if self.name is None else f"{DATA_DIR}/{self.name}"

    @property
    def dropin_dir(self) -> str:
        return f"{UNIT_DIR}/{self.unit}.d"

    @property
    def camera(self) -> str | None:
        """The camera name the unit passes (``EDGEVISION_CAMERA``) when the config sets none."""
        return self.name


def exec_for_unit(path: str) -> str:
    """``path`` as it may appear in ``ExecStart=`` (``%`` escaped; whitespace refused)."""
    if any(c.isspace() or c in "\"'\\" for c in path):
        raise ConfigError(
            f"{path}: the edgevision command's path contains a space or quote; install into a plain path "
            "such as /opt/edgevision/venv"
        )
    return path.replace("%", "%%")


def render_unit(exec_cmd: str, template: bool = False) -> str:
    """The unit (or the per-camera template) with ``ExecStart`` pointing at ``exec_cmd``."""
    name = "edgevision@.service" if template else "edgevision.service"
    return data_file(f"systemd/{name}").read_text().replace("@EXEC@", exec_for_unit(exec_cmd))


@dataclass(frozen=True)
class DeviceNeed:
    """A supplementary group and the device nodes it unlocks, and why the service needs them."""

    group: str
    devices: tuple[str, ...]
    why: str


CAMERA = DeviceNeed("video", (), "V4L2 cameras, libcamera (/dev/video*, /dev/media*, /dev/dma_heap/*)")
USB_CORAL = DeviceNeed("plugdev", ("char-usb_device",), "USB Coral (/dev/bus/usb/*, libedgetpu's udev rule)")
PCIE_CORAL = DeviceNeed("apex", ("char-apex",), "PCIe/M.2 Coral (/dev/apex_0, the gasket driver's udev rule)")


def device_needs(cfg: EdgeVisionConfig) -> list[DeviceNeed]:
    """What the config needs beyond the base unit's device list (cameras; the Coral with the Edge TPU)."""
    needs = [CAMERA]
    if cfg.runtime.device is Device.EDGETPU:
        needs += [USB_CORAL, PCIE_CORAL]
    return needs


def device_dropin(cfg: EdgeVisionConfig, group_exists: Callable[[str], bool]) -> tuple[str | None, list[str]]:
    """The ``groups.conf`` drop-in (None when nothing is needed) and a note for every need left out because
    its group does not exist here. A group is only named when it exists; its devices come with it."""
    groups: list[str] = []
    devices: list[str] = []
    notes: list[str] = []
    for need in device_needs(cfg):
        if group_exists(need.group):
            groups.append(need.group)
            devices += need.devices
        else:
            notes.append(f"group {need.group} does not exist: left out ({need.why} will not be reachable)")
    if not groups:
        return None, notes
    lines = [
        "# Written by `edgevision service install`: device groups that exist on this machine and their devices.",
        "[Service]",
        f"SupplementaryGroups={' '.join(groups)}",
        *(f"DeviceAllow={d} rw" for d in devices),
    ]
    return "\n".join(lines) + "\n", notes
