"""The distillation gate and the local-model install contract: pure functions over arrays and files (no TF)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED_MODELS, WALKING, run_cli

from edgevision.catalog.entries import Architecture
from edgevision.catalog.local import (
    LocalModel,
    TeacherRef,
    install_local_model,
    list_local_models,
    verify_local_model,
)
from edgevision.cli.distill_cmd import f1_only
from edgevision.detection.ssd import decode_boxes
from edgevision.distill import MISSING_TF
from edgevision.distill.gate import (
    F1_MIN,
    TOP_K,
    UNCAPPED_K,
    FrameDets,
    agreement,
    calibrate,
    compare,
    decode_nms,
    judge,
    match,
)
from edgevision.errors import ModelError

A = np.array([0.1, 0.1, 0.5, 0.3], dtype=np.float32)
B = np.array([0.5, 0.5, 0.9, 0.7], dtype=np.float32)
A_SHIFTED = A + np.array([0.02, 0.0, 0.02, 0.0], dtype=np.float32)  # IoU ≈ 0.9 with A
FAR = np.array([0.0, 0.8, 0.1, 0.9], dtype=np.float32)


def _dets(boxes: list | np.ndarray, scores: list | np.ndarray, classes: list | None = None) -> FrameDets:
    """Detections best first, like the postprocess op returns them."""
    b = np.array(boxes, np.float32).reshape(-1, 4)
    s = np.array(scores, np.float32)
    order = np.argsort(-s, kind="stable")
    c = None if classes is None else np.array(classes, np.int32)[order]
    return FrameDets(b[order], s[order], c)


def _crowd(n: int = 20, seed: int = 0) -> np.ndarray:
    """``n`` disjoint person boxes on a grid (a crowd): no two overlap, so each must be matched on its own."""
    rows, cols = 4, 5
    out = []
    for k in range(n):
        r, c = divmod(k, cols)
        out.append([r / rows + 0.01, c / cols + 0.01, (r + 1) / rows - 0.01, (c + 1) / cols - 0.01])
    return np.array(out, np.float32)


CROWD = _crowd()
_rng = np.random.default_rng(1)
# the teacher's crowd: 20 people scored 0.55-0.70 in uint8 steps, many tied
CROWD_T = np.round(_rng.uniform(0.55, 0.70, len(CROWD)) * 256) / 256
# a faithful student: the same people, all above threshold, ranked the other way round within the ties
CROWD_S = 1.25 - CROWD_T
# an untrained student: 40 boxes of anchor size anywhere in the frame, flat scores
_c = np.random.default_rng(2).uniform(0.1, 0.9, (40, 2))
UNTRAINED = np.concatenate([_c - 0.08, _c + 0.08], axis=1).astype(np.float32)


@pytest.mark.parametrize(
    ("teacher", "student", "matched"),
    [
        ([A, B], [A_SHIFTED, B], 2),
        ([A, B], [B], 1),
        ([A], [FAR], 0),
        ([], [A], 0),
        ([A, B], [A, A_SHIFTED], 1),  # one-to-one: two students on one teacher box match once
    ],
)
def test_match_is_one_to_one_at_iou_half(teacher: list, student: list, matched: int) -> None:
    t = np.array(teacher).reshape(-1, 4)
    s = np.array(student).reshape(-1, 4)
    pairs = match(t, s)
    assert len(pairs) == matched
    assert all(iou >= 0.5 for _, _, iou in pairs)
    assert len({i for i, _, _ in pairs}) == len({j for _, j, _ in pairs}) == matched


def test_agreement_counts_boxes_not_frames() -> None:
    # Frame-level agreement would be perfect here (both see a person in each frame); box F1 is not.
    teacher = [np.array([A, B]), np.array([A])]
    student = [np.array([FAR, B]), np.array([A_SHIFTED])]
    a = agreement(teacher, student)
    assert (a.matched, a.teacher_boxes, a.student_boxes) == (2, 3, 3)
    assert a.f1 == pytest.approx(2 / 3)
    assert a.iou_median > 0.85


def _shift(boxes: np.ndarray, dx: float) -> np.ndarray:
    return boxes + np.array([0.0, dx, 0.0, dx], np.float32)


@pytest.mark.parametrize(
    ("case", "student", "top10_max", "tie_aware_min", "tie_aware_max"),
    [
        # the same crowd, ranked differently within the ties: the top-10 cut keeps other people on each side
        ("faithful, ties ranked differently", _dets(CROWD, CROWD_S), 0.2, 0.99, 1.0),
        # boxes shifted by 60 % of their width: no pair reaches IoU 0.5
        ("shifted", _dets(_shift(CROWD, 0.12), CROWD_S), 0.05, 0.0, 0.05),
        # an untrained student: boxes anywhere, flat scores
        ("untrained", _dets(UNTRAINED, [0.5] * 40), 0.3, 0.0, 0.3),
        ("silent", _dets(np.zeros((0, 4)), []), 0.0, 0.0, 0.0),
    ],
)
def test_tie_aware_f1_counts_boxes_the_top10_cut_drops(
    case: str, student: FrameDets, top10_max: float, tie_aware_min: float, tie_aware_max: float
) -> None:
    teacher = [_dets(CROWD, CROWD_T)] * 3
    students = [student] * 3
    top10 = compare(teacher, students, 0.5, 0.5, TOP_K)
    tie_aware = compare(teacher, students, 0.5, 0.5, UNCAPPED_K)
    assert top10.f1 <= top10_max, case
    assert tie_aware_min <= tie_aware.f1 <= tie_aware_max, case
    report = judge(teacher, students, [], 0.5, 1.0, 10.0)
    assert report.passed == (tie_aware_min >= 0.9), (case, report.reasons)
    assert report.top10.f1 <= top10_max + 1e-9, case


@pytest.mark.parametrize(
    ("teacher_scores", "student_scores", "tolerance", "expect"),
    [
        # a teacher box at 0.52, missed by the student: a miss without tolerance, not required with 0.05
        ([0.8, 0.52], [0.8, 0.1], 0.0, (1, 2, 1)),
        ([0.8, 0.52], [0.8, 0.1], 0.05, (1, 1, 1)),
        # a student box on a teacher box at 0.47: a false positive without tolerance, not penalised with 0.05
        ([0.8, 0.47], [0.8, 0.6], 0.0, (1, 1, 2)),
        ([0.8, 0.47], [0.8, 0.6], 0.05, (1, 1, 1)),
        # outside the band the rules are unchanged
        ([0.8, 0.40], [0.8, 0.6], 0.05, (1, 1, 2)),
        ([0.8, 0.60], [0.8, 0.1], 0.05, (1, 2, 1)),
    ],
)
def test_score_tolerance_band_neither_requires_nor_penalises(
    teacher_scores: list, student_scores: list, tolerance: float, expect: tuple[int, int, int]
) -> None:
    t = [_dets([A, B], teacher_scores)]
    s = [_dets([A_SHIFTED, B], student_scores)]
    a = compare(t, s, 0.5, 0.5, UNCAPPED_K, tolerance)
    assert (a.matched, a.teacher_boxes, a.student_boxes) == expect


def test_top_k_counts_every_class_like_the_op() -> None:
    # the op keeps 10 detections of any class: a car ranked above a person takes a slot
    d = _dets(CROWD[:11], [0.9] + [0.6] * 10, [2] + [0] * 10)
    assert len(d.above(0.5, TOP_K)) == 9
    assert len(d.above(0.5, UNCAPPED_K)) == 10
    assert len(d.above(0.61, UNCAPPED_K)) == 0


ANCHORS = np.array(
    [[0.3, 0.3, 0.2, 0.2], [0.3, 0.32, 0.2, 0.2], [0.7, 0.7, 0.2, 0.2], [0.7, 0.2, 0.2, 0.2]], np.float32
)


@pytest.mark.parametrize(
    ("scores", "classes", "floor", "k", "kept"),
    [
        (
            [0.9, 0.8, 0.7, 0.6],
            [0, 0, 0, 0],
            0.0,
            100,
            [0, 2, 3],
        ),  # 1 overlaps 0 (IoU 0.82 > 0.6): suppressed
        ([0.6, 0.8, 0.7, 0.6], [0, 0, 0, 0], 0.0, 100, [1, 2, 3]),  # 0 now loses to 1
        ([0.6, 0.6, 0.6, 0.6], [0, 0, 0, 0], 0.0, 100, [0, 2, 3]),  # ties: anchor order (stable, like the op)
        ([0.9, 0.8, 0.7, 0.6], [0, 0, 0, 0], 0.65, 100, [0, 2]),  # the score floor
        ([0.9, 0.8, 0.7, 0.6], [0, 0, 0, 0], 0.0, 2, [0, 2]),  # max_detections
        ([0.9, 0.8, 0.7, 0.6], [3, 0, 1, 0], 0.0, 100, [0, 2, 3]),  # class-agnostic NMS
    ],
)
def test_decode_nms_is_the_ops_fast_nms(
    scores: list, classes: list, floor: float, k: int, kept: list
) -> None:
    enc = np.zeros((4, 4), np.float32)
    d = decode_nms(enc, np.array(scores, np.float32), np.array(classes), ANCHORS, 0.6, floor, k)
    expected = decode_boxes(enc, ANCHORS)[kept]
    np.testing.assert_allclose(d.boxes, expected, atol=1e-6)
    assert d.scores.tolist() == pytest.approx([scores[i] for i in kept])
    assert d.classes is not None and d.classes.tolist() == [classes[i] for i in kept]


def test_calibration_finds_the_teachers_operating_point() -> None:
    # The student's scores sit 0.3 below the teacher's: a fixed 0.5 would miss every box, calibration does not.
    teacher = [_dets([A, B], [0.8, 0.7])] * 4
    student = [_dets([A, B, FAR], [0.3, 0.25, 0.1])] * 4
    thr, a = calibrate(teacher, student, 0.5)
    assert 0.1 < thr <= 0.25
    assert a.f1 == pytest.approx(1.0)
    assert compare(teacher, student, 0.5, 0.5).f1 == 0.0


def _judge(student_scores: float, neg_score: float, student_ms: float) -> list[str]:
    teacher = [_dets([A, B], [0.7, 0.6])] * 3
    student = [_dets([A_SHIFTED, B], [student_scores] * 2)] * 3
    negatives = [_dets([FAR], [neg_score])]
    return judge(teacher, student, negatives, 0.5, student_ms, 10.0).reasons


def test_gate_rules() -> None:
    assert _judge(0.6, 0.01, 5.0) == []
    assert any("negative" in r for r in _judge(0.6, 0.9, 5.0))  # a person on the empty hallway
    assert any("faster" in r for r in _judge(0.6, 0.01, 12.0))  # slower than the teacher
    # an untrained student: its boxes are nowhere near the teacher's
    untrained = judge([_dets([A, B], [0.7, 0.6])] * 3, [_dets([FAR], [0.6])] * 3, [], 0.5, 1.0, 10.0)
    assert not untrained.passed and any("F1" in r for r in untrained.reasons)
    assert any("top-10 F1" in r for r in untrained.reasons)
    d = untrained.to_dict()
    assert {"box_f1", "top10_box_f1", "box_rule", "passed"} <= set(d) and d["passed"] is False


# The student finds A and B as the teacher does, plus a box the teacher does not have, on every frame: precision
# 2/3, recall 1, F1 = 2 * (2/3) / (2/3 + 1) = 0.8.
EXTRA = np.array([0.7, 0.1, 0.95, 0.3], dtype=np.float32)


@pytest.mark.parametrize(
    ("f1_min", "passed"),
    [(F1_MIN, False), (0.85, False), (0.8, True), (0.6, True)],
)
def test_a_lowered_f1_bar_is_the_only_rule_it_moves_and_is_recorded(f1_min: float, passed: bool) -> None:
    teacher = [_dets([A, B], [0.7, 0.6])] * 3
    student = [_dets([A, B, EXTRA], [0.7, 0.6, 0.65])] * 3
    report = judge(teacher, student, [], 0.5, 5.0, 10.0, f1_min=f1_min)
    assert report.agreement.f1 == pytest.approx(0.8)
    assert report.passed is passed and report.to_dict()["f1_min"] == f1_min
    assert f1_only(report) is not passed
    if not passed:
        assert report.reasons == [f"person box F1 0.800 < {f1_min} against the teacher (top-10 F1 0.800)"]
    # the other rules do not move with it: a person on the empty hallway, or slower than the teacher
    hallway = judge(teacher, student, [_dets([FAR], [0.9])], 0.5, 5.0, 10.0, f1_min=0.6)
    slow = judge(teacher, student, [], 0.5, 12.0, 10.0, f1_min=0.6)
    assert not hallway.passed and not slow.passed and not f1_only(hallway) and not f1_only(slow)


@pytest.mark.parametrize("bar", ["0.3", "1.5", "nan"])
def test_min_f1_out_of_range_is_a_usage_error(bar: str, env: dict[str, str], tmp_path: Path) -> None:
    args = ["models", "distill", "--student", "mobilenet_v1_0.25", "--video", str(WALKING), "--min-f1", bar]
    r = run_cli(args, env)
    assert r.returncode == 2 and "--min-f1" in r.stderr, r.stderr
    assert not (tmp_path / "models" / "local").exists() or not any((tmp_path / "models" / "local").iterdir())


def _manifest(name: str, data: bytes) -> LocalModel:
    return LocalModel.model_validate(
        {
            "name": name,
            "file": f"{name}.tflite",
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "architecture": Architecture(
                family="mobilenet_v1",
                alpha=0.5,
                input=(300, 300),
                quantization="int8",
                head="ssd",
                postprocess=True,
            ),
            "threshold": 0.42,
            "teacher": TeacherRef(name="ssd_mobilenet_v1_coco_quant", sha256="0" * 64),
        }
    )


def test_install_is_atomic_and_verified(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = b"TFL3-student-bytes" * 10
    m = _manifest("s1", data)
    path = install_local_model(tmp_path, m, data)
    assert path.read_bytes() == data
    assert list_local_models(tmp_path)["s1"].threshold == 0.42
    assert json.loads((tmp_path / "local" / "s1.json").read_text())["sha256"] == m.sha256
    assert verify_local_model(tmp_path, m) == path
    # same size, different bytes: listed by size but refused on resolve
    path.write_bytes(data[::-1])
    with pytest.raises(ModelError, match="does not match"):
        verify_local_model(tmp_path, m)

    # a kill between the model rename and the manifest rename leaves no listed student
    data2 = b"another-student" * 7
    real_replace = os.replace

    def dying_replace(src: str | Path, dst: str | Path) -> None:
        if str(dst).endswith(".json"):
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", dying_replace)
    with pytest.raises(KeyboardInterrupt):
        install_local_model(tmp_path, _manifest("s2", data2), data2)
    monkeypatch.undo()
    assert "s2" not in list_local_models(tmp_path)
    assert not [p for p in (tmp_path / "local").iterdir() if p.name.startswith(".")]  # no temp file left
    with pytest.raises(ValueError):
        install_local_model(tmp_path, _manifest("s3", data), data2)  # manifest must describe the bytes


def test_a_student_whose_manifest_names_no_labels_still_calls_its_class_person(tmp_path: Path) -> None:
    """A hand-made manifest without ``labels``: the student's one class came out as "0", so no event ever
    matched ``recorder.labels: [person]``."""
    from edgevision.catalog.entries import load_catalog
    from edgevision.catalog.resolve import _resolve_local

    data = b"TFL3-student-bytes" * 10
    m = _manifest("hand_made", data)
    assert m.labels is None
    install_local_model(tmp_path, m, data)
    assert _resolve_local(m, tmp_path, load_catalog(), None).labels == {0: "person"}


def test_missing_training_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from edgevision.distill import EXIT_TRAIN_UNAVAILABLE, TrainingUnavailable, check_tf_installed, require_tf

    monkeypatch.setitem(sys.modules, "tensorflow", None)  # import tensorflow → ImportError
    with pytest.raises(
        TrainingUnavailable, match=r"pip install -e '\.\[train\]' in the edgevision checkout"
    ) as exc:
        require_tf()
    assert exc.value.exit_code == EXIT_TRAIN_UNAVAILABLE == 69
    with pytest.raises(TrainingUnavailable, match=r"pip install -e '\.\[train\]' in the edgevision checkout"):
        check_tf_installed()  # the cheap look (find_spec) sees the same


#: ``python -m edgevision`` with TensorFlow hidden, as without the train extra (import tensorflow → ImportError).
WITHOUT_TF = [
    sys.executable,
    "-c",
    "import sys; sys.modules['tensorflow'] = None; from edgevision.cli.main import main; raise SystemExit(main())",
]


def test_distill_without_the_train_extra_exits_69_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Not the config, not the inputs (a missing video would be exit 66), not the pipeline: TensorFlow first."""
    import edgevision.config
    import edgevision.distill.pipeline as pipeline
    from edgevision.cli.main import main

    def no_work(*args: object, **kwargs: object) -> None:
        raise AssertionError("work done before the TensorFlow check")

    monkeypatch.setitem(sys.modules, "tensorflow", None)
    monkeypatch.setattr(edgevision.config, "load_config", no_work)
    monkeypatch.setattr(pipeline, "distill", no_work)
    code = main(["models", "distill", "--student", "mobilenet_v1_0.5", "--video", str(tmp_path / "none.mp4")])
    assert code == 69
    assert capsys.readouterr().err.splitlines() == [f"edgevision: error: {MISSING_TF}"]
    # a bad argument is still a usage error first, with or without TensorFlow
    assert main(["models", "distill", "--student", "mobilenet_v1_0.5", "--min-f1", "0.3"]) == 2


