"""The pre-roll ring: the last ``seconds`` of frames, JPEG-compressed, bounded by time and by bytes.

A 720p frame is 2.7 MB raw but about 100 KB as a JPEG, so a few seconds of pre-roll fit in a few MB on a Pi.
When the byte bound would be exceeded the oldest frames go first, and ``trimmed`` counts frames lost that way
(the pre-roll is then shorter than configured; the recorder reports it).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class RingFrame:
    """One buffered frame: its timestamp, index and JPEG bytes."""

    ts: float
    index: int
    jpeg: bytes

    def decode(self) -> np.ndarray:
        image = cv2.imdecode(np.frombuffer(self.jpeg, np.uint8), cv2.IMREAD_UNCHANGED)
        if image is None:
            raise ValueError("corrupt pre-roll frame")
        return image


class PreRollRing:
    """Time- and memory-bounded buffer of recent frames. Used by the recorder thread only (not thread-safe)."""

    def __init__(self, seconds: float, max_bytes: int, jpeg_quality: int = 90) -> None:
        self.seconds = seconds
        self.max_bytes = max_bytes
        self.quality = jpeg_quality
        self._frames: deque[RingFrame] = deque()
        self.bytes = 0
        self.trimmed = 0

    def push(self, ts: float, index: int, image: np.ndarray) -> None:
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if not ok:
            raise ValueError("JPEG encoding of a pre-roll frame failed")
        item = RingFrame(ts, index, buf.tobytes())
        self._frames.append(item)
        self.bytes += len(item.jpeg)
        # Keep one frame older than the window so the clip can start at or before trigger - seconds.
        while len(self._frames) > 2 and ts - self._frames[1].ts >= self.seconds:
            self._drop()
        while self.bytes > self.max_bytes and len(self._frames) > 1:
            self._drop()
            self.trimmed += 1

    def _drop(self) -> None:
        old = self._frames.popleft()
        self.bytes -= len(old.jpeg)

    def since(self, ts: float) -> list[RingFrame]:
        """Frames from the last one at or before ``ts`` onwards (so the clip covers ``ts``)."""
        frames = list(self._frames)
        start = 0
        for i, f in enumerate(frames):
            if f.ts <= ts:
                start = i
        return frames[start:]

    def clear(self) -> None:
        self._frames.clear()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._frames)
