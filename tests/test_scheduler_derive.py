"""Resolution rungs derived from a student made on this machine (`models distill`, TensorFlow >= 2.16 converter).

Such a student's per-layer reshapes build their target at run time (``SHAPE -> STRIDED_SLICE -> PACK`` with the
anchor count as a constant scalar) instead of a ``ReshapeOptions.new_shape``; derivation must rewrite those.
Needs the ``train`` extra (TensorFlow) to make the student; skipped where it is not installed. The student is
trained for one step only: these tests are about the graph, not about its accuracy.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import SHARED

pytest.importorskip("tensorflow")
pytestmark = pytest.mark.timeout(
    1200
)  # starting TensorFlow alone can take a minute on a loaded 2-core machine

from ai_edge_litert import schema_py_generated as schema  # noqa: E402
from ai_edge_litert.interpreter import Interpreter  # noqa: E402

from edgevision.catalog import fetch_entry, load_catalog  # noqa: E402
from edgevision.catalog.local import list_local_models, local_model_path  # noqa: E402
from edgevision.config import load_config  # noqa: E402
from edgevision.detection.ssd import ssd_anchors  # noqa: E402
from edgevision.distill.pipeline import DistillOptions, distill  # noqa: E402
from edgevision.distill.students import grids  # noqa: E402
from edgevision.distill.train import TrainSettings  # noqa: E402
from edgevision.scheduler.derive import analyse, derive, ensure_derived  # noqa: E402
from edgevision.scheduler.ladder import build_ladder  # noqa: E402

TEACHER = "ssd_mobilenet_v1_coco_quant"
VIDEO = SHARED / "media" / "video" / "supervision_walking.mp4"
NATIVE = 160


@pytest.fixture(scope="module")
def student(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models directory holding the teacher and a tiny α 0.25 student at 160 px, installed by `distill`."""
    models = tmp_path_factory.mktemp("derive-models")
    for name in (TEACHER, "mobilenet_v1_0.25_128_quant"):
        for e in load_catalog().files_for(name):
            fetch_entry(e, models, mirror=str(SHARED / "models"))
    opts = DistillOptions(
        student="mobilenet_v1_0.25",
        videos=[VIDEO],
        models_dir=models,
        data_dir=tmp_path_factory.mktemp("data"),
        name="tiny",
        size=NATIVE,
        every=40,
        max_frames=4,
        val_fraction=0.25,
        settings=TrainSettings(steps=1, batch=2),
        gate=False,
        force=True,
    )
    assert distill(opts).path is not None
    return models


def _path(models: Path) -> Path:
    return local_model_path(models, list_local_models(models)["tiny"])


def _run(data: bytes | Path, frame: np.ndarray) -> tuple[list[np.ndarray], Interpreter]:
    it = Interpreter(model_content=data) if isinstance(data, bytes) else Interpreter(model_path=str(data))
    it.allocate_tensors()
    d = it.get_input_details()[0]
    side = int(d["shape"][1])
    rgb = cv2.cvtColor(cv2.resize(frame, (side, side), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
    it.set_tensor(d["index"], rgb[np.newaxis].astype(d["dtype"]))
    it.invoke()
    return [it.get_tensor(o["index"]).copy() for o in it.get_output_details()], it


def _frame() -> np.ndarray:
    cap = cv2.VideoCapture(str(VIDEO))
    ok, frame = cap.read()
    cap.release()
    assert ok
    return frame


def test_the_student_builds_its_reshape_targets_at_run_time(student: Path) -> None:
    # The case this file is about: no new_shape option, the anchor count a constant feeding a PACK.
    buf = _path(student).read_bytes()
    g = analyse(schema.ModelT.InitFromObj(schema.Model.GetRootAs(buf, 0)))
    assert len(g.fixed_reshapes) == 12  # box and score reshape of each of the 6 predictor layers
    assert all(r.pack is not None and r.dims[0] is None for r in g.fixed_reshapes)
    assert g.trained_size == NATIVE


@pytest.mark.parametrize("size", [128, 96])
def test_a_student_derives_to_smaller_sides_with_its_own_grid_and_anchors(student: Path, size: int) -> None:
    data, meta = derive(_path(student), size)
    assert [tuple(x) for x in meta["feature_maps"]] == grids(size)  # the student's grids at that side
    expected = ssd_anchors(grids(size), size_scale=NATIVE / size)
    assert meta["anchors"] == len(expected)
    outputs, it = _run(data, _frame())
    assert it.get_input_details()[0]["shape"].tolist() == [1, size, size, 3]
    boxes, classes, scores, count = outputs
    assert np.all(classes == classes.astype(int))
    assert boxes.shape == (1, 10, 4) and 0 <= int(count[0]) <= 10
    assert np.all((scores >= 0) & (scores <= 1))
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(data, 0))
    anchors_t = model.subgraphs[0].tensors[analyse(model).anchors]
    q = np.asarray(model.buffers[anchors_t.buffer].data, np.uint8).reshape(-1, 4).astype(np.float32)
    np.testing.assert_allclose(
        q * anchors_t.quantization.scale[0], expected, atol=anchors_t.quantization.scale[0]
    )


def test_a_student_derived_at_its_native_side_is_the_same_detector(student: Path, tmp_path: Path) -> None:
    frame = _frame()
    src = _path(student)
    derived = ensure_derived(src, NATIVE, tmp_path)
    for a, b in zip(_run(src, frame)[0], _run(derived, frame)[0], strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_student_joins_the_ladder_with_resolution_rungs_of_its_own(student: Path, tmp_path: Path) -> None:
    cfg = load_config(
        None,
        {
            "models.dir": str(student),
            "scheduler.enabled": True,
            "scheduler.budget_ms": 50.0,
            "scheduler.sizes": [300, 128],
            "scheduler.cadences": [],
            "scheduler.derived_dir": str(tmp_path / "derived"),
        },
    )
    rungs = build_ladder(cfg, [_frame()], invokes=2)
    names = [r.name for r in rungs]
    assert names == [f"{TEACHER}@300", f"{TEACHER}@128", "tiny@160", "tiny@128"]
    assert rungs[3].detector.input_size == (128, 128) and rungs[3].spec.kind == "local"
