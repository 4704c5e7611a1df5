"""Recording from the source's own packets, end to end through the capture runner, the pipeline and the recorder.

The detector is replaced by a scripted detect step (a person between two timestamps), so the tests are about
what reaches the disk: the clip's packets are the source's, it starts at a keyframe at or before
trigger - pre_roll, a raw-frame source is encoded once on the capture side, and no full-resolution BGR image is
made unless a consumer asks for one.
"""

from __future__ import annotations

import errno
import os
import threading
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from conftest import WALKING
from fakes import MjpegCamera
from test_remux import long_gop_video, open_gop_video

from edgevision.capture.demux import DecodedFrame, DemuxSource, FrameSkip
from edgevision.capture.feed import PacketFeed, StreamStart
from edgevision.capture.packets import EncodedPacket, StreamInfo
from edgevision.capture.replay import ReplayRunner
from edgevision.capture.stream import PacketSource, next_skip
from edgevision.errors import InputError
from edgevision.events.state import EventSettings
from edgevision.pipeline.loop import Pipeline
from edgevision.recorder.clip import choose_codec
from edgevision.recorder.clip_check import inspect_clip
from edgevision.recorder.index import EventIndex
from edgevision.recorder.recorder import Recorder
from edgevision.recorder.recovery import recover
from edgevision.recorder.retention import RetentionPolicy
from edgevision.recorder.state import RecorderSettings
from edgevision.results import DetectMode, DetectOutcome, Frame, Latency, SwitchInfo
from edgevision.results.detection import BBox, Detection


class ScriptedDetect:
    """A detect step that sees a person between ``a`` and ``b`` seconds and counts the images it looked at."""

    model = "scripted"

    def __init__(self, a: float, b: float) -> None:
        self.span = (a, b)
        self.materialized = 0

    def prepare(self, frame: Frame) -> Frame:
        if frame.decoded is not None:
            frame.decoded.model_input(300, 300)  # what a detector's prepare does with a decoded picture
        return frame

    def detect(self, frame: Frame) -> DetectOutcome:
        self.materialized += frame.materialized
        a, b = self.span
        dets = [Detection("person", 0, 0.9, BBox(0.3, 0.2, 0.5, 0.9))] if a <= frame.ts < b else []
        return DetectOutcome(dets, Latency(), DetectMode.DETECTED, self.model)

    def feedback(self, outcome: DetectOutcome, total_ms: float, wait_ms: float) -> SwitchInfo | None:
        return None

    def close(self) -> None:
        pass  # no workers


def settings(data: Path, pre_roll: float = 3.0, post_roll: float = 1.0) -> RecorderSettings:
    return RecorderSettings(
        data_dir=data,
        camera="t",
        events=EventSettings(post_roll=post_roll),
        pre_roll=pre_roll,
        codec=choose_codec(),
        retention=RetentionPolicy(max_age_s=None, min_free_bytes=None),
        space_check_s=0.0,
    )


def replay_recording(
    video: Path, data: Path, span: tuple[float, float], pre_roll: float = 3.0
) -> tuple[list[dict[str, Any]], Recorder, PacketSource, ScriptedDetect]:
    """Replay ``video`` through PacketSource -> feed -> Recorder with a person during ``span``."""
    feed = PacketFeed(blocking=True)
    source = PacketSource(DemuxSource(video), feed)
    runner = ReplayRunner(source, None)
    runner.on_stop.append(feed.close)
    step = ScriptedDetect(*span)
    rec = Recorder(settings(data, pre_roll), blocking=True, packets=feed)
    Pipeline(runner, step, [rec]).run(threading.Event())
    index = EventIndex(data)
    rows = [r.to_dict() for r in index.list()]
    index.close()
    return rows, rec, source, step


def demux_all(path: Path) -> list[EncodedPacket]:
    src = DemuxSource(path)
    src.open()
    out = []
    while (item := src.read(decode=False)) is not None:
        if item.packet is not None:
            out.append(item.packet)
    src.close()
    return out


