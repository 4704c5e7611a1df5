"""Clips cut from packets: bit-exact to the source, playable, keyframe-first, crash-safe (real and synthetic video)."""

from __future__ import annotations

import dataclasses
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from conftest import WALKING

from edgevision.capture.demux import DemuxSource
from edgevision.capture.packets import EncodedPacket
from edgevision.recorder.clip_check import _boxes, inspect_clip, salvage_fragmented_mp4
from edgevision.recorder.packet_ring import PacketRing
from edgevision.recorder.remux import PacketClipWriter


def long_gop_video(path: Path, frames: int = 350, gop: int = 250, fps: int = 25) -> None:
    """A synthetic H.264 MP4 (moving gradient) with a keyframe every ``gop`` frames."""
    with av.open(str(path), "w") as out:
        s = out.add_stream(
            "libx264",
            rate=fps,
            options={"g": str(gop), "keyint_min": str(gop), "sc_threshold": "0", "preset": "ultrafast"},
        )
        s.width, s.height, s.pix_fmt = 320, 240, "yuv420p"
        base = np.add.outer(np.arange(240), np.arange(320))
        for i in range(frames):
            planes = [base + 3 * i, base[::-1] + i, np.full_like(base, 7 * i)]
            img = (np.dstack(planes) % 256).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="bgr24")
            out.mux(s.encode(frame))
        out.mux(s.encode())


def open_gop_video(path: Path, codec: str = "hevc", frames: int = 200, gop: int = 50, fps: int = 25) -> None:
    """A synthetic H.265 or H.264 file (moving gradient) with a keyframe every ``gop`` frames, B-frames and an
    open GOP, as x265 makes by default and many cameras do: a clip cut at a later keyframe starts with leading
    pictures that refer to frames before the cut. ``path``'s suffix picks the container (.mp4, .ts)."""
    params = f"keyint={gop}:min-keyint={gop}:scenecut=0:open-gop=1:bframes=3"
    encoder, key = ("libx265", "x265-params") if codec == "hevc" else ("libx264", "x264-params")
    if codec == "hevc":
        params += ":log-level=error"
    with av.open(str(path), "w") as out:
        s = out.add_stream(encoder, rate=fps, options={key: params, "preset": "ultrafast"})
        assert isinstance(s, av.VideoStream)
        s.width, s.height, s.pix_fmt = 320, 240, "yuv420p"
        base = np.add.outer(np.arange(240), np.arange(320))
        for i in range(frames):
            img = (np.dstack([base + 3 * i, base[::-1] + i, np.full_like(base, 7 * i)]) % 256).astype(
                np.uint8
            )
            out.mux(s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="bgr24")))
        out.mux(s.encode())


HEVC_PARAMETER_SETS = {32, 33, 34}  # VPS, SPS, PPS: an 'hvc1' clip carries them in its header, not in samples


def annexb_nals(data: bytes, codec: str) -> list[bytes]:
    """The NAL units of an Annex B payload (start-code framed, as in MPEG-TS); for H.265 without the parameter
    sets, which an 'hvc1' clip keeps in its header."""
    units = [n.rstrip(b"\x00") for n in data.split(b"\x00\x00\x01")[1:]]  # a 4-byte code's zero ends the last
    if codec != "hevc":
        return units
    return [n for n in units if (n[0] >> 1) & 0x3F not in HEVC_PARAMETER_SETS]


def length_prefixed_nals(data: bytes) -> list[bytes]:
    """The NAL units of an MP4 sample (each framed by a 4-byte big-endian length)."""
    out, pos = [], 0
    while pos + 4 <= len(data):
        n = int.from_bytes(data[pos : pos + 4], "big")
        out.append(data[pos + 4 : pos + 4 + n])
        pos += 4 + n
    assert pos == len(data)
    return out


def source_packets(path: Path) -> tuple[DemuxSource, list[EncodedPacket]]:
    src = DemuxSource(path)
    src.open()
    packets = []
    while (item := src.read(decode=False)) is not None:
        if item.packet is not None:
            packets.append(item.packet)
    return src, packets


def remux_walking(clip: Path) -> None:
    """The whole walking clip remuxed into ``clip`` (a fragmented MP4, as the recorder writes)."""
    src, packets = source_packets(WALKING)
    assert src.stream_info is not None
    w = PacketClipWriter(clip, src.stream_info)
    for p in packets:
        w.write(p)
    w.finalize()
    src.close()


def clip_packets(path: Path) -> list[bytes]:
    with av.open(str(path)) as c:
        return [bytes(p) for p in c.demux(c.streams.video[0]) if p.size]


