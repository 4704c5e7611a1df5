"""Crash-safe clips: fragmented MP4 written as ``*.partial``, fsync'd fragment by fragment, renamed on finalize.

With ``movflags=frag_keyframe+empty_moov`` the file is a ``moov`` header followed by self-contained
``moof``+``mdat`` fragments, one per keyframe. A keyframe is forced every ``fragment_s`` seconds of the *frame
clock* (not every N frames), so a fragment holds at most one second of media however slowly the pipeline
delivers frames; ``frag_duration`` cuts by time too for encoders that ignore a forced keyframe. Each fragment is
fsync'd as soon as the muxer has written it, so a process killed mid-recording leaves a file that plays up to its
last complete fragment: at most the last second of media is lost.

:func:`salvage_fragmented_mp4` cuts such a file back to the last fragment that *decodes* (a power cut on
vfat/SD can leave a zero-filled tail whose boxes still parse). A kill damages only the tail; a damaged fragment
inside the clip (a packet the camera lost, a bad sector) followed by sound ones is kept, with all that follows. Encoding (PyAV) is separate from where the bytes
go (:class:`_SyncingFile`) and from the crash-safety of the container (:func:`inspect_clip`), so a later
packet-remuxing writer keeps the same guarantees. PyAV is used because OpenCV's VideoWriter can neither
fragment nor be flushed to disk.
"""

from __future__ import annotations

import io
import logging
import os
import platform
import struct
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import IO, Any

import cv2
import numpy as np

from edgevision.fsutil import fsync_dir
from edgevision.recorder.faults import fault_point

log = logging.getLogger(__name__)

TIME_BASE = Fraction(1, 1000)  # pts in milliseconds of the frame clock: variable frame rate is fine
PARTIAL_SUFFIX = ".partial"
FRAGMENT_S = 1.0  # media seconds per fragment: the most a crash can cost
_EPS = 1e-6


def _codec_usable(name: str) -> bool:
    try:
        import av
    except ImportError:
        raise ValueError("PyAV is not installed (pip install av); it is needed to record clips") from None

    try:
        av.codec.Codec(name, "w")
    except Exception:
        return False
    return True


def choose_codec(preference: str = "auto") -> str:
    """The encoder to use: the Pi's hardware H.264 encoder when present, else libx264, else MPEG-4 part 2."""
    if preference != "auto":
        if not _codec_usable(preference):
            raise ValueError(f"video codec '{preference}' is not available in this PyAV build")
        return preference
    candidates = ["libx264", "h264", "mpeg4"]
    if platform.machine() in ("aarch64", "armv7l") and Path("/dev/video11").exists():
        candidates.insert(0, "h264_v4l2m2m")  # Raspberry Pi (<= 4) hardware encoder
    for name in candidates:
        if _codec_usable(name):
            return name
    raise ValueError("no usable H.264 or MPEG-4 encoder in this PyAV build")


class _SyncingFile(io.RawIOBase):
    """Where the muxer's bytes go: a file that remembers whether anything was written since the last sync.

    The MP4 muxer writes only when a fragment is complete (and the header at the start), so "dirty after a
    mux" means "a fragment reached the file": the writer fsyncs it right then.
    """

    def __init__(self, fh: IO[bytes]) -> None:
        super().__init__()
        self.fh = fh
        self.dirty = False

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        self.dirty = True
        return self.fh.write(b)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self.fh.seek(offset, whence)

    def tell(self) -> int:
        return self.fh.tell()

    def sync(self) -> None:
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.dirty = False