def test_replayed_clip_is_bit_exact_to_the_source_packets_and_starts_at_a_keyframe(tmp_path: Path) -> None:
    # The walking clip has a keyframe every 5.12 s: longer than the 3 s pre-roll.
    rows, rec, source, step = replay_recording(WALKING, tmp_path / "data", (8.0, 11.0))
    assert len(rows) == 1 and rows[0]["status"] == "finalized"
    ev = rows[0]
    src = demux_all(WALKING)
    keys = [p.ts for p in src if p.keyframe]
    trigger = ev["start_ts"]
    # the clip starts at the last keyframe at or before trigger - pre_roll (5.12 s here, not 5.0 s)
    want_start = max(k for k in keys if k <= trigger - 3.0)
    assert ev["clip_start_ts"] == pytest.approx(want_start)
    clip = demux_all(tmp_path / "data" / ev["clip_path"])
    assert clip[0].keyframe
    first = next(i for i, p in enumerate(src) if p.ts == pytest.approx(want_start))
    span = src[first : first + len(clip)]
    assert [p.data for p in clip] == [p.data for p in span]  # the source's own payloads, byte for byte
    assert all(p.ts < ev["end_ts"] for p in span)  # up to the end of the post-roll (in decode order)
    assert len(clip) == ev["clip_frames"] and len(clip) >= round((ev["end_ts"] - want_start) * 25) - 3
    check = inspect_clip(tmp_path / "data" / ev["clip_path"], want_middle=False)
    assert check.playable and check.frames == len(clip)
    assert rec.intake.encoder is None and source.encoder is None  # nothing was encoded
    assert step.materialized == 0  # inference never made a full-resolution BGR image
    assert (tmp_path / "data" / ev["snapshot_path"]).stat().st_size > 0  # the snapshot asked for one


def test_gop_longer_than_the_pre_roll_still_gives_a_playable_clip_from_a_keyframe(tmp_path: Path) -> None:
    video = tmp_path / "long_gop.mp4"
    long_gop_video(video, frames=350, gop=250)  # keyframes at 0 s and 10 s only
    rows, *_ = replay_recording(video, tmp_path / "data", (6.0, 8.0), pre_roll=1.0)
    (ev,) = rows
    assert ev["clip_start_ts"] == pytest.approx(0.0)  # the keyframe 6 s before the 1 s pre-roll asked
    clip = tmp_path / "data" / ev["clip_path"]
    check = inspect_clip(clip, want_middle=False)
    assert check.playable and check.frames == ev["clip_frames"] == round(ev["end_ts"] * 25)
    assert demux_all(clip)[0].keyframe


@pytest.mark.parametrize("killed", ["before the rename", "after the rename"])
@pytest.mark.parametrize("codec", ["hevc", "h264"])
def test_an_open_gop_recording_killed_before_its_index_row_is_recovered_whole(
    tmp_path: Path, codec: str, killed: str
) -> None:
    """A camera with open GOPs (x265's default) records through the packet path, and a kill in the finish window
    leaves a clip that recovery completes with every frame: the check used to find no sound fragment in such
    a clip (the decoder drops the leading pictures of its first keyframe), and recovery deleted it."""
    video = tmp_path / "cam.mp4"
    open_gop_video(video, codec, frames=250)
    data = tmp_path / "data"
    rows, rec, source, _ = replay_recording(video, data, (5.0, 7.0), pre_roll=1.0)
    (ev,) = rows
    assert ev["status"] == "finalized" and rec.intake.encoder is None and source.encoder is None
    clip = data / ev["clip_path"]
    whole = inspect_clip(clip, want_middle=False)
    assert whole.playable and whole.good == whole.fragments and ev["clip_frames"] - whole.frames in (1, 2, 3)
    with av.open(str(clip)) as c:
        assert c.streams.video[0].codec_context.name == codec
    # the state a kill leaves: the row not committed, the clip still .partial or already renamed
    if killed == "before the rename":
        clip.rename(clip.with_name(clip.name + ".partial"))
    index = EventIndex(data)
    index.update(ev["id"], status="recording", clip_frames=None, clip_size=None, clip_sha256=None)
    report = recover(index, data)
    (ev,) = [r.to_dict() for r in index.list()]
    index.close()
    assert report.lost == 0 and ev["status"] in ("recovered", "finalized") and clip.exists()
    assert ev["clip_frames"] == whole.frames and inspect_clip(clip, want_middle=False).frames == whole.frames


def mjpeg_video(path: Path, frames: int = 200, fps: int = 25) -> None:
    """An MJPEG AVI (what an MJPEG camera or an IP camera's HTTP stream delivers), moving gradient."""
    with av.open(str(path), "w") as out:
        s = out.add_stream("mjpeg", rate=fps)
        s.width, s.height, s.pix_fmt = 320, 240, "yuvj420p"
        base = np.add.outer(np.arange(240), np.arange(320))
        for i in range(frames):
            img = (np.dstack([base + 3 * i, base[::-1] + i, np.full_like(base, 5 * i)]) % 256).astype(
                np.uint8
            )
            out.mux(s.encode(av.VideoFrame.from_ndarray(img, format="bgr24")))
        out.mux(s.encode())


