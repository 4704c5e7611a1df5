"""Typed face results. Coordinates are normalized to the frame (x right, y down, origin top-left)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgevision.results.detection import BBox


@dataclass(frozen=True)
class HeadPose:
    """Approximate head pose in degrees from landmark geometry: yaw (+ = turned to the image's right),
    pitch (+ = looking up), roll (+ = head tilted clockwise in the image)."""

    yaw: float
    pitch: float
    roll: float


@dataclass(frozen=True)
class Face:
    """A detected face: box, the 6 BlazeFace keypoints and, when the landmark model ran, 468 landmarks.

    ``landmarks`` are (x, y, z): x and y normalized to the frame; z is relative depth in the same units as x
    (smaller = closer to the camera). ``presence`` is the landmark model's face-presence probability.
    """

    score: float
    box: BBox
    keypoints: dict[str, tuple[float, float]]
    landmarks: tuple[tuple[float, float, float], ...] | None = None
    presence: float | None = None
    pose: HeadPose | None = None

    def to_dict(self, with_landmarks: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "score": round(self.score, 4),
            "box": self.box.as_list(),
            "keypoints": {k: [round(x, 4), round(y, 4)] for k, (x, y) in self.keypoints.items()},
        }
        if self.presence is not None:
            out["presence"] = round(self.presence, 4)
        if self.pose is not None:
            out["pose"] = {
                "yaw": round(self.pose.yaw, 1),
                "pitch": round(self.pose.pitch, 1),
                "roll": round(self.pose.roll, 1),
            }
        if with_landmarks and self.landmarks is not None:
            out["landmarks"] = [[round(x, 4), round(y, 4), round(z, 4)] for x, y, z in self.landmarks]
        return out
