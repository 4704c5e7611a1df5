"""Sinks: the detections log (JSON lines), the annotated video and the optional window."""

from __future__ import annotations

import json
import logging
import os
import queue
import stat
import sys
import threading
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import IO, Any

import cv2
import numpy as np

from edgevision.errors import InputError, UsageError
from edgevision.pipeline.handoff import put_or_drop, put_waiting
from edgevision.render import draw_detections, draw_faces
from edgevision.results import DetectMode, FrameResult
from edgevision.writable import check_output_file

log = logging.getLogger(__name__)


def result_record(result: FrameResult, timing: bool = True, landmarks: bool = False) -> dict[str, object]:
    """The JSON-lines record of one processed frame (same detection format as ``edgevision detect``)."""
    rec: dict[str, object] = {
        "frame": result.frame.index,
        "ts": round(result.frame.ts, 6),
        "model": result.model,
    }
    if result.rung is not None:
        rec["rung"] = result.rung
    if timing:
        rec["latency_ms"] = {k: round(v, 3) for k, v in result.latency.as_dict().items()}
    rec["detections"] = [d.to_dict() for d in result.detections]
    if result.faces is not None:
        rec["faces"] = [f.to_dict(with_landmarks=landmarks) for f in result.faces]
    flag = _MODE_FLAGS.get(result.mode)
    if flag is not None:
        rec[flag] = True
    if result.switch is not None:
        rec["switch"] = result.switch.as_dict()
    return rec


# How a frame whose detector did not run is flagged in its detections line.
_MODE_FLAGS = {DetectMode.CARRIED: "carried", DetectMode.GATED: "gated", DetectMode.OFF: "detect_off"}


class DetectionsLog:
    """``--detections FILE``: one JSON object per processed frame, flushed per line.

    Each line is written whole and flushed, so a crash leaves at most one incomplete last line. ``timing``
    False drops ``latency_ms`` (the one wall-clock field), making replay output byte-identical between runs.
    ``-`` means standard output; a pipe, ``/dev/stdout`` or a FIFO works too (fsync only for regular files).
    The file is created (an earlier one replaced) with the first frame's line: a run that fails before its first
    frame (a camera that does not open) leaves no empty file and keeps an earlier run's log.
    """

    def __init__(self, path: Path, timing: bool = True, landmarks: bool = False) -> None:
        self.path = path
        self.timing = timing
        self.landmarks = landmarks
        self._owned = str(path) != "-"
        self._fh: IO[str] | None = None if self._owned else sys.stdout
        self._closed = False

    def _open(self) -> IO[str]:
        try:
            if not self.path.parent.exists():
                self.path.parent.mkdir(parents=True, exist_ok=True)
            return open(self.path, "w", encoding="utf-8")
        except OSError as exc:  # checked before the run (check_output_file): changed since
            raise UsageError(f"--detections {self.path}: cannot write: {exc.strerror}") from None

    def on_result(self, result: FrameResult) -> None:
        if self._fh is None:
            if self._closed:
                raise RuntimeError("--detections: a frame after close()")
            self._fh = self._open()
        self._fh.write(
            json.dumps(result_record(result, self.timing, self.landmarks), separators=(",", ":")) + "\n"
        )
        self._fh.flush()

    def close(self) -> None:
        self._closed = True
        if self._fh is not None:
            fh, self._fh = self._fh, None
            fh.flush()
            if not self._owned:
                return  # stdout stays open for the summary; the caller's shell owns it
            if stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                os.fsync(fh.fileno())  # a pipe, FIFO or terminal cannot be fsync'd (EINVAL)
            fh.close()


VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".avi", ".mkv")
_FASTSTART = (".mp4", ".m4v", ".mov")  # the index up front: a browser plays the file while it downloads


def check_video_target(path: Path) -> None:
    """Refuse, before the run starts, a ``--save-video`` path no writer here can produce.

    The container comes from the extension; the file must be writable (see :mod:`edgevision.writable`).
    """
    if path.exists() and path.is_dir():
        raise UsageError(f"--save-video {path}: is a directory; give a file such as {path / 'annotated.mp4'}")
    suffix = path.suffix.lower()
    if suffix not in VIDEO_SUFFIXES:
        raise UsageError(
            f"--save-video {path}: cannot write video with extension '{path.suffix or '(none)'}'; "
            f"use one of {', '.join(VIDEO_SUFFIXES)}"
        )
    check_output_file("--save-video", path)


