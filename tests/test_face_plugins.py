"""Face detector plugins: each declares its key and its own config; one factory picks by key."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import IMAGES
from pydantic import ValidationError

from edgevision.cli.detect_cmd import read_image
from edgevision.config import EdgeVisionConfig, load_config
from edgevision.errors import ModelError
from edgevision.face.detector import FaceDetectorConfig
from edgevision.face.factory import face_detector
from edgevision.face.plugins import PLUGINS, BlazeFaceDetector, SsdFaceDetector
from edgevision.face.plugins.blazeface import BlazeFaceConfig
from edgevision.face.plugins.ssd import SsdFaceConfig

SSD = "ssd_mobilenet_v1_1.0_coco_quant_detect.tflite"


@pytest.fixture(scope="module")
def cfg(models_dir: Path) -> EdgeVisionConfig:
    return load_config(None, {"models.dir": str(models_dir)})


def test_registry_lists_each_plugin_under_its_key() -> None:
    assert {"blazeface": BlazeFaceDetector, "ssd": SsdFaceDetector} == PLUGINS
    for key, plugin in PLUGINS.items():
        assert plugin.key == key
        assert plugin.config_type.model_validate({"type": key}).type == key


@pytest.mark.parametrize(
    ("config_type", "options"),
    [
        (BlazeFaceConfig, {"type": "ssd"}),  # another plugin's key
        (BlazeFaceConfig, {"face_class": 1}),  # another plugin's option
        (BlazeFaceConfig, {"nms_iou": 0.0}),
        (SsdFaceConfig, {"nms_iou": 0.3}),
        (SsdFaceConfig, {"min_score": 1.5}),
        (SsdFaceConfig, {"face_class": -1}),
    ],
)
def test_plugin_configs_are_strict(config_type: type[FaceDetectorConfig], options: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        config_type.model_validate(options)


@pytest.mark.parametrize(
    ("spec", "plugin", "min_score"),
    [
        ("blazeface_short_range", BlazeFaceDetector, None),
        ("blazeface_full_range", BlazeFaceDetector, None),
        (SSD, SsdFaceDetector, 0.5),
    ],
)
def test_the_factory_picks_the_plugin_by_the_model(
    cfg: EdgeVisionConfig, models_dir: Path, spec: str, plugin: type, min_score: float | None
) -> None:
    path = str(models_dir / spec) if spec.endswith(".tflite") else spec
    det = face_detector(cfg, path)
    assert type(det) is plugin and det.key == plugin.key and det.name == path
    if isinstance(det, SsdFaceDetector):
        assert det.detector.config.threshold == min_score


def test_config_reaches_the_plugin(models_dir: Path) -> None:
    cfg = load_config(None, {"models.dir": str(models_dir), "faces.min_score": 0.8})
    det = face_detector(cfg)
    assert isinstance(det, BlazeFaceDetector) and det.min_score == 0.8
    img = read_image(IMAGES / "face.jpg")
    assert [round(f.score, 1) for f in det.detect(img)] == [0.9, 0.9]  # the 0.6 face is below 0.8


def test_a_key_the_model_cannot_take_is_a_model_error(cfg: EdgeVisionConfig, models_dir: Path) -> None:
    with pytest.raises(ModelError, match="not a BlazeFace model"):
        face_detector(cfg, str(models_dir / SSD), key="blazeface")
    with pytest.raises(ModelError, match="no face detector plugin 'yolo'"):
        face_detector(cfg, key="yolo")


@pytest.mark.parametrize("shape", [(1, 1404), (1, 192, 192)])
def test_a_face_model_without_an_image_input_is_a_model_error(shape: tuple[int, ...]) -> None:
    """faces.model / faces.landmark_model naming a model whose input is not an image says so, instead of an
    IndexError from reading a fourth dimension that is not there."""
    from types import SimpleNamespace

    from edgevision.face.mesh import LandmarkModel

    handle = SimpleNamespace(model_path="m.tflite", input_shape=shape, output_details=[])
    with pytest.raises(ModelError, match="not a BlazeFace model"):
        BlazeFaceDetector(handle)  # type: ignore[arg-type]
    with pytest.raises(ModelError, match="not a face landmark model"):
        LandmarkModel(handle)  # type: ignore[arg-type]
