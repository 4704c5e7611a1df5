"""Encoded video as it leaves a source: packets (payload + timing + keyframe flag) and what a muxer needs.

A source that already delivers compressed video (a file, RTSP, HTTP) hands its own packets on; a source of raw
frames (V4L2, picamera2) hands on the packets of its one continuous encode. Either way the recorder keeps
packets, never images, and a clip is those packets remuxed (:mod:`edgevision.recorder.remux`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any


@dataclass(frozen=True, eq=False)
class EncodedPacket:
    """One compressed video packet.

    ``data`` is the payload exactly as the source or encoder produced it. ``pts``/``dts`` are in ``time_base``
    units (``None`` when the source gave none). ``ts`` is seconds on the source's clock, the same clock as
    :attr:`edgevision.results.frame.Frame.ts` of the frame decoded from it, so events and packets line up.
    """

    data: bytes
    pts: int | None
    dts: int | None
    time_base: Fraction
    keyframe: bool
    ts: float
    duration: int = 0

    @property
    def size(self) -> int:
        return len(self.data)

    @classmethod
    def from_av(cls, packet: Any, ts: float) -> EncodedPacket:
        """Copy a PyAV packet's payload and timing (the copy outlives the demuxer's buffer)."""
        return cls(
            data=bytes(packet),
            pts=packet.pts,
            dts=packet.dts,
            time_base=Fraction(packet.time_base) if packet.time_base is not None else Fraction(1, 90000),
            keyframe=bool(packet.is_keyframe),
            ts=ts,
            duration=int(packet.duration or 0),
        )

    def to_av(self, stream: Any) -> Any:
        """A PyAV packet for ``stream`` with this payload and timing (PyAV rescales to the stream's base)."""
        import av

        packet = av.Packet(self.data)
        packet.pts, packet.dts = self.pts, self.dts
        packet.time_base = self.time_base
        if self.duration:
            packet.duration = self.duration
        packet.is_keyframe = self.keyframe
        packet.stream = stream
        return packet


REMUXABLE_CODECS = frozenset({"h264", "hevc"})  # what MP4 clips carry and browsers (and the Pi) play


@dataclass(frozen=True)
class StreamInfo:
    """What a muxer needs to write a source's packets into a new container.

    ``template`` is a PyAV stream carrying the codec parameters (SPS/PPS in ``avcC`` form for MP4/RTSP
    sources); it is detached from the source's demuxer (see :func:`detached_template`) so a clip can be opened
    after the source closed or reconnected. Without one, the packets must carry their parameter sets in band
    (Annex B H.264 from an encoder, MPEG-4 part 2 with VOL headers): the muxer extracts them from the first
    keyframe.
    """

    codec: str
    width: int
    height: int
    time_base: Fraction
    rate: Fraction | None = None
    template: Any = field(default=None, compare=False, repr=False)

    @property
    def remuxable(self) -> bool:
        """Whether clips can be this stream's own packets; otherwise (an MJPEG camera over HTTP, MPEG-2...)
        the source's frames go through the one continuous encode instead."""
        return self.codec in REMUXABLE_CODECS


def detached_template(stream: Any) -> Any:
    """A copy of an input stream's codec parameters that does not depend on the input container staying open.

    An output container that is never started holds the copy (``add_stream_from_template`` copies the
    ``AVCodecParameters``, extradata included); it writes nothing and is freed with the template.
    """
    import io

    import av

    holder = av.open(io.BytesIO(), "w", format="mp4")
    return holder.add_stream_from_template(stream)
