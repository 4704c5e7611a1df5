"""The SSD detector on real models and real images."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from conftest import IMAGES, read_image
from tflite_surgery import strip_postprocess

from edgevision.catalog.resolve import open_model, resolve_model
from edgevision.config import DetectorConfig, load_config
from edgevision.detection import ssd
from edgevision.detection.detector import Detector
from edgevision.detection.factory import build_detector
from edgevision.errors import EdgeTPUUnavailable, ModelError
from edgevision.inference.backends import RuntimeOptions, open_interpreter
from edgevision.results.frame import Frame

SSD_MODELS = ["ssd_mobilenet_v1_coco_quant", "ssd_mobilenet_v2_coco_quant"]
PERSON_IMAGES = ["squat.bmp", "grace_hopper.bmp", "posenet_test_image.bmp"]
NO_PERSON_IMAGES = ["cat.bmp", "traffic_frame_0001.bmp", "traffic_frame_0002.bmp", "traffic_frame_0003.bmp"]
V1_FEATURE_MAPS = [(19, 19), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)]


def detector(models_dir: Path, name: str, threshold: float = 0.5, kernels: str = "int8") -> Detector:
    cfg = load_config(
        None,
        {
            "detector.model": name,
            "detector.threshold": threshold,
            "models.dir": str(models_dir),
            "runtime.kernels": kernels,
        },
    )
    return build_detector(cfg)


@pytest.mark.parametrize("model", SSD_MODELS)
@pytest.mark.parametrize("image", PERSON_IMAGES)
def test_person_found(models_dir: Path, model: str, image: str) -> None:
    dets, latency = detector(models_dir, model).detect(read_image(IMAGES / image))
    persons = [d for d in dets if d.label == "person"]
    assert persons, f"no person in {image}: {dets}"
    assert all(0 <= v <= 1 for d in persons for v in d.box.as_list())
    assert set(latency.as_dict()) == {"preprocess", "invoke", "postprocess"}


@pytest.mark.parametrize("model", SSD_MODELS)
@pytest.mark.parametrize("image", NO_PERSON_IMAGES)
def test_no_person(models_dir: Path, model: str, image: str) -> None:
    dets, _ = detector(models_dir, model).detect(read_image(IMAGES / image))
    assert not [d for d in dets if d.label == "person"], dets


def test_known_boxes_match_manifest(models_dir: Path) -> None:
    dets, _ = detector(models_dir, "ssd_mobilenet_v1_coco_quant", 0.3).detect(
        read_image(IMAGES / "squat.bmp")
    )
    best = dets[0]
    assert best.label == "person" and best.score == pytest.approx(0.824, abs=0.01)
    # manifest: person 0.824 [ymin 0.223, xmin 0.203, ymax 0.977, xmax 0.736]
    np.testing.assert_allclose(best.box.as_list(), [0.203, 0.223, 0.736, 0.977], atol=0.01)


@pytest.mark.parametrize("model", SSD_MODELS)
def test_bit_identical_to_direct_invocation(models_dir: Path, model: str) -> None:
    det = detector(models_dir, model, threshold=0.0)
    image = read_image(IMAGES / "posenet_test_image.bmp")
    tensor = det.preprocess(image)
    dets = det.infer(tensor)
    direct = open_interpreter(det.handle.kernel_path or det.handle.model_path, RuntimeOptions(threads=2))
    assert direct.input_shape == tensor.shape and direct.input_dtype == tensor.dtype
    boxes, classes, scores, count = direct.run(tensor)
    n = int(count[0])
    assert len(dets) == n
    order = np.argsort(-scores[0][:n], kind="stable")
    for d, i in zip(dets, order, strict=True):
        ymin, xmin, ymax, xmax = np.clip(boxes[0][i], 0.0, 1.0).tolist()
        assert d.score == float(scores[0][i])
        assert d.class_id == int(classes[0][i])
        assert (d.box.xmin, d.box.ymin, d.box.xmax, d.box.ymax) == (xmin, ymin, xmax, ymax)


def test_preprocess_is_rgb_resize_in_model_dtype(models_dir: Path) -> None:
    det = detector(models_dir, "ssd_mobilenet_v1_coco_quant")
    image = read_image(IMAGES / "cat.bmp")
    tensor = det.preprocess(image)
    expected = cv2.resize(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), (300, 300), interpolation=cv2.INTER_LINEAR)
    assert tensor.dtype == np.uint8 and tensor.shape == (1, 300, 300, 3)
    np.testing.assert_array_equal(tensor[0], expected)
    gray = det.preprocess(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))
    assert gray.shape == (1, 300, 300, 3)


@pytest.mark.parametrize("model", SSD_MODELS)
def test_model_anchors_match_generator(models_dir: Path, model: str) -> None:
    """The anchors constant inside the real SSDs equals the TF OD API generator (within its uint8 step)."""
    from ai_edge_litert.interpreter import Interpreter

    res = resolve_model(model, models_dir)
    it = Interpreter(model_path=str(res.path), experimental_preserve_all_tensors=True)
    it.allocate_tensors()
    t = next(t for t in it.get_tensor_details() if t["name"] == "anchors")
    scale, zero = t["quantization"]
    anchors = (it.get_tensor(t["index"]).astype(np.float32) - zero) * scale
    np.testing.assert_allclose(anchors, ssd.ssd_anchors(V1_FEATURE_MAPS), atol=scale / 2 + 1e-6)


@pytest.mark.parametrize("model", SSD_MODELS)
@pytest.mark.parametrize("image", ["posenet_test_image.bmp", "kite_and_cold.jpg", "grace_hopper.bmp"])
def test_raw_decoding_matches_postprocess_op(models_dir: Path, model: str, image: str) -> None:
    """Decode the op's own inputs (box encodings, scores, anchors) in numpy: same detections as the op."""
    from ai_edge_litert.interpreter import Interpreter

    res = resolve_model(model, models_dir)
    it = Interpreter(model_path=str(res.path), experimental_preserve_all_tensors=True)
    it.allocate_tensors()
    det = detector(models_dir, model, threshold=0.3)
    it.set_tensor(it.get_input_details()[0]["index"], det.preprocess(read_image(IMAGES / image)))
    it.invoke()
    by_name = {t["name"]: t for t in it.get_tensor_details()}

    def deq(name: str) -> np.ndarray:
        t = by_name[name]
        s, z = t["quantization"]
        return (it.get_tensor(t["index"]).astype(np.float32) - z) * s

    outs = [it.get_tensor(o["index"]) for o in it.get_output_details()]
    max_det = outs[1].shape[1]
    ref = ssd.parse_postprocess(outs[0], outs[1], outs[2], outs[3], {}, 0.3)
    raw = ssd.decode_raw(deq("Squeeze"), deq("convert_scores"), deq("anchors"), {}, 0.3, 0.6, max_det)
    assert [(d.class_id, round(d.score, 4)) for d in raw] == [(d.class_id, round(d.score, 4)) for d in ref]
    for a, b in zip(raw, ref, strict=True):
        np.testing.assert_allclose(a.box.as_list(), b.box.as_list(), atol=1e-4)


