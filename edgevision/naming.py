"""The camera's name: one source of truth for the event index, MQTT topics and Home Assistant's device.

``recorder.camera`` names the camera when set, then ``$EDGEVISION_CAMERA`` (``edgevision@NAME.service`` sets it
to NAME); otherwise the name is derived from the source (``camera0``, ``picamera0``, a video file's stem, a
stream's host and path — never its credentials). MQTT topics and Home
Assistant ids use :func:`topic_name`, the same name reduced to ``[A-Za-z0-9_-]``.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
from pathlib import Path

from edgevision.config import EdgeVisionConfig, SourceKind
from edgevision.redact import camera_name_from_url


def camera_name(cfg: EdgeVisionConfig) -> str:
    """The configured camera name, or one derived from the source."""
    if cfg.recorder.camera:
        return cfg.recorder.camera
    instance = os.environ.get("EDGEVISION_CAMERA")  # set by edgevision@NAME.service to NAME
    if instance:
        return instance
    s = cfg.source
    if s.kind in ("camera", "picamera2"):
        return f"{s.kind}{s.camera}"
    if s.kind is SourceKind.VIDEO:
        return Path(str(s.path)).stem
    return camera_name_from_url(str(s.url))  # host, port and path: never user:password@


def topic_name(name: str) -> str:
    """``name`` as one MQTT topic level and a Home Assistant id: runs of other characters become ``_``."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_") or "camera"


def device_id() -> str:
    """This machine's id as MQTT shows it (12 hex digits): a hash of the systemd machine id (the hostname where
    there is none), so two devices — even two Pis both left at the hostname ``raspberrypi`` — never share it,
    and the machine id itself is not published (systemd asks applications to hash it)."""
    raw = ""
    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            raw = Path(path).read_text(errors="replace").strip()
        except OSError:
            continue
        if raw:
            break
    return hashlib.sha256(f"edgevision:{raw or socket.gethostname()}".encode()).hexdigest()[:12]