def test_mjpeg_source_events_record_through_the_single_capture_side_encode(tmp_path: Path) -> None:
    video = tmp_path / "camera.avi"
    mjpeg_video(video)
    rows, rec, source, step = replay_recording(video, tmp_path / "data", (4.0, 5.0), pre_roll=1.0)
    (ev,) = rows
    assert source.encoder is None  # flushed at the end of the file...
    assert source.encoded == 200  # ...after encoding every frame exactly once, on the capture side
    assert rec.intake.encoder is None  # the recorder encoded nothing
    clip = tmp_path / "data" / ev["clip_path"]
    packets = demux_all(clip)
    assert packets[0].keyframe and av.open(str(clip)).streams.video[0].codec_context.name in ("h264", "mpeg4")
    check = inspect_clip(clip, want_middle=False)
    assert check.playable and check.frames == ev["clip_frames"]
    assert ev["clip_start_ts"] <= ev["start_ts"] - 1.0  # a keyframe at or before trigger - pre_roll
    assert step.materialized == 0


@pytest.mark.parametrize("marker_first", [False, True])
def test_a_reconnect_finalizes_the_open_clip_and_the_event_goes_on_in_a_new_one(
    tmp_path: Path, marker_first: bool
) -> None:
    """A reconnect ends the open clip (the new stream's packets cannot join it) and restarts the ring; the event
    goes on: its row ends there as a split and a new row records the new stream. It used to record nothing more
    of the event (up to max_length_s lost to a one-second camera glitch).

    ``marker_first``: the new stream's marker and first packets are in the feed before the old stream's last
    frame reaches the recorder (capture runs ahead of detection). The split still lands on the new stream's first
    frame; it used to land on that last old frame."""
    from edgevision.capture.encoder import FrameEncoder

    feed = PacketFeed(blocking=True)
    rec = Recorder(settings(tmp_path / "data", pre_roll=1.0), blocking=True, packets=feed)
    img = np.zeros((120, 160, 3), np.uint8)
    one = [Detection("person", 0, 0.9, BBox(0.3, 0.2, 0.5, 0.9))]
    two = [
        Detection("person", 0, 0.6, BBox(0.1, 0.2, 0.3, 0.9)),
        Detection("person", 0, 0.7, BBox(0.6, 0.2, 0.8, 0.9)),
    ]
    from edgevision.results import FrameResult

    held: list[FrameResult] = []

    def run(enc: FrameEncoder, t0: float, n: int, people: list[Detection], hold_last: bool = False) -> None:
        for i in range(n):
            ts = t0 + i / 25
            for p in enc.encode(img + i % 50, ts):
                assert feed.put(p)
            for r in held:  # a frame whose packets went into the feed before these
                rec.on_result(r)
            held.clear()
            result = FrameResult(Frame(img, ts, i, "t"), people, Latency(), "m")
            if hold_last and i == n - 1:
                held.append(result)
            else:
                rec.on_result(result)

    first = FrameEncoder(160, 120, 25.0, "libx264")
    feed.start_stream(first.stream_info)
    run(first, 0.0, 50, [])
    run(first, 2.0, 50, one, hold_last=marker_first)  # the event starts at 2.08 s and its clip is open...
    assert rec.drain(30)
    second = FrameEncoder(160, 120, 25.0, "libx264")
    feed.start_stream(second.stream_info)  # ...when the source reconnects
    run(second, 4.0, 50, two)
    rec.close()
    index = EventIndex(tmp_path / "data")
    before, after = [r.to_dict() for r in index.list()]
    index.close()
    assert rec.clips_cut_by_reconnect == 1 and before["status"] == after["status"] == "finalized"
    assert before["clip_path"] and before["clip_start_ts"] == pytest.approx(1.0, abs=0.05)
    assert before["end_ts"] == pytest.approx(4.0) and after["start_ts"] == pytest.approx(4.0)
    check = inspect_clip(tmp_path / "data" / before["clip_path"], want_middle=False)
    assert check.playable and check.frames == before["clip_frames"] <= 100  # nothing after the reconnect
    assert after["clip_path"] and after["clip_path"] != before["clip_path"]
    assert after["clip_start_ts"] == pytest.approx(4.0, abs=0.05)  # the new stream from its first keyframe
    check = inspect_clip(tmp_path / "data" / after["clip_path"], want_middle=False)
    assert check.playable and check.frames == after["clip_frames"] >= 45  # the rest of the event
    assert rec.clips.stats().span_s < 2.5  # the ring restarted at the new stream
    # each row's statistics are its own frames': the split-off row used to carry the whole event's (its best
    # frame before its start, the first part's top score)
    assert (before["max_score"], before["peak_count"], before["mean_score"]) == pytest.approx((0.9, 1, 0.9))
    assert before["start_ts"] <= before["best_ts"] < before["end_ts"]
    assert (after["max_score"], after["peak_count"], after["mean_score"]) == pytest.approx((0.7, 2, 0.65))
    assert after["start_ts"] <= after["best_ts"] <= after["end_ts"]