def test_raw_output_model_through_detector(models_dir: Path, tmp_path: Path) -> None:
    """A real SSD with its postprocess op removed runs through the raw path with generated anchors."""
    res = resolve_model("ssd_mobilenet_v1_coco_quant", models_dir)
    raw_path = tmp_path / "ssd_v1_raw.tflite"
    raw_path.write_bytes(strip_postprocess(res.path.read_bytes()))
    handle = open_interpreter(raw_path, RuntimeOptions(threads=2))
    det = Detector(
        handle,
        res.labels,
        DetectorConfig(threshold=0.5, max_detections=10),
        "raw",
        anchors=ssd.ssd_anchors(V1_FEATURE_MAPS),
    )
    assert det.raw_layout is not None and det.pp_layout is None
    ref = detector(models_dir, "ssd_mobilenet_v1_coco_quant", kernels="as-shipped")  # the same weights
    for image in ["squat.bmp", "posenet_test_image.bmp", "cat.bmp"]:
        frame = read_image(IMAGES / image)
        got, _ = det.detect(frame)
        want, _ = ref.detect(frame)
        assert [d.label for d in got] == [d.label for d in want]
        for a, b in zip(got, want, strict=True):
            assert a.score == pytest.approx(b.score, abs=0.01)
            assert a.box.iou(b.box) > 0.97


