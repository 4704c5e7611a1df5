"""The frame source of a run as the composition root sees it (the runner itself: ``capture.factory.open_runner``)
and the frames the scheduler profiles on."""

from __future__ import annotations

import numpy as np

from edgevision.capture.sources import read_frames
from edgevision.config import Device, EdgeVisionConfig, SourceConfig, SourceKind


def replays(s: SourceConfig) -> bool:
    """A deterministic replay (every frame, as fast as it can go) rather than a live or paced source."""
    return s.kind is SourceKind.VIDEO and not s.realtime


def interpreters(cfg: EdgeVisionConfig) -> tuple[int, int]:
    """How the fixed detector runs: (interpreters side by side, threads each).

    ``runtime.parallel: N`` splits ``runtime.threads`` among N interpreters. ``auto`` (the default) runs one
    single-thread interpreter per thread when replaying a file on the CPU without the scheduler — a replay wants
    throughput, and whole frames side by side use the cores better than one interpreter's threads — and one
    interpreter with every thread otherwise: a live camera wants each frame soon, an Edge TPU runs one frame at
    a time, and the scheduler switches models per frame.
    """
    r = cfg.runtime
    if r.parallel == "auto":
        fits = replays(cfg.source) and r.device is Device.CPU and not cfg.scheduler.enabled
        n = r.threads if fits else 1
    else:
        n = r.parallel
    return n, max(1, r.threads // n)


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
