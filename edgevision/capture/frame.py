"""The unit that flows through the pipeline."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True, eq=False)
class Frame:
    """One captured frame.

    ``ts`` is seconds on the source's clock: the media timestamp for files (so replays are deterministic), the
    monotonic clock for live sources. ``index`` counts frames read from the source (dropped ones included).
    ``image`` is BGR uint8 (or grayscale) and owned by this frame: nobody writes into it after capture.
    ``full`` is an optional higher-resolution image kept for recording (the Pi camera's main stream).
    ``captured_at`` is ``time.monotonic()`` when the frame left the source (for end-to-end latency).
    ``prepared`` maps a model input size to the tensor the capture thread already made for it (and the ms it
    took), so preprocessing overlaps with inference.
    """

    image: np.ndarray
    ts: float
    index: int
    source_id: str
    full: np.ndarray | None = None
    captured_at: float = 0.0
    prepared: dict[tuple[int, int], tuple[np.ndarray, float]] = field(default_factory=dict)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of ``image``."""
        return int(self.image.shape[1]), int(self.image.shape[0])