def test_class_filter_and_unknown_label(models_dir: Path) -> None:
    cfg = load_config(
        None, {"detector.labels": ["cat"], "detector.threshold": 0.3, "models.dir": str(models_dir)}
    )
    dets, _ = build_detector(cfg).detect(read_image(IMAGES / "cat.bmp"))
    assert dets and {d.label for d in dets} == {"cat"}
    cfg = load_config(None, {"detector.labels": ["unicorn"], "models.dir": str(models_dir)})
    with pytest.raises(ModelError, match="unicorn"):
        build_detector(cfg)


def test_edgetpu_model_without_tpu(models_dir: Path) -> None:
    opts = RuntimeOptions(device="cpu")
    with pytest.raises(EdgeTPUUnavailable, match="Edge TPU"):
        open_model("ssd_mobilenet_v2_coco_quant_edgetpu", models_dir, opts, allow_cpu_fallback=False)
    handle, resolved = open_model(
        "ssd_mobilenet_v2_coco_quant_edgetpu", models_dir, opts, allow_cpu_fallback=True
    )
    assert resolved.name == "ssd_mobilenet_v2_coco_quant" and handle.device == "cpu"
    # device: edgetpu picks the twin, fails to load libedgetpu here, and falls back when allowed.
    tpu = RuntimeOptions(device="edgetpu")
    handle, resolved = open_model("ssd_mobilenet_v2_coco_quant", models_dir, tpu, allow_cpu_fallback=True)
    assert resolved.name == "ssd_mobilenet_v2_coco_quant"
    with pytest.raises(EdgeTPUUnavailable, match="libedgetpu"):
        open_model("ssd_mobilenet_v2_coco_quant", models_dir, tpu, allow_cpu_fallback=False)


def test_classifier_is_not_a_detector(models_dir: Path) -> None:
    cfg = load_config(None, {"detector.model": "mobilenet_v1_0.25_128_quant", "models.dir": str(models_dir)})
    with pytest.raises(ModelError, match="neither") as exc:
        build_detector(cfg)
    assert "[1, 1001]" in str(exc.value) and "np." not in str(exc.value)  # shapes as a user writes them


def test_missing_runtime_names_package(monkeypatch: pytest.MonkeyPatch, models_dir: Path) -> None:
    from edgevision.errors import BackendUnavailable
    from edgevision.inference import backends

    monkeypatch.setitem(
        backends.BACKENDS, "litert", backends.Backend("litert", "no_such_module_xyz", "ai-edge-litert")
    )
    res = resolve_model("ssd_mobilenet_v1_coco_quant", models_dir)
    with pytest.raises(BackendUnavailable, match="pip install ai-edge-litert"):
        open_interpreter(res.path, RuntimeOptions(runtime="litert"))


def _pp_handle(dtype: type) -> SimpleNamespace:
    """A stand-in handle of a 64x64 SSD with the postprocess op and an input of ``dtype``."""
    return SimpleNamespace(
        model_path="pp.tflite",
        input_shape=(1, 64, 64, 3),
        input_dtype=np.dtype(dtype),
        output_details=[
            {"name": "TFLite_Detection_PostProcess", "shape": [1, 10, 4]},
            {"name": "TFLite_Detection_PostProcess:1", "shape": [1, 10]},
            {"name": "TFLite_Detection_PostProcess:2", "shape": [1, 10]},
            {"name": "TFLite_Detection_PostProcess:3", "shape": [1]},
        ],
    )


