"""Pre-roll and the clip being written, from packets: what the recorder thread holds instead of frames.

Every packet of the source goes through :meth:`PacketClips.push`, events or not: it lands in the pre-roll ring
and, while a clip is open, in the clip. :meth:`start` opens a clip with the ring's packets from the last
keyframe at or before ``trigger − pre_roll``; :meth:`finish` closes it atomically. Packets keep flowing
between the two whatever inference does, so a clip has every packet of its span even when inference dropped
frames. Like picamera2's ``CircularOutput``, pre-roll is just where packets go while no clip is open.

Not thread-safe: owned by the recorder thread. ``OSError`` (ENOSPC) and
:class:`~edgevision.recorder.remux.MuxerRefused` from the clip reach the caller, which cuts the clip
(:func:`cuts_clip`) and decides how to degrade (:meth:`abort` leaves the ``.partial`` for recovery).
"""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

from edgevision.capture.packets import EncodedPacket, StreamInfo
from edgevision.fsutil import fsync_dir, sha256_file
from edgevision.recorder.clip_check import salvage_fragmented_mp4
from edgevision.recorder.packet_ring import PacketRing, RingStats
from edgevision.recorder.remux import MuxerRefused, PacketClipWriter
from edgevision.recorder.space import DISK_ERRNOS

log = logging.getLogger(__name__)


class PacketClips:
    """The packet ring plus at most one open clip."""

    def __init__(self, pre_roll_s: float, max_bytes: int, fragment_s: float = 1.0) -> None:
        self.pre_roll = pre_roll_s
        self.fragment_s = fragment_s
        self.ring = PacketRing(pre_roll_s, max_bytes)
        self.stream: StreamInfo | None = None
        self.clip: PacketClipWriter | None = None

    def set_stream(self, stream: StreamInfo) -> None:
        """The source (re)opened: packets from now on belong to ``stream``; older ones cannot join them.

        A new :class:`StreamInfo` object (every open makes one) empties the ring: after a reconnect the
        parameter sets may differ even when codec and size do not.
        """
        if stream is not self.stream:
            self.ring.clear()
        self.stream = stream

    def push(self, packet: EncodedPacket) -> None:
        """One packet of the source, in decode order."""
        self.ring.push(packet)
        if self.clip is not None:
            self.clip.write(packet)

    def start(self, final_path: Path, trigger_ts: float) -> PacketClipWriter:
        """Open a clip at ``final_path`` that begins with the pre-roll before ``trigger_ts``."""
        if self.stream is None:
            raise ValueError("no stream: set_stream() first")
        if self.clip is not None:
            raise ValueError("a clip is already open")
        clip = PacketClipWriter(final_path, self.stream, self.fragment_s)
        self.clip = clip
        for packet in self.ring.since(trigger_ts - self.pre_roll):
            clip.write(packet)
        return clip

    def finish(self) -> PacketClipWriter:
        """Finalize the open clip (rename + directory fsync); returns it for its frame count and times."""
        if self.clip is None:
            raise ValueError("no clip is open")
        clip, self.clip = self.clip, None
        try:
            clip.finalize()
        except BaseException:
            clip.abort()  # its muxer and file closed (without raising): the caller salvages the .partial
            raise
        return clip

    def abort(self) -> None:
        """Stop the open clip without finalizing (start-up recovery salvages the ``.partial``)."""
        if self.clip is not None:
            clip, self.clip = self.clip, None
            clip.abort()

    def stats(self) -> RingStats:
        return self.ring.stats()


def cuts_clip(exc: BaseException) -> bool:
    """Whether an error writing a clip cuts it short (salvaged; the recording goes on) rather than stopping the
    recorder: a disk error (full, read-only, failing), the clip reaching the file system's largest file (EFBIG:
    4 GB on vfat), or the muxer refusing a packet or the clip's end."""
    if isinstance(exc, MuxerRefused):
        return True
    return isinstance(exc, OSError) and (exc.errno in DISK_ERRNOS or exc.errno == errno.EFBIG)


def cut_note(exc: OSError | MuxerRefused) -> str:
    """The index note of a clip :func:`cuts_clip` cut short."""
    if isinstance(exc, OSError) and exc.errno == errno.EFBIG:
        return (
            f"clip cut short at the file system's largest file ({exc.strerror}); "
            "a shorter recorder.max_length_s keeps the rest"
        )
    if isinstance(exc, OSError):
        return f"clip cut short by disk error: {exc.strerror}"
    return f"clip cut short: {exc}"


def salvage_cut_clip(clip: PacketClipWriter, event_id: int) -> dict[str, object] | None:
    """After a disk (or muxer) error cut ``clip`` (already aborted): keep its ``.partial`` up to the last fragment that
    decodes, renamed to the final name (the directory fsync'd). Returns the index values of the kept clip, ``{}``
    when nothing was playable (the ``.partial`` is removed), or None when the salvage itself failed: nothing is
    proven about the file, so it stays, and its row stays open for start-up recovery."""
    try:
        kept = salvage_fragmented_mp4(clip.partial_path)  # the cut is fsync'd
        if kept:
            # durable before the row names the clip: a row no longer ``recording`` is not looked at by recovery
            os.replace(clip.partial_path, clip.final_path)
            fsync_dir(clip.final_path.parent)
        if not kept:
            clip.partial_path.unlink(missing_ok=True)
    except OSError as exc:
        log.error("event %d: salvaging the clip after a disk error failed: %s", event_id, exc)
        return None
    if not kept:
        return {}
    return {**hash_values(clip.final_path, event_id), "clip_start_ts": clip.first_ts}


def hash_values(path: Path, event_id: int) -> dict[str, object]:
    """The index values of a finished clip's size and sha256. A disk error reading it back (EIO from a failing
    card) leaves them out with a ``note``: the clip is kept and the recording goes on; other errors propagate."""
    values: dict[str, object] = {"clip_size": None, "clip_sha256": None}
    try:
        values["clip_size"] = path.stat().st_size
        values["clip_sha256"] = sha256_file(path)
    except OSError as exc:
        if exc.errno not in DISK_ERRNOS:
            raise
        log.error("event %d: %s cannot be read back to hash it: %s; the clip is kept", event_id, path, exc)
        values["note"] = f"clip kept without its hash: {exc.strerror}"
    return values
