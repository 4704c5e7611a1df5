"""Capture faults a camera or stream really shows: a source that opens but never delivers a frame, a camera
that sends corrupt JPEGs."""

from __future__ import annotations

import threading
import weakref
from fractions import Fraction
from typing import Any

import cv2
import numpy as np
import pytest
from media import DamagedPicture

from edgevision.capture.replay import ReplayRunner
from edgevision.capture.runner import LiveRunner, SourceWait
from edgevision.capture.sources import OpenCVSource


class _RecordingStop(threading.Event):
    """The runner's stop event, with every wait recorded and returned at once (no real sleeping)."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(float(timeout or 0.0))
        return self.is_set()


class _OpensButNoFrame:
    """A live source whose open succeeds and whose every read fails (a USB camera short of bandwidth: the
    device opens, VIDIOC_STREAMON fails; an HTTP server that closes after its headers)."""

    live = True
    fps: float | None = None
    source_id = "camera9"

    def __init__(self, log: list[str]) -> None:
        self.log = log

    def open(self) -> None:
        self.log.append("open")

    def read(self) -> tuple[np.ndarray, float, np.ndarray | None] | None:
        return None

    def close(self) -> None:
        pass


def test_a_source_that_opens_but_delivers_nothing_is_reopened_with_backoff() -> None:
    calls: list[str] = []
    waits: list[SourceWait | None] = []  # what the status said as each connection was being made
    runner: LiveRunner

    def factory() -> _OpensButNoFrame:
        waits.append(runner.waiting())
        if calls.count("open") >= 6:
            runner._stop.set()  # enough: end the capture thread
        return _OpensButNoFrame(calls)

    runner = LiveRunner(factory, backoff_initial=0.5, backoff_max=4.0)
    stop = _RecordingStop()
    runner._stop = stop
    runner.start()
    for t in runner._threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in runner._threads)
    opens = calls.count("open")
    assert opens >= 6
    # every reopen after a connection that gave nothing waited its turn, the delay doubling as for refused opens
    assert len(stop.waits) >= opens - 1
    assert stop.waits == [min(4.0, 0.5 * 2**i) for i in range(len(stop.waits))]
    assert waits[0] is None  # the first open, at start
    wait = waits[-1]
    assert wait is not None and "no frame" in wait.reason
    assert wait.attempts == len(stop.waits)  # one wait, its attempts counted across the connections
    assert {w.since for w in waits[1:] if w is not None} == {wait.since}


class _JpegCamera:
    """``cv2.VideoCapture`` of an MJPEG camera with CONVERT_RGB off: 1-D arrays of JPEG bytes."""

    def __init__(self, frames: list[bytes | None]) -> None:
        self.frames = frames

    def isOpened(self) -> bool:
        return True

    def read(self) -> tuple[bool, np.ndarray | None]:
        if not self.frames:
            return False, None
        data = self.frames.pop(0)
        if data is None:
            return False, None
        return True, np.frombuffer(data, np.uint8).reshape(1, -1)

    def get(self, prop: int) -> float:
        return 30.0 if prop == cv2.CAP_PROP_FPS else 0.0

    def set(self, prop: int, value: float) -> bool:
        return True

    def release(self) -> None:
        pass


def _jpeg() -> bytes:
    ok, buf = cv2.imencode(".jpg", np.full((48, 64, 3), 128, np.uint8))
    assert ok
    return buf.tobytes()


def _mjpeg_source(frames: list[bytes | None]) -> OpenCVSource:
    cam = _JpegCamera(frames)

    def factory(*_args: Any) -> _JpegCamera:
        return cam

    src = OpenCVSource(0, fourcc="MJPG", capture_factory=factory)
    src.open()
    return src


def test_corrupt_jpegs_are_skipped_then_a_good_one_is_returned() -> None:
    frames: list[bytes | None] = [b"garbage"] * 5
    src = _mjpeg_source([*frames, _jpeg()])
    item = src.read()
    assert item is not None and item[0].size == (64, 48)


def test_a_camera_sending_only_corrupt_jpegs_is_a_failed_read_not_a_crash() -> None:
    """A long run of corrupt frames used to recurse once per frame until RecursionError killed capture."""
    frames: list[bytes | None] = [b"garbage"] * 5000
    src = _mjpeg_source([*frames, _jpeg()])
    assert src.read() is None  # a failed read: the runner reopens the camera


class _FailingFile:
    """A replayed file whose decoder fails mid-way and whose close fails too."""

    live = False
    fps: float | None = 25.0
    source_id = "broken.mp4"

    def __init__(self) -> None:
        self.reads = 0

    def open(self) -> None:
        pass

    def read(self) -> tuple[np.ndarray, float, np.ndarray | None] | None:
        self.reads += 1
        if self.reads > 2:
            raise RuntimeError("decoder exploded")
        return np.zeros((4, 4, 3), np.uint8), self.reads / 25.0, None

    def close(self) -> None:
        raise RuntimeError("close failed too")


def test_a_replay_thread_failure_is_raised_even_when_closing_the_source_fails() -> None:
    """The end-of-replay marker used to be put after close(): a close that raised lost it, and the consumer took
    the dead thread for the end of the file: a failed replay finished as if complete."""
    runner = ReplayRunner(_FailingFile())
    runner.start()
    got = []
    with pytest.raises(RuntimeError, match="decoder exploded"):
        while not runner.finished:
            frame = runner.get(1.0)
            if frame is not None:
                got.append(frame)
    assert len(got) == 2
    runner.stop()


class _FileWithGap:
    """A paced file whose timestamps jump 100 s (a motion-triggered recording's pause, a cut in a concatenated
    file): its second frame is due 100 s after the first."""

    live = False
    fps: float | None = 25.0
    source_id = "gap.mp4"

    def __init__(self, opens: list[str]) -> None:
        opens.append("open")
        self.items = [0.0, 100.0]

    def open(self) -> None:
        pass

    def read(self) -> tuple[np.ndarray, float, np.ndarray | None] | None:
        if not self.items:
            return None
        return np.zeros((4, 4, 3), np.uint8), self.items.pop(0), None

    def close(self) -> None:
        pass


def test_realtime_replay_waiting_for_a_late_frame_is_not_a_stall() -> None:
    """The pacing wait for a frame due later than the stall timeout counted as a stalled source: the runner reopened
    the file, the replay restarted from its first frame (and, at the same gap, again and again)."""
    now = [0.0]
    opens: list[str] = []
    stalls: list[int] = []
    fired: list[float] = []
    runner = LiveRunner(lambda: _FileWithGap(opens), pace=True, clock=lambda: now[0], stall_timeout=5.0)

    class _Stop(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:
            if timeout and timeout > 1.0 and not fired:  # the pacing wait: 100 s pass, the consumer polls
                fired.append(timeout)
                now[0] += timeout
                runner.get(0.0)  # takes the first frame
                runner.get(0.0)  # nothing yet: is this a stall?
                stalls.append(runner.stats.stalls)
            return self.is_set()

    runner._stop = _Stop()
    runner.start()
    for t in list(runner._threads):
        t.join(timeout=30)
    runner.stop()
    assert stalls == [0]
    assert opens == ["open"]


def _damaged_jpegs() -> list[bytes]:
    """Camera JPEGs whose frame header parses and whose picture does not decode: cut short on the USB bus
    (OpenCV refuses it, FFmpeg fills it in), and cut before its scan (neither decodes it)."""
    ok, buf = cv2.imencode(".jpg", np.random.default_rng(0).integers(0, 256, (48, 64, 3), np.uint8))
    assert ok
    data = buf.tobytes()
    scan = data.index(b"\xff\xda")  # start of scan: the picture itself
    return [data[: len(data) // 2], data[:scan]]


def test_a_damaged_camera_jpeg_is_skipped_not_the_end_of_the_run() -> None:
    """Only the header of a camera JPEG was checked: a JPEG cut short reached the detector's preprocessing on the
    capture thread, whose ValueError stopped the whole run."""
    from edgevision.detection.detector import frame_rgb
    from edgevision.results.frame import Frame, PreparedInput

    def prepare(frame: Frame) -> Frame:
        return frame.with_prepared(PreparedInput((32, 24), frame_rgb(frame, 32, 24), 0.0))

    # one connection's JPEGs: a reconnect after them gives none (its frames would take the slot's place)
    connections: list[list[bytes | None]] = [[*_damaged_jpegs(), _jpeg()]]
    runner = LiveRunner(lambda: _mjpeg_source(connections.pop() if connections else []), prepare)
    runner.start()
    try:
        frame = runner.get(30.0)
    finally:
        runner.stop()
    assert frame is not None and frame.index == 2
    assert frame.prepared is not None and frame.prepared.tensor.shape == (24, 32, 3)


def test_a_damaged_camera_jpeg_is_left_out_of_the_recording_not_the_end_of_the_run() -> None:
    """Recording a camera's JPEGs, FFmpeg's decode error on a damaged one stopped the run."""
    from edgevision.capture.feed import PacketFeed
    from edgevision.capture.stream import EncodingSource

    feed = PacketFeed()
    src = EncodingSource(_mjpeg_source([*_damaged_jpegs(), _jpeg()]), feed, "libx264")
    src.open()
    items = [src.read() for _ in range(3)]
    src.close()
    assert all(item is not None for item in items)
    encoder = src._encoder
    assert (
        encoder is not None and encoder.frames_in == 2
    )  # the one cut short (FFmpeg fills it in) and the good one


class _OnlyDamagedJpegs:
    """A live camera whose JPEGs all have a sound header and a damaged picture, one a second on ``now``; after
    ``count`` of them it tells ``sent`` and blocks in its driver until ``release``."""

    live = True
    fps: float | None = 1.0
    source_id = "camera7"

    def __init__(self, now: list[float], count: int, sent: threading.Event, release: threading.Event) -> None:
        self.now, self.count, self.sent, self.release = now, count, sent, release

    def open(self) -> None:
        pass

    def read(self) -> tuple[Any, float, None] | None:
        if self.count <= 0:
            self.sent.set()
            self.release.wait(30)
            return None
        self.count -= 1
        self.now[0] += 1.0
        return DamagedPicture(), self.now[0], None

    def close(self) -> None:
        pass


def test_a_camera_sending_only_damaged_jpegs_is_a_stalled_source() -> None:
    """The time of the last frame was set before the frame was prepared: a camera whose every JPEG was damaged
    was skipped forever (no frame, no status, no reconnect) and never counted as stalled."""
    from edgevision.detection.detector import frame_rgb
    from edgevision.results.frame import Frame, PreparedInput

    def prepare(frame: Frame) -> Frame:
        return frame.with_prepared(PreparedInput((32, 24), frame_rgb(frame, 32, 24), 0.0))

    now = [0.0]
    sent, release = threading.Event(), threading.Event()
    runner = LiveRunner(
        lambda: _OnlyDamagedJpegs(now, 20, sent, release), prepare, stall_timeout=5.0, clock=lambda: now[0]
    )
    runner.start()
    try:
        assert sent.wait(30)  # 20 s of damaged pictures, the last one just skipped
        assert runner.get(0.0) is None
        assert runner.stats.stalls == 1
    finally:
        release.set()
        runner.stop()


class _StuckThread:
    """A capture thread stuck in its driver: every join waits its whole timeout (on the runner's clock)."""

    def __init__(self, now: list[float]) -> None:
        self.now = now

    def is_alive(self) -> bool:
        return True

    def join(self, timeout: float | None = None) -> None:
        self.now[0] += timeout or 0.0


def test_stopping_waits_for_stuck_capture_threads_once_in_all_not_once_each() -> None:
    """stop() waited 2 s for every capture thread a stall had replaced, stuck ones included: after five stalls a
    Ctrl-C or systemd stop hung 10 s."""
    now = [0.0]
    runner = LiveRunner(lambda: _OpensButNoFrame([]), clock=lambda: now[0])
    runner._threads = [_StuckThread(now) for _ in range(5)]  # type: ignore[misc]
    runner.stop()
    assert now[0] <= 2.0


class _StreamJoinedMidGop:
    """A live stream's demuxer (a :class:`DemuxSource`): one packet a second on ``now``; the packets listed in
    ``decoding`` give a frame (a keyframe and what follows), the others none (what precedes the first keyframe
    of a stream joined mid-GOP). After ``pause_at`` packets it tells ``paused`` and waits for ``go``; 20 packets
    later it ends."""

    live = True
    fps: float | None = 1.0
    source_id = "rtsp://cam/stream"

    def __init__(self, now: list[float], decoding: set[int], pause_at: int) -> None:
        from edgevision.capture.packets import StreamInfo

        self.now, self.decoding, self.pause_at = now, decoding, pause_at
        self.stream_info = StreamInfo("h264", 64, 48, Fraction(1, 1000))
        self.paused, self.go = threading.Event(), threading.Event()
        self.count = 0

    def open(self) -> None:
        pass

    def read(self, decode: bool = True) -> Any:
        import av

        from edgevision.capture.demux import DecodedFrame, DemuxedItem
        from edgevision.capture.packets import EncodedPacket

        if self.count == self.pause_at:
            self.paused.set()
            self.go.wait(30)
        if self.count > self.pause_at + 20:
            return None  # the server hangs up
        self.count += 1
        self.now[0] += 1.0
        ts = self.now[0]
        packet = EncodedPacket(b"\0\0\0\1", self.count, self.count, Fraction(1, 1), False, ts)
        if self.count not in self.decoding:
            return DemuxedItem(packet)
        return DemuxedItem(packet, [DecodedFrame(av.VideoFrame(64, 48, "yuv420p"), ts, self.count)])

    def set_skip(self, skip: Any) -> None:
        pass

    def close(self) -> None:
        self.go.set()


def _mid_gop_runner(
    now: list[float], decoding: set[int], pause_at: int
) -> tuple[LiveRunner, list[_StreamJoinedMidGop]]:
    from edgevision.capture.stream import PacketSource

    demuxers: list[_StreamJoinedMidGop] = []

    def factory() -> PacketSource:
        demuxers.append(_StreamJoinedMidGop(now, decoding if not demuxers else set(), pause_at))
        return PacketSource(demuxers[-1])  # type: ignore[arg-type]

    return LiveRunner(factory, stall_timeout=5.0, clock=lambda: now[0]), demuxers


def test_a_stream_joined_mid_gop_is_not_stalled_while_its_packets_arrive() -> None:
    """Stall detection counted only frames: a camera whose keyframes were further apart than the stall timeout,
    joined mid-GOP (no frame before its next keyframe), was reopened again and again and never showed a frame."""
    now = [0.0]
    runner, demuxers = _mid_gop_runner(now, {9, 10}, pause_at=8)
    runner.start()
    try:
        assert demuxers[0].paused.wait(30)  # 8 s of packets, no frame yet: the keyframe is the next one
        assert runner.get(0.0) is None
        assert runner.stats.stalls == 0
        demuxers[0].go.set()
        frame = runner.get(30.0)
        assert frame is not None and frame.ts >= 9.0  # the keyframe's (or the next one's, in the slot)
        assert runner.stats.stalls == 0
    finally:
        for demux in demuxers:
            demux.go.set()
        runner.stop()


def test_a_stream_whose_packets_never_decode_is_reopened_in_the_end() -> None:
    now = [0.0]
    runner, demuxers = _mid_gop_runner(now, set(), pause_at=600)
    runner.start()
    try:
        assert demuxers[0].paused.wait(30)  # ten minutes of packets, not one frame
        assert runner.get(0.0) is None
        assert runner.stats.stalls == 1
    finally:
        for demux in demuxers:
            demux.go.set()
        runner.stop()


class _FileDecodingLate:
    """A file's demuxer (a :class:`DemuxSource`) whose first ``dead`` packets (256 KiB each) decode to nothing
    (a damaged or headless start), then ``good`` ones that each give a frame; it counts the packets still held
    by anyone (``held``, the most at any read)."""

    live = False
    fps: float | None = 25.0
    source_id = "late.mp4"

    def __init__(self, dead: int, good: int) -> None:
        from edgevision.capture.packets import StreamInfo

        self.dead, self.good = dead, good
        self.stream_info = StreamInfo("h264", 64, 48, Fraction(1, 1000))
        self.alive: weakref.WeakSet[Any] = weakref.WeakSet()
        self.held = 0
        self.opens = 0

    def open(self) -> None:
        self.opens += 1
        self.count = 0

    def read(self, decode: bool = True) -> Any:
        import av

        from edgevision.capture.demux import DecodedFrame, DemuxedItem
        from edgevision.capture.packets import EncodedPacket

        self.held = max(self.held, len(self.alive))
        if self.count == self.dead + self.good:
            return None
        self.count += 1
        packet = EncodedPacket(bytes(256 << 10), self.count, self.count, Fraction(1, 1000), False, self.count)
        self.alive.add(packet)
        if self.count <= self.dead:
            return DemuxedItem(packet)
        return DemuxedItem(packet, [DecodedFrame(av.VideoFrame(64, 48, "yuv420p"), packet.ts, self.count)])

    def set_skip(self, skip: Any) -> None:
        pass

    def close(self) -> None:
        pass


def test_a_file_whose_video_never_decodes_is_refused_without_holding_it_all() -> None:
    """Checking a file at open kept every packet until a frame decoded: a file whose video never decoded was
    read whole into memory (1 GB of it for a 1 GB file) before it was refused."""
    from edgevision.capture.stream import PacketSource
    from edgevision.errors import InputError

    demux = _FileDecodingLate(dead=400, good=0)  # 100 MiB
    with pytest.raises(InputError, match="no decodable video frame"):
        PacketSource(demux).open()  # type: ignore[arg-type]
    assert demux.held * 256 << 10 <= 40 << 20


def test_a_file_whose_first_frame_comes_late_is_still_played_and_recorded_from_its_start() -> None:
    from edgevision.capture.feed import PacketFeed
    from edgevision.capture.packets import EncodedPacket
    from edgevision.capture.stream import PacketSource

    demux = _FileDecodingLate(dead=400, good=3)
    feed = PacketFeed(max_packets=1000, max_bytes=1 << 30, blocking=True)
    src = PacketSource(demux, feed)  # type: ignore[arg-type]
    src.open()
    got = [item[1] for item in iter(src.read, None)]
    src.close()
    assert got == [401, 402, 403]
    packets = []
    while (item := feed.get()) is not None:
        packets += [item] if isinstance(item, EncodedPacket) else []
    assert [p.pts for p in packets] == list(range(1, 404))  # each packet once, from the first
