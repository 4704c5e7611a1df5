"""Detection: typed results, label files, pure SSD tensor parsing and the SSD detector."""

from edgevision.detection.detector import Detector
from edgevision.results.detection import BBox, Detection, PixelBox

__all__ = ["BBox", "Detection", "Detector", "PixelBox"]
