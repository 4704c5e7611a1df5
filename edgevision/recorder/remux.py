"""Clips from packets: the source's (or the one encoder's) packets remuxed into a crash-safe fragmented MP4.

No decode, no encode: each packet's payload is written as it came. The crash-safety contract is the one of
:class:`edgevision.recorder.clip.ClipWriter`, so start-up recovery (:func:`~edgevision.recorder.clip_check.
salvage_fragmented_mp4`) works on these files unchanged:

* the clip is written to ``<final>.partial`` (the directory fsync'd once the file exists);
* ``movflags=empty_moov+default_base_moof+frag_keyframe`` with ``frag_duration`` = ``fragment_s``: a ``moov``
  header, then self-contained ``moof``+``mdat`` fragments cut at every keyframe and at least every
  ``fragment_s`` seconds — a source whose GOP is 10 s long still gets a fragment a second;
* the muxer flushes its buffer at each fragment boundary; every time the file grew, it is fsync'd, so a kill
  loses at most the fragment being built;
* :meth:`PacketClipWriter.finalize` closes, fsyncs, renames to ``<final>`` and fsyncs the directory.

A clip starts at a keyframe: packets offered before the first keyframe are counted in ``skipped`` and not
written. Timestamps are shifted so the clip starts at 0; payloads are untouched.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import IO, Any

from edgevision.capture.packets import EncodedPacket, StreamInfo
from edgevision.fsutil import fsync_dir, mkdir_synced
from edgevision.recorder.clip import abort_partial, commit_clip

log = logging.getLogger(__name__)

PARTIAL_SUFFIX = ".partial"  # the same suffix as clip.py: recovery looks for it


class MuxerRefused(Exception):
    """The muxer refused a packet or the clip's end for a reason that is not the disk's (an FFmpeg error that is
    not an ``OSError``: invalid data, an invalid argument). What was written before stays as it is: the recorder
    cuts the clip there and salvages it, as after a disk error. Not a ``ValueError`` (that says nothing was
    written)."""


def _muxing(what: str, call: Any, *args: Any) -> Any:
    """``call(*args)`` on the muxer; its errors that are not the disk's (``OSError``) as :class:`MuxerRefused`."""
    try:
        return call(*args)
    except OSError:
        raise
    except Exception as exc:
        import av

        if isinstance(exc, (av.error.FFmpegError, ValueError)):
            raise MuxerRefused(f"the muxer refused {what}: {exc}") from exc
        raise


def _mux_stream(container: Any, info: StreamInfo) -> Any:
    """The output stream: a copy of the source's parameters, or a codec-context-free stream (in-band headers)."""
    if info.template is not None:
        stream = container.add_stream_from_template(info.template)
    else:
        import av

        # PyAV 18 holds the header back until it has taken the parameter sets from the first keyframe; older
        # versions would write an MP4 whose header lacks them (a clip no player can open).
        if int(av.__version__.split(".")[0]) < 18:
            raise ValueError(
                f"PyAV {av.__version__} cannot mux encoded packets without an encoder: pip install 'av>=18'"
            )
        stream = container.add_mux_stream(info.codec, rate=info.rate, width=info.width, height=info.height)
    if info.codec == "hevc":
        # Safari and iOS play HEVC in MP4 only under the 'hvc1' sample entry (parameter sets in the header);
        # FFmpeg's default 'hev1' plays in Chrome and VLC alone. The muxer builds the header from the source's
        # parameter sets; payloads stay untouched.
        stream.codec_tag = "hvc1"
    stream.time_base = info.time_base
    return stream


