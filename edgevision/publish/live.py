"""The live view: the latest annotated frame, JPEG-encoded at most ``fps`` times a second — only while someone
watches.

The pipeline only stores a reference (O(1), never waits). Nothing is drawn or encoded (and a lazily decoded
frame never becomes a full-resolution image) unless an HTTP client asked for a picture within the last
``watch_s`` seconds: the stream's clients keep asking, a snapshot request encodes the latest frame on the spot.
Clients wait on a sequence number with a timeout and always get the newest JPEG, so a slow client skips frames
instead of slowing anything down.
"""

from __future__ import annotations

import threading
import time

import cv2

from edgevision.render import draw_detections, draw_faces
from edgevision.results import FrameResult


class LiveView:
    """A pipeline sink holding the latest frame, plus the encoder thread that serves JPEGs to clients."""

    def __init__(self, fps: float = 10.0, quality: int = 80, watch_s: float = 2.0) -> None:
        self.period = 1.0 / fps
        self.quality = quality
        self.watch_s = watch_s
        self._cond = threading.Condition()  # guards _latest, _jpeg, _jpeg_of, _seq, _wanted_until
        self._latest: FrameResult | None = None
        self._jpeg: bytes | None = None
        self._jpeg_of: FrameResult | None = None  # the result the current JPEG shows
        self._seq = 0
        self._wanted_until = 0.0  # monotonic time until which someone is watching
        self.encoded = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="live-view", daemon=True)
        self._thread.start()

    def on_result(self, result: FrameResult) -> None:
        with self._cond:
            self._latest = result  # frames are never written to after capture: sharing the reference is safe

    @property
    def watched(self) -> bool:
        """Whether a client asked for a picture within the last ``watch_s`` seconds."""
        with self._cond:
            return time.monotonic() < self._wanted_until

    def _encode(self, result: FrameResult) -> None:
        image = result.frame.image
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image.copy()
        draw_detections(image, result.detections)
        if result.faces:
            draw_faces(image, result.faces, landmarks=False, keypoints=not result.faces_blurred)
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if ok:
            with self._cond:
                if self._jpeg_of is result:
                    return  # another thread encoded it meanwhile
                self._jpeg, self._jpeg_of = buf.tobytes(), result
                self._seq += 1
                self.encoded += 1
                self._cond.notify_all()

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            with self._cond:
                result = self._latest
                wanted = time.monotonic() < self._wanted_until
            if result is None or result is self._jpeg_of or not wanted:
                continue
            self._encode(result)

    @property
    def closed(self) -> bool:
        return self._stop.is_set()

    def wait(self, after: int, timeout: float) -> tuple[int, bytes | None]:
        """The newest JPEG once its sequence number is past ``after`` (or the current one on timeout).

        Asking marks the view as watched; a first request (``after`` < 0) gets the latest frame encoded now."""
        with self._cond:
            self._wanted_until = time.monotonic() + self.watch_s
            latest, stale = self._latest, self._latest is not self._jpeg_of
        if after < 0 and stale and latest is not None:
            self._encode(latest)
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._seq <= after and not self._stop.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            return self._seq, self._jpeg

    def close(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self._thread.join(timeout=5)
