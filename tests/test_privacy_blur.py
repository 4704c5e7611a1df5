"""The cheap privacy blur still defeats both face detectors on large faces, and leaves the rest alone."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import ClassVar

import cv2
import numpy as np
import pytest
from conftest import IMAGES, read_image

from edgevision.config import EdgeVisionConfig, FaceRegion, FacesConfig, load_config
from edgevision.face.accept import AcceptMode, FaceRule
from edgevision.face.factory import face_detector
from edgevision.face.privacy import PrivacyStage, blur_region, redact
from edgevision.face.stage import FaceStage
from edgevision.pipeline.sinks import VideoSink
from edgevision.publish.live import LiveView
from edgevision.results import FrameResult, Latency
from edgevision.results.detection import BBox, Detection
from edgevision.results.face import Face
from edgevision.results.frame import Frame


@pytest.fixture(scope="module")
def cfg(models_dir: Path) -> EdgeVisionConfig:
    return load_config(None, {"models.dir": str(models_dir)})


def all_faces(cfg: EdgeVisionConfig, image: np.ndarray) -> list[Face]:
    return face_detector(cfg).detect(image) + face_detector(cfg, "blazeface_full_range").detect(image)


def on_720p(image: str, face_px: int, cfg: EdgeVisionConfig) -> tuple[np.ndarray, list[Face]]:
    """``image`` scaled so its largest face is about ``face_px`` wide, centred on a grey 1280x720 frame."""
    img = read_image(IMAGES / image)
    faces = all_faces(cfg, img)
    widest = max(f.box.width * img.shape[1] for f in faces)
    scale = min(face_px / widest, 720 / img.shape[0], 1280 / img.shape[1])
    img = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    canvas = np.full((720, 1280, 3), 128, np.uint8)
    y, x = (720 - img.shape[0]) // 2, (1280 - img.shape[1]) // 2
    canvas[y : y + img.shape[0], x : x + img.shape[1]] = img
    return canvas, all_faces(cfg, canvas)


@pytest.mark.parametrize(
    ("image", "face_px"),
    [("grace_hopper.bmp", 300), ("grace_hopper.bmp", 420), ("face.jpg", 300), ("face.jpg", 420)],
)
def test_blur_defeats_the_detectors_on_large_faces(cfg: EdgeVisionConfig, image: str, face_px: int) -> None:
    frame, faces = on_720p(image, face_px, cfg)
    assert faces and max(f.box.width * 1280 for f in faces) >= 0.6 * face_px  # a large face, found
    blurred = redact(frame, faces, [], "blur")
    assert all_faces(cfg, blurred) == []


def test_blur_removes_structure_inside_and_touches_nothing_outside(cfg: EdgeVisionConfig) -> None:
    frame, faces = on_720p("grace_hopper.bmp", 300, cfg)
    out = redact(frame, faces, [], "blur", margin=0.0)
    f = faces[0]
    x1, y1 = int(f.box.xmin * 1280), int(f.box.ymin * 720)
    x2, y2 = int(np.ceil(f.box.xmax * 1280)), int(np.ceil(f.box.ymax * 720))
    inside = (slice(y1 + 2, y2 - 2), slice(x1 + 2, x2 - 2))

    def detail(img: np.ndarray) -> float:
        return float(cv2.Laplacian(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), cv2.CV_64F).var())

    assert detail(out[inside]) < 0.02 * detail(frame[inside])  # eyes, mouth, edges: gone
    mask = np.zeros(frame.shape[:2], bool)
    for g in faces:
        mask[
            int(g.box.ymin * 720) : int(np.ceil(g.box.ymax * 720)),
            int(g.box.xmin * 1280) : int(np.ceil(g.box.xmax * 1280)),
        ] = True
    assert np.array_equal(out[~mask], frame[~mask])
    assert frame is not out and not np.array_equal(out, frame)


@pytest.mark.parametrize("shape", [(1, 1, 3), (5, 3, 3), (7, 200, 3), (300, 300, 3), (480, 420, 1)])
def test_blur_region_keeps_shape_and_dtype(shape: tuple[int, int, int]) -> None:
    roi = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    if shape[2] == 1:
        roi = roi[..., 0]
    out = blur_region(roi)
    assert out.shape == roi.shape and out.dtype == np.uint8
    if roi.size > 100:
        assert out.std() < 0.25 * roi.std()  # noise averaged away


def test_the_blur_is_its_own_latency_stage_in_the_result_and_its_detections_line(
    cfg: EdgeVisionConfig,
) -> None:
    from edgevision.face.privacy import PrivacyStage
    from edgevision.pipeline.sinks import result_record
    from edgevision.results import FrameResult, Latency
    from edgevision.results.frame import Frame

    frame, faces = on_720p("grace_hopper.bmp", 300, cfg)
    result = FrameResult(Frame(frame, 1.0, 7, "t"), [], Latency(faces=2.0), "m", faces=faces)
    PrivacyStage(blur_faces=True, masks=[]).process(result)
    assert result.latency.privacy is not None and result.latency.privacy > 0
    assert not np.array_equal(result.frame.image, frame)  # what was timed is the blur
    line = result_record(result)["latency_ms"]
    assert isinstance(line, dict) and list(line) == ["faces", "privacy"] and line["privacy"] > 0


class _Crowd:
    """A face detector that finds ``n`` faces side by side, anywhere it looks."""

    key: ClassVar[str] = "crowd"
    name = "crowd"

    def __init__(self, n: int) -> None:
        self.n = n

    def detect(self, frame_bgr: np.ndarray, region: BBox | None = None) -> list[Face]:
        return [
            Face(0.9 - 0.01 * i, BBox(i / self.n + 0.01, 0.1, (i + 1) / self.n - 0.01, 0.2), {})
            for i in range(self.n)
        ]


def test_blurring_faces_blurs_every_face_of_a_crowd_not_the_first_max_faces() -> None:
    """faces.max_faces caps what is reported; in privacy mode every face found must be blurred (a sixth face
    left clear in a group of six is a leak), so the cap does not apply to the faces the privacy stage reads."""
    cfg = FacesConfig(region=FaceRegion.FRAME)  # max_faces 5
    stage = FaceStage(_Crowd(8), None, cfg, FaceRule(AcceptMode.PRIVACY))
    result = FrameResult(Frame(np.zeros((120, 160, 3), np.uint8), 0.0, 0, "test"), [], Latency(), "m")
    stage.process(result)
    assert result.faces is not None and len(result.faces) == 8
    strict = FaceStage(_Crowd(8), None, cfg, FaceRule(AcceptMode.PRIVACY))
    strict.rule = FaceRule(AcceptMode.STRICT)
    reported = FrameResult(Frame(np.zeros((120, 160, 3), np.uint8), 0.0, 0, "test"), [], Latency(), "m")
    strict.process(reported)
    assert reported.faces is not None and len(reported.faces) <= cfg.max_faces  # reporting keeps its cap


class _Heads:
    """A face detector that finds one face at the top of any region it is asked about (a person's head), and
    none in a whole-frame scan: faces too small for the full-range pass, found only in person crops."""

    key: ClassVar[str] = "heads"
    name = "heads"

    def detect(self, frame_bgr: np.ndarray, region: BBox | None = None) -> list[Face]:
        if region is None:
            return []
        return [Face(0.9, BBox(region.xmin, region.ymin, region.xmax, region.ymin + 0.05), {})]


@pytest.mark.parametrize(("mode", "searched"), [(AcceptMode.PRIVACY, 8), (AcceptMode.STRICT, 5)])
def test_blurring_faces_searches_every_person_of_a_crowd_not_the_first_max_persons(
    mode: AcceptMode, searched: int
) -> None:
    """faces.max_persons (5) bounds the person boxes searched for a face to report; with privacy.blur_faces the
    faces of the sixth person on were found by the whole-frame scan alone, which misses small faces a person
    crop finds: written to clips, snapshots and the live view unblurred."""
    people = [
        Detection("person", 0, 0.9 - 0.01 * i, BBox(i / 8 + 0.01, 0.2, (i + 1) / 8 - 0.01, 0.9))
        for i in range(8)
    ]
    stage = FaceStage(_Heads(), None, FacesConfig(max_faces=10), FaceRule(mode), frame_detector=_Heads())
    result = FrameResult(Frame(np.zeros((120, 160, 3), np.uint8), 0.0, 0, "test"), people, Latency(), "m")
    stage.process(result)
    assert result.faces is not None and len(result.faces) == searched


def _drawn(sink: str, result: FrameResult, tmp_path: Path) -> np.ndarray:
    """The image ``sink`` (the saved video's or the live view's overlay) makes of ``result``."""
    if sink == "live":
        view = LiveView()
        try:
            view._encode(result)
            assert view._jpeg is not None
            decoded = cv2.imdecode(np.frombuffer(view._jpeg, np.uint8), cv2.IMREAD_COLOR)
            assert decoded is not None
            return decoded
        finally:
            view.close()
    video = VideoSink(tmp_path / "annotated.mp4", lambda: 25.0, blocking=False)
    video._thread = SimpleNamespace(start=lambda: None)  # type: ignore[assignment]  # the frame, not the encode
    video.on_result(result)
    item = video._q.get_nowait()
    assert item is not None
    return item[0]


@pytest.mark.parametrize("sink", ["video", "live"])
def test_overlays_draw_a_blurred_face_as_its_box_alone(sink: str, tmp_path: Path) -> None:
    """With privacy.blur_faces the saved video (and the window) drew each blurred face's 6 keypoints and every
    4th of its 468 landmarks onto the blur, and the live view its eyes, nose, mouth and ears: a sketch of the
    face, its features and its expression, in the very pictures the blur was for. Only the box is drawn now."""
    box = BBox(0.3, 0.3, 0.7, 0.7)
    keypoints = {"right_eye": (0.42, 0.42), "left_eye": (0.58, 0.42), "nose_tip": (0.5, 0.5)}
    mesh = tuple((0.35 + 0.3 * (i % 22) / 22, 0.35 + 0.3 * (i // 22) / 22, 0.0) for i in range(468))
    face = Face(0.9, box, keypoints, mesh, 0.99)
    result = FrameResult(Frame(np.full((120, 160, 3), 128, np.uint8), 0.0, 0, "test"), [], Latency(), "m")
    result.faces = [face]
    PrivacyStage(blur_faces=True, masks=[]).process(result)
    image = _drawn(sink, result, tmp_path)
    inside = image[int(0.3 * 120) + 5 : int(0.7 * 120) - 5, int(0.3 * 160) + 5 : int(0.7 * 160) - 5]
    assert int(np.abs(inside.astype(int) - 128).max()) < 40  # the blurred face (and JPEG's ripples), no dot
    unblurred = FrameResult(Frame(np.full((120, 160, 3), 128, np.uint8), 0.0, 0, "test"), [], Latency(), "m")
    unblurred.faces = [face]  # faces only reported (no privacy): their features are drawn as before
    inside = _drawn(sink, unblurred, tmp_path)[
        int(0.3 * 120) + 5 : int(0.7 * 120) - 5, int(0.3 * 160) + 5 : int(0.7 * 160) - 5
    ]
    assert int(np.abs(inside.astype(int) - 128).max()) > 64
