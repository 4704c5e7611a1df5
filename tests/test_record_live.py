"""Recording from packets on a live source: results arrive slower than packets, and a raw camera is encoded once.

Live, the capture thread hands packets to the feed as the camera delivers them while inference, on a Pi, may
give a result only every second or so; the recorder must still cut the clip on the frame clock: from the last
keyframe at or before trigger - pre_roll, up to where the event ends.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from conftest import WALKING
from fakes import RawCamera
from test_record_packets import demux_all, settings

from edgevision.capture.encoder import FrameEncoder
from edgevision.capture.feed import PacketFeed
from edgevision.capture.packets import EncodedPacket
from edgevision.recorder.clip_check import inspect_clip
from edgevision.recorder.index import EventIndex
from edgevision.recorder.recorder import Recorder
from edgevision.results import Frame, FrameResult, Latency
from edgevision.results.detection import BBox, Detection

PERSON = [Detection("person", 0, 0.9, BBox(0.3, 0.2, 0.5, 0.9))]


def encoded(seconds: int, fps: int = 25) -> tuple[FrameEncoder, list[EncodedPacket]]:
    """``seconds`` of a moving gradient encoded once (a keyframe a second), as a raw camera's capture does."""
    enc = FrameEncoder(160, 120, float(fps), "libx264")
    base = np.add.outer(np.arange(120), np.arange(160))
    packets: list[EncodedPacket] = []
    for i in range(seconds * fps):
        img = (np.dstack([base + 3 * i, base[::-1] + i, base * 0 + 2 * i]) % 256).astype(np.uint8)
        packets += enc.encode(img, i / fps)
    packets += enc.flush()
    return enc, packets


def test_slow_results_on_a_live_source_cut_the_clip_on_the_frame_clock(tmp_path: Path) -> None:
    enc, packets = encoded(13)
    feed = PacketFeed(blocking=False)  # live: capture never waits for the recorder
    rec = Recorder(settings(tmp_path / "data", pre_roll=1.5, post_roll=1.0), blocking=False, packets=feed)
    feed.start_stream(enc.stream_info)
    img = np.zeros((120, 160, 3), np.uint8)
    sent = 0
    for k in range(2, 12):  # one result a second (inference slower than 5 fps), a person at 6, 7 and 8 s
        ts = float(k)
        # by the time frame ts's result arrives, capture is one inference time (1 s) further
        while sent < len(packets) and packets[sent].ts <= ts + 1.0:
            assert feed.put(packets[sent])
            sent += 1
        time.sleep(0.4)  # longer than the recorder thread's 0.2 s wait: it finds its queue empty
        rec.on_result(FrameResult(Frame(img, ts, k * 25, "t"), PERSON if 6 <= ts < 9 else [], Latency(), "m"))
        assert rec.drain(10)
    rec.close()
    index = EventIndex(tmp_path / "data")
    (row,) = [r.to_dict() for r in index.list()]
    index.close()
    assert row["start_ts"] == 8.0 and row["end_ts"] == 9.0  # 3 of 5 frames; last seen at 8 s + 1 s post-roll
    want_start = max(p.ts for p in packets if p.keyframe and p.ts <= 8.0 - 1.5)
    want = [p for p in packets if want_start <= p.ts < 9.0]
    assert row["clip_start_ts"] == pytest.approx(want_start)  # not the keyframe after it
    clip = tmp_path / "data" / row["clip_path"]
    got = demux_all(clip)  # (the MP4 holds the encoder's Annex B packets length-prefixed: compare counts)
    assert len(got) == len(want) and [p.keyframe for p in got] == [
        p.keyframe for p in want
    ]  # none after the end
    check = inspect_clip(clip, want_middle=False)
    assert check.playable and check.frames == row["clip_frames"] == len(want) == 75


def test_a_live_recorder_without_results_takes_only_what_keeps_the_feed_from_dropping() -> None:
    from fractions import Fraction

    from edgevision.recorder.intake import PacketIntake

    feed = PacketFeed(max_packets=10, blocking=False)
    for i in range(8):
        assert feed.put(EncodedPacket(b"x", i, i, Fraction(1, 25), i % 4 == 0, i / 25))
    intake = PacketIntake(feed)
    taken = list(intake.pull_backlog())
    assert [p.ts for p in taken if isinstance(p, EncodedPacket)] == [0.0, 0.04, 0.08] and len(feed) == 5
    assert list(intake.pull_backlog()) == []  # half full: the rest waits for a result to ask for it
    assert [p.ts for p in intake.pull(0.2) if isinstance(p, EncodedPacket)] == [0.12, 0.16, 0.2]


def walking_frames(n: int, size: tuple[int, int] = (640, 360)) -> list[np.ndarray]:
    """The first ``n`` frames of the walking clip, decoded with PyAV, as BGR images of ``size``."""
    out: list[np.ndarray] = []
    with av.open(str(WALKING)) as c:
        for fr in c.decode(video=0):
            out.append(fr.reformat(size[0], size[1], "bgr24").to_ndarray())
            if len(out) == n:
                break
    return out


