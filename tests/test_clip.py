"""Crash-safe fragmented MP4 clips and their salvage."""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import WALKING
from conftest import count_frames as count
from fakes import frames_from

from edgevision.recorder.clip import ClipWriter, choose_codec
from edgevision.recorder.clip_check import _boxes, inspect_clip, salvage_fragmented_mp4


def write_clip(path: Path, n: int, fps: float = 25.0) -> ClipWriter:
    frames = [cv2.resize(f, (640, 360)) for f in frames_from(str(WALKING), 10)]
    clip = ClipWriter(path, fps, choose_codec())
    for i in range(n):
        clip.write(frames[i % len(frames)], i / fps)
    return clip


def test_finalize_renames_and_plays(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "a.mp4", 60)
    assert clip.partial_path.exists() and not (tmp_path / "a.mp4").exists()
    final = clip.finalize()
    assert final == tmp_path / "a.mp4" and not clip.partial_path.exists()
    assert count(final) == 60
    cap = cv2.VideoCapture(str(final))
    assert cap.get(cv2.CAP_PROP_FRAME_WIDTH) == 640
    cap.release()


def test_variable_frame_rate_and_odd_sizes(tmp_path: Path) -> None:
    clip = ClipWriter(tmp_path / "b.mp4", 6.0, choose_codec())
    img = np.full((101, 179, 3), 128, np.uint8)  # odd size: cropped to even for yuv420p
    for ts in [0.0, 0.1, 0.5, 0.51, 2.0]:
        clip.write(img, ts)
    assert count(clip.finalize()) == 5


@pytest.mark.parametrize("keep", [0.35, 0.6, 0.9])
def test_partial_left_by_a_crash_is_salvaged(tmp_path: Path, keep: float) -> None:
    clip = write_clip(tmp_path / "c.mp4", 125)  # 5 s at 25 fps, a fragment per second
    clip.sync()
    data = clip.partial_path.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * keep)])  # what the disk holds when the process dies
    kept = salvage_fragmented_mp4(cut)
    assert kept >= 1
    n = count(cut)
    assert 0 < n < 125 and n % 25 == 0  # whole one-second fragments only
    clip.abort()


def test_salvage_refuses_what_has_no_fragment(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "d.mp4", 10)
    clip.sync()
    head = clip.partial_path.read_bytes()[:600]
    clip.abort()
    p = tmp_path / "head.mp4"
    p.write_bytes(head)
    assert salvage_fragmented_mp4(p) == 0
    p.write_bytes(b"garbage" * 100)
    assert salvage_fragmented_mp4(p) == 0


def test_salvage_leaves_a_file_alone_when_no_fragment_is_proven_sound(tmp_path: Path) -> None:
    """A header followed by fragments none of which decodes: nothing is proven, so nothing is cut; the caller
    decides what to do with the file."""
    clip = write_clip(tmp_path / "e.mp4", 125)
    clip.sync()
    data = clip.partial_path.read_bytes()
    clip.abort()
    boxes = _boxes(data)
    first_moof = next(start for kind, start, _ in boxes if kind == "moof")
    broken = bytearray(data)
    for kind, start, stop in boxes:
        if kind == "mdat":  # no fragment's media landed (one that did would be sound, and kept)
            broken[start + 8 : stop] = bytes(stop - start - 8)
    p = tmp_path / "broken.mp4"
    p.write_bytes(bytes(broken))
    check = inspect_clip(p, want_middle=False)
    assert check.has_header and check.fragments >= 2 and check.good == 0 and first_moof < len(data)
    assert salvage_fragmented_mp4(p) == 0 and p.read_bytes() == bytes(broken)


def _zero_tail(data: bytes, boxes: list[tuple[str, int, int]], how: str) -> bytes:
    last_mdat = [b for b in boxes if b[0] == "mdat"][-1]
    if how == "appended":
        return data + b"\0" * 65536  # the file grew but the blocks were never written
    # "tail-40%": the last 40 % of the file never reached the card
    cut = (last_mdat[1] + last_mdat[2]) // 2 if how == "last-fragment-half" else len(data) * 6 // 10
    return data[:cut] + b"\0" * (len(data) - cut)


