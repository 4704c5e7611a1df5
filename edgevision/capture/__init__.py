"""Capture: frame sources (demuxed files and streams, OpenCV cameras, picamera2), the packet feed of the recording,
the latest-frame slot and the capture threads. :func:`~edgevision.capture.factory.open_runner` builds them."""

from edgevision.capture.feed import PacketFeed, StreamStart
from edgevision.capture.replay import ReplayRunner
from edgevision.capture.runner import CaptureStats, LiveRunner
from edgevision.capture.slot import LatestSlot
from edgevision.capture.sources import OpenCVSource, Picamera2Source
from edgevision.results.frame import Frame

__all__ = [
    "CaptureStats",
    "Frame",
    "LatestSlot",
    "LiveRunner",
    "OpenCVSource",
    "PacketFeed",
    "Picamera2Source",
    "ReplayRunner",
    "StreamStart",
]