def test_raw_camera_events_record_a_playable_clip_through_the_single_capture_side_encode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edgevision.capture import encoder as encoder_mod
    from edgevision.capture.runner import make_frame
    from edgevision.capture.sources import OpenCVSource
    from edgevision.capture.stream import EncodingSource

    made: list[FrameEncoder] = []
    real_init = encoder_mod.FrameEncoder.__init__

    def counting_init(self: FrameEncoder, *args: Any, **kwargs: Any) -> None:
        made.append(self)
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(encoder_mod.FrameEncoder, "__init__", counting_init)
    images = walking_frames(100)
    now = [100.0]
    feed = PacketFeed(blocking=False)
    source = EncodingSource(
        OpenCVSource(0, fourcc="YUYV", capture_factory=RawCamera(images), clock=lambda: now[0]), feed
    )
    source.open()
    rec = Recorder(settings(tmp_path / "data", pre_roll=1.0), blocking=True, packets=feed)
    index = 0
    while (item := source.read()) is not None:
        frame = make_frame(item, index, source.source_id)
        assert isinstance(frame.image, np.ndarray) and frame.image.shape == (360, 640, 3)  # a plain image
        rec.on_result(FrameResult(frame, PERSON if 1.5 <= frame.ts - 100.0 < 2.5 else [], Latency(), "m"))
        index += 1
        now[0] += 0.04
    rec.close()
    assert len(made) == 1 and made[0] is source._encoder  # one encoder: the capture's, none in the recorder
    assert made[0].frames_in == 100 and rec.intake.encoder is None  # every frame encoded once
    assert feed.put_count == made[0].packets_out and feed.dropped == 0  # every packet reached the recorder
    idx = EventIndex(tmp_path / "data")
    (row,) = [r.to_dict() for r in idx.list()]
    idx.close()
    clip = tmp_path / "data" / row["clip_path"]
    assert demux_all(clip)[0].keyframe and row["clip_start_ts"] <= row["start_ts"] - 1.0
    check = inspect_clip(clip, want_middle=True)
    assert check.playable and check.frames == row["clip_frames"] >= round(
        (row["end_ts"] - row["start_ts"]) * 25
    )
    assert check.middle is not None and check.middle.shape == (360, 640, 3)  # the camera's full picture...
    at = round((row["clip_start_ts"] - 100.0) * 25) + check.frames // 2
    errors = [np.abs(check.middle.astype(np.int16) - image).mean() for image in images]
    assert errors[at] < 8 and int(np.argmin(errors)) == at  # ...the frame captured at that instant


def test_packet_drops_and_pre_roll_trims_are_in_the_run_summary_and_the_metrics(tmp_path: Path) -> None:
    import dataclasses
    from fractions import Fraction
    from types import SimpleNamespace
    from typing import cast

    from edgevision.app.system import System
    from edgevision.capture.packets import StreamInfo
    from edgevision.pipeline.loop import RunSummary
    from edgevision.publish.factory import Sharing
    from edgevision.publish.metrics import Metrics

    def packet(ts: float, key: bool) -> EncodedPacket:
        return EncodedPacket(b"x" * 10, round(ts * 100), round(ts * 100), Fraction(1, 100), key, ts)

    feed = PacketFeed(max_packets=4, blocking=False)  # the stream marker and 3 packets
    small = dataclasses.replace(settings(tmp_path / "data"), pre_roll_max_bytes=25)  # two packets of 10 bytes
    rec = Recorder(small, blocking=True, packets=feed)
    img = np.zeros((8, 8, 3), np.uint8)
    feed.start_stream(StreamInfo("h264", 8, 8, Fraction(1, 100)))
    assert [feed.put(packet(ts, key)) for ts, key in [(0.0, True), (0.04, False), (0.08, True)]] == [True] * 3
    assert not feed.put(packet(0.12, False)) and not feed.put(
        packet(0.16, False)
    )  # full, then not a keyframe
    rec.on_result(FrameResult(Frame(img, 0.1, 0, "t"), [], Latency(), "m"))  # the 2nd GOP trims the 1st
    assert rec.drain(10)
    for ts, key in [(0.2, True), (0.24, False), (0.28, False)]:  # ...and a GOP alone over the bound
        assert feed.put(packet(ts, key))
    rec.on_result(FrameResult(Frame(img, 0.3, 1, "t"), [], Latency(), "m"))
    assert rec.drain(10)
    metrics = Metrics()
    Sharing(metrics=metrics).attach(cast(Any, SimpleNamespace(stats=SimpleNamespace(dropped=0))), rec)
    rec.close()
    system = System(cast(Any, None), cast(Any, None), cast(Any, None), recorder=rec)
    lines = system.summary(RunSummary(2, 2, 0, 0, 0, 1.0, 1.0, 1.0, 0, "end of input"))
    assert lines[-1] == (
        "recording: 2 packet(s) dropped before the recorder; pre-roll ring: 2 GOP(s) trimmed for memory, "
        "1 overflow(s)"
    )
    text = metrics.render().decode()
    for line in (
        "edgevision_recorder_dropped_packets_total 2.0",
        "edgevision_recorder_preroll_trimmed_gops_total 2.0",
        "edgevision_recorder_preroll_overflows_total 1.0",
    ):
        assert line in text.splitlines()
