"""The unit that flows through the pipeline."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class PreparedInput:
    """A model input tensor made ahead of time (on the capture thread) for a detector of ``size`` (w, h).

    ``ms`` is what making it cost. The tensor is owned by the frame that carries it; nobody writes into it.
    """

    size: tuple[int, int]
    tensor: np.ndarray
    ms: float


@dataclass(frozen=True, eq=False)
class Frame:
    """One captured frame.

    ``ts`` is seconds on the source's clock: the media timestamp for files (so replays are deterministic), the
    monotonic clock for live sources. ``index`` counts frames read from the source (dropped ones included).
    ``image`` is BGR uint8 (or grayscale) and owned by this frame: nobody writes into it after capture.
    ``full`` is an optional higher-resolution image kept for recording (the Pi camera's main stream).
    ``captured_at`` is ``time.monotonic()`` when the frame left the source (for end-to-end latency).
    ``prepared`` is the tensor the capture thread already made for the detector current at capture time, so
    preprocessing overlaps with inference; a frame is immutable, so the capture thread attaches it by making a new
    frame (:meth:`with_prepared`) before the hand-off, and the queue orders that write before every read.
    """

    image: np.ndarray
    ts: float
    index: int
    source_id: str
    full: np.ndarray | None = None
    captured_at: float = 0.0
    prepared: PreparedInput | None = None

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of ``image``."""
        return int(self.image.shape[1]), int(self.image.shape[0])

    @property
    def best_image(self) -> np.ndarray:
        """The highest-resolution image this frame has (``full`` when the source gave one, else ``image``)."""
        return self.full if self.full is not None else self.image

    def with_prepared(self, prepared: PreparedInput) -> Frame:
        """This frame carrying ``prepared``."""
        return Frame(self.image, self.ts, self.index, self.source_id, self.full, self.captured_at, prepared)