@pytest.mark.parametrize("how", ["appended", "last-fragment-half", "tail-40%"])
def test_zero_filled_tail_is_cut_back_to_fragments_that_decode(tmp_path: Path, how: str) -> None:
    """What a power cut leaves on vfat/SD: the size grew but the tail reads as zeros; boxes may still parse."""
    clip = write_clip(tmp_path / "z.mp4", 125)  # 5 one-second fragments
    clip.sync()
    data = clip.partial_path.read_bytes()
    clip.abort()
    boxes = _boxes(data)
    complete = sum(1 for k, _, _ in boxes if k == "moof")
    p = tmp_path / "zero.mp4"
    p.write_bytes(_zero_tail(data, boxes, how))
    before = inspect_clip(p, want_middle=False)
    kept = salvage_fragmented_mp4(p)
    after = inspect_clip(p, want_middle=False)
    assert kept >= 1 and after.good == after.fragments == kept  # everything kept decodes
    assert count(p) == after.frames == 25 * kept
    if how == "appended":
        assert kept == complete
    else:
        assert before.fragments > kept  # a fragment whose boxes parse was dropped because it does not decode
        assert kept < complete


def test_fragments_are_cut_by_time_under_a_slow_pipeline(tmp_path: Path) -> None:
    """A 25 fps camera whose pipeline only delivers 5 fps: still one fragment per second of media, each
    on disk as soon as the next one starts (without any explicit sync)."""
    frames = [cv2.resize(f, (320, 180)) for f in frames_from(str(WALKING), 5)]
    clip = ClipWriter(tmp_path / "slow.mp4", 25.0, choose_codec())
    for i in range(12):  # 2.4 s of media at 5 fps
        clip.write(frames[i % len(frames)], i / 5)
    on_disk = clip.partial_path.read_bytes()  # what a kill now leaves
    assert clip.fragments_synced >= 2
    cut = tmp_path / "killed.mp4"
    cut.write_bytes(on_disk)
    assert salvage_fragmented_mp4(cut) == 2 and count(cut) == 10  # 0.0 .. 1.8 s kept, 0.6 s lost at most
    for i in range(12, 40):
        clip.write(frames[i % len(frames)], i / 5)
    final = clip.finalize()
    spans = fragment_spans(final)
    assert len(spans) == 8 and all(span < 1.0 for span in spans), spans


def fragment_spans(path: Path) -> list[float]:
    """Seconds of media between the first and last frame of each fragment (from the demuxer)."""
    import av

    boxes = [b for b in _boxes(path.read_bytes()) if b[0] in ("moof", "mdat")]
    starts = [s for k, s, _ in boxes if k == "moof"]
    per: dict[int, list[float]] = {}
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        time_base = stream.time_base
        assert time_base is not None
        for p in c.demux(stream):
            if p.size and p.pts is not None and p.pos is not None:
                frag = sum(1 for s in starts if s <= p.pos)
                per.setdefault(frag, []).append(float(p.pts * time_base))
    return [max(v) - min(v) for _, v in sorted(per.items())]


def test_aborting_a_clip_on_a_full_disk_never_raises(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Both clip writers abort through one function: a muxer that fails to close and a file whose last flush
    fails (ENOSPC) are logged, the descriptor is closed, and the ``.partial`` is left for recovery."""
    import errno

    from edgevision.recorder.clip import abort_partial

    partial = tmp_path / "c.mp4.partial"
    partial.write_bytes(b"x")

    class Muxer:
        def close(self) -> None:
            raise RuntimeError("muxer failed")

    class FullDisk(io.BufferedWriter):
        def close(self) -> None:
            super().close()
            raise OSError(errno.ENOSPC, "No space left on device")

    fh = FullDisk(io.FileIO(partial, "ab"))
    abort_partial(Muxer(), fh, partial)
    assert fh.closed and partial.read_bytes() == b"x"
    assert "muxer failed" in caplog.text and "No space left" in caplog.text


def test_a_fragment_whose_last_frame_is_half_zeros_is_not_sound(tmp_path: Path) -> None:
    """A power cut on vfat/SD zero-fills from a sector boundary: here only the last slice of a fragment's last
    frame (the encoder cuts each frame into slices). The decoder reports the broken slice only when it decodes
    the slices one after another; with slice threads the error was dropped and the fragment passed as sound."""
    import av

    clip = write_clip(tmp_path / "s.mp4", 75)  # 3 one-second fragments
    clip.sync()
    data = clip.partial_path.read_bytes()
    with av.open(str(clip.partial_path)) as c:
        samples = [(p.pos, p.size) for p in c.demux(video=0) if p.size and p.pos is not None]
    clip.abort()
    mdats = [(start, stop) for kind, start, stop in _boxes(data) if kind == "mdat"]
    for n, (start, stop) in enumerate(mdats[:2]):
        pos, size = [s for s in samples if start <= s[0] < stop][-1]
        for cut in range((pos + size // 2) // 512 * 512 + 512, stop, 512):  # the last frame's second half
            p = tmp_path / f"zeros{n}-{cut}.mp4"
            p.write_bytes(data[:cut] + bytes(stop - cut) + data[stop:])
            assert inspect_clip(p, want_middle=False).good == n, (n, stop - cut)