class PacketClipWriter:
    """Write packets into ``<final>.partial``; :meth:`finalize` makes ``<final>`` appear atomically.

    Not thread-safe: owned by the recorder thread. Errors (``OSError`` such as ENOSPC, :class:`MuxerRefused`)
    reach the caller.
    Attribute names follow :class:`~edgevision.recorder.clip.ClipWriter` (``frames``, ``first_ts``,
    ``last_ts``, ``partial_path``, ``final_path``) so the recorder can hold either.
    """

    def __init__(self, final_path: Path, stream: StreamInfo, fragment_s: float = 1.0) -> None:
        import av

        if fragment_s <= 0:
            raise ValueError("fragment_s must be > 0")
        self.final_path = final_path
        self.partial_path = final_path.with_name(final_path.name + PARTIAL_SUFFIX)
        self.info = stream
        self.frames = 0
        self.skipped = 0
        self.fragments_synced = 0
        self.first_ts: float | None = None
        self.last_ts: float | None = None
        self._offset: int | None = None  # the first packet's dts, in ``_offset_base`` units
        self._offset_base = stream.time_base
        self._last_dts: int | None = None
        self._synced_at = 0
        mkdir_synced(final_path.parent)  # a new day's directory survives a power cut with its clips
        self._fh: IO[bytes] = open(self.partial_path, "wb")  # noqa: SIM115 - closed in finalize/abort
        fsync_dir(final_path.parent)
        self._container: Any = av.open(
            self._fh,
            "w",
            format="mp4",
            options={
                "movflags": "empty_moov+default_base_moof+frag_keyframe",
                "frag_duration": str(round(fragment_s * 1_000_000)),  # microseconds
            },
        )
        self._stream: Any = _mux_stream(self._container, stream)

    def write(self, packet: EncodedPacket) -> None:
        """Append one packet (decode order). Packets before the first keyframe are skipped."""
        if self._offset is None:
            if not packet.keyframe:
                self.skipped += 1
                return
            first = packet.dts if packet.dts is not None else packet.pts
            self._offset = first if first is not None else 0
            self._offset_base = packet.time_base
        pts, dts = self._rebased(packet)
        if dts is not None and self._last_dts is not None and dts <= self._last_dts:
            # A muxer refuses non-increasing dts (a broken stream or a clock step): drop rather than fail.
            self.skipped += 1
            log.debug("%s: packet with non-increasing dts dropped", self.partial_path.name)
            return
        if pts is not None and dts is not None and pts < dts:
            # shown before it is decoded: a timestamp glitch the muxer refuses (EINVAL, which stopped the
            # recorder); kept, shown at its decode time
            log.debug("%s: packet with pts before its dts shown at its dts", self.partial_path.name)
            pts = dts
        av_packet = packet.to_av(self._stream)
        av_packet.pts, av_packet.dts = pts, dts
        _muxing("a packet", self._container.mux, av_packet)
        self._last_dts = dts
        self.frames += 1
        if self.first_ts is None:
            self.first_ts = packet.ts
        self.last_ts = packet.ts
        self._sync_if_grown()

    def _rebased(self, packet: EncodedPacket) -> tuple[int | None, int | None]:
        """pts/dts shifted so the clip starts at 0 (rescaled when a packet's time base differs)."""
        assert self._offset is not None
        offset = self._offset
        if packet.time_base != self._offset_base:
            offset = round(self._offset * self._offset_base / packet.time_base)
        pts = None if packet.pts is None else packet.pts - offset
        dts = None if packet.dts is None else packet.dts - offset
        if pts is None and dts is None:  # a source without timestamps: place the packet by its clock time
            assert self.first_ts is not None or packet.keyframe
            start = self.first_ts if self.first_ts is not None else packet.ts
            pts = dts = round((packet.ts - start) / packet.time_base)
        return pts, dts

    def _sync_if_grown(self) -> None:
        """fsync when the muxer wrote a fragment (the file grew), so at most the fragment in progress is lost."""
        size = self._fh.tell()
        if size != self._synced_at:
            self.sync()
            self._synced_at = size
            self.fragments_synced += 1

    def sync(self) -> None:
        """Push what the muxer has written to the disk."""
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def finalize(self) -> Path:
        """Close, fsync, rename ``.partial`` to the final name and fsync the directory."""
        _muxing("the clip's end", self._container.close)
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        return commit_clip(
            self.partial_path, self.final_path, self.frames, "no packet from a keyframe on was written"
        )

    def abort(self) -> None:
        """Stop without finalizing; the ``.partial`` stays for start-up recovery to salvage."""
        abort_partial(self._container, self._fh, self.partial_path)
