"""Checking a fragmented MP4 clip (:mod:`~edgevision.recorder.clip`) after a crash, and cutting it back.

:func:`inspect_clip` decodes every fragment; :func:`salvage_fragmented_mp4` cuts the file back to the last
fragment that *decodes* (a power cut on vfat/SD can leave a zero-filled tail whose boxes still parse). A kill
damages only the tail; a damaged fragment inside the clip (a packet the camera lost, a bad sector) followed by
sound ones is kept, with all that follows.

Only the file's content proves it broken. An error reading it (EIO from a failing card, no memory) says nothing
about it: :class:`ClipUnreadable` is raised and the caller leaves the file as it is.
"""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


class ClipUnreadable(OSError):
    """The clip could not be read (an I/O or memory error, not its content): nothing is proven about it."""


def _unreadable(path: Path, exc: BaseException) -> ClipUnreadable | None:
    """The :class:`ClipUnreadable` for a reading failure that is the system's, not the data's; None for the
    data's (FFmpeg reports bad data as ``InvalidDataError``, a ``ValueError``; EIO and ENOMEM as ``OSError`` and
    ``MemoryError``)."""
    if isinstance(exc, (OSError, MemoryError)):
        return ClipUnreadable(f"{path}: cannot be read: {exc}")
    return None


def _boxes(buf: bytes) -> list[tuple[str, int, int]]:
    """Top-level MP4 boxes as (type, start, end); stops at the first incomplete box."""
    return _scan_boxes(lambda pos: buf[pos : pos + 16], len(buf))


def _file_boxes(path: Path) -> list[tuple[str, int, int]]:
    """:func:`_boxes` of a file, reading only the box headers (a long clip is hundreds of MB)."""
    with open(path, "rb") as fh:

        def header_at(pos: int) -> bytes:
            fh.seek(pos)
            return fh.read(16)

        return _scan_boxes(header_at, os.fstat(fh.fileno()).st_size)


def _scan_boxes(header_at: Callable[[int], bytes], n: int) -> list[tuple[str, int, int]]:
    """Top-level boxes of ``n`` bytes, given the (up to) 16 bytes at a position."""
    out = []
    pos = 0
    while pos + 8 <= n:
        head = header_at(pos)
        if len(head) < 8:
            break
        size, kind = struct.unpack_from(">I4s", head)
        header = 8
        if size == 1:
            if pos + 16 > n or len(head) < 16:
                break
            size = struct.unpack_from(">Q", head, 8)[0]
            header = 16
        elif size == 0:
            size = n - pos
        if size < header or pos + size > n:
            break
        out.append((kind.decode("latin-1"), pos, pos + size))
        pos += size
    return out


@dataclass
class ClipCheck:
    """What a decode pass over a fragmented MP4 found.

    ``fragments`` complete ``moof``+``mdat`` pairs were parsed, of which the first ``good`` decode without an
    error; ``last_good`` is the last one that does (after damage inside the clip, later fragments may still be
    sound), and ``good_end`` the byte offset where it ends (where a salvage cuts the file).
    ``frames`` / ``duration_s`` / ``middle`` describe the fragments up to ``last_good``.
    """

    has_header: bool
    fragments: int
    good: int
    good_end: int
    frames: int
    duration_s: float
    middle: np.ndarray | None
    last_good: int = 0

    @property
    def playable(self) -> bool:
        return self.has_header and self.last_good > 0 and self.frames > 0


