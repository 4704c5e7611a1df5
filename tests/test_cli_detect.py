"""``edgevision detect``: JSON output, annotation, and one clear line + exit code for every bad input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import IMAGES, SHARED_MODELS, read_image, run_cli

V1_FILE = SHARED_MODELS / "ssd_mobilenet_v1_1.0_coco_quant_detect.tflite"


def test_json_output_format(env: dict[str, str]) -> None:
    r = run_cli(["detect", "--json", str(IMAGES / "squat.bmp"), str(IMAGES / "cat.bmp")], env)
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert [Path(o["image"]).name for o in lines] == ["squat.bmp", "cat.bmp"]
    for o in lines:
        assert set(o) == {"image", "model", "latency_ms", "detections"}
        assert o["model"] == "ssd_mobilenet_v1_coco_quant" and o["latency_ms"] > 0
        for d in o["detections"]:
            assert set(d) == {"label", "class_id", "score", "box"}
            xmin, ymin, xmax, ymax = d["box"]
            assert 0 <= xmin <= xmax <= 1 and 0 <= ymin <= ymax <= 1
    assert any(d["label"] == "person" for d in lines[0]["detections"])
    assert [d["label"] for d in lines[1]["detections"]] == ["cat"]


def test_python_dash_m_and_console_script_agree(env: dict[str, str]) -> None:
    script = shutil.which("edgevision", path=os.path.dirname(sys.executable))
    assert script, "console script not installed next to the interpreter"
    a = subprocess.run(
        [script, "detect", "--json", str(IMAGES / "squat.bmp")], env=env, capture_output=True, text=True
    )
    b = run_cli(["detect", "--json", str(IMAGES / "squat.bmp")], env)
    strip = [{k: v for k, v in json.loads(x.stdout).items() if k != "latency_ms"} for x in (a, b)]
    assert a.returncode == b.returncode == 0 and strip[0] == strip[1]


def test_annotate_writes_boxes(env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "annotated.png"
    r = run_cli(
        [
            "detect",
            str(IMAGES / "squat.bmp"),
            "--annotate",
            str(out),
            "--model",
            "ssd_mobilenet_v2_coco_quant",
        ],
        env,
    )
    assert r.returncode == 0, r.stderr
    assert "person" in r.stdout and "ssd_mobilenet_v2_coco_quant" in r.stdout
    original, annotated = read_image(IMAGES / "squat.bmp"), read_image(out)
    assert annotated.shape == original.shape and (annotated != original).any()
    outdir = tmp_path / "many"
    r = run_cli(
        ["detect", str(IMAGES / "squat.bmp"), str(IMAGES / "cat.bmp"), "--annotate", str(outdir)], env
    )
    assert r.returncode == 0 and sorted(p.name for p in outdir.iterdir()) == ["cat.bmp", "squat.bmp"]


def test_model_by_path_with_labels(env: dict[str, str]) -> None:
    r = run_cli(["detect", "--json", "--model", str(V1_FILE), str(IMAGES / "squat.bmp")], env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["detections"][0]["label"] == "person"


def _bad_files(tmp: Path) -> dict[str, Path]:
    data = V1_FILE.read_bytes()
    files = {
        "truncated.tflite": data[: len(data) // 3],
        "page.tflite": b"<!DOCTYPE html>\n<html><head><title>404</title></head></html>\n",
        "pointer.tflite": b"version https://git-lfs.github.com/spec/v1\noid sha256:e4b1\nsize 4183312\n",
        "garbage.jpg": os.urandom(5000),
        "empty.bmp": b"",
    }
    out = {}
    for name, content in files.items():
        (tmp / name).write_bytes(content)
        out[name] = tmp / name
    return out


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["detect", "{img}/nope.jpg"], 66, "no such file"),
        (["detect", "{tmp}/garbage.jpg"], 66, "cannot decode image"),
        (["detect", "{tmp}/empty.bmp"], 66, "cannot decode image"),
        (["detect", "{img}"], 66, "not a file"),
        (["detect", "--model", "{tmp}/truncated.tflite", "{img}/cat.bmp"], 78, "truncated or corrupt"),
        (["detect", "--model", "{tmp}/page.tflite", "{img}/cat.bmp"], 78, "HTML"),
        (["detect", "--model", "{tmp}/pointer.tflite", "{img}/cat.bmp"], 78, "git-lfs pointer"),
        (["detect", "--model", "{tmp}/missing.tflite", "{img}/cat.bmp"], 78, "model file not found"),
        (["detect", "--model", "no_such_model", "{img}/cat.bmp"], 78, "unknown model"),
        (["detect", "--model", "mobilenet_v1_0.5_160_quant", "{img}/cat.bmp"], 78, "neither"),
        (
            ["detect", "--model", "{tmp}/custom_edgetpu.tflite", "{img}/cat.bmp"],
            78,
            "compiled for the Edge TPU",
        ),
        (
            [
                "detect",
                "--model",
                "ssd_mobilenet_v2_coco_quant_edgetpu",
                "--config",
                "{tmp}/nofallback.yaml",
                "{img}/cat.bmp",
            ],
            78,
            "libedgetpu",
        ),
        (
            [
                "detect",
                "--model",
                "ssd_mobilenet_v2_coco_quant",
                "--device",
                "edgetpu",
                "--config",
                "{tmp}/nofallback.yaml",
                "{img}/cat.bmp",
            ],
            78,
            "libedgetpu",
        ),
        (
            ["detect", "--device", "edgetpu", "--config", "{tmp}/nofallback.yaml", "{img}/cat.bmp"],
            78,
            "not compiled for the Edge TPU",
        ),
        (["detect", "--threshold", "abc", "{img}/cat.bmp"], 2, "invalid float value"),
        (["detect", "--threshold", "1.5", "{img}/cat.bmp"], 2, "detector.threshold"),
        (["detect", "--threads", "0", "{img}/cat.bmp"], 2, "runtime.threads"),
        (["detect", "--runtime", "onnx", "{img}/cat.bmp"], 2, "invalid choice"),
        (["detect"], 2, "required"),
        (["detect", "--config", "{tmp}/missing.yaml", "{img}/cat.bmp"], 78, "config file not found"),
    ],
)
def test_bad_inputs(env: dict[str, str], tmp_path: Path, args: list[str], code: int, message: str) -> None:
    _bad_files(tmp_path)
    (tmp_path / "nofallback.yaml").write_text("runtime:\n  cpu_fallback: false\n")
    shutil.copy(
        SHARED_MODELS / "ssd_mobilenet_v2_coco_quant_postprocess_edgetpu.tflite",
        tmp_path / "custom_edgetpu.tflite",
    )
    subst = {"img": str(IMAGES), "tmp": str(tmp_path), "shared": str(SHARED_MODELS)}
    r = run_cli([a.format(**subst) for a in args], env)
    assert r.returncode == code, (r.returncode, r.stderr)
    assert message in r.stderr
    assert "Traceback" not in r.stderr


def test_edgetpu_model_falls_back_to_cpu_twin(env: dict[str, str]) -> None:
    r = run_cli(
        ["detect", "--json", "--model", "ssd_mobilenet_v2_coco_quant_edgetpu", str(IMAGES / "squat.bmp")], env
    )
    assert r.returncode == 0, r.stderr
    assert "falling back to the CPU model 'ssd_mobilenet_v2_coco_quant'" in r.stderr
    assert json.loads(r.stdout)["model"] == "ssd_mobilenet_v2_coco_quant"


def test_some_bad_images_still_process_the_rest(env: dict[str, str], tmp_path: Path) -> None:
    bad = _bad_files(tmp_path)["garbage.jpg"]
    r = run_cli(["detect", "--json", str(bad), str(IMAGES / "squat.bmp")], env)
    assert r.returncode == 66
    assert len(r.stdout.splitlines()) == 1 and "cannot decode image" in r.stderr


def test_annotating_two_images_of_the_same_name_into_one_directory_is_refused(
    env: dict[str, str], tmp_path: Path
) -> None:
    """a/x.bmp and b/x.bmp both went to OUT/x.bmp: the second silently overwrote the first (exit 0)."""
    for sub, name in (("a", "squat.bmp"), ("b", "cat.bmp")):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "x.bmp").write_bytes((IMAGES / name).read_bytes())
    out = tmp_path / "out"
    r = run_cli(
        ["detect", str(tmp_path / "a" / "x.bmp"), str(tmp_path / "b" / "x.bmp"), "--annotate", f"{out}/"], env
    )
    assert r.returncode == 2 and "x.bmp" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not out.exists() or not any(out.iterdir())


def _black_png(path: Path, side: int) -> None:
    """A real, valid black RGB PNG of ``side`` x ``side`` (a few hundred KB however large the side)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    z = zlib.compressobj(9)
    row = bytes(1 + 3 * side)  # filter byte + pixels
    idat = b"".join(z.compress(row) for _ in range(side)) + z.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