def packet(ts: float, key: bool, size: int = 10) -> EncodedPacket:
    return EncodedPacket(b"x" * size, round(ts * 1000), round(ts * 1000), Fraction(1, 1000), key, ts)


def test_live_feed_drops_until_the_next_keyframe_and_counts_it() -> None:
    feed = PacketFeed(max_packets=3, blocking=False)
    feed.start_stream(StreamInfo("h264", 16, 16, Fraction(1, 1000)))
    results = [feed.put(packet(i / 10, i % 5 == 0)) for i in range(8)]
    # the marker takes a slot: 0, 1 fit, 2 overflows, 3 and 4... 4 is not a keyframe; 5 is but the feed is full
    assert results[:3] == [True, True, False] and not any(results[3:])
    assert feed.dropped == 6
    assert isinstance(feed.get(), StreamStart)
    assert [feed.get().ts, feed.get().ts] == [0.0, pytest.approx(0.1)]  # type: ignore[union-attr]
    assert not feed.put(packet(0.8, False))  # still skipping: not a keyframe
    assert feed.put(packet(1.0, True)) and feed.put(packet(1.1, False))  # a keyframe resumes the flow
    assert feed.dropped == 7


def test_replay_feed_waits_for_room_until_closed() -> None:
    feed = PacketFeed(max_packets=2, blocking=True)
    assert feed.put(packet(0.0, True)) and feed.put(packet(0.1, False))
    done: list[bool] = []
    t = threading.Thread(target=lambda: done.append(feed.put(packet(0.2, False), timeout=0.05)))
    t.start()
    t.join(0.3)
    assert t.is_alive()  # waits: a replay never drops a packet
    feed.get()
    t.join(2)
    assert done == [True] and feed.dropped == 0
    t = threading.Thread(target=lambda: done.append(feed.put(packet(0.3, False), timeout=0.05)))
    t.start()
    feed.close()
    t.join(2)
    assert done == [True, False] and not t.is_alive()


@pytest.mark.parametrize(
    ("current", "dropped", "delivered", "want"),
    [
        (FrameSkip.NONE, 0, 50, FrameSkip.NONE),
        (FrameSkip.NONE, 15, 50, FrameSkip.NONE),  # 30 %: not more than SKIP_ON
        (FrameSkip.NONE, 16, 50, FrameSkip.NONREF),
        (FrameSkip.NONREF, 10, 50, FrameSkip.NONREF),  # hysteresis: still behind
        (FrameSkip.NONREF, 2, 50, FrameSkip.NONE),  # 4 % < 5 %: caught up
        (FrameSkip.NONREF, 3, 50, FrameSkip.NONREF),  # 6 %
        (FrameSkip.NONE, 5, 0, FrameSkip.NONE),
    ],
)
def test_live_decoder_skips_non_reference_frames_while_inference_falls_behind(
    current: FrameSkip, dropped: int, delivered: int, want: FrameSkip
) -> None:
    assert next_skip(current, dropped, delivered) is want


def test_a_lazy_frame_is_converted_only_when_a_consumer_asks() -> None:
    src = DemuxSource(WALKING)
    src.open()
    decoded: DecodedFrame | None = None
    while decoded is None:
        item = src.read()
        assert item is not None
        decoded = item.frames[0] if item.frames else None
    calls: list[str] = []
    real_bgr = decoded.bgr

    def counting_bgr() -> np.ndarray:
        calls.append("bgr")
        return real_bgr()

    decoded.bgr = counting_bgr  # type: ignore[method-assign]
    frame = Frame.lazy(decoded, 0.0, 0, "t")
    from edgevision.detection.detector import Detector

    class _D:
        input_width = input_height = 300
        input_size = (300, 300)
        input_dtype = np.uint8
        float_range = (-1.0, 1.0)

    tensor = Detector.preprocess_frame(_D(), frame)  # type: ignore[arg-type]
    assert tensor.shape == (1, 300, 300, 3) and calls == []  # inference: straight from YUV
    assert frame.size == (1280, 720) and calls == []
    prepared = frame.with_prepared(None)  # type: ignore[arg-type]
    assert not prepared.materialized and calls == []
    assert prepared.image.shape == (720, 1280, 3) and calls == ["bgr"]  # a consumer asked
    redacted = Frame(np.zeros((2, 2, 3), np.uint8), 0.0, 0, "t", decoded=decoded)
    assert redacted.decoded is None  # an explicit image never travels with the original picture
    src.close()


