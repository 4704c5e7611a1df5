"""tflite-runtime (numpy<2, OpenCV<5) finds the same persons as LiteRT.

tflite-runtime and LiteRT cannot share one environment (tflite-runtime 2.14 needs numpy<2), so CI builds a
second virtual environment with ``pip install '.[tflite]'`` and points ``EDGEVISION_TFLITE_PYTHON`` at its
interpreter; this test drives the CLI there and compares with LiteRT here.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import IMAGES, run_cli

TFLITE_PY = os.environ.get("EDGEVISION_TFLITE_PYTHON")
pytestmark = [
    pytest.mark.tflite_runtime,
    pytest.mark.skipif(
        not TFLITE_PY, reason="set EDGEVISION_TFLITE_PYTHON to a numpy<2 venv with '.[tflite]'"
    ),
]
IMAGES_USED = ["squat.bmp", "grace_hopper.bmp", "posenet_test_image.bmp", "cat.bmp", "traffic_frame_0001.bmp"]


def _persons(stdout: str) -> dict[str, list[dict[str, Any]]]:
    out = {}
    for line in stdout.splitlines():
        obj = json.loads(line)
        out[Path(obj["image"]).name] = [d for d in obj["detections"] if d["label"] == "person"]
    return out


def test_environment_is_numpy1_opencv4() -> None:
    assert TFLITE_PY
    code = "import numpy, cv2, tflite_runtime; print(numpy.__version__, cv2.__version__)"
    r = subprocess.run([TFLITE_PY, "-c", code], capture_output=True, text=True, check=True)
    np_version, cv_version = r.stdout.split()
    assert int(np_version.split(".")[0]) < 2 and int(cv_version.split(".")[0]) < 5


@pytest.mark.parametrize("model", ["ssd_mobilenet_v1_coco_quant", "ssd_mobilenet_v2_coco_quant"])
def test_same_persons_as_litert(env: dict[str, str], model: str) -> None:
    assert TFLITE_PY
    images = [str(IMAGES / n) for n in IMAGES_USED]
    args = ["detect", "--json", "--model", model, *images]
    lite = run_cli([*args, "--runtime", "litert"], env)
    assert lite.returncode == 0, lite.stderr
    tfl = subprocess.run(
        [TFLITE_PY, "-m", "edgevision", *args, "--runtime", "tflite-runtime"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert tfl.returncode == 0, tfl.stderr
    a, b = _persons(lite.stdout), _persons(tfl.stdout)
    assert a.keys() == b.keys()
    for name in a:
        assert len(a[name]) == len(b[name]), (name, a[name], b[name])
        for x, y in zip(a[name], b[name], strict=True):
            assert abs(float(x["score"]) - float(y["score"])) < 0.05
            assert max(abs(p - q) for p, q in zip(x["box"], y["box"], strict=True)) < 0.03
    assert a["squat.bmp"] and not a["cat.bmp"] and not a["traffic_frame_0001.bmp"]


def test_tflite_runtime_runs_the_int8_copy(models_dir: Path, tmp_path: Path) -> None:
    """The int8 per-channel copy (made here by LiteRT's schema) loads and runs in tflite-runtime 2.14 too."""
    assert TFLITE_PY
    model = models_dir / "ssd_mobilenet_v1_1.0_coco_quant_detect.tflite"
    code = (
        "import sys, numpy as np\n"
        "from pathlib import Path\n"
        "from edgevision.inference.backends import RuntimeOptions, open_interpreter\n"
        "h = open_interpreter(Path(sys.argv[1]), RuntimeOptions(runtime='tflite-runtime', int8_cache=Path(sys.argv[2])))\n"
        "h.run(np.zeros(h.input_shape, np.uint8))\n"
        "print(h.runtime, h.kernel_path)\n"
    )
    r = subprocess.run(
        [TFLITE_PY, "-c", code, str(model), str(tmp_path / "derived")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    runtime, kernel = r.stdout.split()
    assert runtime == "tflite-runtime" and Path(kernel).parent == tmp_path / "derived"
    assert "cannot load its int8 copy" not in r.stderr
