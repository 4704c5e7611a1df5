"""Build the capture runner for the configured source, and the packet feed its recording comes from."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from edgevision.capture.feed import PacketFeed
from edgevision.capture.replay import ReplayRunner
from edgevision.capture.runner import LiveRunner, Prepare

if TYPE_CHECKING:
    from edgevision.capture.sources import FrameSource
    from edgevision.config import EdgeVisionConfig

ENCODERS = ("h264_v4l2m2m", "libx264", "libopenh264", "mpeg4")


def encoder_codec(preference: str) -> str:
    """The :class:`~edgevision.capture.encoder.FrameEncoder` codec for ``recorder.codec`` (``auto`` for any
    name it does not know, such as FFmpeg's generic ``h264``)."""
    return preference if preference in ENCODERS else "auto"


def records_packets(cfg: EdgeVisionConfig) -> bool:
    """Whether clips are cut from the capture's packets: recording is on and no privacy redaction (blur or
    masks) applies; a redacted recording encodes the redacted frames in the recorder instead."""
    return cfg.recorder.enabled and not (cfg.privacy.blur_faces or cfg.privacy.masks)


def open_runner(
    cfg: EdgeVisionConfig, prepare: Prepare, record: bool | None = None, wait_at_start: bool = False
) -> tuple[LiveRunner | ReplayRunner, PacketFeed | None]:
    """The capture runner for ``cfg.source`` (replay, realtime replay or live) and, when recording from packets
    (``record``, by default :func:`records_packets`), the feed of the packets clips are cut from: the source's
    own packets for files and streams, the packets of one continuous encode for cameras. ``wait_at_start``
    (under systemd): a camera or stream absent at start is retried, not fatal.
    """
    from edgevision.capture.demux import DemuxSource
    from edgevision.capture.sources import OpenCVSource, Picamera2Source
    from edgevision.capture.stream import EncodingSource, PacketSource

    s = cfg.source
    codec = encoder_codec(cfg.recorder.codec)
    wait = wait_at_start
    replay = s.kind == "video" and not s.realtime
    if record is None:
        record = records_packets(cfg)
    feed = PacketFeed(blocking=replay) if record else None

    def live_runner(
        make: Callable[[], FrameSource], pace: bool = False, wait_at_start: bool = wait
    ) -> LiveRunner:
        return LiveRunner(
            make,
            prepare,
            stall_timeout=s.stall_timeout_s,
            backoff_initial=s.reconnect_initial_s,
            backoff_max=s.reconnect_max_s,
            pace=pace,
            wait_at_start=wait_at_start,
            open_timeout=s.open_timeout_s,
        )

    if s.kind == "picamera2":

        def pi_factory() -> FrameSource:
            return Picamera2Source(s.camera, s.picamera_main_size, s.picamera_lores_size, s.fps, feed=feed)

        return live_runner(pi_factory), feed
    if s.kind == "camera":

        def cam_factory() -> FrameSource:
            cam = OpenCVSource(
                s.camera,
                width=s.width,
                height=s.height,
                fps=s.fps,
                fourcc=s.fourcc,
                open_timeout_s=s.open_timeout_s,
                read_timeout_s=s.stall_timeout_s,
            )
            return EncodingSource(cam, feed, codec) if feed is not None else cam

        return live_runner(cam_factory), feed
    target = s.url if s.kind == "url" and s.url is not None else str(s.path)
    dropped: Callable[[], int] = lambda: 0  # noqa: E731 - replaced by the live runner's counter below

    def factory() -> FrameSource:
        demux = DemuxSource(target, open_timeout_s=s.open_timeout_s, read_timeout_s=s.stall_timeout_s)
        return PacketSource(demux, feed, lambda: dropped(), codec)

    if replay:
        replayer = ReplayRunner(factory(), prepare)
        if feed is not None:
            replayer.on_stop.append(feed.close)  # a capture thread waiting for room in the feed returns
        return replayer, feed
    live = live_runner(factory, pace=s.kind == "video", wait_at_start=wait and s.kind != "video")
    dropped = lambda: live.slot.dropped  # noqa: E731
    return live, feed