def test_a_huge_image_is_refused_before_it_is_decoded(env: dict[str, str], tmp_path: Path) -> None:
    """A 144-megapixel PNG of 0.4 MB decodes to 432 MB of pixels (twice that while converting): on a Pi that is
    the OOM killer. It is refused from its header with one line naming the limit."""
    huge = tmp_path / "panorama.png"
    _black_png(huge, 12000)
    assert huge.stat().st_size < 2_000_000
    r = run_cli(["detect", str(huge)], env)
    assert r.returncode == 66, r.stderr
    assert "panorama.png: image too large to decode here (over 134 megapixels" in r.stderr
    assert "Traceback" not in r.stderr


def test_the_too_large_message_shows_a_limit_set_as_no_number(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The message read the limit back with int(): a setting such as ``200M`` raised a ValueError instead."""
    import cv2

    from edgevision.errors import InputError
    from edgevision.safe_read import read_image

    def refuse(*a: object) -> None:
        raise cv2.error("(-215:Assertion failed) pixels <= CV_IO_MAX_IMAGE_PIXELS in function 'validate'")

    image = tmp_path / "big.png"
    image.write_bytes(b"x")
    monkeypatch.setattr(cv2, "imread", refuse)
    monkeypatch.setenv("OPENCV_IO_MAX_IMAGE_PIXELS", "200M")
    with pytest.raises(
        InputError, match=r"big\.png: image too large to decode here \(over '200M' megapixels"
    ):
        read_image(image)
