"""Compressed sources (files, RTSP, HTTP) through PyAV: demux once, keep the packets, convert only what is asked.

Each :meth:`DemuxSource.read` returns one video packet of the source — its payload and timing for the pre-roll
ring and clips (no re-encode) — and the frames that decoding it produced. A decoded frame is a
:class:`DecodedFrame`: nothing is converted until a consumer asks.

* :meth:`DecodedFrame.model_input` scales and converts the decoder's YUV straight to the detector's RGB input
  size with FFmpeg's scaler (one pass, area-averaged, cached per size), instead of converting the full
  frame to BGR, then to RGB, then resizing;
* :meth:`DecodedFrame.bgr` makes the full-resolution BGR image only for a consumer that needs one (a
  snapshot, the live view, saved video, privacy blur).

Decoding every packet is needed anyway (each frame refers to earlier ones), with two exceptions for a
consumer that does not need every frame: :meth:`DemuxSource.set_skip` lets FFmpeg skip frames nothing refers to
(``NONREF``: B-frames, often most of a file's frames) or all but keyframes (``NONKEY``), and
``read(decode=False)`` skips decoding up to the next keyframe (record-only, an idle scheduler). Packets are
returned in full either way: recording never misses one. Timestamps: files on the media clock (seconds from the stream's start, so replays are
deterministic), live streams on ``clock`` (monotonic) anchored at the first packet and advanced by the
stream's own timestamps, re-anchored when the two drift apart by more than ``max_drift_s``.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from edgevision.capture.packets import REMUXABLE_CODECS, EncodedPacket, StreamInfo, detached_template
from edgevision.capture.sources import redact_url
from edgevision.errors import InputError

log = logging.getLogger(__name__)

STREAM_SCHEMES = ("rtsp://", "rtsps://", "http://", "https://")
_local = threading.local()  # one FFmpeg scaler per thread: its SwsContext cache is not thread-safe


def _reformatter() -> Any:
    r = getattr(_local, "reformatter", None)
    if r is None:
        from av.video.reformatter import VideoReformatter

        r = _local.reformatter = VideoReformatter()
    return r


def quarter_turns(frame: Any) -> int:
    """How many quarter turns counterclockwise (``np.rot90``'s ``k``) show ``frame`` upright: its display
    matrix (a phone's portrait video is landscape pictures marked to be turned), 0 without one."""
    return round(float(getattr(frame, "rotation", 0) or 0) / 90) % 4


class DecodedFrame:
    """A decoded frame whose conversions are made on demand and cached.

    Owned by one thread at a time (handed over through the capture slot); the FFmpeg scaler used is the
    calling thread's own. ``release()`` drops the decoder's frame (and the cached images) early. The images it
    makes are upright, as a player shows them (the stream's display matrix applied); ``av_frame`` is the
    decoder's picture as it is.
    """

    def __init__(self, frame: Any, ts: float, index: int, interpolation: str = "AREA") -> None:
        self._frame = frame
        self.ts = ts
        self.index = index
        self.turns = quarter_turns(frame)
        self.width, self.height = int(frame.width), int(frame.height)
        if self.turns % 2:
            self.width, self.height = self.height, self.width
        self.interpolation = interpolation
        self._cache: dict[tuple[int, int, str], np.ndarray] = {}
        self._bgr: np.ndarray | None = None

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the full frame."""
        return self.width, self.height

    @property
    def av_frame(self) -> Any:
        """The decoder's ``av.VideoFrame`` (for an encoder that takes YUV as it is); None once released."""
        return self._frame

    def model_input(self, width: int, height: int, pixel_format: str = "rgb24") -> np.ndarray:
        """``height x width x 3`` uint8 (RGB by default) scaled straight from the decoder's YUV."""
        key = (width, height, pixel_format)
        cached = self._cache.get(key)
        if cached is None:
            if self._frame is None:
                raise ValueError("frame already released")
            w, h = (height, width) if self.turns % 2 else (width, height)
            out = _reformatter().reformat(self._frame, w, h, pixel_format, interpolation=self.interpolation)
            cached = self._cache[key] = self._upright(out.to_ndarray())
        return cached

    def bgr(self) -> np.ndarray:
        """The full-resolution BGR image (made once, on first request)."""
        if self._bgr is None:
            if self._frame is None:
                raise ValueError("frame already released")
            self._bgr = self._upright(self._frame.to_ndarray(format="bgr24"))
        return self._bgr

    def _upright(self, image: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.rot90(image, self.turns)) if self.turns else image

    def release(self) -> None:
        self._frame = None
        self._cache.clear()
        self._bgr = None


class FrameSkip(enum.Enum):
    """Which frames the decoder may leave undecoded (FFmpeg's ``skip_frame``)."""

    NONE = "DEFAULT"  # decode every frame
    NONREF = "NONREF"  # skip frames no other frame refers to (B-frames): a replay at reduced frame rate
    NONKEY = "NONKEY"  # keyframes only: a glance every GOP


@dataclass
class DemuxedItem:
    """One packet of the source and the frames decoding it produced (none when not decoded, or delayed)."""

    packet: EncodedPacket | None  # None only for the decoder's flush at the end of a file
    frames: list[DecodedFrame] = field(default_factory=list)


class DemuxSource:
    """A file or stream URL demuxed with PyAV; the video stream's packets, and decoded frames on request.

    ``opener`` is the boundary tests replace (called like ``av.open(target, options=..., timeout=...)``).
    """

    def __init__(
        self,
        target: str | Path,
        *,
        open_timeout_s: float = 10.0,
        read_timeout_s: float = 5.0,
        decoder_threads: int = 0,
        interpolation: str = "AREA",
        max_drift_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        opener: Callable[..., Any] | None = None,
    ) -> None:
        self.target = str(target)
        self.live = self.target.startswith(STREAM_SCHEMES)
        self.source_id = redact_url(self.target)  # logs, status lines and ids never carry credentials
        self.fps: float | None = None
        self.stream_info: StreamInfo | None = None
        self._timeouts = (open_timeout_s, read_timeout_s)
        self._threads = decoder_threads
        self._interpolation = interpolation
        self._max_drift = max_drift_s
        self._clock = clock
        self._opener = opener
        self._container: Any = None
        self._stream: Any = None
        self._packets: Any = None
        self._start = 0
        self._anchor: float | None = None  # live: clock time of media time 0
        self._frames = 0
        self._resync = False
        self.packets_read = 0
        self.decode_errors = 0

    def open(self) -> None:
        """Open the container and its first video stream, or raise :class:`InputError`. Opened again after
        :meth:`close`, it starts over from the first packet."""
        import av

        if not self.live:
            path = Path(self.target)
            if not path.is_file():
                raise InputError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
        options = {"rtsp_transport": "tcp"} if self.target.startswith(("rtsp://", "rtsps://")) else {}
        opener = self._opener or av.open
        try:
            container = opener(self.target, options=options, timeout=self._timeouts)
        except (av.error.FFmpegError, OSError) as exc:
            what = (
                "stream (is the URL right and the server reachable?)"
                if self.live
                else "video (unsupported, truncated or corrupt file)"
            )
            raise InputError(f"{self.source_id}: cannot open {what}: {redact_url(str(exc))}") from None
        if not container.streams.video:
            container.close()
            raise InputError(f"{self.source_id}: no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # frame + slice threads, as OpenCV's FFmpeg backend uses
        if self._threads:
            stream.codec_context.thread_count = self._threads
        self._container, self._stream = container, stream
        self._start = int(stream.start_time or 0)
        self._anchor, self._frames, self._resync = None, 0, False
        rate = stream.average_rate or stream.guessed_rate
        self.fps = float(rate) if rate else None
        codec = stream.codec_context.name
        self.stream_info = StreamInfo(
            codec=codec,
            width=int(stream.codec_context.width),
            height=int(stream.codec_context.height),
            time_base=Fraction(stream.time_base or Fraction(1, 90000)),
            rate=Fraction(rate) if rate else None,
            # only a stream whose packets clips carry needs its parameters for a muxer; MP4 refuses some other
            # codecs outright (BMP, an image given as a video), and those are encoded for recording anyway
            template=detached_template(stream) if codec in REMUXABLE_CODECS else None,
        )
        self._packets = container.demux(stream)

    def set_skip(self, skip: FrameSkip) -> None:
        """Let the decoder skip frames (takes effect from the next packet; frames keep their own timestamps)."""
        if self._stream is None:
            raise ValueError("open() first")
        self._stream.codec_context.skip_frame = skip.value

    def _ts(self, pts: int | None) -> float:
        """Seconds on the source clock for a timestamp in the stream's time base."""
        tb = self._stream.time_base
        # no timestamp: count frames
        media = self._frames / (self.fps or 25.0) if pts is None else float((pts - self._start) * tb)
        if not self.live:
            return media
        now = self._clock()
        if self._anchor is None or abs(self._anchor + media - now) > self._max_drift:
            self._anchor = now - media
        return self._anchor + media

    def read(self, decode: bool = True) -> DemuxedItem | None:
        """The next video packet (and its decoded frames when ``decode``), or None at the end / on failure."""
        import av

        if self._packets is None:
            return None
        try:
            packet = next(self._packets)
        except StopIteration:
            self._packets = None
            return None
        except (av.error.FFmpegError, OSError) as exc:
            log.warning("%s: read failed: %s", self.source_id, redact_url(str(exc)))
            self._packets = None
            return None
        if packet.size == 0:  # the demuxer's end-of-stream packet: drain the decoder
            frames = self._decode(None) if decode and not self._resync else []
            return DemuxedItem(None, frames)
        self.packets_read += 1
        encoded = EncodedPacket.from_av(
            packet, self._ts(packet.pts if packet.pts is not None else packet.dts)
        )
        if not decode:
            self._resync = True
            return DemuxedItem(encoded)
        if self._resync:
            if not encoded.keyframe:
                return DemuxedItem(encoded)
            self._stream.codec_context.flush_buffers()
            self._resync = False
        return DemuxedItem(encoded, self._decode(packet))

    def _decode(self, packet: Any) -> list[DecodedFrame]:
        import av

        try:
            decoded = self._stream.decode(packet)
        except av.error.FFmpegError as exc:  # a damaged packet: skip it, the next keyframe heals
            self.decode_errors += 1
            log.debug("%s: decode error: %s", self.source_id, exc)
            return []
        out = []
        for frame in decoded:
            out.append(DecodedFrame(frame, self._ts(frame.pts), self._frames, self._interpolation))
            self._frames += 1
        return out

    def close(self) -> None:
        """Release the container. Safe to call twice."""
        if self._container is not None:
            container, self._container = self._container, None
            self._packets = None
            container.close()
