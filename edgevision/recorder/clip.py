"""Crash-safe clips: fragmented MP4 written as ``*.partial``, fsync'd as it goes, renamed on finalize.

With ``movflags=frag_keyframe+empty_moov`` the file is a ``moov`` header followed by self-contained
``moof``+``mdat`` fragments, one per keyframe (one per second here), so a process killed mid-recording leaves a
file that plays up to its last complete fragment. :func:`salvage_fragmented_mp4` cuts such a file back to that
point. PyAV is used because OpenCV's VideoWriter can neither fragment nor be flushed to disk.
"""

from __future__ import annotations

import logging
import os
import platform
import struct
from fractions import Fraction
from pathlib import Path
from typing import IO, Any

import cv2
import numpy as np

from edgevision.fsutil import fsync_dir

log = logging.getLogger(__name__)

TIME_BASE = Fraction(1, 1000)  # pts in milliseconds of the frame clock: variable frame rate is fine
PARTIAL_SUFFIX = ".partial"


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


class ClipWriter:
    """Encode frames into ``<final>.partial``; :meth:`finalize` makes ``<final>`` appear atomically.

    Not thread-safe: owned by the recorder thread. ``write`` raises ``OSError`` (e.g. ENOSPC) to the caller,
    which decides how to degrade; nothing here swallows an error.
    """

    def __init__(
        self, final_path: Path, fps_hint: float, codec: str = "libx264", fsync_every_s: float = 1.0
    ) -> None:
        import av

        self.final_path = final_path
        self.partial_path = final_path.with_name(final_path.name + PARTIAL_SUFFIX)
        self.fps = max(1.0, fps_hint)
        self.codec = codec
        self.fsync_every = fsync_every_s
        self.frames = 0
        self.first_ts: float | None = None
        self.last_ts: float | None = None
        self._last_pts = -1
        self._last_sync_ts = 0.0
        self._size: tuple[int, int] | None = None
        final_path.parent.mkdir(parents=True, exist_ok=True)
        self._fh: IO[bytes] = open(self.partial_path, "wb")  # noqa: SIM115 - closed in finalize/abort
        fsync_dir(final_path.parent)
        self._container: Any = av.open(
            self._fh, "w", format="mp4", options={"movflags": "frag_keyframe+empty_moov+default_base_moof"}
        )
        self._stream: Any = None

    def _open_stream(self, width: int, height: int) -> None:
        stream = self._container.add_stream(self.codec, rate=round(self.fps))
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        stream.time_base = TIME_BASE
        stream.codec_context.time_base = TIME_BASE  # ms precision for variable frame rate (not 1/fps)
        gop = str(max(1, round(self.fps * self.fsync_every)))
        if self.codec == "libx264":
            stream.options = {"preset": "veryfast", "tune": "zerolatency", "g": gop}
        else:
            stream.options = {"g": gop}
        self._stream = stream
        self._size = (width, height)

    def write(self, image: np.ndarray, ts: float) -> None:
        """Append one BGR (or grayscale) frame taken at ``ts`` seconds (frame clock)."""
        import av

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
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self._last_pts = pts
        self.frames += 1
        self.last_ts = ts
        if ts - self._last_sync_ts >= self.fsync_every:
            self.sync()
            self._last_sync_ts = ts

    def sync(self) -> None:
        """Push what the muxer has written to the disk (fragments complete up to the last keyframe)."""
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def finalize(self) -> Path:
        """Flush the encoder, close, fsync, rename ``.partial`` to the final name and fsync the directory."""
        if self._stream is not None:
            for packet in self._stream.encode():
                self._container.mux(packet)
        self._container.close()
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        if self.frames == 0:
            self.partial_path.unlink()
            raise ValueError(f"{self.final_path}: no frame was written")
        os.replace(self.partial_path, self.final_path)
        fsync_dir(self.final_path.parent)
        return self.final_path

    def abort(self) -> None:
        """Stop without finalizing; the ``.partial`` stays for start-up recovery to salvage."""
        try:
            self._container.close()
        except Exception as exc:  # the file is left as it is for recovery; the failure is logged
            log.warning("%s: closing an aborted clip failed: %s", self.partial_path, exc)
        finally:
            self._fh.close()


def _boxes(buf: bytes) -> list[tuple[str, int, int]]:
    """Top-level MP4 boxes as (type, start, end); stops at the first incomplete box."""
    out = []
    pos = 0
    n = len(buf)
    while pos + 8 <= n:
        size, kind = struct.unpack_from(">I4s", buf, pos)
        header = 8
        if size == 1:
            if pos + 16 > n:
                break
            size = struct.unpack_from(">Q", buf, pos + 8)[0]
            header = 16
        elif size == 0:
            size = n - pos
        if size < header or pos + size > n:
            break
        out.append((kind.decode("latin-1"), pos, pos + size))
        pos += size
    return out


def salvage_fragmented_mp4(path: Path) -> int:
    """Cut a fragmented MP4 back to its last complete ``moof``+``mdat`` pair; return the fragments kept.

    Returns 0 (and leaves the file alone) when there is no ``moov`` or no complete fragment.
    """
    buf = path.read_bytes()
    boxes = _boxes(buf)
    kinds = [k for k, _, _ in boxes]
    if "moov" not in kinds:
        return 0
    end = 0
    fragments = 0
    for i, (kind, _start, stop) in enumerate(boxes):
        if kind == "mdat" and i > 0 and boxes[i - 1][0] == "moof":
            end = stop
            fragments += 1
        elif kind in ("ftyp", "moov") and fragments == 0:
            end = max(end, stop)
    if fragments == 0:
        return 0
    if end < len(buf):
        with open(path, "r+b") as fh:
            fh.truncate(end)
            fh.flush()
            os.fsync(fh.fileno())
    return fragments