def test_mjpeg_camera_infers_at_reduced_scale_and_records_through_one_encode(tmp_path: Path) -> None:
    from edgevision.capture.encoder import MjpegPicture
    from edgevision.capture.runner import make_frame
    from edgevision.capture.sources import OpenCVSource
    from edgevision.capture.stream import EncodingSource
    from edgevision.results import FrameResult

    camera = MjpegCamera()
    now = [100.0]
    feed = PacketFeed(blocking=False)
    source = EncodingSource(
        OpenCVSource(0, fourcc="MJPG", capture_factory=camera, clock=lambda: now[0]), feed
    )
    source.open()
    rec = Recorder(settings(tmp_path / "data", pre_roll=1.0), blocking=True, packets=feed)
    person = [Detection("person", 0, 0.9, BBox(0.3, 0.2, 0.5, 0.9))]
    index = 0
    while (item := source.read()) is not None:
        frame = make_frame(item, index, source.source_id)
        assert isinstance(frame.decoded, MjpegPicture)  # the camera's JPEG, not a decoded image
        rgb = frame.decoded.model_input(
            150, 100
        )  # inference: a 1/2-scale decode (320x240 -> 160x120), resized
        assert rgb.shape == (100, 150, 3) and not frame.materialized
        dets = person if 3.0 <= frame.ts - 100.0 < 4.0 else []
        rec.on_result(FrameResult(frame, dets, Latency(), "m"))
        index += 1
        now[0] += 0.04
    rec.close()
    assert source._encoder is not None and source._encoder.frames_in == 150  # every frame encoded once
    assert rec.intake.encoder is None and feed.dropped == 0
    idx = EventIndex(tmp_path / "data")
    (row,) = [r.to_dict() for r in idx.list()]
    idx.close()
    check = inspect_clip(tmp_path / "data" / row["clip_path"], want_middle=True)
    assert check.playable and check.frames == row["clip_frames"]
    assert row["clip_start_ts"] <= row["start_ts"] - 1.0
    assert check.middle is not None and check.middle.shape == (240, 320, 3)  # the camera's full picture


def test_picamera2_recording_encodes_main_in_picamera2_and_infers_on_lores_only() -> None:
    from types import SimpleNamespace

    from fakes import FakePicamera2
    from test_encoder import FakeH264Encoder, FakeOutput

    from edgevision.capture.sources import Picamera2Source

    class EncodingCamera(FakePicamera2):
        output: Any = None  # the picamera2 Output the encoder writes to

        def capture_arrays(self, names: list[str]) -> tuple[list[np.ndarray], dict[str, object]]:
            self.calls.append(f"capture:{','.join(names)}")
            return super().capture_arrays(names)

        def capture_array(self, name: str) -> np.ndarray:
            arrays, _ = self.capture_arrays([name])
            return arrays[0]

        def start_encoder(self, encoder: object, output: object, name: str | None = None) -> None:
            self.calls.append(f"start_encoder:{name}")
            self.output = output

        def stop_encoder(self, encoder: object = None) -> None:
            self.calls.append("stop_encoder")

    feed = PacketFeed(blocking=False)
    src = Picamera2Source(
        0,
        (1280, 720),
        (320, 240),
        25.0,
        module_loader=lambda: SimpleNamespace(Picamera2=EncodingCamera),
        feed=feed,
        encoding_loader=lambda: SimpleNamespace(H264Encoder=FakeH264Encoder, Output=FakeOutput),
    )
    src.open()
    cam = EncodingCamera.instances[-1]
    assert isinstance(cam, EncodingCamera) and "start_encoder:main" in cam.calls
    item = src.read()
    assert item is not None
    image, _ts, full = item
    assert image.shape == (240, 320, 3) and full is None  # only lores reached the CPU
    assert [c for c in cam.calls if c.startswith("capture:")] == ["capture:lores"]  # main is never copied
    cam.output.outputframe(b"\x00\x00\x00\x01\x41p", False, 960_000)  # joined mid-GOP: cannot decode
    cam.output.outputframe(b"\x00\x00\x00\x01\x65key", True, 1_000_000)  # picamera2's encoder thread
    assert feed.dropped == 1  # the encoder's own drop is the feed's too: the run reports one number
    start, packet = feed.get(), feed.get()
    assert isinstance(start, StreamStart) and start.info.codec == "h264" and start.info.width == 1280
    assert isinstance(packet, EncodedPacket) and packet.keyframe and packet.pts == 1_000_000
    src.close()
    assert "stop_encoder" in cam.calls