def _decode_pass(
    path: Path, fragment_of: Any, limit: int | None = None
) -> tuple[dict[int, int], set[int], list[tuple[int, int]]]:
    """Decode every packet (of the fragments up to ``limit``, then drain the decoder); return (packets that must
    decode per fragment, bad fragments, decoded (fragment, pts) pairs)."""
    import av

    packets: dict[int, int] = {}
    bad: set[int] = set()
    decoded: list[tuple[int, int]] = []
    pts_fragment: dict[int, int] = {}
    first_key: int | None = None  # pts of the clip's first keyframe
    after_leading = False  # the packet before this one (decode order) was a leading picture
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        # Corrupt data raises instead of being concealed: a zero-filled fragment must not pass as video.
        stream.codec_context.options = {"err_detect": "explode"}
        # One thread: with slice threads the H.264 decoder drops the error of a broken slice (a frame cut into
        # slices, as x264 with zerolatency makes, whose last slice is zeros would come out as a sound frame).
        stream.codec_context.thread_count = 1
        demux = container.demux(stream)
        last_fragment = 0
        while True:
            try:
                packet = next(demux)
            except StopIteration:
                break
            except av.error.FFmpegError as exc:
                if unreadable := _unreadable(path, exc):
                    raise unreadable from exc
                bad.add(last_fragment + 1)  # the demuxer gave up inside the next fragment
                break
            if packet.size == 0 or packet.pos is None or packet.pos < 0:
                frames_out = packet.decode() if packet.size == 0 else []
            else:
                frag = fragment_of(packet.pos)
                if limit is not None and frag > limit:
                    break
                last_fragment = max(last_fragment, frag)
                pts = None if packet.pts is None else int(packet.pts)
                if packet.is_keyframe and first_key is None:
                    first_key = pts
                # A leading picture of the first keyframe (decoded after it, shown before it: an open GOP, as
                # x265, some x264 settings and many cameras make) may refer to pictures before the clip. A
                # decoder drops it (HEVC RASL), reports its reference missing (H.264) or shows it; none of that
                # says the file is damaged, so it is not counted among the packets that must decode to a frame.
                leading = first_key is not None and pts is not None and pts < first_key
                # H.264 reports an open GOP's missing references on a leading picture or on the packet right
                # after the last one: only there is a decoding error forgiven. Further on, a damaged packet can
                # raise and still come out as a (concealed) frame, so forgiving errors up to the next keyframe
                # let a half-written fragment pass as sound.
                forgiven = leading or after_leading
                after_leading = leading
                if not leading:
                    packets[frag] = packets.get(frag, 0) + 1
                if pts is not None:
                    pts_fragment[pts] = frag
                try:
                    frames_out = packet.decode()
                except av.error.FFmpegError as exc:
                    if unreadable := _unreadable(path, exc):
                        raise unreadable from exc
                    # whether every non-leading packet came out as a frame is still counted below
                    if not forgiven:
                        bad.add(frag)
                    continue
            for fr in frames_out:
                if fr.pts is not None and int(fr.pts) in pts_fragment:
                    decoded.append((pts_fragment[int(fr.pts)], int(fr.pts)))
        try:
            for fr in stream.decode(None):
                if fr.pts is not None and int(fr.pts) in pts_fragment:
                    decoded.append((pts_fragment[int(fr.pts)], int(fr.pts)))
        except av.error.FFmpegError as exc:
            if unreadable := _unreadable(path, exc):
                raise unreadable from exc
    return packets, bad, decoded


def _sound(
    fragments: int, packets: dict[int, int], bad: set[int], decoded: list[tuple[int, int]]
) -> list[int]:
    """The sound fragments (numbered from 1): each packet that must decode came out as a frame, no decoding
    error."""
    per_fragment: dict[int, int] = {}
    for frag, _pts in decoded:
        per_fragment[frag] = per_fragment.get(frag, 0) + 1
    return [
        n
        for n in range(1, fragments + 1)
        if n not in bad and packets.get(n, 0) > 0 and per_fragment.get(n, 0) >= packets[n]
    ]


def _sound_prefix(
    fragments: int, packets: dict[int, int], bad: set[int], decoded: list[tuple[int, int]]
) -> int:
    """How many fragments from the first are sound: each packet that must decode came out as a frame, no
    decoding error, and no garbage fragment before it."""
    good = 0
    for n in _sound(fragments, packets, bad, decoded):
        if n != good + 1:
            break
        good = n
    return good


