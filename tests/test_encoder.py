"""Raw-frame sources encode once: encoder choice, packets with in-band headers, an MJPEG camera's event clip
through encoder → ring → remux, picamera2's encoder output (against a fake of its real API shape)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import av
import cv2
import numpy as np
import pytest
from conftest import WALKING

from edgevision.capture.encoder import (
    FrameEncoder,
    MjpegDecoder,
    Picamera2Encoding,
    choose_encoder,
    decode_jpeg_for_model,
)
from edgevision.capture.packets import EncodedPacket
from edgevision.errors import ConfigError
from edgevision.events.state import EventEnd, EventSettings, EventStart, EventTracker
from edgevision.recorder.packet_ring import PacketRing
from edgevision.recorder.remux import PacketClipWriter
from edgevision.results.detection import BBox, Detection


def walking_frames(count: int) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(WALKING))
    out: list[np.ndarray] = []
    while len(out) < count:
        ok, img = cap.read()
        assert ok
        out.append(img)
    cap.release()
    return out


def decoded(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="bgr24") for f in c.decode(video=0)]


def test_choose_encoder() -> None:
    assert choose_encoder("auto", machine="x86_64", has_m2m=False) == "libx264"
    assert choose_encoder("auto", machine="aarch64", has_m2m=True) == "h264_v4l2m2m"  # a Pi 4
    assert choose_encoder("auto", machine="aarch64", has_m2m=False) == "libx264"  # a Pi 5: no hardware H.264
    assert choose_encoder("mpeg4") == "mpeg4"
    with pytest.raises(ConfigError, match="not available"):
        choose_encoder("prores")


@pytest.mark.parametrize("codec", ["libx264", "mpeg4"])
def test_one_packet_per_frame_keyframe_a_second_headers_in_band(codec: str, tmp_path: Path) -> None:
    frames = walking_frames(60)
    enc = FrameEncoder(1280, 720, fps=25.0, codec=codec)
    packets: list[EncodedPacket] = []
    for i, img in enumerate(frames):
        got = enc.encode(img, 10.0 + i / 25.0)
        assert len(got) == 1  # no encoder delay: the ring sees each frame as it is captured
        packets += got
    packets += enc.flush()
    assert enc.frames_in == 60 and len(packets) == 60
    assert [i for i, p in enumerate(packets) if p.keyframe] == [0, 25, 50]
    assert [p.ts for p in packets] == pytest.approx([10.0 + i / 25.0 for i in range(60)])
    # A clip cut at the second keyframe plays on its own: the parameter sets came with that keyframe.
    w = PacketClipWriter(tmp_path / "c.mp4", enc.stream_info)
    for p in packets[25:]:
        w.write(p)
    w.finalize()
    out = decoded(tmp_path / "c.mp4")
    assert len(out) == 35
    assert np.abs(out[10].astype(int) - frames[35]).mean() < 12  # the same picture (lossy)


def test_jpeg_decoded_at_reduced_scale_for_the_model() -> None:
    img = walking_frames(1)[0]
    jpeg = cv2.imencode(".jpg", img)[1].tobytes()
    assert decode_jpeg_for_model(jpeg, (300, 300)).shape == (360, 640, 3)  # 1/2: still >= 300 px
    assert decode_jpeg_for_model(jpeg, (160, 90)).shape == (90, 160, 3)  # 1/8
    assert decode_jpeg_for_model(jpeg, (1000, 300)).shape == (720, 1280, 3)  # full
    with pytest.raises(ValueError):
        decode_jpeg_for_model(b"junk" * 10, (300, 300))


def mjpeg_camera(count: int) -> list[bytes]:
    """JPEG frames as an MJPEG camera sends them, made with PyAV's MJPEG encoder from real video."""
    ctx: Any = av.CodecContext.create("mjpeg", "w")
    ctx.width, ctx.height, ctx.pix_fmt = 1280, 720, "yuvj422p"
    ctx.time_base = Fraction(1, 25)
    out = []
    for i, img in enumerate(walking_frames(count)):
        frame = av.VideoFrame.from_ndarray(img, format="bgr24")
        frame.pts = i
        out += [bytes(p) for p in ctx.encode(frame)]
    out += [bytes(p) for p in ctx.encode(None)]
    return out


