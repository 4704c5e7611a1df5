"""Pure SSD tensor parsing: layouts, postprocess parsing, box decoding, NMS, anchors, labels."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from edgevision.catalog.labels import parse_labels
from edgevision.config import DetectorConfig
from edgevision.detection import ssd
from edgevision.detection.detector import Detector
from edgevision.results.detection import BBox

TF1 = [
    "TFLite_Detection_PostProcess",
    "TFLite_Detection_PostProcess:1",
    "TFLite_Detection_PostProcess:2",
    "TFLite_Detection_PostProcess:3",
]
SHAPES = [[1, 10, 4], [1, 10], [1, 10], [1]]


def test_tf1_layout_by_name() -> None:
    lay = ssd.postprocess_layout(TF1, SHAPES)
    assert lay == ssd.PostprocessLayout(0, 1, 2, 3, True)


def test_tf1_layout_reordered_outputs() -> None:
    names = [TF1[2], TF1[0], TF1[3], TF1[1]]
    shapes = [[1, 10], [1, 10, 4], [1], [1, 10]]
    lay = ssd.postprocess_layout(names, shapes)
    assert lay is not None and (lay.boxes, lay.classes, lay.scores, lay.count) == (1, 3, 0, 2)
    assert lay.names_resolved


def test_tf2_layout_needs_values() -> None:
    names = [f"StatefulPartitionedCall:{i}" for i in range(4)]
    shapes = [[1, 10], [1, 10, 4], [1], [1, 10]]
    lay = ssd.postprocess_layout(names, shapes)
    assert lay is not None and lay.boxes == 1 and lay.count == 2 and not lay.names_resolved
    scores = np.array([0.9, 0.7, 0.3, 0, 0, 0, 0, 0, 0, 0], np.float32)
    classes = np.array([0, 17, 2, 0, 0, 0, 0, 0, 0, 0], np.float32)
    assert ssd.classes_first(scores, classes, 3) is False
    assert ssd.classes_first(classes, scores, 3) is True


@pytest.mark.parametrize(
    ("a", "b", "count", "verdict"),
    [
        ([0, 17, 2], [0.9, 0.7, 0.3], 3, True),  # whole numbers against fractions
        ([0.9, 0.7, 0.3], [0, 17, 2], 3, False),
        ([3, 1], [1.0, 1.0], 2, True),  # both whole: a class id above 1 is no score
        ([1.0, 1.0], [0, 5], 2, False),  # both whole: scores must not rise
        ([0, 1], [1.0, 0.0], 2, True),
        ([0], [1.0], 1, None),  # one saturated score on class 0: cannot tell
        ([1.0], [0], 1, None),
        ([0, 0], [1.0, 1.0], 2, None),
        ([0.5], [0.25], 0, None),  # no detection
    ],
)
def test_which_postprocess_vector_holds_the_classes(
    a: list[float], b: list[float], count: int, verdict: bool | None
) -> None:
    assert ssd.classes_first(np.array(a, np.float32), np.array(b, np.float32), count) is verdict


@pytest.mark.parametrize(
    "shapes",
    [[[1, 10, 4], [1, 10]], [[1, 1917, 4], [1, 1917, 91]], [[1, 10, 4], [1, 10, 4], [1, 10], [1]]],
)
def test_not_a_postprocess_layout(shapes: list[list[int]]) -> None:
    assert ssd.postprocess_layout([f"o{i}" for i in range(len(shapes))], shapes) is None


def test_raw_layout() -> None:
    lay = ssd.raw_layout(["cls", "enc", "anchors"], [[1, 1917, 91], [1, 1917, 4], [1917, 4]])
    assert lay == ssd.RawLayout(1, 0, 2)
    assert ssd.raw_layout(["a"], [[1, 5]]) is None


def test_parse_postprocess_threshold_filter_max_and_order() -> None:
    boxes = np.array(
        [[[0.1, 0.2, 0.5, 0.6], [-0.05, -0.01, 1.02, 0.5], [0, 0, 1, 1], [0.2, 0.2, 0.3, 0.3]]], np.float32
    )
    classes = np.array([[0, 16, 0, 2]], np.float32)
    scores = np.array([[0.9, 0.8, 0.4, 0.95]], np.float32)
    labels = {0: "person", 2: "car", 16: "cat"}
    dets = ssd.parse_postprocess(boxes, classes, scores, np.array([3.0]), labels, threshold=0.5)
    assert [d.label for d in dets] == ["person", "cat"]  # index 3 is beyond count; 0.4 below threshold
    assert dets[0].box.as_list() == [0.2, 0.1, 0.6, 0.5]  # reordered from (ymin, xmin, ymax, xmax)
    assert dets[1].box.as_list() == [0.0, 0.0, 0.5, 1.0]  # clipped to the frame
    only = ssd.parse_postprocess(boxes, classes, scores, 4, labels, 0.0, class_filter=[2])
    assert [d.label for d in only] == ["car"]
    top = ssd.parse_postprocess(boxes, classes, scores, 4, labels, 0.0, max_detections=2)
    assert [d.score for d in top] == pytest.approx([0.95, 0.9])


def test_unknown_class_id_keeps_number_as_label() -> None:
    dets = ssd.parse_postprocess(
        np.array([[[0.1, 0.1, 0.5, 0.5]]]), np.array([[77.0]]), np.array([[0.9]]), 1, {}, 0.5
    )
    assert dets[0].label == "77" and dets[0].class_id == 77


def test_decode_boxes_identity_and_scaling() -> None:
    anchors = np.array([[0.5, 0.5, 0.2, 0.4]], np.float32)
    out = ssd.decode_boxes(np.zeros((1, 4)), anchors)
    np.testing.assert_allclose(out, [[0.4, 0.3, 0.6, 0.7]], atol=1e-6)
    enc = np.array([[10.0, 0.0, 5.0 * math.log(2.0), 0.0]])  # shift y by one anchor height, double height
    out = ssd.decode_boxes(enc, anchors)
    np.testing.assert_allclose(out, [[0.5, 0.3, 0.9, 0.7]], atol=1e-6)


def test_nms_suppresses_overlaps_and_keeps_order() -> None:
    boxes = np.array([[0, 0, 1, 1], [0, 0, 0.95, 1], [0, 0, 0.1, 0.1], [0.5, 0.5, 0.6, 0.6]], np.float32)
    scores = np.array([0.8, 0.9, 0.3, 0.5])
    assert ssd.nms(boxes, scores, 0.5, 10) == [1, 3, 2]
    assert ssd.nms(boxes, scores, 0.5, 2) == [1, 3]
    assert ssd.nms(boxes, scores, 0.99, 10) == [1, 0, 3, 2]


def test_decode_raw_fast_nms_class_agnostic() -> None:
    anchors = np.array([[0.5, 0.5, 0.2, 0.2], [0.5, 0.5, 0.2, 0.2], [0.2, 0.2, 0.1, 0.1]], np.float32)
    enc = np.zeros((3, 4), np.float32)
    logits = np.array([[0, 3, -3], [0, -3, 2], [0, -5, -5]], np.float32)  # background column first
    dets = ssd.decode_raw(enc, logits, anchors, {0: "a", 1: "b"}, threshold=0.5, scores_are_logits=True)
    assert [(d.label, round(d.score, 3)) for d in dets] == [("a", round(1 / (1 + math.exp(-3)), 3))]
    only_b = ssd.decode_raw(
        enc, logits, anchors, {0: "a", 1: "b"}, 0.5, scores_are_logits=True, class_filter=[1]
    )
    assert [d.label for d in only_b] == ["b"]


def test_ssd_anchor_count_and_grid() -> None:
    fm = [(19, 19), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)]
    a = ssd.ssd_anchors(fm)
    assert a.shape == (19 * 19 * 3 + (100 + 25 + 9 + 4 + 1) * 6, 4)
    np.testing.assert_allclose(a[0], [0.5 / 19, 0.5 / 19, 0.1, 0.1], atol=1e-6)
    np.testing.assert_allclose(a[-1][:2], [0.5, 0.5])
    half = ssd.ssd_anchors(fm, size_scale=0.5)
    np.testing.assert_allclose(half[:, 2:], a[:, 2:] * 0.5, rtol=1e-6)
    np.testing.assert_allclose(half[:, :2], a[:, :2])


def test_bbox_geometry() -> None:
    a, b = BBox(0, 0, 0.5, 0.5), BBox(0.25, 0.25, 0.75, 0.75)
    assert a.area == pytest.approx(0.25)
    assert a.iou(b) == pytest.approx(0.0625 / (0.5 - 0.0625))
    assert a.iou(BBox(0.6, 0.6, 0.7, 0.7)) == 0.0
    px = b.to_pixels(200, 100)
    assert (px.x1, px.y1, px.x2, px.y2) == (50, 25, 150, 75)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("???\nperson\nbicycle\n", {0: "person", 1: "bicycle"}),
        ("0  person\n1  bicycle\n89  toothbrush\n", {0: "person", 1: "bicycle", 89: "toothbrush"}),
        ("person\nbicycle\nn/a\n", {0: "person", 1: "bicycle", 2: "n/a"}),
        ("face\n", {0: "face"}),
        ("", {}),
    ],
)
def test_label_formats(text: str, expected: dict[int, str]) -> None:
    assert parse_labels(text) == expected


def _raw_handle(cls_dtype: type, scale: float, zero: int) -> SimpleNamespace:
    """A stand-in handle of a raw SSD head: 4 anchors, background + 2 classes, anchors as an output."""
    return SimpleNamespace(
        model_path="raw.tflite",
        input_shape=(1, 64, 64, 3),
        input_dtype=np.dtype(np.uint8),
        output_details=[
            {"name": "box_encodings", "shape": [1, 4, 4], "quantization": (0.0, 0)},
            {
                "name": "class_predictions",
                "shape": [1, 4, 3],
                "quantization": (scale, zero),
                "dtype": cls_dtype,
            },
            {"name": "anchors", "shape": [4, 4], "quantization": (0.0, 0)},
        ],
    )


@pytest.mark.parametrize(
    ("dtype", "zero"), [(np.uint8, 0), (np.int8, -128)]
)  # int8: TF2 full-integer export (inference_output_type=tf.int8)
def test_raw_head_with_quantized_sigmoid_scores_is_not_taken_for_logits(dtype: type, zero: int) -> None:
    scale = 1.0 / 256
    handle = _raw_handle(dtype, scale, zero)
    det = Detector(handle, {0: "person", 1: "car"}, DetectorConfig(threshold=0.5))  # type: ignore[arg-type]
    probs = np.full((1, 4, 3), 0.1, dtype=np.float32)
    probs[0, 2, 1] = 0.9  # one anchor sees a person at 0.9; every other score is 0.1
    cls: np.ndarray = np.round(probs / scale + zero).astype(dtype)
    anchors = np.array(
        [[0.25, 0.25, 0.2, 0.2], [0.25, 0.75, 0.2, 0.2], [0.75, 0.25, 0.2, 0.2], [0.75, 0.75, 0.2, 0.2]]
    )
    dets = det.parse([np.zeros((1, 4, 4), np.float32), cls, anchors.astype(np.float32)])
    assert [(d.label, round(d.score, 2)) for d in dets] == [("person", 0.9)]


@pytest.mark.parametrize(
    ("names", "shapes", "expected"),
    [
        (TF1, [[1, 1, 4], [1, 1], [1, 1], [1]], (0, 1, 2, 3)),
        ([f"StatefulPartitionedCall:{i}" for i in range(4)], [[1, 1], [1, 1, 4], [1], [1, 1]], (1, 0, 3, 2)),
    ],
)
def test_a_postprocess_model_exported_with_max_detections_1_is_recognised(
    names: list[str], shapes: list[list[int]], expected: tuple[int, int, int, int]
) -> None:
    """Classes and scores of ``[1, 1]`` hold one value each, like the count: the count is the 1-D output."""
    lay = ssd.postprocess_layout(names, shapes)
    assert lay is not None
    assert lay.boxes == expected[0] and lay.count == expected[3]
    assert {lay.classes, lay.scores} == {expected[1], expected[2]}


def test_a_box_wholly_outside_the_frame_is_no_detection() -> None:
    """SSD boxes may overhang the frame and are clipped to it; one that lies wholly outside clips to a line on
    the edge: nothing of it is in the picture, so it is dropped (it used to count as a person for the events,
    and gave the face stage an empty crop); so is a degenerate one (no height)."""
    boxes = np.array(
        [[[0.1, 0.1, 0.5, 0.5], [0.2, 1.05, 0.6, 1.3], [1.1, 0.2, 1.4, 0.4], [0.3, 0.3, 0.3, 0.6]]]
    )
    dets = ssd.parse_postprocess(
        boxes, np.zeros((1, 4)), np.array([[0.9, 0.8, 0.7, 0.6]]), 4, {0: "person"}, 0.5
    )
    assert [d.score for d in dets] == pytest.approx([0.9])
    anchors = np.array([[0.5, 0.5, 0.2, 0.2], [0.5, 1.5, 0.2, 0.2]], np.float32)
    scores = np.array([[[0.0, 0.9], [0.0, 0.8]]], np.float32)
    raw = ssd.decode_raw(np.zeros((1, 2, 4), np.float32), scores, anchors, {0: "person"}, 0.5)
    assert [d.score for d in raw] == pytest.approx([0.9])


@pytest.mark.parametrize(
    ("count", "n"),
    [
        (np.array([3.0], np.float32), 3),
        (np.array([np.nan], np.float32), 0),
        (np.array([np.inf]), 0),
        (-1.0, 0),
        (2, 2),
    ],
)
def test_a_float_models_count_that_is_no_number_means_no_detection(count: object, n: int) -> None:
    """A float SSD's count came out NaN on a frame (``int(nan)``: a ValueError that ended the run)."""
    assert ssd.detection_count(count) == n  # type: ignore[arg-type]
    boxes = np.tile(np.array([0.1, 0.1, 0.5, 0.5], np.float32), (1, 3, 1))
    dets = ssd.parse_postprocess(boxes, np.zeros((1, 3)), np.full((1, 3), 0.9), count, {0: "person"}, 0.5)  # type: ignore[arg-type]
    assert len(dets) == min(n, 3)
