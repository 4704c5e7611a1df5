"""Faces: BlazeFace decoding (pure and real), Face Mesh landmarks, the cascade, and the privacy guarantee."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import IMAGES, read_image, run_cli

from edgevision.config import EdgeVisionConfig, FacesConfig, load_config
from edgevision.detection.factory import build_detector
from edgevision.face.blazeface import FULL_RANGE, SHORT_RANGE, blazeface_anchors, decode_faces, weighted_nms
from edgevision.face.factory import face_detector, face_rule, landmark_model
from edgevision.face.landmarks import LEFT_EYE_OUTER, NOSE_TIP, RIGHT_EYE_OUTER, UPPER_LIP
from edgevision.face.plugins import BlazeFaceDetector
from edgevision.face.privacy import redact
from edgevision.face.stage import FaceStage, confirm
from edgevision.inference.backends import RuntimeOptions, open_interpreter
from edgevision.recorder.index import EventIndex
from edgevision.results import FrameResult, Latency
from edgevision.results.detection import BBox
from edgevision.results.face import Face
from edgevision.results.frame import Frame


@pytest.fixture(scope="module")
def cfg(models_dir: Path) -> EdgeVisionConfig:
    return load_config(None, {"models.dir": str(models_dir)})


def test_anchor_layouts() -> None:
    short = blazeface_anchors(SHORT_RANGE)
    assert short.shape == (896, 2)
    np.testing.assert_allclose(short[0], [0.5 / 16, 0.5 / 16])
    np.testing.assert_allclose(short[1], short[0])  # 2 anchors per cell on the 16x16 grid
    np.testing.assert_allclose(short[512], [0.5 / 8, 0.5 / 8])  # then 6 per cell on 8x8
    full = blazeface_anchors(FULL_RANGE)
    assert full.shape == (2304, 2)
    np.testing.assert_allclose(full[48], [0.5 / 48, 1.5 / 48])


def test_decode_one_synthetic_face() -> None:
    anchors = blazeface_anchors(SHORT_RANGE)
    reg = np.zeros((1, 896, 16), np.float32)
    logits = np.full((1, 896, 1), -10.0, np.float32)
    i = 600
    reg[0, i, :4] = [12.8, -6.4, 32.0, 25.6]  # centre moved by +0.1, -0.05; size 0.25 x 0.2 (128-px units)
    reg[0, i, 4:6] = [-12.8, 0.0]
    logits[0, i, 0] = 3.0
    faces = decode_faces(reg, logits, anchors, SHORT_RANGE)
    assert len(faces) == 1
    ax, ay = anchors[i]
    cx, cy = ax + 0.1, ay - 0.05
    np.testing.assert_allclose(faces[0].box, [cx - 0.125, cy - 0.1, cx + 0.125, cy + 0.1], atol=1e-6)
    np.testing.assert_allclose(faces[0].keypoints[0], [ax - 0.1, ay], atol=1e-6)
    assert faces[0].score == pytest.approx(1 / (1 + math.exp(-3)))


def test_weighted_nms_averages_a_cluster() -> None:
    boxes = np.array([[0.0, 0.0, 1.0, 1.0], [0.1, 0.0, 1.1, 1.0], [3.0, 3.0, 4.0, 4.0]])
    kps = np.zeros((3, 6, 2))
    kps[1] += 1.0
    faces = weighted_nms(boxes, kps, np.array([0.9, 0.3, 0.5]), 0.3)
    assert [round(f.score, 2) for f in faces] == [0.9, 0.5]
    assert faces[0].box[0] == pytest.approx(0.1 * 0.3 / 1.2)
    assert faces[0].keypoints[0][0] == pytest.approx(0.3 / 1.2)


@pytest.mark.parametrize(
    ("image", "count", "max_yaw"),
    [("face.jpg", 3, 30), ("grace_hopper.bmp", 1, 30), ("cat.bmp", 0, 0), ("squat.bmp", 1, 90)],
)
def test_faces_in_real_images(cfg: EdgeVisionConfig, image: str, count: int, max_yaw: float) -> None:
    img = read_image(IMAGES / image)
    faces = confirm(img, face_detector(cfg).detect(img), landmark_model(cfg), face_rule(cfg))
    assert len(faces) == count  # squat.bmp: the man's turned face, not his chest
    for f in faces:
        assert f.landmarks is not None and len(f.landmarks) == 468
        pts = np.array(f.landmarks)
        b = f.box
        for idx in (RIGHT_EYE_OUTER, LEFT_EYE_OUTER):
            x, y = pts[idx, :2]
            assert b.xmin <= x <= b.xmax and b.ymin <= y <= b.ymax, (image, idx)
        assert pts[RIGHT_EYE_OUTER, 0] < pts[LEFT_EYE_OUTER, 0]  # subject's right eye on the image's left
        eye_y = (pts[RIGHT_EYE_OUTER, 1] + pts[LEFT_EYE_OUTER, 1]) / 2
        assert pts[NOSE_TIP, 1] > eye_y and pts[UPPER_LIP, 1] > pts[NOSE_TIP, 1]
        assert f.keypoints["right_eye"][0] < f.keypoints["left_eye"][0]
        assert f.pose is not None and abs(f.pose.yaw) < max_yaw and abs(f.pose.roll) < 20


def test_decoding_matches_a_direct_invocation(cfg: EdgeVisionConfig, models_dir: Path) -> None:
    det = face_detector(cfg)
    assert isinstance(det, BlazeFaceDetector)
    img = read_image(IMAGES / "face.jpg")
    tensor, geo = det.preprocess(img)
    direct = open_interpreter(models_dir / "face_detection_short_range.tflite", RuntimeOptions(threads=1))
    outs = direct.run(tensor)
    reg = next(o for o in outs if o.shape[-1] == 16)
    cls = next(o for o in outs if o.shape[-1] == 1)
    raw = decode_faces(reg, cls, blazeface_anchors(SHORT_RANGE), SHORT_RANGE)
    faces = det.detect(img)
    assert [round(r.score, 5) for r in raw] == [round(f.score, 5) for f in faces]
    for r, f in zip(raw, faces, strict=True):
        np.testing.assert_allclose(
            [geo.x(r.box[0]), geo.y(r.box[1]), geo.x(r.box[2]), geo.y(r.box[3])], f.box.as_list(6), atol=1e-5
        )
    # Scores from the model card (plain resize): 0.893 / 0.888 / 0.611 within resampling differences.
    assert [round(f.score, 1) for f in faces] == [0.9, 0.9, 0.6]


def test_cascade_finds_the_face_in_the_person_box(cfg: EdgeVisionConfig) -> None:
    img = read_image(IMAGES / "grace_hopper.bmp")
    dets, _ = build_detector(cfg).detect(img)
    stage = FaceStage(face_detector(cfg), landmark_model(cfg), FacesConfig(region="persons"))
    result = FrameResult(Frame(img, 0.0, 0, "test"), dets, Latency(), "m")
    stage.process(result)
    assert result.faces is not None and len(result.faces) == 1 and result.latency.faces is not None
    face = result.faces[0]
    whole = face_detector(cfg).detect(img)[0]
    assert face.box.iou(whole.box) > 0.6 and face.presence and face.presence > 0.9
    cadence = FaceStage(face_detector(cfg), None, FacesConfig(every_n_frames=3))
    skipped = FrameResult(Frame(img, 0.04, 1, "test"), dets, Latency(), "m")
    cadence.process(skipped)
    assert skipped.faces is None


def test_detect_faces_cli(env: dict[str, str]) -> None:
    r = run_cli(
        ["detect", "--faces", "--json", str(IMAGES / "grace_hopper.bmp"), str(IMAGES / "cat.bmp")], env
    )
    assert r.returncode == 0, r.stderr
    grace, cat = (json.loads(line) for line in r.stdout.splitlines())
    assert len(grace["faces"]) == 1 and cat["faces"] == []
    f = grace["faces"][0]
    assert set(f) == {"score", "box", "keypoints", "presence", "pose", "landmarks"}
    assert len(f["landmarks"]) == 468 and set(f["keypoints"]) >= {"right_eye", "left_eye", "nose_tip"}
    r = run_cli(["detect", "--faces", str(IMAGES / "face.jpg")], env)
    assert r.returncode == 0 and "3 face(s)" in r.stdout and "468 landmarks" in r.stdout


@pytest.mark.parametrize(
    ("image", "method"),
    [
        ("face.jpg", "blur"),
        ("grace_hopper.bmp", "blur"),
        ("squat.bmp", "blur"),
        ("posenet_test_image.bmp", "blur"),
        ("face.jpg", "pixelate"),
        ("grace_hopper.bmp", "pixelate"),
    ],
)
def test_redact_defeats_the_detector(cfg: EdgeVisionConfig, image: str, method: str) -> None:
    img = read_image(IMAGES / image)
    faces = _all_faces(cfg, img)  # both models, as privacy mode runs them
    assert faces
    assert _all_faces(cfg, redact(img, faces, [], method)) == []


def test_masks_are_black(cfg: EdgeVisionConfig) -> None:
    img = read_image(IMAGES / "face.jpg")
    masked = redact(img, [], [((0.0, 0.0), (0.5, 0.0), (0.5, 0.5), (0.0, 0.5))])
    assert masked[img.shape[0] - 1, img.shape[1] - 1].any()
    assert not masked[: img.shape[0] // 2 - 1, : img.shape[1] // 2 - 1].any()


def _faces_video(path: Path) -> None:
    """A 6 s, 10 fps clip of real people: face.jpg and grace_hopper.bmp, drifting slowly (like a camera)."""
    a = cv2.resize(read_image(IMAGES / "face.jpg"), (640, 444))
    b = cv2.resize(read_image(IMAGES / "grace_hopper.bmp"), (380, 444))
    canvas = np.concatenate([a, b], axis=1)  # 1020 x 444
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 10.0, (960, 444))
    for i in range(60):
        writer.write(np.ascontiguousarray(canvas[:, i : i + 960]))
    writer.release()


def _all_faces(cfg: EdgeVisionConfig, image: np.ndarray) -> list[Face]:
    return face_detector(cfg).detect(image) + face_detector(cfg, "blazeface_full_range").detect(image)


def test_privacy_no_face_reaches_the_disk(cfg: EdgeVisionConfig, env: dict[str, str], tmp_path: Path) -> None:
    video = tmp_path / "people.avi"
    _faces_video(video)
    cap = cv2.VideoCapture(str(video))
    ok, first = cap.read()
    cap.release()
    assert ok and len(_all_faces(cfg, first)) >= 4  # the input has faces
    data, saved, cfgfile = tmp_path / "data", tmp_path / "saved.mp4", tmp_path / "c.yaml"
    lines = tmp_path / "detections.jsonl"
    cfgfile.write_text(
        "recorder:\n  pre_roll_s: 1.0\n  post_roll_s: 1.0\n  trigger_frames: 2\n  window_frames: 3\n"
    )
    r = run_cli(
        [
            "run",
            "--config",
            str(cfgfile),
            "--video",
            str(video),
            "--blur-faces",
            "--record",
            "--data-dir",
            str(data),
            "--save-video",
            str(saved),
            "--detections",
            str(lines),
        ],
        env,
    )
    assert r.returncode == 0, r.stderr
    records = [json.loads(line) for line in lines.read_text().splitlines()]
    blurred = [rec for rec in records if rec["faces"]]
    assert len(blurred) >= 50  # the blur is its own latency stage, after the face stage, on every such frame
    for rec in blurred:
        stages = list(rec["latency_ms"])
        assert rec["latency_ms"]["privacy"] > 0 and stages.index("faces") < stages.index("privacy")
    events = EventIndex(data).list()
    assert (
        len(events) == 1 and events[0].clip_path and events[0].snapshot_path and events[0].face_path is None
    )
    written = [data / events[0].clip_path, saved]
    frames = 0
    for path in written:
        cap = cv2.VideoCapture(str(path))
        while True:
            ok, img = cap.read()
            if not ok:
                break
            frames += 1
            assert _all_faces(cfg, img) == [], f"a face in {path.name}"
        cap.release()
    assert frames >= 100
    for rel in (events[0].snapshot_path, events[0].thumb_path):
        assert rel and _all_faces(cfg, read_image(data / rel)) == []


def test_ssd_face_models_take_the_ssd_path(cfg: EdgeVisionConfig, models_dir: Path) -> None:
    """A face model in the Coral SSD format (postprocess op) is driven through the SSD detector. No such face
    model exists here, so the real COCO SSD stands in: same tensors, class 0 read as the face class."""
    from edgevision.face.plugins import SsdFaceDetector

    ssd_path = str(models_dir / "ssd_mobilenet_v1_1.0_coco_quant_detect.tflite")
    det = face_detector(cfg, ssd_path)
    assert isinstance(det, SsdFaceDetector)
    img = read_image(IMAGES / "posenet_test_image.bmp")
    whole = det.detect(img)
    assert len(whole) >= 2 and all(f.score >= 0.5 for f in whole)  # class-0 (person) boxes, as "faces"

    region = BBox(0.4, 0.0, 0.8, 1.0)  # the right-hand walker only
    inside = det.detect(img, region)
    assert inside and all(
        region.xmin - 0.01 <= f.box.xmin and f.box.xmax <= region.xmax + 0.01 for f in inside
    )
    best = max(whole, key=lambda f: max(f.box.iou(g.box) for g in inside))
    assert max(best.box.iou(g.box) for g in inside) > 0.6  # same person, mapped back to frame coordinates
    mesh = landmark_model(cfg)
    assert mesh is not None
    assert all(f.keypoints == {} for f in whole + inside)  # no keypoints invented
    refined = mesh.refine(img, inside[0])  # landmarks still run (upright crop: no eye keypoints)
    assert refined.landmarks is not None and len(refined.landmarks) == 468


@pytest.mark.parametrize(
    ("boxes", "iou"),
    [
        ([[0.4, 0.4, 0.4, 0.6], [0.1, 0.1, 0.3, 0.3]], 0.3),  # a zero-width box (the regressor's w <= 0)
        ([[0.4, 0.4, 0.6, 0.6], [0.1, 0.1, 0.3, 0.3]], 1.0),  # faces.nms_iou: 1.0 (the config allows it)
    ],
)
def test_weighted_nms_keeps_every_face_finite(boxes: list[list[float]], iou: float) -> None:
    b = np.array(boxes, dtype=np.float32)
    kps = np.repeat(b[:, None, :2], 6, axis=1)
    faces = weighted_nms(b, kps, np.array([0.9, 0.8]), iou)
    assert len(faces) == 2
    for f in faces:
        assert all(math.isfinite(v) for v in f.box)
        assert all(math.isfinite(v) for kp in f.keypoints for v in kp)
    assert [tuple(round(v, 4) for v in f.box) for f in faces] == [
        tuple(round(float(v), 4) for v in x) for x in b
    ]


def test_an_ssd_face_model_on_a_region_at_the_frame_edge_finds_nothing(
    cfg: EdgeVisionConfig, models_dir: Path
) -> None:
    """A person box clipped flat against the right or bottom edge (an SSD box past the frame) gives a head
    region with nothing in the frame: no faces, not an OpenCV error on an empty crop."""
    det = face_detector(cfg, str(models_dir / "ssd_mobilenet_v1_1.0_coco_quant_detect.tflite"))
    img = read_image(IMAGES / "face.jpg")
    assert det.detect(img, BBox(1.0, 0.2, 1.0, 0.6)) == []
    assert det.detect(img, BBox(0.2, 1.0, 0.6, 1.0)) == []


def test_face_mesh_on_a_zero_area_face_leaves_it_unrefined(cfg: EdgeVisionConfig) -> None:
    mesh = landmark_model(cfg)
    assert mesh is not None
    img = read_image(IMAGES / "face.jpg")
    face = Face(0.9, BBox(1.0, 1.0, 1.0, 1.0), {})  # clipped into the corner
    assert mesh.refine(img, face) == face
