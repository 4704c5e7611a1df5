"""Test media built from the real clips in ../shared: spliced replay sequences with known person spans."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from conftest import HALLWAY_3, WALKING

SIZE = (640, 360)
FPS = 25.0


def _frames(path: Path, count: int, start: int = 0) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    i = 0
    out: list[np.ndarray] = []
    while len(out) < count:
        ok, img = cap.read()
        if not ok:
            cap.release()
            cap = cv2.VideoCapture(str(path))  # loop short clips
            continue
        if i >= start:
            out.append(cv2.resize(img, SIZE, interpolation=cv2.INTER_AREA))
        i += 1
    cap.release()
    return out


def splice(path: Path, segments: list[tuple[str, int]]) -> list[tuple[int, int]]:
    """Write a 640x360 25 fps MJPEG AVI of segments ("empty" hallway or "people" walking, frame count).

    Returns the [first, last] frame index of each "people" segment.
    """
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), FPS, SIZE)
    spans = []
    pos = 0
    walk_pos = 0
    for kind, count in segments:
        if kind == "people":
            frames = _frames(WALKING, count, walk_pos)
            walk_pos += count
            spans.append((pos, pos + count - 1))
        else:
            frames = _frames(HALLWAY_3, count)
        for f in frames:
            writer.write(f)
        pos += count
    writer.release()
    return spans


class DamagedPicture:
    """A camera JPEG whose header parsed and whose picture does not decode (a ``DecodedImage`` for
    ``Frame.lazy``)."""

    size = (64, 48)

    def model_input(self, width: int, height: int, pixel_format: str = "rgb24") -> np.ndarray:
        from edgevision.results.frame import UndecodablePicture

        raise UndecodablePicture("not a decodable JPEG")

    def bgr(self) -> np.ndarray:
        return self.model_input(0, 0)
