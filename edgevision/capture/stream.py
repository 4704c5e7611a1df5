"""Sources whose recording is packets: a demuxed file or stream, or a raw camera encoded once as it captures.

Both are :class:`~edgevision.capture.sources.FrameSource` s for the capture runners, with one more output: the
packets of the recording, handed to a :class:`~edgevision.capture.feed.PacketFeed` on the capture thread.

* :class:`PacketSource` — a file, RTSP or HTTP stream through :class:`~edgevision.capture.demux.DemuxSource`.
  A remuxable stream (H.264/H.265) gives its own packets: nothing is encoded. Any other codec (an MJPEG AVI, an
  HTTP MJPEG stream, MPEG-4 part 2) is encoded once, from the decoder's YUV, by a
  :class:`~edgevision.capture.encoder.FrameEncoder`. Frames are decoded pictures: inference scales them straight
  to its input, and a BGR image is made only when a consumer asks (:meth:`Frame.lazy
  <edgevision.results.frame.Frame.lazy>`). A live stream whose frames are being dropped because inference is
  slower lets the decoder skip non-reference frames (:func:`next_skip`) — its packets are all kept.
* :class:`EncodingSource` — any source of images (an OpenCV V4L2 camera) whose images are encoded once, as
  captured, into the feed.

Without a feed (recording off) the packets are simply not kept.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

from edgevision.capture.demux import DecodedFrame, DemuxSource, FrameSkip
from edgevision.capture.encoder import FrameEncoder, MjpegDecoder, MjpegPicture
from edgevision.capture.feed import PacketFeed
from edgevision.capture.packets import StreamInfo
from edgevision.capture.sources import FrameSource
from edgevision.errors import InputError
from edgevision.results.frame import DecodedImage, UndecodablePicture

log = logging.getLogger(__name__)

# A live stream switches its decoder to skipping non-reference frames when more than SKIP_ON of the frames it
# delivered in a window were dropped unprocessed, and back when fewer than SKIP_OFF were.
SKIP_WINDOW = 50
SKIP_ON = 0.3
SKIP_OFF = 0.05
# A file's check at open keeps the packets it read for the first read, up to this; a file whose first frame comes
# later is read again from its start instead (one that never decodes is refused without being held whole).
PEEK_MAX_BYTES = 32 << 20


def next_skip(current: FrameSkip, dropped: int, delivered: int) -> FrameSkip:
    """The decoder's skip mode after a window of ``delivered`` frames of which ``dropped`` went unprocessed
    (pure; hysteresis between :data:`SKIP_ON` and :data:`SKIP_OFF`)."""
    if delivered <= 0:
        return current
    ratio = dropped / delivered
    if current is FrameSkip.NONE and ratio > SKIP_ON:
        return FrameSkip.NONREF
    if current is FrameSkip.NONREF and ratio < SKIP_OFF:
        return FrameSkip.NONE
    return current


class PacketSource:
    """A :class:`DemuxSource` as a frame source: one decoded frame per ``read``; packets to ``feed``.

    ``dropped`` (a callable: frames the runner dropped so far, for live sources) drives :func:`next_skip`.
    ``encoder_codec`` is the encoder for a stream that cannot be remuxed.
    """

    def __init__(
        self,
        demux: DemuxSource,
        feed: PacketFeed | None = None,
        dropped: Any = None,
        encoder_codec: str = "auto",
    ) -> None:
        self.demux = demux
        self.feed = feed
        self.source_id = demux.source_id
        self.live = demux.live
        self.fps: float | None = None
        self._dropped = dropped
        self._codec = encoder_codec
        self._encoder: FrameEncoder | None = None
        self._encodes = False  # its clips are encoded (a codec MP4 cannot carry), from its first frame on
        self._announced: StreamInfo | None = None  # the stream this source started in the feed
        self._pending: deque[DecodedFrame] = deque()
        self._early: list[Any] = []  # what the open-time check read: replayed by read()
        self._on_packet: Callable[[], bool] | None = None
        self._skip = FrameSkip.NONE
        self._window = (0, 0)  # (dropped, delivered) at the start of the current window
        self.delivered = 0
        self.encoded = 0

    @property
    def encoder(self) -> FrameEncoder | None:
        """The one continuous encode of a stream that cannot be remuxed (None when its packets are kept, and until
        its first frame)."""
        return self._encoder

    def watch_packets(self, on_packet: Callable[[], bool]) -> None:
        """Call ``on_packet`` at every packet read (a live runner's sign of life: a stream joined mid-GOP gives
        packets long before its first frame); its False ends the stream (the runner gave the connection up)."""
        self._on_packet = on_packet

    def open(self) -> None:
        self.demux.open()
        self.fps = self.demux.fps
        # ``dropped`` counts the whole run: this connection's first window starts from the count now
        self._window = (
            int(self._dropped()) if self.live and self._dropped is not None else 0,
            self.delivered,
        )
        info = self.demux.stream_info
        assert info is not None
        if not self.live:
            self._peek_first_frame()
        if self.feed is None:
            return
        if info.remuxable:
            self._announced = info
            self.feed.start_stream(info)
            return
        self._encodes = True

    def _start_encode(self, first: DecodedFrame) -> FrameEncoder:
        """The one continuous encode, started at the first frame: of its size as a player shows it (a rotated
        video's display matrix applied: :meth:`_picture`)."""
        info = self.demux.stream_info
        assert info is not None and self.feed is not None
        width, height = first.size
        self._encoder = FrameEncoder(width, height, self.fps or 25.0, self._codec)
        self._announced = self._encoder.stream_info
        self.feed.start_stream(self._announced)
        log.info(
            "%s: %s cannot be remuxed into MP4; recording encodes it once with %s",
            self.source_id,
            info.codec,
            self._encoder.codec,
        )
        return self._encoder

    @staticmethod
    def _picture(frame: DecodedFrame) -> Any:
        """What the encoder takes of ``frame``: the decoder's YUV, or for a rotated video the upright image (an
        encoded clip has no display matrix: the decoder's picture would play on its side)."""
        return frame.bgr() if frame.turns else frame.av_frame

    def _peek_first_frame(self) -> None:
        """A file must decode to at least one frame: refuse it now, not after the run started. Its packets up to
        there are kept and handed over with the first :meth:`read` (up to :data:`PEEK_MAX_BYTES`)."""
        self._early, held = [], 0
        while not self._pending:
            item = self.demux.read()
            if item is None:
                self._early.clear()
                self.demux.close()
                raise InputError(f"{self.source_id}: no decodable video frame (truncated or corrupt file)")
            held += item.packet.size if item.packet is not None else 0
            if held > PEEK_MAX_BYTES:
                self._early.clear()  # too much to hold: read again from the start below
            else:
                self._early.append(item)
            self._pending.extend(item.frames)
        self._pending.clear()
        if held > PEEK_MAX_BYTES:
            self.demux.close()
            self.demux.open()

    def read(self) -> tuple[DecodedFrame, float, None] | None:
        while not self._pending:
            if self._announced is not None and self.feed is not None and self.feed.replaced(self._announced):
                # a stall gave this connection up for a new one: its packets would land in the new one's clips
                return None
            item = self._early.pop(0) if self._early else self.demux.read()
            if item is None:
                self._flush()
                return None
            if item.packet is not None and self._on_packet is not None and not self._on_packet():
                return None
            if item.packet is not None and self.feed is not None and not self._encodes:
                self.feed.put(item.packet, stream=self._announced)
            for frame in item.frames:
                if self._encodes and self.feed is not None:
                    encoder = self._encoder or self._start_encode(frame)
                    for packet in encoder.encode(self._picture(frame), frame.ts):
                        self.feed.put(packet, stream=self._announced)
                    self.encoded += 1
                self._pending.append(frame)
        frame = self._pending.popleft()
        self.delivered += 1
        self._adapt()
        return frame, frame.ts, None

    def _adapt(self) -> None:
        """Live: skip non-reference frames while inference cannot keep up (their packets are still kept)."""
        if not self.live or self._dropped is None:
            return
        d0, n0 = self._window
        if self.delivered - n0 < SKIP_WINDOW:
            return
        dropped = int(self._dropped())
        skip = next_skip(self._skip, dropped - d0, self.delivered - n0)
        self._window = (dropped, self.delivered)
        if skip is not self._skip:
            log.info(
                "%s: decoder now skips %s frames (inference %s)",
                self.source_id,
                skip.name,
                "falls behind" if skip is FrameSkip.NONREF else "keeps up",
            )
            self._skip = skip
            self.demux.set_skip(skip)

    def _flush(self) -> None:
        encoder, self._encoder, self._encodes = self._encoder, None, False
        if encoder is not None and self.feed is not None:
            drain(encoder, self.feed, self.source_id, self._announced)

    def close(self) -> None:
        self._pending.clear()
        try:
            self._flush()
        finally:
            self.demux.close()


def drain(encoder: FrameEncoder, feed: PacketFeed, source_id: str, stream: StreamInfo | None = None) -> None:
    """Hand ``feed`` the packets ``encoder`` still holds (a hardware encoder keeps a few frames queued): the
    last frames before a disconnect or the end reach the clip, unless a newer ``stream`` replaced the one they
    belong to. An encoder failing here is logged, not raised: the source is closing either way."""
    try:
        packets = encoder.flush()
    except Exception as exc:  # a codec error (PyAV's FFmpegError is an OSError / ValueError)
        log.warning("%s: draining the encoder failed: %s", source_id, exc)
        return
    for packet in packets:
        feed.put(packet, stream=stream)


class EncodingSource:
    """A source of images whose every captured image is encoded once, on the capture thread, into ``feed``."""

    def __init__(self, source: FrameSource, feed: PacketFeed, codec: str = "auto") -> None:
        self.source = source
        self.feed = feed
        self.codec = codec
        self.source_id = source.source_id
        self.live = source.live
        self.fps: float | None = None
        self._encoder: FrameEncoder | None = None
        self._announced: StreamInfo | None = None  # the stream of the current encode, as started in the feed
        self._mjpeg: MjpegDecoder | None = None
        self._drained = False  # the encoder gave what it held: the stream ended

    def open(self) -> None:
        self.source.open()
        self.fps = self.source.fps
        self._encoder = None  # made at the first image, whose size the camera decided
        self._drained = False

    def read(self) -> tuple[np.ndarray | DecodedImage, float, np.ndarray | None] | None:
        item = self.source.read()
        if item is None:
            self._drain()
            return None
        image, ts, full = item
        picture: Any = full if full is not None else image
        if isinstance(picture, MjpegPicture):  # the camera's JPEG: FFmpeg decodes it to YUV for the encoder
            if self._mjpeg is None:
                self._mjpeg = MjpegDecoder()
            size = picture.size
            try:
                picture = self._mjpeg.decode(picture.jpeg)
            except UndecodablePicture as exc:  # damaged: the clip goes without it, inference skips it too
                log.debug("%s: %s; not recorded", self.source_id, exc)
                return item
        elif isinstance(picture, np.ndarray):
            size = (picture.shape[1], picture.shape[0])
        else:
            size = picture.size
            picture = picture.bgr()
        if self._encoder is None or self._drained:
            self._encoder, self._drained = FrameEncoder(size[0], size[1], self.fps or 25.0, self.codec), False
            self._announced = self._encoder.stream_info
            self.feed.start_stream(self._announced)
        for packet in self._encoder.encode(picture, ts):  # refused once a reconnect replaced this camera
            self.feed.put(packet, stream=self._announced)
        return item

    def _drain(self) -> None:
        if self._encoder is not None and not self._drained:
            self._drained = True  # kept for its counts; an image after this starts a new encode
            drain(self._encoder, self.feed, self.source_id, self._announced)

    def close(self) -> None:
        try:
            self._drain()
        finally:
            self.source.close()