class H264Writer:
    """Annotated frames into ``path`` with PyAV: H.264 (the Pi's hardware encoder, else libx264; MPEG-4 part 2
    only where neither exists), yuv420p, ``faststart`` MP4 — a file a browser plays. Timestamps are the frames'
    own (ms), so a live run with dropped frames plays at the right speed. Not thread-safe: the writer thread's.
    """

    TIME_BASE = Fraction(1, 1000)

    def __init__(self, path: Path, fps: float) -> None:
        from edgevision.capture.encoder import choose_encoder

        self.path = path
        self.fps = fps
        self.codec = choose_encoder("auto")
        self._container: Any = None
        self._stream: Any = None
        self._first_ts: float | None = None
        self._last_pts = -1

    def _open(self, width: int, height: int) -> None:
        import av

        options = {"movflags": "+faststart"} if self.path.suffix.lower() in _FASTSTART else {}
        try:
            self._container = av.open(str(self.path), "w", options=options)
        except (av.error.FFmpegError, OSError) as exc:
            raise InputError(f"{self.path}: cannot open video writer: {exc}") from None
        stream = self._container.add_stream(self.codec, rate=Fraction(round(self.fps * 1000), 1000))
        stream.width, stream.height, stream.pix_fmt = width - width % 2, height - height % 2, "yuv420p"
        stream.time_base = self.TIME_BASE
        stream.codec_context.time_base = self.TIME_BASE
        if self.codec == "libx264":
            stream.options = {"preset": "veryfast", "crf": "23"}
        elif self.codec == "h264_v4l2m2m":
            stream.bit_rate = int(width * height * self.fps * 0.1)
        self._stream = stream

    def write(self, image: np.ndarray, ts: float) -> None:
        import av

        if self._stream is None:
            self._open(image.shape[1], image.shape[0])
        if self._first_ts is None:
            self._first_ts = ts
        pts = max(round((ts - self._first_ts) * 1000), self._last_pts + 1)
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="bgr24")
        if (frame.width, frame.height) != (self._stream.width, self._stream.height):
            frame = frame.reformat(self._stream.width, self._stream.height)
        frame.pts, frame.time_base = pts, self.TIME_BASE
        self._last_pts = pts
        self._container.mux(self._stream.encode(frame))

    def close(self) -> None:
        if self._container is not None:
            container, self._container = self._container, None
            try:
                container.mux(self._stream.encode())
            finally:
                container.close()


class VideoSink:
    """``--save-video FILE``: annotated frames encoded (:class:`H264Writer`) in a writer thread behind a bounded
    queue.

    In replay (``blocking=True``) the loop waits for the writer so every frame is written; live, a full
    queue drops the frame and counts it (``dropped``), so encoding never slows inference.
    """

    FINISH_S = 60.0  # how long close() waits for the writer to take its end marker and finish the file

    def __init__(self, path: Path, fps: Callable[[], float | None], blocking: bool, depth: int = 8) -> None:
        self.path = path
        self.clock: Callable[[], float] = time.monotonic  # close()'s deadline
        self._fps_source = fps  # read at the first frame, once the source is open and knows its rate
        self.fps = 25.0
        self.blocking = blocking
        self.dropped = 0
        self.written = 0
        self._q: queue.Queue[tuple[np.ndarray, float] | None] = queue.Queue(maxsize=depth)
        self._writer: H264Writer | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="video-writer", daemon=True)
        self._started = False
        check_video_target(path)

    def _run(self) -> None:
        try:
            while True:
                item = self._q.get()
                if item is None:
                    break
                if self._writer is None:
                    self._writer = H264Writer(self.path, self.fps)
                self._writer.write(*item)
                self.written += 1
        except BaseException as exc:  # raised to the pipeline on the next frame or at close
            self._error = exc
            while True:  # unblock a producer waiting on a full queue
                try:
                    if self._q.get_nowait() is None:
                        break
                except queue.Empty:
                    break
        finally:
            if self._writer is not None:
                try:
                    self._writer.close()
                except Exception as exc:
                    self._error = self._error or exc

    def on_result(self, result: FrameResult) -> None:
        if self._error is not None:
            raise self._error
        if not self._started:
            fps = self._fps_source()
            self.fps = fps if fps and fps > 0 else 25.0
            self._thread.start()
            self._started = True
        image = result.frame.image  # a lazy frame makes its full-resolution image here: saved video needs it
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image.copy()
        draw_detections(image, result.detections)
        if result.faces:
            features = not result.faces_blurred
            draw_faces(image, result.faces, landmarks=features, keypoints=features)
        item = (image, result.frame.ts)
        if self.blocking:
            put_waiting(self._q, item, self._thread, lambda: self._error, f"{self.path}: video writer")
        elif not put_or_drop(self._q, item):
            self.dropped += 1

    def close(self) -> None:
        if self._started:
            # one deadline for both: a writer stuck in a frame never makes room for the marker
            deadline = self.clock() + self.FINISH_S
            while self._thread.is_alive() and self.clock() < deadline:
                try:
                    self._q.put(None, timeout=0.5)
                    break
                except queue.Full:
                    continue
            self._thread.join(timeout=max(0.0, deadline - self.clock()))
            if self._thread.is_alive():
                raise InputError(f"{self.path}: video writer did not finish within {self.FINISH_S:.0f} s")
        if self._error is not None:
            raise self._error
        if self.dropped:
            log.warning("video: %d frame(s) dropped because the encoder fell behind", self.dropped)


def gui_available() -> bool:
    """True when this OpenCV build can open windows (opencv-python-headless cannot)."""
    info = cv2.getBuildInformation()
    for line in info.splitlines():
        if line.strip().startswith("GUI:"):
            return "NONE" not in line.upper()
    return False


class WindowSink:
    """``--show``: an OpenCV window with the annotated frames (only with a GUI build of OpenCV)."""

    def __init__(self, title: str = "edgevision") -> None:
        if not gui_available():
            raise UsageError(
                "--show needs an OpenCV build with a GUI; this one is headless "
                "(pip install opencv-python instead of opencv-python-headless)"
            )
        self.title = title

    def on_result(self, result: FrameResult) -> None:
        image = draw_detections(result.frame.image.copy(), result.detections)
        if result.faces:
            features = not result.faces_blurred
            draw_faces(image, result.faces, landmarks=features, keypoints=features)
        cv2.imshow(self.title, image)
        cv2.waitKey(1)

    def close(self) -> None:
        cv2.destroyWindow(self.title)
