"""The frame source of a run: the capture runner for ``source:`` and the frames the scheduler profiles on."""

from __future__ import annotations

import numpy as np

from edgevision.capture.runner import LiveRunner, Prepare, ReplayRunner
from edgevision.capture.sources import FrameSource, OpenCVSource, Picamera2Source, read_frames
from edgevision.config import SourceConfig, SourceKind
from edgevision.service.notify import supervised


def build_runner(s: SourceConfig, prepare: Prepare) -> LiveRunner | ReplayRunner:
    """The capture runner for the configured source (replay, realtime replay or live). Nothing opens here: the
    source opens when the pipeline starts the runner."""
    wait = supervised()  # under systemd a camera or stream absent at start is retried, not fatal
    if s.kind is SourceKind.PICAMERA2:

        def pi_factory() -> FrameSource:
            return Picamera2Source(s.camera, s.picamera_main_size, s.picamera_lores_size, s.fps)

        return LiveRunner(
            pi_factory,
            prepare,
            s.stall_timeout_s,
            s.reconnect_initial_s,
            s.reconnect_max_s,
            wait_at_start=wait,
            open_timeout=s.open_timeout_s,
        )
    target: int | str
    if s.kind is SourceKind.CAMERA:
        target = s.camera
    elif s.kind is SourceKind.URL and s.url is not None:
        target = s.url
    else:
        target = str(s.path)

    def factory() -> FrameSource:
        return OpenCVSource(
            target,
            width=s.width,
            height=s.height,
            fps=s.fps,
            fourcc=s.fourcc,
            open_timeout_s=s.open_timeout_s,
            read_timeout_s=s.stall_timeout_s,
        )

    if replays(s):
        return ReplayRunner(factory(), prepare)
    return LiveRunner(
        factory,
        prepare,
        s.stall_timeout_s,
        s.reconnect_initial_s,
        s.reconnect_max_s,
        pace=s.kind is SourceKind.VIDEO,
        wait_at_start=wait and s.kind is not SourceKind.VIDEO,
        open_timeout=s.open_timeout_s,
    )


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