def inspect_clip(path: Path, want_middle: bool = True) -> ClipCheck:
    """Parse and decode a (possibly cut or zero-filled) fragmented MP4: which fragments are sound."""
    import av

    try:
        boxes = _file_boxes(path)
    except OSError as exc:
        raise ClipUnreadable(f"{path}: cannot be read: {exc}") from exc
    kinds = [k for k, _, _ in boxes]
    if "moov" not in kinds:
        return ClipCheck(False, 0, 0, 0, 0, 0.0, None)
    spans: list[tuple[int, int]] = []  # (moof start, mdat end) of each complete fragment
    header_end = 0
    for i, (kind, _start, stop) in enumerate(boxes):
        if kind == "mdat" and i > 0 and boxes[i - 1][0] == "moof":
            spans.append((boxes[i - 1][1], stop))
        elif kind in ("ftyp", "moov") and not spans:
            header_end = max(header_end, stop)
    if not spans:
        return ClipCheck(True, 0, 0, header_end, 0, 0.0, None)

    def fragment_of(pos: int) -> int:
        for n, (a, b) in enumerate(spans, start=1):
            if a <= pos < b:
                return n
        return len(spans) + 1  # beyond the parsed fragments: garbage

    try:
        whole = _decode_pass(path, fragment_of)
        packets, bad, decoded = whole
        good = _sound_prefix(len(spans), packets, bad, decoded)
        # A frame held back for reordering (B-frames) comes out only when later packets decode or the decoder
        # is drained: garbage after a sound fragment can swallow it. Decode again up to the fragment after the
        # sound ones and drain there, so that fragment is judged on its own packets.
        while good < len(spans):
            retry = _decode_pass(path, fragment_of, limit=good + 1)
            better = _sound_prefix(len(spans), *retry)
            if better <= good:
                break
            (packets, bad, decoded), good = retry, better
        # Damage inside the clip is not what a kill leaves (it damages only the tail): a sound fragment after it
        # is media that landed, and everything up to it stays.
        last = max([good, *_sound(len(spans), *whole)])
    except (av.error.FFmpegError, IndexError) as exc:
        if unreadable := _unreadable(path, exc):
            raise unreadable from exc
        log.warning("%s: cannot be decoded at all: %s", path, exc)
        return ClipCheck(True, len(spans), 0, header_end, 0, 0.0, None)
    if last > good:
        log.warning(
            "%s: fragment %d of %d does not decode; fragments after it do", path, good + 1, len(spans)
        )
        packets, bad, decoded = whole
    kept_pts = sorted(p for f, p in decoded if f <= last)
    good_end = spans[last - 1][1] if last else header_end
    duration = 0.0
    middle = None
    if kept_pts:
        try:
            with av.open(str(path)) as c:
                tb = c.streams.video[0].time_base
        except (OSError, MemoryError) as exc:  # it decoded a moment ago: the system's failure, not the data's
            raise ClipUnreadable(f"{path}: cannot be read: {exc}") from exc
        step = (kept_pts[-1] - kept_pts[0]) / (len(kept_pts) - 1) if len(kept_pts) > 1 else 0.0
        duration = float((kept_pts[-1] - kept_pts[0] + step) * tb) if tb else 0.0
        if want_middle:
            middle = _frame_at(path, kept_pts[len(kept_pts) // 2])
    return ClipCheck(True, len(spans), good, good_end, len(kept_pts), duration, middle, last)


def _frame_at(path: Path, pts: int) -> np.ndarray | None:
    """The decoded BGR frame with presentation timestamp ``pts`` (for a snapshot of a salvaged clip)."""
    import av

    try:
        with av.open(str(path)) as c:
            stream = c.streams.video[0]
            for packet in c.demux(stream):
                for fr in packet.decode():
                    if fr.pts is not None and fr.pts >= pts:
                        return fr.to_ndarray(format="bgr24")
    except av.error.FFmpegError:
        return None
    return None


def salvage_fragmented_mp4(path: Path) -> int:
    """Cut a fragmented MP4 back to its last fragment that decodes (a damaged one before it stays: only the tail is
    a kill's); return the fragments kept.

    Returns 0 (and leaves the file alone) when there is no ``moov`` or no sound fragment: the caller decides
    what to do with a file nothing can be proven about.
    """
    check = inspect_clip(path, want_middle=False)
    if not check.playable:
        return 0  # nothing proven sound: cutting would destroy what a better decoder might still read
    if check.good_end < path.stat().st_size:
        with open(path, "r+b") as fh:
            fh.truncate(check.good_end)
            fh.flush()
            os.fsync(fh.fileno())
    return check.last_good
