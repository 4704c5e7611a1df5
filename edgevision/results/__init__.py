"""Results: the typed values every stage passes on (frames, detections, faces, events, frame results) and the
protocols of the stages that make and consume them. Imports nothing above itself; everything imports it."""

from edgevision.results.detection import BBox, Detection, PixelBox
from edgevision.results.events import EventEnd, EventStart, EventStats, EventUpdate
from edgevision.results.face import Face, HeadPose
from edgevision.results.frame import Frame, PreparedInput
from edgevision.results.result import (
    DetectMode,
    DetectOutcome,
    DetectStep,
    FrameResult,
    IdleEventSink,
    Latency,
    Sink,
    Stage,
    SwitchInfo,
)

__all__ = [
    "BBox",
    "DetectMode",
    "DetectOutcome",
    "DetectStep",
    "Detection",
    "EventEnd",
    "EventStart",
    "EventStats",
    "EventUpdate",
    "Face",
    "Frame",
    "FrameResult",
    "HeadPose",
    "IdleEventSink",
    "Latency",
    "PixelBox",
    "PreparedInput",
    "Sink",
    "Stage",
    "SwitchInfo",
]
