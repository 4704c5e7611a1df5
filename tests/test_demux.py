"""The PyAV demux source: packets for recording, frames converted only on request, straight to model size."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import pytest
from conftest import HALLWAY_3, IMAGES, WALKING, serve_directory

from edgevision.capture.demux import DecodedFrame, DemuxedItem, DemuxSource
from edgevision.capture.packets import EncodedPacket
from edgevision.errors import InputError


def read(src: DemuxSource, decode: bool = True) -> DemuxedItem:
    """The next item of a source that must not have ended."""
    item = src.read(decode=decode)
    assert item is not None
    return item


def packet(item: DemuxedItem) -> EncodedPacket:
    assert item.packet is not None
    return item.packet


def test_every_packet_and_frame_of_a_file_on_the_media_clock() -> None:
    src = DemuxSource(WALKING)
    src.open()
    assert src.stream_info is not None and src.stream_info.codec == "h264"
    assert (src.stream_info.width, src.stream_info.height) == (1280, 720) and src.fps == 25.0
    packets, frames = [], []
    while (item := src.read()) is not None:
        if item.packet is not None:
            packets.append(item.packet)
        frames += item.frames
    src.close()
    src.close()  # twice is fine
    assert len(packets) == 341 and len(frames) == 341
    assert [f.index for f in frames] == list(range(341))
    np.testing.assert_allclose([f.ts for f in frames], np.arange(341) / 25.0, atol=1e-6)
    assert sorted(p.ts for p in packets) == pytest.approx([f.ts for f in frames])  # same clock as frames
    assert packets[0].keyframe and packets[0].ts == 0.0


def test_model_input_is_scaled_from_yuv_and_matches_the_opencv_path() -> None:
    src = DemuxSource(WALKING)
    src.open()
    item = None
    for _ in range(40):
        item = src.read()
    assert item is not None and item.frames
    frame = item.frames[0]
    cap = cv2.VideoCapture(str(WALKING))
    for _ in range(frame.index + 1):
        ok, bgr = cap.read()
    cap.release()
    assert ok
    full = frame.bgr()
    assert full.shape == (720, 1280, 3) and np.abs(full.astype(int) - bgr).mean() < 2.0  # same picture
    rgb = frame.model_input(300, 300)
    assert rgb.shape == (300, 300, 3) and rgb.dtype == np.uint8
    ref = cv2.resize(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), (300, 300), interpolation=cv2.INTER_AREA)
    assert np.abs(rgb.astype(int) - ref).mean() < 3.0
    assert frame.model_input(300, 300) is rgb  # cached per size
    assert frame.model_input(320, 320).shape == (320, 320, 3)
    frame.release()
    with pytest.raises(ValueError):
        frame.model_input(224, 224)
    src.close()


def test_model_input_is_rgb_and_bgr_is_bgr(tmp_path: Path) -> None:
    video = tmp_path / "red.mp4"
    with av.open(str(video), "w") as out:
        s = out.add_stream("libx264", rate=25, options={"preset": "ultrafast"})
        s.width, s.height, s.pix_fmt = 128, 96, "yuv420p"
        red = np.zeros((96, 128, 3), np.uint8)
        red[..., 2] = 220  # BGR
        for _ in range(3):
            out.mux(s.encode(av.VideoFrame.from_ndarray(red, format="bgr24")))
        out.mux(s.encode())
    src = DemuxSource(video)
    src.open()
    frames = []
    while (item := src.read()) is not None:
        frames += item.frames
    src.close()
    r, g, b = frames[0].model_input(32, 32).reshape(-1, 3).mean(axis=0)
    assert r > 180 and g < 40 and b < 40
    assert frames[0].bgr()[..., 2].mean() > 180 and frames[0].bgr()[..., 0].mean() < 40


class CountingFrame:
    """Stands in for an av.VideoFrame and counts full-resolution conversions."""

    width, height = 64, 48

    def __init__(self) -> None:
        self.full = 0

    def to_ndarray(self, format: str) -> np.ndarray:
        self.full += 1
        return np.zeros((48, 64, 3), np.uint8)


def test_full_image_is_made_only_when_asked_and_once() -> None:
    raw = CountingFrame()
    frame = DecodedFrame(raw, 0.0, 0)
    assert raw.full == 0
    a = frame.bgr()
    b = frame.bgr()
    assert a is b and raw.full == 1 and frame.size == (64, 48)


def test_decode_false_skips_to_the_next_keyframe() -> None:
    src = DemuxSource(WALKING)
    src.open()
    before = sum(len(read(src).frames) for _ in range(10))
    assert before >= 5  # frame threads delay the first frames by a few packets
    for _ in range(20):
        assert read(src, decode=False).frames == []
    got: list[Any] = []
    waited = 0
    while (item := src.read()) is not None and len(got) < 5:
        got += item.frames
        waited += not got
    assert waited >= 128 - 30  # packets 30..127 are not decoded: no frame until the keyframe at 5.12 s
    assert got[0].ts == pytest.approx(128 / 25.0)
    assert all(np.isfinite(f.model_input(32, 32)).all() for f in got)
    src.close()


def test_live_stream_timestamps_follow_the_clock_and_reanchor(tmp_path: Path) -> None:
    now = [1000.0]
    opened: list[str] = []

    def opener(target: str, **kw: Any) -> Any:
        opened.append(target)
        assert kw["options"] == {"rtsp_transport": "tcp"} and kw["timeout"] == (10.0, 5.0)
        return av.open(str(WALKING))

    src = DemuxSource("rtsp://camera/stream", clock=lambda: now[0], opener=opener)
    assert src.live
    src.open()
    ts = [packet(read(src)).ts for _ in range(3)]
    assert opened == ["rtsp://camera/stream"]
    assert ts[0] == pytest.approx(1000.0) and ts[2] != ts[0]
    now[0] = 1500.0  # the stream stalled for minutes: timestamps re-anchor on the clock
    assert packet(read(src)).ts == pytest.approx(1500.0, abs=0.5)
    src.close()


def test_open_errors_are_input_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        DemuxSource(tmp_path / "missing.mp4").open()
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video" * 100)
    with pytest.raises(InputError, match="cannot open"):
        DemuxSource(junk).open()
    with pytest.raises(InputError, match="not a file"):
        DemuxSource(tmp_path).open()


def test_an_image_given_as_a_video_is_one_frame_and_not_remuxable() -> None:
    """MP4 cannot carry BMP: such a stream has no muxer template and is marked for encoding, not refused."""
    src = DemuxSource(IMAGES / "squat.bmp")
    src.open()
    info = src.stream_info
    assert info is not None and info.codec == "bmp"
    assert not info.remuxable and info.template is None
    frames = []
    while (item := src.read()) is not None:
        frames += item.frames
    src.close()
    assert len(frames) == 1


def test_http_source_demuxes_over_ffmpeg_http(tmp_path: Path) -> None:
    """A real HTTP server: packets and frames arrive as from a file, on the live clock."""
    import shutil

    shutil.copy(WALKING, tmp_path / "cam.mp4")
    with serve_directory(tmp_path) as base:
        src = DemuxSource(f"{base}/cam.mp4", clock=lambda: 50.0)
        assert src.live
        src.open()
        assert src.stream_info is not None and src.stream_info.remuxable
        packets = frames = 0
        while (item := src.read()) is not None:
            packets += item.packet is not None
            frames += len(item.frames)
        src.close()
        assert packets == 341 and frames == 341


@pytest.mark.parametrize(
    ("skip", "frames", "first_ts"),
    [("NONE", 341, None), ("NONREF", 86, None), ("NONKEY", 3, [0.0, 5.12, 10.24])],
)
def test_skipping_frames_keeps_every_packet(skip: str, frames: int, first_ts: list[float] | None) -> None:
    from edgevision.capture.demux import FrameSkip

    src = DemuxSource(WALKING, decoder_threads=1)
    src.open()
    src.set_skip(FrameSkip[skip])
    packets, got = 0, []
    while (item := src.read()) is not None:
        packets += item.packet is not None
        got += item.frames
    src.close()
    assert packets == 341 and len(got) == frames
    assert [f.index for f in got] == list(range(frames))
    assert all(b.ts > a.ts for a, b in itertools.pairwise(got))  # still on the media clock, in order
    if first_ts is not None:
        assert [f.ts for f in got] == pytest.approx(first_ts)


def _rotated_copy(path: Path, out: Path) -> Path:
    """``path`` with its track marked to be shown turned 90 degrees clockwise (a phone held upright: the
    ``tkhd`` display matrix a phone writes; the pictures themselves stay landscape)."""
    import struct

    data = bytearray(path.read_bytes())
    box = data.index(b"tkhd")
    assert data[box + 4] == 0  # version 0: the matrix sits 40 bytes into the box's fields
    matrix = (0, 0x10000, 0, 0xFFFF0000, 0, 0, 0, 0, 0x40000000)
    data[box + 44 : box + 80] = struct.pack(">9I", *matrix)
    out.write_bytes(bytes(data))
    return out


def test_a_rotated_video_is_upright_for_the_model_and_the_full_image(tmp_path: Path) -> None:
    """A phone's portrait video reached the detector lying on its side (the decoder's landscape pictures, the
    display matrix ignored), while OpenCV, which the scheduler profiles with, turns it upright."""
    path = _rotated_copy(HALLWAY_3, tmp_path / "portrait.mp4")
    cap = cv2.VideoCapture(str(path))
    ok, upright = cap.read()
    cap.release()
    assert ok and upright.shape[0] > upright.shape[1]  # OpenCV shows it portrait
    src = DemuxSource(path)
    src.open()
    frame = None
    while frame is None:
        item = read(src)
        frame = item.frames[0] if item.frames else None
    src.close()
    assert frame.size == (upright.shape[1], upright.shape[0])
    bgr = frame.bgr()
    assert bgr.shape == upright.shape and bgr.flags.c_contiguous
    assert np.abs(bgr.astype(np.int16) - upright).mean() < 8
    model = frame.model_input(48, 64)
    assert model.shape == (64, 48, 3) and model.flags.c_contiguous
    expected = cv2.cvtColor(cv2.resize(upright, (48, 64), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
    assert np.abs(model.astype(np.int16) - expected).mean() < 8


def _mpeg4_copy(path: Path, out: Path, frames: int = 30) -> Path:
    """The first ``frames`` of ``path`` as MPEG-4 part 2 in MP4: a codec clips cannot carry as it is."""
    with av.open(str(path)) as src, av.open(str(out), "w") as dst:
        video = src.streams.video[0]
        stream = dst.add_stream("mpeg4", rate=video.average_rate)
        stream.width, stream.height, stream.pix_fmt = video.width, video.height, "yuv420p"
        for frame in itertools.islice(src.decode(video), frames):
            dst.mux(stream.encode(frame))
        dst.mux(stream.encode(None))
    return out


@pytest.mark.parametrize("codec", ["h264", "mpeg4"])
def test_a_rotated_video_s_clips_play_upright(codec: str, tmp_path: Path) -> None:
    """A rotated video whose codec clips cannot carry was encoded for its clips from the decoder's landscape
    pictures, with no display matrix: its clips played on their side. (Copied packets keep the matrix.)"""
    from edgevision.capture.feed import PacketFeed, StreamStart
    from edgevision.capture.stream import PacketSource
    from edgevision.recorder.remux import PacketClipWriter

    source = HALLWAY_3 if codec == "h264" else _mpeg4_copy(HALLWAY_3, tmp_path / "landscape.mp4")
    path = _rotated_copy(source, tmp_path / "portrait.mp4")
    feed = PacketFeed(max_packets=10_000, max_bytes=1 << 30, blocking=True)
    src = PacketSource(DemuxSource(path), feed, encoder_codec="libx264")
    src.open()
    shown = [item[0] for item in itertools.islice(iter(src.read, None), 20)]
    src.close()
    writer = None
    while (item := feed.get()) is not None:
        if isinstance(item, StreamStart):
            writer = PacketClipWriter(tmp_path / "clip.mp4", item.info)
        elif writer is not None:
            writer.write(item)
    assert writer is not None
    clip = writer.finalize()
    with av.open(str(clip)) as c:
        played = DecodedFrame(next(c.decode(video=0)), 0.0, 0).bgr()  # as a player shows it: matrix applied
    upright = shown[0].bgr()
    assert upright.shape[0] > upright.shape[1]  # the source is portrait
    assert played.shape == upright.shape
    assert np.abs(played.astype(np.int16) - upright).mean() < 8
