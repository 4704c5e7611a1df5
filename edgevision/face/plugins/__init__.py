"""Face detector plugins, one module each; :data:`PLUGINS` maps each key to its class."""

from __future__ import annotations

from edgevision.face.detector import FaceDetectorPlugin
from edgevision.face.plugins.blazeface import BlazeFaceDetector
from edgevision.face.plugins.ssd import SsdFaceDetector

_ALL: tuple[FaceDetectorPlugin, ...] = (BlazeFaceDetector, SsdFaceDetector)  # a new plugin: one entry here
PLUGINS: dict[str, FaceDetectorPlugin] = {p.key: p for p in _ALL}

__all__ = ["PLUGINS", "BlazeFaceDetector", "SsdFaceDetector"]
