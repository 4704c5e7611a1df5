"""``models distill --events``: the recorder's clips give the events and the scenes between them (no TensorFlow)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from edgevision.distill.data import read_events
from edgevision.errors import InputError
from edgevision.recorder.index import EventIndex

FPS = 10


BITS = 6


def _code(n: int) -> np.ndarray:
    """A 48x64 frame showing ``n`` in binary as six black / white vertical bars (survives lossy coding)."""
    img = np.zeros((48, 64, 3), np.uint8)
    for k in range(BITS):
        if n >> k & 1:
            img[:, k * 10 + 2 : k * 10 + 10] = 255
    return img


def _decode(frame: np.ndarray) -> int:
    w = frame.shape[1]
    cols = [int((k * 10 + 6) * w / 64) for k in range(BITS)]
    return sum(1 << k for k, c in enumerate(cols) if frame[:, c].mean() > 128)


def _clip(path: Path, codes: list[int]) -> None:
    """An MP4 whose frame i shows ``codes[i]``, at 10 fps, pts in ms from 0 (as the recorder writes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=FPS)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        s.time_base = s.codec_context.time_base = Fraction(1, 1000)
        for i, v in enumerate(codes):
            fr = av.VideoFrame.from_ndarray(_code(v), format="bgr24")
            fr.pts, fr.time_base = i * 1000 // FPS, Fraction(1, 1000)
            for p in s.encode(fr):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def _codes(src_frames: list[np.ndarray]) -> list[int]:
    return [_decode(f) for f in src_frames]


def _event(
    idx: EventIndex, clip: str | None, clip_start: float, start: float, end: float, status: str
) -> None:
    eid = idx.create("cam", "person", start, 0, start_wall=1000.0 + start)
    idx.update(eid, end_ts=end, clip_path=clip, clip_start_ts=clip_start, status=status)


def test_events_give_event_frames_and_the_scenes_between_events(tmp_path: Path) -> None:
    data = tmp_path / "data"
    # clip 1: frames 0-29 on the frame clock 100.0-102.9; the event spans 101.0-101.9 (frames 10-19)
    _clip(data / "clips" / "a.mp4", list(range(30)))
    # clip 2 (later): frames 0-9 (codes 40-49) at 200.0-200.9; event 200.3-200.6 (frames 3-6)
    _clip(data / "clips" / "b.mp4", list(range(40, 50)))
    _clip(data / "clips" / "c.mp4", [63] * 5)  # an event still recording: not used
    idx = EventIndex(data)
    try:
        _event(idx, "clips/a.mp4", 100.0, 101.0, 101.9, "finalized")
        _event(idx, "clips/c.mp4", 150.0, 150.0, 151.0, "recording")
        _event(idx, "clips/gone.mp4", 160.0, 160.0, 161.0, "finalized")  # deleted by retention: skipped
        _event(idx, str(data / "clips" / "b.mp4"), 200.0, 200.3, 200.6, "recovered")
    finally:
        idx.close()

    event, between = read_events(data, 64, every=1, between_every=1)
    assert event.kind == "event" and between.kind == "between"
    assert event.files == between.files == [str(data / "clips" / "a.mp4"), str(data / "clips" / "b.mp4")]
    assert _codes(event.frames) == [*range(10, 20), *range(43, 47)]
    assert _codes(between.frames) == [*range(10), *range(20, 30), 40, 41, 42, 47, 48, 49]
    assert event.frames[0].shape == (64, 64, 3) and event.frames[0].dtype == np.uint8

    # between events sampled every 3rd frame; the event frames every 2nd
    event, between = read_events(data, 64, every=2, between_every=3)
    assert len(event.frames) == 7 and event.indexes == [0, 2, 4, 6, 8, 10, 12]
    assert len(between.frames) == 9 and between.total == 26
    assert _codes(event.frames) == [10, 12, 14, 16, 18, 43, 45]
    assert _codes(between.frames) == [0, 3, 6, 9, 22, 25, 28, 41, 48]


def test_events_without_an_index_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no event index"):
        read_events(tmp_path, 32)


def test_event_clips_come_in_recording_order_whatever_the_wall_clock_said(tmp_path: Path) -> None:
    """The split by time (the later part validates) follows recording order: the second event here was recorded
    after a reboot whose clock restarted days back (a Pi without a real-time clock)."""
    from edgevision.distill.data import event_clips

    data = tmp_path / "data"
    index = EventIndex(data)
    for i, wall in ((1, 2_000_000.0), (2, 1_000_000.0)):
        rel = f"clips/{i}.mp4"
        (data / rel).parent.mkdir(parents=True, exist_ok=True)
        (data / rel).write_bytes(b"x")
        index.create("cam", "person", 0.0, 0, start_wall=wall, status="finalized", clip_path=rel)
    index.close()
    assert [c.path.name for c in event_clips(data)] == ["1.mp4", "2.mp4"]
