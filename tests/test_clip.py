"""Crash-safe fragmented MP4 clips and their salvage."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import WALKING
from conftest import count_frames as count
from fakes import frames_from

from edgevision.recorder.clip import ClipWriter, choose_codec, salvage_fragmented_mp4


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
