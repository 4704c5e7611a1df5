"""Crash-safe clips: fragmented MP4 written as ``*.partial``, fsync'd fragment by fragment, renamed on finalize.

With ``movflags=frag_keyframe+empty_moov`` the file is a ``moov`` header followed by self-contained
``moof``+``mdat`` fragments, one per keyframe. A keyframe is forced every ``fragment_s`` seconds of the *frame
clock* (not every N frames), so a fragment holds at most one second of media however slowly the pipeline
delivers frames; ``frag_duration`` cuts by time too for encoders that ignore a forced keyframe. Each fragment is
fsync'd as soon as the muxer has written it, so a process killed mid-recording leaves a file that plays up to its
last complete fragment: at most the last second of media is lost.

:mod:`~edgevision.recorder.clip_check` checks such a file and cuts it back to the fragments that decode.
Encoding (PyAV) is separate from where the bytes go (:class:`_SyncingFile`) and from the crash-safety of the
container (:mod:`~edgevision.recorder.clip_check`), so the packet-remuxing writer keeps the same guarantees.
PyAV is used because OpenCV's VideoWriter can neither fragment nor be flushed to disk.
"""

from __future__ import annotations

import io
import logging
import os
import platform
from fractions import Fraction
from pathlib import Path
from typing import IO, Any

import cv2
import numpy as np

from edgevision.fsutil import fsync_dir, mkdir_synced
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
        mkdir_synced(final_path.parent)  # a new day's directory survives a power cut with its clips
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
