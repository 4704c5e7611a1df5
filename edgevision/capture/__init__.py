"""Capture: frame sources (OpenCV, picamera2), the latest-frame slot and the capture threads."""

from edgevision.capture.runner import CaptureStats, LiveRunner, ReplayRunner
from edgevision.capture.slot import LatestSlot
from edgevision.capture.sources import OpenCVSource, Picamera2Source
from edgevision.results.frame import Frame

__all__ = [
    "CaptureStats",
    "Frame",
    "LatestSlot",
    "LiveRunner",
    "OpenCVSource",
    "Picamera2Source",
    "ReplayRunner",
]