@pytest.mark.parametrize(
    ("error", "raised"),
    [
        (RuntimeError("encoder busy"), InputError),
        (OSError(16, "busy"), InputError),
        (ValueError("bug"), ValueError),
    ],
)
def test_picamera2_encoder_that_fails_to_start_releases_the_camera(
    error: BaseException, raised: type[BaseException]
) -> None:
    """The camera was started before the encoder: a failing encoder start stops and closes it (left started,
    every reopen of the retried source found it busy); a device error is retried like a busy camera."""
    from types import SimpleNamespace

    from fakes import FakePicamera2
    from test_encoder import FakeH264Encoder, FakeOutput

    from edgevision.capture.sources import Picamera2Source

    class BrokenEncoderCamera(FakePicamera2):
        def start_encoder(self, encoder: object, output: object, name: str | None = None) -> None:
            raise error

    src = Picamera2Source(
        0,
        (1280, 720),
        (320, 240),
        25.0,
        module_loader=lambda: SimpleNamespace(Picamera2=BrokenEncoderCamera),
        feed=PacketFeed(blocking=False),
        encoding_loader=lambda: SimpleNamespace(H264Encoder=FakeH264Encoder, Output=FakeOutput),
    )
    with pytest.raises(raised):
        src.open()
    cam = BrokenEncoderCamera.instances[-1]
    assert cam.calls[-2:] == ["stop", "close"]
    assert src.read() is None
    src.close()  # nothing left to close: no second stop
    assert cam.calls.count("stop") == 1


class _DelayingEncoder:
    """An encoder that, like the Pi's hardware one, gives each frame's packet only with a later frame: the last
    ones come out of ``flush()``."""

    def __init__(self, width: int, height: int, fps: float = 25.0, codec: str = "auto") -> None:
        self.held: list[float] = []
        self.stream_info = StreamInfo("h264", width, height, Fraction(1, 1000), Fraction(25))
        self.codec = "h264_v4l2m2m"

    def _packet(self, ts: float) -> EncodedPacket:
        return EncodedPacket(b"p", round(ts * 1000), round(ts * 1000), Fraction(1, 1000), True, ts)

    def encode(self, image: object, ts: float) -> list[EncodedPacket]:
        self.held.append(ts)  # ts is all this fake keeps of a frame
        return [self._packet(self.held.pop(0))] if len(self.held) > 2 else []

    def flush(self) -> list[EncodedPacket]:
        out, self.held = [self._packet(t) for t in self.held], []
        return out


