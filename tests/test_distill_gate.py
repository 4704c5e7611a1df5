"""The distillation gate and the local-model install contract: pure functions over arrays and files (no TF)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from edgevision.catalog.entries import Architecture
from edgevision.catalog.local import (
    LocalModel,
    TeacherRef,
    install_local_model,
    list_local_models,
    verify_local_model,
)
from edgevision.distill.gate import FrameDets, agreement, calibrate, judge, match
from edgevision.errors import ModelError

A = np.array([0.1, 0.1, 0.5, 0.3], dtype=np.float32)
B = np.array([0.5, 0.5, 0.9, 0.7], dtype=np.float32)
A_SHIFTED = A + np.array([0.02, 0.0, 0.02, 0.0], dtype=np.float32)  # IoU ≈ 0.9 with A
FAR = np.array([0.0, 0.8, 0.1, 0.9], dtype=np.float32)


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
    ious = match(t, s)
    assert len(ious) == matched
    assert all(i >= 0.5 for i in ious)


def test_agreement_counts_boxes_not_frames() -> None:
    # Frame-level agreement would be perfect here (both see a person in each frame); box F1 is not.
    teacher = [np.array([A, B]), np.array([A])]
    student = [np.array([FAR, B]), np.array([A_SHIFTED])]
    a = agreement(teacher, student)
    assert (a.matched, a.teacher_boxes, a.student_boxes) == (2, 3, 3)
    assert a.f1 == pytest.approx(2 / 3)
    assert a.iou_median > 0.85


def test_calibration_finds_the_teachers_operating_point() -> None:
    # The student's scores sit 0.3 below the teacher's: a fixed 0.5 would miss every box, calibration does not.
    teacher = [np.array([A, B])] * 4
    student = [FrameDets(np.array([A, B, FAR]), np.array([0.3, 0.25, 0.1], dtype=np.float32))] * 4
    thr, a = calibrate(teacher, student, 0.5)
    assert 0.1 < thr <= 0.25
    assert a.f1 == pytest.approx(1.0)
    assert agreement(teacher, [s.above(0.5) for s in student]).f1 == 0.0


def _judge(student_scores: float, neg_score: float, student_ms: float) -> list[str]:
    teacher = [np.array([A, B])] * 3
    student = [FrameDets(np.array([A_SHIFTED, B]), np.full(2, student_scores, np.float32))] * 3
    negatives = [FrameDets(np.array([FAR]), np.array([neg_score], np.float32))]
    return judge(teacher, student, negatives, 0.5, student_ms, 10.0).reasons


def test_gate_rules() -> None:
    assert _judge(0.6, 0.01, 5.0) == []
    assert any("negative" in r for r in _judge(0.6, 0.9, 5.0))  # a person on the empty hallway
    assert any("faster" in r for r in _judge(0.6, 0.01, 12.0))  # slower than the teacher
    # an untrained student: its boxes are nowhere near the teacher's
    untrained = judge(
        [np.array([A, B])] * 3,
        [FrameDets(np.array([FAR]), np.array([0.6], np.float32))] * 3,
        [],
        0.5,
        1.0,
        10.0,
    )
    assert not untrained.passed and any("F1" in r for r in untrained.reasons)


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


def test_missing_training_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from edgevision.distill import EXIT_TRAIN_UNAVAILABLE, TrainingUnavailable, require_tf

    monkeypatch.setitem(sys.modules, "tensorflow", None)  # import tensorflow → ImportError
    with pytest.raises(TrainingUnavailable, match=r"pip install 'edgevision\[train\]'") as exc:
        require_tf()
    assert exc.value.exit_code == EXIT_TRAIN_UNAVAILABLE == 69


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
    assert (args.steps, args.batch, args.lr, args.temperature) == (d.steps, d.batch, d.lr, d.temperature)
