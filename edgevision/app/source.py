"""The frame source of a run as the composition root sees it (the runner itself: ``capture.factory.open_runner``)
and the frames the scheduler profiles on."""

from __future__ import annotations

import numpy as np

from edgevision.capture.sources import read_frames
from edgevision.config import SourceConfig, SourceKind


def replays(s: SourceConfig) -> bool:
    """A deterministic replay (every frame, as fast as it can go) rather than a live or paced source."""
    return s.kind is SourceKind.VIDEO and not s.realtime


def sample_frames(s: SourceConfig, count: int = 5) -> list[np.ndarray]:
    """Frames to profile rungs on: the first frames of a video source, else deterministic noise (invoke
    latency of these models does not depend on image content)."""
    frames: list[np.ndarray] = []
    if s.kind is SourceKind.VIDEO and s.path is not None:
        frames = read_frames(s.path, count)
    rng = np.random.default_rng(0)
    while len(frames) < count:
        frames.append(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8))
    return frames