class ClipWriter:
    """Encode frames into ``<final>.partial``; :meth:`finalize` makes ``<final>`` appear atomically.

    Not thread-safe: owned by the recorder thread. ``write`` raises ``OSError`` (e.g. ENOSPC) to the caller,
    which decides how to degrade; nothing here swallows an error.
    """

    def __init__(
        self, final_path: Path, fps_hint: float, codec: str = "libx264", fragment_s: float = FRAGMENT_S
    ) -> None:
        import av

        self.final_path = final_path
        self.partial_path = final_path.with_name(final_path.name + PARTIAL_SUFFIX)
        self.fps = max(1.0, fps_hint)
        self.codec = codec
        self.fragment_s = fragment_s
        self.frames = 0
        self.fragments_synced = 0
        self.first_ts: float | None = None
        self.last_ts: float | None = None
        self._last_pts = -1
        self._last_key_ts: float | None = None
        self._size: tuple[int, int] | None = None
        final_path.parent.mkdir(parents=True, exist_ok=True)
        self._fh: IO[bytes] = open(self.partial_path, "wb")  # noqa: SIM115 - closed in finalize/abort
        self._out = _SyncingFile(self._fh)
        fsync_dir(final_path.parent)
        self._container: Any = av.open(
            self._out,
            "w",
            format="mp4",
            options={
                "movflags": "frag_keyframe+empty_moov+default_base_moof",
                "frag_duration": str(int(fragment_s * 1_000_000)),  # µs; for encoders that skip forced keys
            },
        )
        self._stream: Any = None

    def _open_stream(self, width: int, height: int) -> None:
        stream = self._container.add_stream(self.codec, rate=round(self.fps))
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        stream.time_base = TIME_BASE
        stream.codec_context.time_base = TIME_BASE  # ms precision for variable frame rate (not 1/fps)
        gop = str(max(1, round(self.fps * self.fragment_s)))  # a cap; keyframes are forced by time anyway
        if self.codec == "libx264":
            stream.options = {"preset": "veryfast", "tune": "zerolatency", "g": gop}
        else:
            stream.options = {"g": gop}
        self._stream = stream
        self._size = (width, height)

    def write(self, image: np.ndarray, ts: float) -> None:
        """Append one BGR (or grayscale) frame taken at ``ts`` seconds (frame clock)."""
        import av
        from av.video.frame import PictureType

        if image.ndim == 2:
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        if self._stream is None:
            h, w = image.shape[:2]
            self._open_stream(w - w % 2, h - h % 2)
        assert self._size is not None
        if (image.shape[1], image.shape[0]) != self._size:
            image = cv2.resize(image, self._size, interpolation=cv2.INTER_AREA)
        if self.first_ts is None:
            self.first_ts = ts
        pts = round((ts - self.first_ts) * 1000)
        if pts <= self._last_pts:
            pts = self._last_pts + 1
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="bgr24")
        frame.pts, frame.time_base = pts, TIME_BASE
        if self._last_key_ts is None or ts - self._last_key_ts >= self.fragment_s - _EPS:
            frame.pict_type = PictureType.I  # a new fragment starts here: fragments are cut by time
            self._last_key_ts = ts
        for packet in self._stream.encode(frame):
            self._mux(packet)
        self._last_pts = pts
        self.frames += 1
        self.last_ts = ts

    def _mux(self, packet: Any) -> None:
        self._container.mux(packet)
        if self._out.dirty:  # the muxer wrote a complete fragment: make it durable now
            self._out.sync()
            self.fragments_synced += 1

    def sync(self) -> None:
        """Push what the muxer has written to the disk (fragments complete up to the last keyframe)."""
        self._out.sync()

    def finalize(self) -> Path:
        """Flush the encoder, close, fsync, rename ``.partial`` to the final name and fsync the directory.

        Every step leaves a state start-up recovery completes: before the rename the ``.partial`` is
        salvaged; after it the complete ``.mp4`` is adopted (the index row is the commit point).
        """
        if self._stream is not None:
            for packet in self._stream.encode():
                self._mux(packet)
        self._container.close()
        self._out.sync()
        self._fh.close()
        return commit_clip(self.partial_path, self.final_path, self.frames, "no frame was written")

    def abort(self) -> None:
        """Stop without finalizing; the ``.partial`` stays for start-up recovery to salvage."""
        abort_partial(self._container, self._fh, self.partial_path)


def commit_clip(partial_path: Path, final_path: Path, frames: int, empty: str) -> Path:
    """The last steps of finishing a clip whose ``.partial`` is already closed and fsynced: rename it to its final
    name, then fsync the directory. A fault point after each step lets the crash tests stop the process exactly
    there; recovery completes whatever a kill leaves. A clip with no ``frames`` is removed (``empty`` says why)."""
    if frames == 0:
        partial_path.unlink()
        raise ValueError(f"{final_path}: {empty}")
    fault_point("finish.synced")
    os.replace(partial_path, final_path)
    fault_point("finish.renamed")
    fsync_dir(final_path.parent)
    fault_point("finish.dir_synced")
    return final_path


def abort_partial(container: Any, fh: IO[bytes], partial_path: Path) -> None:
    """Close an unfinished clip's muxer and file without raising (the disk may be full): the ``.partial`` stays
    as it is for start-up recovery to salvage, and each failure is logged."""
    try:
        container.close()
    except Exception as exc:  # the file is left as it is for recovery; the failure is logged
        log.warning("%s: closing an aborted clip failed: %s", partial_path, exc)
    try:
        fh.close()  # the descriptor is closed even when flushing the last bytes fails
    except OSError as exc:
        log.warning("%s: unwritten bytes of an aborted clip dropped: %s", partial_path, exc)


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
            except av.error.FFmpegError:
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
                except av.error.FFmpegError:
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
        except av.error.FFmpegError:
            pass
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

    boxes = _file_boxes(path)
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
        with av.open(str(path)) as c:
            tb = c.streams.video[0].time_base
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