def test_events_on_an_mjpeg_camera_record_through_the_single_encode(tmp_path: Path) -> None:
    jpegs = mjpeg_camera(100)
    assert len(jpegs) == 100 and all(j[:2] == b"\xff\xd8" for j in jpegs)
    decoder, encoder = MjpegDecoder(), FrameEncoder(1280, 720, fps=25.0, codec="libx264")
    ring = PacketRing(1.0, 32 << 20)
    tracker = EventTracker(EventSettings(trigger_frames=2, window_frames=3, post_roll=0.8))
    person = [Detection("person", 0, 0.9, BBox(0.2, 0.2, 0.4, 0.9))]
    writer: PacketClipWriter | None = None
    clips: list[tuple[Path, list[EncodedPacket]]] = []
    written: list[EncodedPacket] = []
    everything: list[EncodedPacket] = []
    trigger = 0.0
    for i, jpeg in enumerate(jpegs):
        ts = i / 25.0
        packets = encoder.encode(decoder.decode(jpeg), ts)  # the one encode, from the decoder's YUV
        model_view = decode_jpeg_for_model(jpeg, (300, 300))  # inference sees a 1/2-scale decode
        assert model_view.shape == (360, 640, 3)
        everything += packets
        for p in packets:
            ring.push(p)
            if writer is not None:
                writer.write(p)
                written.append(p)
        for signal in tracker.update(ts, person if 40 <= i <= 70 else []):
            if isinstance(signal, EventStart):
                writer = PacketClipWriter(tmp_path / f"event{signal.seq}.mp4", encoder.stream_info)
                trigger = signal.trigger_ts
                written = ring.since(trigger - 1.0)
                for p in written:
                    writer.write(p)
            elif isinstance(signal, EventEnd) and writer is not None:
                clips.append((writer.finalize(), written))
                writer = None
    assert encoder.frames_in == 100  # every frame encoded exactly once, events or not
    assert len(clips) == 1
    path, span = clips[0]
    assert trigger == pytest.approx(41 / 25.0)
    start = max(p.ts for p in everything if p.keyframe and p.ts <= trigger - 1.0)
    assert span[0].keyframe and span[0].ts == start  # the last keyframe at or before trigger - pre-roll
    assert [p.ts for p in span] == [p.ts for p in everything if start <= p.ts <= span[-1].ts]  # nothing lost
    frames = decoded(path)
    assert len(frames) == len(span) and span[-1].ts >= 70 / 25.0 + 0.8 - 1e-6
    src = walking_frames(100)
    first = round(span[0].ts * 25)
    assert (
        np.abs(frames[20].astype(int) - src[first + 20]).mean() < 12
    )  # the clip shows the camera's pictures


class FakeOutput:
    """picamera2.outputs.Output's shape: __init__(pts=None), start/stop, outputframe(frame, keyframe,
    timestamp, packet, audio)."""

    def __init__(self, pts: Any = None) -> None:
        self.recording = False
        self.ptsoutput = pts

    def start(self) -> None:
        self.recording = True

    def stop(self) -> None:
        self.recording = False

    def outputframe(
        self,
        frame: bytes,
        keyframe: bool = True,
        timestamp: int | None = None,
        packet: Any = None,
        audio: bool = False,
    ) -> None:
        raise AssertionError("the subclass must override outputframe")


class FakeH264Encoder:
    def __init__(self, bitrate: int | None = None, repeat: bool = True, iperiod: int | None = None) -> None:
        self.bitrate, self.repeat, self.iperiod = bitrate, repeat, iperiod


class FakeCamera:
    def __init__(self) -> None:
        self.started: list[tuple[Any, Any, str | None]] = []
        self.stopped: list[Any] = []

    def start_encoder(
        self, encoder: Any, output: Any, pts: Any = None, quality: Any = None, name: str | None = None
    ) -> None:
        self.started.append((encoder, output, name))

    def stop_encoder(self, encoders: Any = None) -> None:
        self.stopped.append(encoders)


