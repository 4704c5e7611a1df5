"""``--save-video``: annotated frames through PyAV into H.264 a browser plays (not OpenCV's mp4v)."""

from __future__ import annotations

import itertools
import threading
from pathlib import Path

import av
import numpy as np
import pytest

from edgevision.errors import InputError, UsageError
from edgevision.pipeline import sinks
from edgevision.pipeline.sinks import VideoSink, check_video_target
from edgevision.recorder.clip_check import _boxes
from edgevision.results import FrameResult, Latency
from edgevision.results.detection import BBox, Detection
from edgevision.results.frame import Frame


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_saved_video_is_browser_playable_h264_at_the_frames_own_times(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"out{suffix}"
    sink = VideoSink(path, lambda: 10.0, blocking=True)
    img = np.zeros((121, 161, 3), np.uint8)  # odd sizes: the encoder needs even ones
    det = [Detection("person", 0, 0.9, BBox(0.2, 0.2, 0.6, 0.9))]
    times = [i / 10 for i in range(20)] + [3.0 + i / 10 for i in range(10)]  # a gap, as a live run drops
    for i, ts in enumerate(times):
        sink.on_result(FrameResult(Frame(img + i, ts, i, "t"), det, Latency(), "m"))
    sink.close()
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        assert s.codec_context.name == "h264" and s.codec_context.pix_fmt == "yuv420p"
        pts = [f.time for f in c.decode(s)]  # seconds (pts x time base); None would fail the comparison
    assert pts == pytest.approx(times, abs=1e-3)
    if suffix == ".mp4":
        kinds = [k for k, _, _ in _boxes(path.read_bytes())]
        assert kinds.index("moov") < kinds.index("mdat")  # faststart: a browser starts playing at once


def test_a_video_target_without_a_known_container_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"extension '\.xyz'"):
        check_video_target(tmp_path / "a.xyz")
    with pytest.raises(UsageError, match="is a directory"):
        check_video_target(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_live_view_encodes_only_while_someone_watches() -> None:
    import time

    from edgevision.publish.live import LiveView

    live = LiveView(fps=100, watch_s=0.3)
    try:
        img = np.zeros((48, 64, 3), np.uint8)
        for i in range(5):
            live.on_result(FrameResult(Frame(img, i / 10, i, "t"), [], Latency(), "m"))
            time.sleep(0.03)
        assert live.encoded == 0 and not live.watched  # nobody asked: no JPEG was made
        seq, jpeg = live.wait(-1, 0)  # a snapshot request encodes the latest frame on the spot
        assert jpeg is not None and jpeg[:2] == b"\xff\xd8" and live.encoded == 1
        live.on_result(FrameResult(Frame(img + 1, 1.0, 9, "t"), [], Latency(), "m"))
        seq2, _ = live.wait(seq, 2.0)  # a stream client: the encoder thread serves the next frame
        assert seq2 > seq and live.encoded == 2
        time.sleep(0.5)  # the client left
        live.on_result(FrameResult(Frame(img + 2, 2.0, 10, "t"), [], Latency(), "m"))
        time.sleep(0.1)
        assert not live.watched and live.encoded == 2
    finally:
        live.close()


class WedgedWriter:
    """A writer whose first frame never finishes encoding (a stuck encoder, an output on a hung network mount)."""

    entered = threading.Event()
    release = threading.Event()

    def __init__(self, path: Path, fps: float) -> None:
        pass

    def write(self, image: np.ndarray, ts: float) -> None:
        self.entered.set()
        self.release.wait()

    def close(self) -> None:
        pass


def test_closing_with_a_wedged_writer_gives_up_at_the_deadline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer thread stuck in a frame with a full queue behind it: close() raises once its deadline (on the
    sink's clock) has passed, instead of waiting for room for its end marker forever (a SIGTERM that never ends,
    and the sinks closed after this one, the recorder's last clip among them, never closed)."""
    monkeypatch.setattr(sinks, "H264Writer", WedgedWriter)
    sink = VideoSink(tmp_path / "out.mp4", lambda: 10.0, blocking=False, depth=1)
    ticks = itertools.count(0.0, 30.0)  # every reading of the clock is 30 s later
    sink.clock = lambda: next(ticks)
    img = np.zeros((16, 16, 3), np.uint8)
    for i in range(4):  # one frame in the writer, one in the queue, the rest dropped
        sink.on_result(FrameResult(Frame(img, i / 10, i, "t"), [], Latency(), "m"))
        assert i > 0 or WedgedWriter.entered.wait(20.0)  # the writer holds frame 0 before more come
    raised: list[BaseException] = []

    def close() -> None:
        try:
            sink.close()
        except BaseException as exc:
            raised.append(exc)

    closer = threading.Thread(target=close, daemon=True)
    closer.start()
    closer.join(20.0)  # a guard against the hang itself, not a measurement
    WedgedWriter.release.set()
    assert not closer.is_alive(), "close() waited forever for the wedged writer"
    assert len(raised) == 1 and isinstance(raised[0], InputError)
    assert "did not finish" in str(raised[0]) and sink.dropped == 2