@pytest.mark.parametrize("end", ["close", "source ends"])
def test_an_encoding_source_drains_its_encoder_when_it_ends(
    end: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The frames an encoder still holds reach the feed when the camera closes or stops delivering: a hardware
    encoder keeps a few, which were lost from the end of every clip before a disconnect."""
    from edgevision.capture import stream
    from edgevision.capture.stream import EncodingSource

    class Camera:
        source_id, live = "camera0", True

        def __init__(self) -> None:
            self.n = 0
            self.fps: float | None = 25.0

        def open(self) -> None:
            pass

        def read(self) -> tuple[np.ndarray, float, None] | None:
            self.n += 1
            return (np.zeros((16, 16, 3), np.uint8), self.n / 25, None) if self.n <= 5 else None

        def close(self) -> None:
            pass

    monkeypatch.setattr(stream, "FrameEncoder", _DelayingEncoder)
    feed = PacketFeed(blocking=False)
    source = EncodingSource(Camera(), feed)
    source.open()
    for _ in range(5):
        assert source.read() is not None
    if end == "source ends":
        assert source.read() is None
    source.close()
    items = []
    while (item := feed.get(timeout=0.01)) is not None:
        items.append(item)
    assert isinstance(items[0], StreamStart)
    assert [p.ts for p in items[1:] if isinstance(p, EncodedPacket)] == [n / 25 for n in range(1, 6)]


def test_a_stream_that_cannot_be_remuxed_drains_its_encode_when_closed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A live MJPEG stream (encoded once for recording) closed after a stall, before its end: the frames the
    encoder held reach the feed (they were handed over only at the stream's own end)."""
    from types import SimpleNamespace

    from edgevision.capture import stream
    from edgevision.capture.stream import PacketSource

    class Demux:
        source_id, live, fps = "http_cam", True, 25.0
        stream_info = StreamInfo("mjpeg", 16, 16, Fraction(1, 1000), Fraction(25))

        def __init__(self) -> None:
            self.n = 0

        def open(self) -> None:
            pass

        def read(self) -> object:
            self.n += 1
            frame = SimpleNamespace(av_frame=None, ts=self.n / 25, size=(16, 16), turns=0)
            return SimpleNamespace(packet=None, frames=[frame])

        def close(self) -> None:
            pass

    monkeypatch.setattr(stream, "FrameEncoder", _DelayingEncoder)
    feed = PacketFeed(blocking=False)
    source = PacketSource(Demux(), feed)  # type: ignore[arg-type]
    source.open()
    for _ in range(5):
        assert source.read() is not None
    source.close()
    items = []
    while (item := feed.get(timeout=0.01)) is not None:
        items.append(item)
    assert [p.ts for p in items if isinstance(p, EncodedPacket)] == [n / 25 for n in range(1, 6)]


def test_a_reconnected_stream_judges_its_decoder_skip_on_its_own_drops() -> None:
    """The drop count the runner passes is the run's total: a stream reconnected after drops took them all for
    its first window's and switched to skipping non-reference frames (logging that inference fell behind) while
    nothing of its own had been dropped."""
    from types import SimpleNamespace

    from edgevision.capture.stream import SKIP_WINDOW, PacketSource

    class Demux:
        source_id, live, fps = "rtsp://cam/stream", True, 25.0
        stream_info = StreamInfo("h264", 16, 16, Fraction(1, 90000), Fraction(25))

        def __init__(self) -> None:
            self.n = 0
            self.skips: list[FrameSkip] = []

        def open(self) -> None:
            pass

        def read(self) -> object:
            self.n += 1
            return SimpleNamespace(packet=None, frames=[SimpleNamespace(av_frame=None, ts=self.n / 25)])

        def set_skip(self, skip: FrameSkip) -> None:
            self.skips.append(skip)

        def close(self) -> None:
            pass

    demux = Demux()
    source = PacketSource(demux, None, lambda: 400)  # type: ignore[arg-type]  # 400 dropped before reconnecting
    source.open()
    for _ in range(3 * SKIP_WINDOW):
        assert source.read() is not None
    source.close()
    assert demux.skips == []


class _StreamDemux:
    """A live H.264 stream's demuxer: one packet and its frame per read, timed on the connection's own clock."""

    live, fps = True, 25.0

    def __init__(self, name: str) -> None:
        self.source_id = name
        self.stream_info = StreamInfo("h264", 16, 16, Fraction(1, 90000), Fraction(25))
        self.n = 0

    def open(self) -> None:
        pass

    def read(self) -> object:
        from types import SimpleNamespace

        self.n += 1
        packet = EncodedPacket(self.source_id.encode(), self.n, self.n, Fraction(1, 25), True, self.n / 25)
        return SimpleNamespace(packet=packet, frames=[SimpleNamespace(av_frame=None, ts=self.n / 25)])

    def close(self) -> None:
        pass


def test_a_connection_replaced_after_a_stall_adds_no_packet_to_its_successors_clips() -> None:
    """A capture thread a stall replaced, back from its source, went on feeding the old connection's packets to
    the recorder after the new connection's stream start: they were cut into the new stream's ring and clips
    (parameter sets and timestamps of another connection); a stream whose packets kept coming without a frame
    never stopped doing so. The old source now ends there instead."""
    feed = PacketFeed(blocking=False)
    old = PacketSource(_StreamDemux("old"), feed)  # type: ignore[arg-type]
    old.open()
    assert old.read() is not None
    new = PacketSource(_StreamDemux("new"), feed)  # type: ignore[arg-type]  # the stall's reconnect
    new.open()
    assert new.read() is not None
    stale = old.read()  # the replaced thread's read, back from its source
    old.close()
    assert new.read() is not None
    items = []
    while (item := feed.get(timeout=0.01)) is not None:
        items.append(item if isinstance(item, StreamStart) else item.data.decode())
    assert [type(i).__name__ if isinstance(i, StreamStart) else i for i in items] == [
        "StreamStart",
        "old",
        "StreamStart",
        "new",
        "new",
    ]
    assert stale is None  # it returns, and the runner closes it


def test_a_reconnect_whose_clip_hits_a_full_disk_never_stops_the_recorder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The source reconnects while an event's clip is open, and closing that clip fails for the disk (ENOSPC as
    its last fragment is written): the clip is salvaged and the row had nothing more to say, but the empty update
    went to SQLite as ``UPDATE events SET  WHERE`` (a syntax error), which stopped the recorder thread and the
    run. The event goes on in a new row, as after any reconnect."""
    import errno

    from edgevision.capture.encoder import FrameEncoder
    from edgevision.recorder.remux import PacketClipWriter
    from edgevision.results import FrameResult

    real_finalize = PacketClipWriter.finalize
    calls = {"n": 0}

    def finalize(self: PacketClipWriter) -> Path:
        calls["n"] += 1
        if calls["n"] == 1:  # the clip the reconnect ends
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_finalize(self)

    monkeypatch.setattr(PacketClipWriter, "finalize", finalize)
    feed = PacketFeed(blocking=True)
    rec = Recorder(settings(tmp_path / "data", pre_roll=1.0), blocking=True, packets=feed)
    img = np.zeros((120, 160, 3), np.uint8)
    one = [Detection("person", 0, 0.9, BBox(0.3, 0.2, 0.5, 0.9))]

    def run(enc: FrameEncoder, t0: float, n: int, people: list[Detection]) -> None:
        for i in range(n):
            ts = t0 + i / 25
            for p in enc.encode(img + i % 50, ts):
                assert feed.put(p)
            rec.on_result(FrameResult(Frame(img, ts, i, "t"), people, Latency(), "m"))

    first = FrameEncoder(160, 120, 25.0, "libx264")
    feed.start_stream(first.stream_info)
    run(first, 0.0, 50, one)
    assert rec.drain(30)
    second = FrameEncoder(160, 120, 25.0, "libx264")
    feed.start_stream(second.stream_info)
    run(second, 2.0, 50, one)
    rec.close()  # no exception
    index = EventIndex(tmp_path / "data")
    before, after = [r.to_dict() for r in index.list()]
    index.close()
    assert rec.clips_cut_by_reconnect == 1 and calls["n"] == 2
    assert before["status"] == "recovered" and "disk error" in before["note"]
    assert after["status"] == "finalized" and after["clip_path"] and after["start_ts"] == pytest.approx(2.0)


@pytest.mark.parametrize("failing", ["packet", "trailer", "file-too-large"])
def test_a_packet_the_muxer_refuses_cuts_the_clip_and_never_stops_the_recorder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    """The muxer refusing a packet (or the clip's end) with an FFmpeg error that is not an OSError (invalid
    data, an invalid argument: a ``ValueError``) escaped the recorder thread: the run stopped, and an error at
    the end was taken for "nothing decodable was written", the row cleared of a clip whose ``.partial`` stayed.
    The clip is cut there and salvaged, as after a disk error, and the disk being fine, the next event records
    its clip as usual. So is a clip reaching the file system's largest file (EFBIG: 4 GB on a vfat card), which
    stopped the recorder as well."""
    from edgevision.capture.encoder import FrameEncoder
    from edgevision.results import FrameResult

    refused = av.error.InvalidDataError(-1094995529, "Invalid data found when processing input")
    real_open = av.open
    opened: list[Any] = []

    class Refusing:
        """The first clip's muxer: refuses its 40th packet, or its trailer."""

        def __init__(self, container: Any) -> None:
            self.container, self.muxed = container, 0

        def mux(self, packet: Any) -> Any:
            self.muxed += 1
            if failing == "packet" and self.muxed == 40:
                raise refused
            if failing == "file-too-large" and self.muxed == 40:
                raise OSError(errno.EFBIG, "File too large")
            return self.container.mux(packet)

        def close(self) -> None:
            self.container.close()
            if failing == "trailer":
                raise refused

        def __getattr__(self, name: str) -> Any:
            return getattr(self.container, name)

    def open_(*args: Any, **kw: Any) -> Any:
        container = real_open(*args, **kw)
        opened.append(container)
        return Refusing(container) if len(opened) == 1 and args[1:2] == ("w",) else container

    monkeypatch.setattr(av, "open", open_)
    data = tmp_path / "data"
    feed = PacketFeed(blocking=True)
    rec = Recorder(settings(data, pre_roll=1.0), blocking=True, packets=feed)
    img = np.zeros((120, 160, 3), np.uint8)
    enc = FrameEncoder(160, 120, 25.0, "libx264")
    feed.start_stream(enc.stream_info)
    for i in range(300):  # a person at 0-3 s and at 7-10 s
        ts = i / 25
        for p in enc.encode(img + i % 50, ts):
            assert feed.put(p)
        people = [Detection("person", 0, 0.9, BBox(0.3, 0.2, 0.5, 0.9))] if ts < 3 or 7 <= ts < 10 else []
        rec.on_result(FrameResult(Frame(img, ts, i, "t"), people, Latency(), "m"))
    for p in enc.flush():
        feed.put(p)
    feed.close()
    rec.close()  # no exception
    monkeypatch.undo()
    assert _open_files_under(data) == []  # the refused clip's file was closed, not left open while salvaged
    index = EventIndex(data)
    first, second = [r.to_dict() for r in index.list()]
    index.close()
    # cut at a packet: what came before is salvaged; at the trailer: every packet was written
    assert first["status"] == ("finalized" if failing == "trailer" else "recovered")
    said = "largest file" if failing == "file-too-large" else "muxer refused"
    assert said in first["note"] and first["degraded"] is None
    check = inspect_clip(data / first["clip_path"])
    assert check.playable and check.frames > 20
    assert not list(data.rglob("*.partial"))
    assert second["status"] == "finalized" and second["clip_path"] and second["degraded"] is None
    assert inspect_clip(data / second["clip_path"]).frames > 50


def _open_files_under(root: Path) -> list[str]:
    """Files under ``root`` this process holds open (from /proc/self/fd)."""
    held = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # the descriptor of the listing itself, gone by now
            continue
        if target.startswith(str(root)):
            held.append(target)
    return held