def decoded_frames(path: Path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


def record(
    src: DemuxSource, packets: list[EncodedPacket], out: Path, trigger: float, pre: float, end: float
) -> tuple[PacketClipWriter, list[EncodedPacket]]:
    """Replay ``packets`` through a pre-roll ring; at ``trigger`` open a clip, close it at the first packet
    after ``end`` (in decode order, as the recorder's intake does: a B-frame shown before ``end`` but decoded
    after that packet refers to frames the clip does not hold)."""
    assert src.stream_info is not None
    ring = PacketRing(pre, 64 << 20)
    writer: PacketClipWriter | None = None
    written: list[EncodedPacket] = []
    for p in packets:
        if writer is None:
            ring.push(p)
            if p.ts >= trigger:
                writer = PacketClipWriter(out, src.stream_info)
                for q in ring.since(trigger - pre):
                    writer.write(q)
                    written.append(q)
        elif p.ts <= end:
            writer.write(p)
            written.append(p)
        else:
            break
    assert writer is not None
    writer.finalize()
    return writer, written


def test_clip_of_a_replayed_file_is_bit_exact(tmp_path: Path) -> None:
    src, packets = source_packets(WALKING)
    assert [i for i, p in enumerate(packets) if p.keyframe] == [0, 128, 256]  # 5.12 s GOPs
    out = tmp_path / "clips" / "event.mp4"
    writer, written = record(src, packets, out, trigger=9.0, pre=3.0, end=12.0)
    assert out.exists() and not writer.partial_path.exists()
    assert written[0] is packets[128]  # the last keyframe at or before 9.0 - 3.0 (5.12 s)
    got = clip_packets(out)
    assert got == [p.data for p in written]  # payloads bit-exact over the span
    assert len(got) == 12 * 25 + 1 - 128
    assert decoded_frames(out) == len(got)  # it plays: every frame decodes
    assert writer.fragments_synced >= 6  # <= 1 s fragments, each fsync'd (the header too)
    with av.open(str(out)) as c:
        first = next(iter(c.demux(c.streams.video[0])))
        assert first.is_keyframe and first.dts == 0 and c.streams.video[0].width == 1280
    src.close()


@pytest.mark.parametrize(("trigger", "first_key"), [(8.0, 0), (12.5, 250), (11.9, 0)])
def test_gop_longer_than_the_pre_roll_still_starts_at_a_keyframe(
    tmp_path: Path, trigger: float, first_key: int
) -> None:
    video = tmp_path / "longgop.mp4"
    long_gop_video(video)
    src, packets = source_packets(video)
    assert [i for i, p in enumerate(packets) if p.keyframe] == [0, 250]
    out = tmp_path / "clip.mp4"
    _writer, written = record(src, packets, out, trigger=trigger, pre=2.0, end=trigger + 1.0)
    assert written[0] is packets[first_key] and written[0].keyframe
    got = clip_packets(out)
    assert got == [p.data for p in written]
    assert decoded_frames(out) == len(written)
    assert salvage_fragmented_mp4(out) >= 1  # fragments every <= 1 s even inside a 10 s GOP
    src.close()


@pytest.mark.parametrize("container", ["mp4", "ts"])
@pytest.mark.parametrize("codec", ["hevc", "h264"])
def test_an_open_gop_clip_is_sound_whole_and_an_hevc_one_is_tagged_for_every_browser(
    tmp_path: Path, codec: str, container: str
) -> None:
    """A stream cut at a keyframe inside an open GOP: the decoder drops the leading pictures that refer to frames
    before the cut (H.265) or reports their references missing (H.264). The clip is still whole: the check finds
    every fragment sound and a salvage keeps them all (the check used to find no sound fragment, and recovery
    then deleted the clip as undecodable), while a fragment of zeros in that first GOP is still found unsound."""
    video = tmp_path / f"cam.{container}"
    open_gop_video(video, codec)
    src, packets = source_packets(video)
    keys = [i for i, p in enumerate(packets) if p.keyframe]
    assert len(keys) == 4 and [round(packets[k].ts, 2) for k in keys] == [0.0, 2.0, 4.0, 6.0]
    out = tmp_path / "clip.mp4"
    _writer, written = record(src, packets, out, trigger=3.0, pre=1.0, end=5.0)
    assert written[0] is packets[keys[1]]  # cut at the second keyframe, inside the stream
    if container == "mp4":
        assert clip_packets(out) == [p.data for p in written]  # the source's payloads, untouched
    else:  # MP4 frames each NAL unit by its length where a transport stream uses start codes: same slices
        got = [length_prefixed_nals(d) for d in clip_packets(out)]
        assert got == [annexb_nals(p.data, codec) for p in written]
    decoded = decoded_frames(out)
    assert 0 < len(written) - decoded <= 3  # the open GOP is real: leading pictures were dropped
    check = inspect_clip(out, want_middle=False)
    assert check.playable and check.good == check.fragments >= 3 and check.frames == decoded
    with av.open(str(out)) as c:
        # hvc1: the sample entry Safari and iOS play (FFmpeg's default hev1 plays in Chrome and VLC only)
        assert c.streams.video[0].codec_tag == ("hvc1" if codec == "hevc" else "avc1")
    data = out.read_bytes()
    # every fragment kept (only the trailing random-access index, mfra, goes: it lies past the last fragment)
    assert salvage_fragmented_mp4(out) == check.fragments and out.stat().st_size == check.good_end
    assert decoded_frames(out) == decoded
    size = out.stat().st_size
    # a kill mid-fragment: cut back to the fragments that were complete, which still play
    with open(out, "ab") as fh:
        fh.write(b"\x00\x00\x10\x00moof" + b"\x01" * 100)
    assert salvage_fragmented_mp4(out) == check.fragments and out.stat().st_size < size + 50
    assert decoded_frames(out) == decoded
    # media that never reached the disk, inside the first GOP: the first / the second fragment's mdat zeroed
    mdats = [(a, b) for kind, a, b in _boxes(data) if kind == "mdat"]
    for n, (a, b) in enumerate(mdats[:2]):
        broken = tmp_path / f"zeros{n}.mp4"
        broken.write_bytes(data[: a + 8] + bytes(b - a - 8) + data[b:])
        assert inspect_clip(broken, want_middle=False).good == n, n
    src.close()


@pytest.mark.parametrize("codec", ["hevc", "h264"])
def test_a_half_written_frame_in_an_open_gop_clips_first_gop_is_not_sound(tmp_path: Path, codec: str) -> None:
    """A clip cut at an open GOP's keyframe whose first GOP is long (a keyframe every 10 s, a fragment a second):
    a decoding error there is forgiven only where the missing references are reported (on a leading picture or
    the packet after it), not up to the next keyframe, so a fragment whose last frame was half written (a kill or
    a power cut mid-write) is not sound even though the decoder still shows a frame for it."""
    video = tmp_path / "cam.mp4"
    open_gop_video(video, codec, frames=400, gop=250)
    src, packets = source_packets(video)
    out = tmp_path / "clip.mp4"
    _writer, written = record(src, packets, out, trigger=11.0, pre=1.0, end=15.0)
    src.close()
    first, second = written[0].pts, written[1].pts
    assert first is not None and second is not None
    assert written[0].keyframe and second < first  # cut at an open GOP's keyframe
    assert not any(p.keyframe for p in written[1:])  # the whole clip is its first GOP
    whole = inspect_clip(out, want_middle=False)
    assert whole.good == whole.fragments >= 4
    data = out.read_bytes()
    mdats = [(a, b) for kind, a, b in _boxes(data) if kind == "mdat"]
    with av.open(str(out)) as c:
        samples = [(p.pos, p.size) for p in c.demux(video=0) if p.size and p.pos is not None]
    for n, (start, stop) in enumerate(mdats[:3]):
        pos, size = [s for s in samples if start <= s[0] < stop][-1]
        cut = pos + size // 2  # the last frame's second half never landed
        broken = tmp_path / f"half{n}.mp4"
        broken.write_bytes(data[:cut] + bytes(stop - cut) + data[stop:])
        assert inspect_clip(broken, want_middle=False).good == n, n


def test_a_damaged_fragment_inside_a_clip_costs_no_later_fragment(tmp_path: Path) -> None:
    """A few damaged bytes inside a clip (a camera's packet lost on the network, a bad sector) are not what a kill
    leaves: a kill damages only the tail, after the last fsync. Salvage cuts back to the last fragment that
    decodes, so everything after the damage stays (it used to cut at the first damaged fragment: a glitch 10 s
    into a 5-minute recording killed at its end cost the rest), and a clip whose first fragment is damaged is
    still playable, so recovery keeps it instead of deleting it as undecodable."""
    remux_walking(tmp_path / "c.mp4")
    data = (tmp_path / "c.mp4").read_bytes()
    whole = inspect_clip(tmp_path / "c.mp4", want_middle=False)
    assert whole.good == whole.fragments >= 10
    mdats = [(a, b) for kind, a, b in _boxes(data) if kind == "mdat"]
    for n in (0, 2):
        a, b = mdats[n]
        mid = (a + b) // 2
        glitch = data[:mid] + bytes(x ^ 0x5A for x in data[mid : mid + 64]) + data[mid + 64 :]
        damaged = tmp_path / f"glitch{n}.mp4"
        damaged.write_bytes(glitch)
        check = inspect_clip(damaged, want_middle=False)
        # the sound prefix ends at the damage; the fragments after it decode
        assert check.good == n and check.playable
        assert check.last_good == whole.fragments and check.good_end == whole.good_end
        assert salvage_fragmented_mp4(damaged) == whole.fragments
        assert damaged.stat().st_size == whole.good_end
        assert decoded_frames(damaged) == decoded_frames(tmp_path / "c.mp4")  # the damage is concealed
        # a zero-filled tail after the damage (a kill) is still cut back to the last sound fragment
        tail = mdats[-2][0]
        damaged.write_bytes(glitch[: tail + 8] + bytes(len(data) - tail - 8))
        check = inspect_clip(damaged, want_middle=False)
        assert check.playable and check.last_good == whole.fragments - 2
        assert salvage_fragmented_mp4(damaged) == whole.fragments - 2


def test_checking_a_clip_never_holds_the_whole_file_in_memory(tmp_path: Path) -> None:
    """Start-up recovery checks every clip a crash left open before the service records again: a long clip (a
    5-minute 1080p event is hundreds of MB) read whole into memory runs a 512 MB Pi out of memory, and a
    service restarted into the same recovery never records again. The check reads only the box headers."""
    import tracemalloc

    remux_walking(tmp_path / "c.mp4")
    clip = tmp_path / "c.mp4"
    size = clip.stat().st_size
    assert size > 2_000_000
    tracemalloc.start()
    try:
        check = inspect_clip(clip, want_middle=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert check.playable and check.last_good == check.fragments
    assert peak < size // 4, (peak, size)


def test_packets_before_the_first_keyframe_are_not_written(tmp_path: Path) -> None:
    src, packets = source_packets(WALKING)
    assert src.stream_info is not None
    w = PacketClipWriter(tmp_path / "c.mp4", src.stream_info)
    for p in packets[100:140]:
        w.write(p)
    w.finalize()
    assert w.skipped == 28 and w.frames == 12
    assert clip_packets(tmp_path / "c.mp4") == [p.data for p in packets[128:140]]
    w2 = PacketClipWriter(tmp_path / "d.mp4", src.stream_info)
    w2.write(packets[5])
    with pytest.raises(ValueError, match="no packet"):
        w2.finalize()
    assert not (tmp_path / "d.mp4").exists() and not (tmp_path / "d.mp4.partial").exists()
    src.close()


def test_partial_is_salvaged_like_a_clip_writer_one(tmp_path: Path) -> None:
    """A copy of the ``.partial`` taken mid-recording (what a kill leaves) is cut to its fragments and plays."""
    src, packets = source_packets(WALKING)
    assert src.stream_info is not None
    w = PacketClipWriter(tmp_path / "c.mp4", src.stream_info)
    for p in packets[:200]:
        w.write(p)
    crash = tmp_path / "crash.mp4.partial"
    shutil.copy(w.partial_path, crash)
    with open(crash, "ab") as fh:
        fh.write(b"\x00\x00\x10\x00moof" + b"\x01" * 100)  # a fragment cut off mid-write
    kept = salvage_fragmented_mp4(crash)
    assert kept >= 6
    assert 150 <= decoded_frames(crash) <= 200
    w.abort()
    src.close()


KILL_SCRIPT = """
import sys, time
from pathlib import Path
from edgevision.capture.demux import DemuxSource
from edgevision.recorder.remux import PacketClipWriter
src = DemuxSource(sys.argv[1]); src.open()
w = PacketClipWriter(Path(sys.argv[2]), src.stream_info)
print("ready", flush=True)
while (item := src.read(decode=False)) is not None:
    if item.packet is not None:
        w.write(item.packet)
        time.sleep(0.004)
w.finalize()
"""


def test_sigkill_while_remuxing_leaves_a_salvageable_clip(tmp_path: Path) -> None:
    iterations = int(os.environ.get("EDGEVISION_KILL_ITERATIONS", "6"))
    rng = random.Random(int(os.environ.get("EDGEVISION_KILL_SEED", "7")))
    salvaged = 0
    for i in range(iterations):
        out = tmp_path / f"clip{i}.mp4"
        proc = subprocess.Popen(
            [sys.executable, "-c", KILL_SCRIPT, str(WALKING), str(out)], stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.05, 1.2))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        partial = out.with_name(out.name + ".partial")
        if out.exists():  # finished before the kill: a finalized clip, complete
            assert decoded_frames(out) == 341
            continue
        assert partial.exists()
        if salvage_fragmented_mp4(partial):
            salvaged += 1
            n = decoded_frames(partial)
            assert n >= 1
            assert clip_packets(partial)[0] == source_packets(WALKING)[1][0].data
    assert salvaged >= iterations // 2


def test_stream_without_template_takes_parameter_sets_from_the_packets(tmp_path: Path) -> None:
    """Annex B packets from an encoder (in-band SPS/PPS) need no template: the muxer finds them."""
    from edgevision.capture.packets import StreamInfo

    def encoded_ts(p: av.Packet) -> float:
        assert p.pts is not None  # the encoder stamps every packet from its frame
        return p.pts / 1000

    ctx = av.CodecContext.create("libx264", "w")
    ctx.width, ctx.height, ctx.pix_fmt = 160, 120, "yuv420p"
    ctx.time_base = Fraction(1, 1000)
    ctx.options = {"preset": "ultrafast", "g": "10"}
    packets = []
    for i in range(30):
        f = av.VideoFrame.from_ndarray(np.full((120, 160, 3), 8 * i, np.uint8), format="bgr24")
        f.pts = 40 * i
        packets += [EncodedPacket.from_av(p, encoded_ts(p)) for p in ctx.encode(f)]
    packets += [EncodedPacket.from_av(p, encoded_ts(p)) for p in ctx.encode(None)]
    w = PacketClipWriter(tmp_path / "a.mp4", StreamInfo("h264", 160, 120, Fraction(1, 1000)))
    for p in packets[10:]:
        w.write(p)
    w.finalize()
    assert decoded_frames(tmp_path / "a.mp4") == 20


def test_packet_clips_cut_events_from_a_replay(tmp_path: Path) -> None:
    """Two events on the walking clip through ring + clip: each clip begins at its pre-roll keyframe and holds
    every packet up to its end, with no packet lost or written twice."""
    from edgevision.recorder.packet_clips import PacketClips

    src, packets = source_packets(WALKING)
    assert src.stream_info is not None
    clips = PacketClips(pre_roll_s=2.0, max_bytes=64 << 20)
    clips.set_stream(src.stream_info)
    events = [(3.0, 6.0), (11.0, 13.0)]  # (trigger, end) seconds
    done: list[tuple[float, PacketClipWriter]] = []
    for p in packets:
        clips.push(p)
        for trigger, end in events:
            if clips.clip is None and trigger <= p.ts < end and not any(d[0] == trigger for d in done):
                clips.start(tmp_path / f"e{trigger:.0f}.mp4", trigger)
            elif (
                clips.clip is not None and p.ts >= end and clips.clip.final_path.name == f"e{trigger:.0f}.mp4"
            ):
                done.append((trigger, clips.finish()))
    assert [t for t, _ in done] == [3.0, 11.0]
    for trigger, clip in done:
        got = clip_packets(clip.final_path)
        first = max(i for i, p in enumerate(packets) if p.keyframe and p.ts <= trigger - 2.0)
        assert got[0] == packets[first].data
        assert got == [p.data for p in packets[first : first + len(got)]]
        assert decoded_frames(clip.final_path) == len(got) == clip.frames
    with pytest.raises(ValueError, match="no clip"):
        clips.finish()
    clips.set_stream(src.stream_info)  # same stream: the ring is kept
    assert clips.stats().packets > 0
    clips.set_stream(dataclasses.replace(src.stream_info))  # a reopened source: pre-roll starts again
    assert clips.stats().packets == 0
    src.close()


def test_a_packet_shown_before_it_is_decoded_never_stops_the_clip(tmp_path: Path) -> None:
    """A source packet whose pts is before its dts (a camera's timestamp glitch) was refused by the MP4 muxer with
    EINVAL, an error the recorder does not expect from a write: its thread stopped, and the run with it. The
    packet is kept with its pts raised to its dts (its payload untouched) and the clip goes on."""
    src, packets = source_packets(WALKING)
    assert src.stream_info is not None
    w = PacketClipWriter(tmp_path / "c.mp4", src.stream_info)
    for i, p in enumerate(packets[:60]):
        if i == 30:
            assert p.dts is not None
            p = dataclasses.replace(p, pts=p.dts - 1)
        w.write(p)  # no exception
    w.finalize()
    src.close()
    check = inspect_clip(tmp_path / "c.mp4", want_middle=False)
    assert w.frames == 60 and check.playable and check.frames >= 59
    assert clip_packets(tmp_path / "c.mp4") == [p.data for p in packets[:60]]