def test_picamera2_encoder_output_feeds_the_ring_and_a_clip(tmp_path: Path) -> None:
    cam = FakeCamera()
    ring = PacketRing(2.0, 32 << 20)
    accept = [True]

    def sink(p: EncodedPacket) -> bool:
        if accept[0]:
            ring.push(p)
        return accept[0]

    now = [500.0]
    pic = Picamera2Encoding(
        cam,
        sink,
        (320, 240),
        fps=25.0,
        clock=lambda: now[0],
        module_loader=lambda: SimpleNamespace(H264Encoder=FakeH264Encoder, Output=FakeOutput),
    )
    pic.start()
    (encoder, output, name) = cam.started[0]
    assert name == "main" and isinstance(output, FakeOutput)
    assert encoder.repeat is True and encoder.iperiod == 25 and encoder.bitrate > 0
    # What the Pi's encoder would emit: Annex B H.264, SPS/PPS at each keyframe; timestamps in µs.
    hw = FrameEncoder(320, 240, fps=25.0, codec="libx264")
    base = np.add.outer(np.arange(240), np.arange(320))
    for i in range(75):
        img = (np.dstack([base + i, base * 2, base[::-1]]) % 256).astype(np.uint8)
        for p in hw.encode(img, i / 25.0):
            now[0] = 500.0 + i / 25.0
            accept[0] = not (30 <= i < 33)  # the recorder's queue is full for three frames
            output.outputframe(p.data, p.keyframe, 7_000_000 + i * 40_000)
    assert pic.dropped == 3 + (50 - 33)  # the refused ones, then nothing until the keyframe at 50
    assert [p.ts for p in ring.since(0.0) if p.keyframe] == pytest.approx([500.0, 501.0, 502.0])
    assert len(ring.since(0.0)) == 25 + 5 + 25  # the GOP cut short by the drop ends there; no broken packet
    packets = ring.since(502.5)
    assert packets[0].keyframe and packets[0].ts == pytest.approx(502.0)  # µs sensor time on our clock
    w = PacketClipWriter(tmp_path / "pi.mp4", pic.stream_info)
    for p in ring.since(0.0):
        w.write(p)
    w.finalize()
    assert len(decoded(tmp_path / "pi.mp4")) == 55  # plays across the gap
    pic.stop()
    assert cam.stopped == [encoder]


def test_picamera2_missing_is_a_config_error() -> None:
    pic = Picamera2Encoding(FakeCamera(), lambda p: True, (640, 480))
    with pytest.raises(ConfigError, match="picamera2 is not installed"):
        pic.start()


def test_jpeg_size_from_the_header() -> None:
    from edgevision.capture.encoder import jpeg_size

    jpeg = cv2.imencode(".jpg", np.zeros((37, 53, 3), np.uint8))[1].tobytes()
    assert jpeg_size(jpeg) == (53, 37)
    progressive = cv2.imencode(".jpg", np.zeros((20, 30, 3), np.uint8), [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[
        1
    ].tobytes()
    assert jpeg_size(progressive) == (30, 20)
    for bad in (b"", b"\xff\xd8", b"PNG....", b"\xff\xd8\x00\x00"):
        with pytest.raises(ValueError):
            jpeg_size(bad)


class _RewritingEncoder:
    """An encoder context whose packets do not keep their frames' pts (a hardware encoder that renumbers them)
    and that drops every third frame."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx
        self.frames = 0

    def encode(self, frame: Any) -> list[Any]:
        packets = self.ctx.encode(frame)
        self.frames += 1
        if self.frames % 3 == 0:
            return []
        for p in packets:
            p.pts, p.dts = p.pts + 1, p.dts + 1
        return packets

    def __getattr__(self, name: str) -> Any:
        return getattr(self.ctx, name)


def test_an_encoder_that_rewrites_or_drops_frames_holds_no_more_as_the_run_goes_on() -> None:
    """The encoder kept each frame's time until a packet with the frame's pts came out: an encoder that
    renumbered pts or dropped frames (h264_v4l2m2m) grew that map by a frame's entry for the whole run."""
    enc = FrameEncoder(64, 48, fps=25.0, codec="libx264")
    enc._ctx = _RewritingEncoder(enc._ctx)
    image = np.zeros((48, 64, 3), np.uint8)
    packets = [p for i in range(500) for p in enc.encode(image, 10.0 + i / 25.0)]
    assert enc.frames_in == 500 and len(packets) > 300
    assert len(enc._ts_of) <= 100
    assert all(abs(p.ts - (10.0 + (p.pts or 0) / 1000)) < 0.01 for p in packets)  # still on the frame clock


@pytest.mark.parametrize("bogus", [1000.0, 90000.0])
def test_a_stream_announcing_a_bogus_frame_rate_is_encoded_at_a_plausible_one(bogus: float) -> None:
    """The recording's bitrate target (and keyframe interval) scaled with the stream's announced rate: an HTTP
    MJPEG stream announcing 90000 "fps" asked the Pi's encoder for gigabits per second (past a V4L2 control's
    32 bits at 720p)."""
    plausible = FrameEncoder(1280, 720, fps=25.0, codec="libx264")
    enc = FrameEncoder(1280, 720, fps=bogus, codec="libx264")
    assert enc._ctx.bit_rate == plausible._ctx.bit_rate < 2**31
    assert enc.stream_info.rate == plausible.stream_info.rate
