"""Frozen, typed detection results. The coordinate convention is part of the type.

``BBox`` is *normalized*: ``xmin, ymin, xmax, ymax`` in ``[0, 1]`` relative to the frame, origin at the top-left
corner, x to the right and y down. ``PixelBox`` is the same box in integer pixels of a given frame size.
(TFLite SSD models emit ``ymin, xmin, ymax, xmax``; the parsers reorder, so no caller ever sees that order.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class PixelBox:
    """A box in pixels: ``x1, y1`` inclusive top-left, ``x2, y2`` exclusive bottom-right."""

    x1: int
    y1: int
    x2: int
    y2: int


@dataclass(frozen=True, slots=True)
class BBox:
    """Normalized ``[xmin, ymin, xmax, ymax]`` in ``[0, 1]``, origin top-left."""

    xmin: float
    ymin: float
    xmax: float
    ymax: float

    @classmethod
    def from_yxyx(cls, ymin: float, xmin: float, ymax: float, xmax: float) -> BBox:
        """Build from the TFLite SSD order, clipping to the frame (SSD boxes may overhang by a little)."""

        def c(v: float) -> float:
            return min(1.0, max(0.0, float(v)))

        return cls(c(xmin), c(ymin), c(xmax), c(ymax))

    @property
    def width(self) -> float:
        return max(0.0, self.xmax - self.xmin)

    @property
    def height(self) -> float:
        return max(0.0, self.ymax - self.ymin)

    @property
    def area(self) -> float:
        return self.width * self.height

    @property
    def center(self) -> tuple[float, float]:
        return ((self.xmin + self.xmax) / 2.0, (self.ymin + self.ymax) / 2.0)

    def iou(self, other: BBox) -> float:
        """Intersection over union with ``other`` (0 when either box is empty)."""
        ix = max(0.0, min(self.xmax, other.xmax) - max(self.xmin, other.xmin))
        iy = max(0.0, min(self.ymax, other.ymax) - max(self.ymin, other.ymin))
        inter = ix * iy
        union = self.area + other.area - inter
        return inter / union if union > 0 else 0.0

    def to_pixels(self, width: int, height: int) -> PixelBox:
        """The box in pixels of a ``width`` x ``height`` frame."""
        return PixelBox(
            round(self.xmin * width),
            round(self.ymin * height),
            round(self.xmax * width),
            round(self.ymax * height),
        )

    def as_list(self, ndigits: int = 4) -> list[float]:
        """``[xmin, ymin, xmax, ymax]`` rounded for JSON output."""
        return [
            round(self.xmin, ndigits),
            round(self.ymin, ndigits),
            round(self.xmax, ndigits),
            round(self.ymax, ndigits),
        ]


@dataclass(frozen=True, slots=True)
class Detection:
    """One detected object: label, 0-based class id, score in [0, 1] and a normalized box."""

    label: str
    class_id: int
    score: float
    box: BBox

    def to_dict(self) -> dict[str, Any]:
        """The JSON form used by ``edgevision detect --json`` and the detections log."""
        return {
            "label": self.label,
            "class_id": self.class_id,
            "score": round(self.score, 4),
            "box": self.box.as_list(),
        }