def test_unnamed_postprocess_outputs_keep_the_order_a_frame_told() -> None:
    """A TF2 export names its outputs ``StatefulPartitionedCall:0..3`` (scores, boxes, count, classes): the
    classes and scores are told apart by value. A frame with one confident person (a float model's sigmoid
    saturates to exactly 1.0, class 0) cannot tell them apart; it was read in the layout's order, scores taken
    for classes: the person became class 1 with score 0 and was dropped."""
    handle = SimpleNamespace(
        model_path="tf2.tflite",
        input_shape=(1, 64, 64, 3),
        input_dtype=np.dtype(np.float32),
        output_details=[
            {"name": f"StatefulPartitionedCall:{i}", "shape": shape}
            for i, shape in enumerate([[1, 10], [1, 10, 4], [1], [1, 10]])
        ],
    )
    det = Detector(handle, {0: "person", 1: "bicycle", 17: "dog"})  # type: ignore[arg-type]
    boxes = np.tile(np.array([0.1, 0.1, 0.6, 0.4], np.float32), (1, 10, 1))

    def frame(scores: list[float], classes: list[float]) -> list[np.ndarray]:
        pad = [0.0] * (10 - len(scores))
        s, c = np.array([scores + pad], np.float32), np.array([classes + pad], np.float32)
        return [s, boxes, np.array([len(scores)], np.float32), c]

    assert [(d.label, d.score) for d in det.parse(frame([0.8, 0.6], [0, 17]))] == [
        ("person", pytest.approx(0.8)),
        ("dog", pytest.approx(0.6)),
    ]
    assert [(d.label, d.score) for d in det.parse(frame([1.0], [0]))] == [("person", 1.0)]


def test_a_tensor_prepared_for_another_rung_of_the_same_size_is_not_fed_to_this_one() -> None:
    """The capture thread prepares each frame for the rung current then; after a switch to a rung of the same
    input side but another input domain (a uint8 teacher at 224 px, a float student at 224 px; float models
    normalised differently) the frames already prepared must be made again, not fed as they are (a dtype the
    interpreter refuses, or pixels in the wrong range)."""
    img = np.full((48, 80, 3), 200, np.uint8)
    frame = Frame(img, 0.0, 0, "test")
    teacher = Detector(_pp_handle(np.uint8), {0: "person"})  # type: ignore[arg-type]
    student = Detector(_pp_handle(np.float32), {0: "person"})  # type: ignore[arg-type]
    other = Detector(_pp_handle(np.float32), {0: "person"}, float_range=(0.0, 1.0))  # type: ignore[arg-type]
    prepared = teacher.prepare(frame)
    tensor, _ = student.tensor_for(prepared)
    assert tensor.dtype == np.float32 and np.allclose(tensor, 200 / 127.5 - 1.0)
    tensor, _ = other.tensor_for(student.prepare(frame))
    assert np.allclose(tensor, 200 / 255)
    assert teacher.tensor_for(prepared)[0] is prepared.prepared.tensor  # type: ignore[union-attr]  # its own


@pytest.mark.parametrize(
    ("image", "said"),
    [
        (np.zeros((0, 0, 3), np.uint8), "uint8 [0, 0, 3]"),
        (np.zeros((480, 640, 3), np.float32), "float32 [480, 640, 3]"),
        (np.zeros((480, 640, 3), np.uint16), "uint16 [480, 640, 3]"),
        (np.zeros((480, 640, 2), np.uint8), "uint8 [480, 640, 2]"),
        (np.zeros((4, 480, 640, 3), np.uint8), "uint8 [4, 480, 640, 3]"),
        ([[0, 1], [2, 3]], "list"),
    ],
)
def test_an_image_that_is_no_picture_is_named_in_the_error(
    models_dir: Path, image: object, said: str
) -> None:
    """Detector.detect is public API: an empty frame or float pixels gave OpenCV's bare assertion (or, for
    floats, silently wrong colours); the error now says what an image must be and what was given."""
    det = detector(models_dir, "ssd_mobilenet_v1_coco_quant")
    with pytest.raises(ValueError, match=r"an image must be uint8 pixels .* got " + re.escape(said) + "$"):
        det.detect(image)  # type: ignore[arg-type]


@pytest.mark.parametrize("shape", [(300, 400), (300, 400, 1), (300, 400, 3), (300, 400, 4)])
def test_grayscale_bgr_and_bgra_images_are_detected(models_dir: Path, shape: tuple[int, ...]) -> None:
    det = detector(models_dir, "ssd_mobilenet_v1_coco_quant")
    dets, _ = det.detect(np.full(shape, 128, np.uint8))
    assert isinstance(dets, list)
