"""Frame sources: OpenCV captures (V4L2/USB cameras, video files, RTSP/HTTP streams) and the Pi camera.

A source opens, reads one image at a time and closes; threading, pacing and reconnection live in
:mod:`edgevision.capture.runner`, so replay and live capture share every other line of the pipeline.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import cv2
import numpy as np

from edgevision.errors import ConfigError, InputError, UsageError
from edgevision.results.frame import DecodedImage

if TYPE_CHECKING:
    from edgevision.capture.encoder import Picamera2Encoding
    from edgevision.capture.feed import PacketFeed

log = logging.getLogger(__name__)

Clock = Callable[[], float]
STREAM_SCHEMES = ("rtsp://", "rtsps://", "http://", "https://")
MAX_CORRUPT_JPEGS = 100  # corrupt JPEGs in a row from an MJPEG camera before a read counts as failed
_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s]*@")


def redact_url(text: str) -> str:
    """``rtsp://user:pw@host/…`` → ``rtsp://***@host/…`` (logs, status lines, source ids never carry
    credentials)."""
    return _USERINFO.sub(r"\g<scheme>***@", text)


class FrameSource(Protocol):
    """What the capture runner needs from a source."""

    source_id: str
    live: bool
    fps: float | None

    def open(self) -> None:
        """Open the device/file/stream or raise :class:`InputError`."""

    def read(self) -> tuple[np.ndarray | DecodedImage, float, np.ndarray | None] | None:
        """(image, timestamp s, optional full-resolution image), or None at end of stream / on failure.

        The image may be a decoded picture converted on demand (a demuxed source): the runner makes a lazy
        frame of it."""

    def close(self) -> None:
        """Release the device. Safe to call twice."""


class _Corrupt:
    """What one read of a corrupt camera JPEG gives: :meth:`OpenCVSource.read` skips it."""


class OpenCVSource:
    """A ``cv2.VideoCapture`` over a camera index, a file or a stream URL.

    ``capture_factory`` is the boundary tests replace: it is called like ``cv2.VideoCapture(target, api,
    params)``. Files are timestamped on the media clock (``CAP_PROP_POS_MSEC``); cameras and streams on
    ``clock`` (monotonic).
    """

    def __init__(
        self,
        target: int | str,
        *,
        width: int | None = None,
        height: int | None = None,
        fps: float | None = None,
        fourcc: str | None = None,
        open_timeout_s: float = 10.0,
        read_timeout_s: float = 5.0,
        capture_factory: Callable[..., Any] | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        self.target = target
        self.is_camera = isinstance(target, int)
        self.is_stream = isinstance(target, str) and target.startswith(STREAM_SCHEMES)
        self.live = self.is_camera or self.is_stream
        self.source_id = f"camera{target}" if self.is_camera else redact_url(str(target))
        self._want = (width, height, fps, fourcc)
        self.fps = fps
        self._open_timeout = open_timeout_s
        self._read_timeout = read_timeout_s
        self._factory = capture_factory or cv2.VideoCapture
        self._clock = clock
        self._cap: Any = None
        self._peeked: tuple[np.ndarray | DecodedImage, float, None] | None = None
        self._last_ts = -1.0
        self._count = 0
        self._warned_short = False
        self._raw_mjpeg = False

    def _create(self) -> Any:
        if self.is_camera:
            api = cv2.CAP_V4L2 if sys.platform.startswith("linux") else cv2.CAP_ANY
            return self._factory(self.target, api)
        params = [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
            int(self._open_timeout * 1000),
            cv2.CAP_PROP_READ_TIMEOUT_MSEC,
            int(self._read_timeout * 1000),
        ]
        return self._factory(str(self.target), cv2.CAP_FFMPEG, params)

    def open(self) -> None:
        if not self.live:
            path = Path(str(self.target))
            if not path.exists():
                raise InputError(f"{path}: no such file")
            if not path.is_file():
                raise InputError(f"{path}: not a file")
        cap = self._create()
        if cap is None or not cap.isOpened():
            if cap is not None:
                cap.release()
            if self.is_camera:
                what, hint = (
                    "camera",
                    f" (does /dev/video{self.target} exist, and is the user in the 'video' group?)",
                )
            elif self.is_stream:
                what, hint = "stream", " (is the URL right and the server reachable?)"
            else:
                what, hint = "video", " (unsupported, truncated or corrupt file)"
            raise InputError(f"{self.source_id}: cannot open {what}{hint}")
        self._cap = cap
        width, height, fps, fourcc = self._want
        if self.is_camera:
            if fourcc:
                cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter.fourcc(*fourcc))
            if width:
                cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
            if height:
                cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
            if fps:
                cap.set(cv2.CAP_PROP_FPS, fps)
        self._raw_mjpeg = False
        if self.is_camera and (fourcc or "").upper() == "MJPG":
            # The camera's JPEGs as they are: inference decodes them at reduced scale, recording encodes from
            # FFmpeg's YUV; a full-resolution decode happens only for a consumer that asks (MjpegPicture).
            self._raw_mjpeg = bool(cap.set(cv2.CAP_PROP_CONVERT_RGB, 0))
        reported = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        if reported > 0 and (self.fps is None or not self.is_camera):
            self.fps = reported
        if not self.live:
            first = self.read()
            if first is None:
                self.close()
                raise InputError(f"{self.source_id}: no decodable video frame (truncated or corrupt file)")
            self._peeked = (first[0], first[1], None)
            self._count = 0

    def read(self) -> tuple[np.ndarray | DecodedImage, float, np.ndarray | None] | None:
        if self._peeked is not None:
            item, self._peeked = self._peeked, None
            self._count = 1
            return item
        if self._cap is None:
            return None
        for _ in range(MAX_CORRUPT_JPEGS):
            got = self._read_once()
            if not isinstance(got, _Corrupt):
                return got
        log.warning(
            "%s: %d corrupt JPEGs in a row from the camera; reopening it", self.source_id, MAX_CORRUPT_JPEGS
        )
        return None

    def _read_once(self) -> tuple[np.ndarray | DecodedImage, float, np.ndarray | None] | _Corrupt | None:
        """One frame of the capture; :class:`_Corrupt` for a camera JPEG that does not parse (skipped)."""
        try:
            ok, image = self._cap.read()
        except cv2.error as exc:
            log.warning("%s: read failed: %s", self.source_id, exc)
            return None
        if not ok or image is None or image.size == 0:
            if not self.live and not self._warned_short:
                expected = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
                if expected > 0 and self._count < expected - 1:
                    log.warning(
                        "%s: video ended after %d of %d frames (truncated file?)",
                        self.source_id,
                        self._count,
                        expected,
                    )
                self._warned_short = True
            return None
        if self._raw_mjpeg and (image.ndim == 1 or image.shape[0] == 1):
            from edgevision.capture.encoder import MjpegPicture

            try:
                picture = MjpegPicture(image.reshape(-1).tobytes())
            except ValueError as exc:  # a corrupt JPEG from the camera: skip it, like a decode error
                log.debug("%s: %s", self.source_id, exc)
                return _Corrupt()
            self._count += 1
            return picture, self._clock(), None
        if self.live:
            ts = self._clock()
        else:
            ts = float(self._cap.get(cv2.CAP_PROP_POS_MSEC) or 0.0) / 1000.0
            if ts <= self._last_ts:
                # Some containers report no timestamps: fall back to index / fps.
                ts = self._count / (self.fps or 25.0) if self._count else 0.0
                ts = max(ts, self._last_ts + 1e-6)
            self._last_ts = ts
        self._count += 1
        return image, ts, None

    def close(self) -> None:
        if self._cap is not None:
            cap, self._cap = self._cap, None
            cap.release()


class Picamera2Source:
    """The Raspberry Pi camera through picamera2 (imported lazily).

    A low-resolution ``lores`` stream (YUV420, converted to BGR) feeds inference; the ``main`` stream
    (RGB888, which is BGR in memory) is kept for recording. Both come from the same request via
    ``capture_arrays(["main", "lores"])``, so they show the same instant.

    With a packet ``feed`` (recording), the main stream goes to picamera2's own H264Encoder instead
    (:class:`~edgevision.capture.encoder.Picamera2Encoding`: the hardware encoder on a Pi 4) and only ``lores``
    is copied to the CPU, for inference (and snapshots).
    """

    live = True

    def __init__(
        self,
        camera_num: int = 0,
        main_size: tuple[int, int] = (1280, 720),
        lores_size: tuple[int, int] = (640, 360),
        fps: float | None = None,
        module_loader: Callable[[], Any] | None = None,
        clock: Clock = time.monotonic,
        feed: PacketFeed | None = None,
        encoding_loader: Callable[[], Any] | None = None,
    ) -> None:
        self.camera_num = camera_num
        self.feed = feed
        self._encoding_loader = encoding_loader
        self._encoding: Picamera2Encoding | None = None
        self.source_id = f"picamera{camera_num}"
        self.main_size = main_size
        self.lores_size = lores_size
        self.fps = fps
        self._loader = module_loader or (lambda: importlib.import_module("picamera2"))
        self._clock = clock
        self._cam: Any = None

    def open(self) -> None:
        try:
            module = self._loader()
        except ImportError:
            raise ConfigError(
                "picamera2 is not installed: on Raspberry Pi OS run `sudo apt install python3-picamera2` "
                "(or pip install '.[pi]' in the edgevision checkout); it only works on a Raspberry Pi"
            ) from None
        try:
            cam = module.Picamera2(self.camera_num)
        except (IndexError, RuntimeError, OSError) as exc:
            raise InputError(f"{self.source_id}: no Raspberry Pi camera found ({exc})") from None
        controls = {"FrameRate": float(self.fps)} if self.fps else {}
        config = cam.create_video_configuration(
            main={"size": tuple(self.main_size), "format": "RGB888"},
            lores={"size": tuple(self.lores_size), "format": "YUV420"},
            controls=controls,
        )
        try:
            cam.configure(config)
            cam.start()
        except (RuntimeError, OSError) as exc:  # busy (another process has it) or gone again: retried
            cam.close()
            raise InputError(f"{self.source_id}: cannot start the camera ({exc})") from None
        self._cam = cam
        if self.feed is not None:
            from edgevision.capture.encoder import Picamera2Encoding

            feed = self.feed
            loader = self._encoding_loader
            w, h = self.main_size
            encoding = Picamera2Encoding(
                cam,
                feed.put,
                (w, h),
                self.fps or 25.0,
                clock=self._clock,
                skipped=feed.discard,
                module_loader=loader,
            )
            try:
                feed.start_stream(encoding.stream_info)
                encoding.start()
            except BaseException as exc:
                # the camera was started above: left so, this process would hold it and every reopen would
                # find it busy
                self._cam = None
                try:
                    with contextlib.suppress(Exception):  # the encoder's error is the one to report
                        cam.stop()
                finally:
                    cam.close()
                if isinstance(exc, (RuntimeError, OSError)):  # the encoder device busy or gone: retried
                    raise InputError(f"{self.source_id}: cannot start the H.264 encoder ({exc})") from None
                raise
            self._encoding = encoding

    def read(self) -> tuple[np.ndarray, float, np.ndarray | None] | None:
        if self._cam is None:
            return None
        try:
            if self._encoding is not None:  # main is being encoded by picamera2: only lores comes to us
                lores = self._cam.capture_array("lores")
                main = None
            else:
                (main, lores), _metadata = self._cam.capture_arrays(["main", "lores"])
        except (RuntimeError, OSError) as exc:
            log.warning("%s: capture failed: %s", self.source_id, exc)
            return None
        image = cv2.cvtColor(lores, cv2.COLOR_YUV420p2BGR) if lores.ndim == 2 else lores[..., :3]
        full = np.ascontiguousarray(main[..., :3]) if main is not None else None
        return np.ascontiguousarray(image), self._clock(), full

    def close(self) -> None:
        if self._cam is not None:
            cam, self._cam = self._cam, None
            try:
                if self._encoding is not None:
                    encoding, self._encoding = self._encoding, None
                    encoding.stop()
                cam.stop()
            finally:
                cam.close()


def read_frames(path: Path | str, count: int, start: int = 0) -> list[np.ndarray]:
    """Up to ``count`` decoded frames of a video file from frame ``start`` (fewer when the file is shorter)."""
    cap = cv2.VideoCapture(str(path))
    frames: list[np.ndarray] = []
    index = 0
    while len(frames) < count:
        ok, image = cap.read()
        if not ok:
            break
        if index >= start:
            frames.append(image)
        index += 1
    cap.release()
    return frames


def parse_video_target(value: str) -> str:
    """Accept a file path or an rtsp/http(s) URL; any other URL scheme is a usage error."""
    if "://" in value and not value.startswith(STREAM_SCHEMES):
        scheme = value.split("://", 1)[0]
        raise UsageError(
            f"--video {value}: unsupported URL scheme '{scheme}' (use a file, rtsp:// or http(s)://)"
        )
    return value