def test_distill_without_the_train_extra_says_one_line_and_nothing_else(env: dict[str, str]) -> None:
    """No teacher loaded (LiteRT's XNNPACK line, its UserWarning), no frames read: the one line, exit 69."""
    args = [
        "models",
        "distill",
        "--student",
        "mobilenet_v1_0.5",
        "--video",
        str(WALKING),
        "--max-frames",
        "2",
    ]
    r = subprocess.run([*WITHOUT_TF, *args], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 69, r.stderr
    assert r.stderr.splitlines() == [f"edgevision: error: {MISSING_TF}"]


def test_sampling_gives_person_frames_their_share_and_cli_defaults_are_the_training_defaults() -> None:
    import argparse

    from edgevision.cli import distill_cmd
    from edgevision.distill.train import TrainSettings, sampling_weights

    logits = np.full((10, 5), -4.0, np.float32)
    logits[[2, 7], 3] = 0.5  # two of ten frames hold a teacher person (score ≥ 0.5)
    w = sampling_weights(logits, 0.75)
    assert w.sum() == pytest.approx(1.0)
    assert w[[2, 7]].sum() == pytest.approx(0.75) and w[2] == w[7]
    assert np.allclose(sampling_weights(logits[[2, 7]], 0.75), 0.5)  # all person frames: uniform
    assert np.allclose(sampling_weights(logits[:2], 0.75), 0.5)  # no person frame: uniform

    parser = argparse.ArgumentParser()
    distill_cmd.register(parser.add_subparsers())
    args = parser.parse_args(["distill", "--student", "mobilenet_v1_0.5"])
    d = TrainSettings()
    assert (args.steps, args.batch, args.lr, args.temperature, args.augment, not args.train_stem) == (
        d.steps,
        d.batch,
        d.lr,
        d.temperature,
        d.augment,
        d.freeze_stem,
    )


@pytest.fixture()
def tf_present(monkeypatch: pytest.MonkeyPatch) -> None:
    """As with the train extra installed: CLI tests that replace the pipeline never use TensorFlow, so they run
    without it too."""
    import edgevision.distill

    monkeypatch.setattr(edgevision.distill, "check_tf_installed", lambda: None)


@pytest.mark.parametrize(("flags", "freeze_stem"), [([], True), (["--train-stem"], False)])
def test_train_stem_reaches_the_training_settings(
    flags: list[str], freeze_stem: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tf_present: None
) -> None:
    import edgevision.distill.pipeline as pipeline
    from edgevision.cli.main import main

    seen: list[pipeline.DistillOptions] = []

    def fake_distill(opts: pipeline.DistillOptions, progress: object = None) -> pipeline.DistillResult:
        seen.append(opts)
        raise KeyboardInterrupt  # stop there: exit 130, nothing installed

    monkeypatch.setattr(pipeline, "distill", fake_distill)
    argv = ["models", "distill", "--student", "mobilenet_v1_0.5", "--video", str(WALKING)]
    assert main([*argv, "--models-dir", str(tmp_path), *flags]) == 130
    assert [o.settings.freeze_stem for o in seen] == [freeze_stem]


def test_augment_jitters_each_frame_reproducibly() -> None:
    from edgevision.distill.data import augment

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    out = augment(frames, 2, seed=1)
    assert out.shape == (6, 32, 32, 3) and out.dtype == np.uint8
    assert np.array_equal(out, augment(frames, 2, seed=1))  # same seed, same frames
    assert not np.array_equal(out, augment(frames, 2, seed=2))
    for k in range(6):  # each copy is its frame, changed
        assert not np.array_equal(out[k], frames[k % 3])
    assert augment(frames, 0).shape == (0, 32, 32, 3)


class _Weights:
    def save_weights(self, path: Path) -> None:
        Path(path).write_bytes(b"w")


@pytest.mark.parametrize(("crashes", "ok"), [(0, True), (2, True), (3, False)])
def test_conversion_child_that_aborts_is_retried(
    crashes: int, ok: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The converter's `free(): double free` kills only the child process; the conversion is retried."""
    import subprocess

    from edgevision.distill import export

    calls: list[list[str]] = []

    def fake_run(cmd: list[str], **_: object) -> subprocess.CompletedProcess[str]:
        calls.append(cmd)
        if len(calls) <= crashes:
            return subprocess.CompletedProcess(cmd, -6, "", "free(): double free detected in tcache 2\n")
        assert cmd[1:3] == ["-m", "edgevision.distill.export"] and cmd[3] == "mobilenet_v3_small"
        work = Path(cmd[-1])
        assert (work / "student.weights.h5").exists() and np.load(work / "calibration.npy").shape[0] == 3
        (work / "student.tflite").write_bytes(b"TFL3")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(subprocess, "run", fake_run)
    frames = np.zeros((2, 8, 8, 3), np.uint8)
    if ok:
        assert export.quantize_in_subprocess(_Weights(), "mobilenet_v3_small", tmp_path, 8, frames) == b"TFL3"
    else:
        with pytest.raises(ModelError, match=r"failed 3 times.*double free"):
            export.quantize_in_subprocess(_Weights(), "mobilenet_v3_small", tmp_path, 8, frames)
    assert len(calls) == min(crashes + 1, 3)


@pytest.mark.parametrize(
    ("validation", "lowered"), [({}, False), ({"f1_min": 0.9}, False), ({"f1_min": 0.8}, True)]
)
def test_models_info_says_when_a_student_was_installed_under_a_lowered_bar(
    validation: dict[str, float], lowered: bool, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from edgevision.cli.models_cmd import _info_local

    data = b"TFL3-student-bytes" * 10
    m = _manifest("s1", data).model_copy(update={"validation": {**validation, "box_f1": 0.812}})
    install_local_model(tmp_path, m, data)
    assert _info_local(m, tmp_path) == 0
    out = capsys.readouterr().out
    assert ("LOWERED: box F1 bar 0.8" in out and "scored 0.812" in out) is lowered
    assert ("LOWERED" in out) is lowered


@pytest.mark.parametrize(("f1_min", "installed"), [(0.9, False), (0.8, True)])
def test_distill_cli_names_the_flag_on_an_f1_refusal_and_says_when_installed_under_a_lowered_bar(
    f1_min: float,
    installed: bool,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tf_present: None,
) -> None:
    import edgevision.distill.pipeline as pipeline
    from edgevision.cli.main import main
    from edgevision.distill import GateFailed

    teacher = [_dets([A, B], [0.7, 0.6])] * 3
    student = [_dets([A, B, EXTRA], [0.7, 0.6, 0.65])] * 3  # F1 0.8, every other rule met

    def fake_distill(opts: pipeline.DistillOptions, progress: object = None) -> pipeline.DistillResult:
        report = judge(teacher, student, [], 0.5, 5.0, 10.0, f1_min=opts.f1_min)
        result = pipeline.DistillResult("s1", report, None, None, 1.0, b"")
        if not report.passed:
            exc = GateFailed("student 's1' not installed: " + "; ".join(report.reasons))
            exc.result = result
            raise exc
        m = _manifest("s1", b"x").model_copy(update={"validation": report.to_dict()})
        result.manifest, result.path = m, tmp_path / "s1.tflite"
        return result

    monkeypatch.setattr(pipeline, "distill", fake_distill)
    argv = ["models", "distill", "--student", "mobilenet_v1_0.5", "--video", str(WALKING)]
    code = main([*argv, "--models-dir", str(tmp_path), "--min-f1", str(f1_min)])
    out, err = capsys.readouterr()
    assert code == (0 if installed else 73)
    assert ("run again with --min-f1 0.80" in err) is not installed
    assert ("under a lowered gate: box F1 bar 0.8" in out) is installed


def test_a_student_litert_cannot_run_is_a_model_error_and_is_kept_for_a_report(tmp_path: Path) -> None:
    """LiteRT aborted the whole distillation (``free(): double free`` in ``allocate_tensors``) on one exported
    student: the export is now run once in a child first, and a failure there is an error naming the kept file."""
    from edgevision.distill.export import check_runs_in_subprocess
    from edgevision.errors import ModelError

    check_runs_in_subprocess((SHARED_MODELS / "ssd_mobilenet_v1_1.0_coco_quant_detect.tflite").read_bytes())
    with pytest.raises(ModelError, match="does not run in LiteRT") as exc:
        check_runs_in_subprocess(b"TFL3" + bytes(200))  # not a model: the child fails
    kept = Path(str(exc.value).split("kept at ")[1].split(" for a bug report")[0])
    assert kept.read_bytes() == b"TFL3" + bytes(200) and exc.value.exit_code == 78
    shutil.rmtree(kept.parent)


def test_a_child_that_runs_past_its_timeout_is_a_model_error_not_a_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A check or a conversion that hangs used to escape as ``TimeoutExpired`` (exit 70, a traceback)."""
    import subprocess

    from edgevision.distill import export
    from edgevision.errors import ModelError

    def hangs(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
        raise subprocess.TimeoutExpired(cmd, float(kw["timeout"]), stderr=b"still converting")  # type: ignore[arg-type]

    monkeypatch.setattr(subprocess, "run", hangs)
    with pytest.raises(ModelError, match=r"does not run in LiteRT \(did not finish within 300 s") as exc:
        export.check_runs_in_subprocess(b"TFL3")
    shutil.rmtree(Path(str(exc.value).split("kept at ")[1].split(" for a bug report")[0]).parent)
    frames = np.zeros((2, 8, 8, 3), np.uint8)
    with pytest.raises(ModelError, match=r"failed 3 times \(did not finish within 3600 s.*still converting"):
        export.quantize_in_subprocess(_Weights(), "mobilenet_v3_small", tmp_path, 8, frames)


@pytest.mark.parametrize(
    "flag, value",
    [
        # log(t / (1 - t)): ZeroDivisionError after the teacher ran on every frame
        ("--teacher-threshold", "1"),
        ("--teacher-threshold", "0"),
        ("--teacher-threshold", "nan"),
        ("--lr", "0"),
        ("--lr", "-0.001"),
        ("--temperature", "0"),  # the distillation loss divides by it
        ("--temperature", "inf"),
        ("--augment", "-1"),
        ("--max-frames", "0"),  # read no frame at all, then said the video had none
        ("--val-fraction", "1"),  # refused only after every frame had been read
        ("--val-fraction", "0"),
    ],
)
def test_distill_options_out_of_range_are_usage_errors_before_any_work(
    flag: str,
    value: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """These used to be accepted and to fail (or train nonsense) minutes into a run; now exit 2 at once."""
    from edgevision.cli.main import main
    from edgevision.distill import pipeline

    def distill(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"distill started with {flag} {value}")

    monkeypatch.setattr(pipeline, "distill", distill)
    argv = ["models", "distill", "--student", "mobilenet_v1_0.25", "--video", str(WALKING), flag, value]
    code = main([*argv, "--models-dir", str(tmp_path / "models")])
    err = capsys.readouterr().err
    assert code == 2 and f"edgevision: error: {flag} {value}" in err, err


def test_an_image_folder_is_read_only_up_to_max_frames_and_a_broken_link_is_named(tmp_path: Path) -> None:
    """--max-frames bounds what is decoded (a year of snapshots did not fit a Pi's memory before the cut); a link
    to nothing in the folder is an input error naming it, not a FileNotFoundError traceback."""
    import cv2

    from edgevision.distill.data import read_images
    from edgevision.errors import InputError

    folder = tmp_path / "images"
    folder.mkdir()
    for k in range(6):
        cv2.imwrite(str(folder / f"{k}.png"), np.full((40, 40, 3), k * 40, np.uint8))
    src = read_images(folder, 32, limit=2)
    assert len(src.frames) == 2 and src.indexes == [0, 1] and src.total == 6
    assert len(read_images(folder, 32, every=2, limit=2).indexes) == 2
    (folder / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    with pytest.raises(InputError, match=r"gone\.jpg: not a readable image"):
        read_images(folder, 32)
