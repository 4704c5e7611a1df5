"""The structural TFLite check refuses files that are not models before an interpreter sees them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import SHARED_MODELS

from edgevision.errors import ModelError
from edgevision.inference.tflite_file import inspect_tflite, inspect_tflite_bytes

V1 = SHARED_MODELS / "ssd_mobilenet_v1_1.0_coco_quant_detect.tflite"
LFS = b"version https://git-lfs.github.com/spec/v1\noid sha256:e4b118e5\nsize 4183312\n"


def test_real_models_pass_and_report_custom_ops() -> None:
    info = inspect_tflite(V1)
    assert info.version == 3 and info.has_postprocess and not info.needs_edgetpu
    tpu = inspect_tflite(SHARED_MODELS / "ssd_mobilenet_v2_coco_quant_postprocess_edgetpu.tflite")
    assert tpu.needs_edgetpu
    assert not inspect_tflite(SHARED_MODELS / "face_landmark.tflite").custom_ops


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda b: b[: len(b) // 2], "truncated or corrupt"),
        (lambda b: b[:4000], "truncated or corrupt"),
        (lambda b: b"<!DOCTYPE html><html><body>404 Not Found</body></html>" * 3, "HTML"),
        (lambda b: LFS, "git-lfs pointer"),
        (lambda b: b"PK\x03\x04" + b"\0" * 64, "zip archive"),
        (lambda b: b"", "too small"),
        (lambda b: bytes(range(256)) * 8, "not a TFLite flatbuffer"),
        (lambda b: b[:4] + b"TFL3" + b"\xff" * 64, "truncated or corrupt"),
    ],
)
def test_bad_model_bytes(make: Callable[[bytes], bytes], message: str) -> None:
    with pytest.raises(ModelError, match=message):
        inspect_tflite_bytes(make(V1.read_bytes()), "bad.tflite")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not found"):
        inspect_tflite(tmp_path / "nope.tflite")


def test_a_large_file_that_is_no_model_is_refused_without_reading_it_all(tmp_path: Path) -> None:
    """`--model clip.mp4` (a slip) must be refused from its first bytes: reading a video of gigabytes into memory
    first would get the process killed on a Pi before it could say what is wrong."""
    import tracemalloc

    video = tmp_path / "clip.mp4"
    with open(video, "wb") as f:
        f.write(b"\x00\x00\x00\x20ftypisom" + b"\x00" * 100)
        f.truncate(256 << 20)  # sparse: 256 MiB that cost no disk
    tracemalloc.start()
    try:
        with pytest.raises(ModelError, match="no TFL3 identifier"):
            inspect_tflite(video)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20
