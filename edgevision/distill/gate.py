"""The installation gate: the student's person *boxes* must agree with the teacher's on held-out frames.

Pure functions over boxes and scores (no interpreter, no TensorFlow), so every rule is tested on plain arrays:

* per frame, the teacher's person boxes (score ≥ its threshold, among its top-10 detections) are matched one to
  one with the student's (score ≥ the calibrated threshold, top 10) by greedy IoU ≥ 0.5; F1 over all frames
  ≥ 0.9 and the median IoU of matched pairs ≥ 0.6;
* no student person on any negative frame;
* the student invokes faster than the teacher.

The student's threshold is calibrated on the validation split to the teacher's operating point: the threshold
with the best box F1 against the teacher (ties: the one closest to the teacher's own).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from edgevision.detection.ssd import iou_matrix

F1_MIN = 0.9
IOU_MEDIAN_MIN = 0.6
MATCH_IOU = 0.5
TOP_K = 10


@dataclass(frozen=True)
class FrameDets:
    """Person boxes ``[N, 4]`` (ymin, xmin, ymax, xmax) and their scores, best first."""

    boxes: np.ndarray
    scores: np.ndarray

    def above(self, threshold: float, top_k: int = TOP_K) -> np.ndarray:
        keep = self.scores[:top_k] >= threshold
        return self.boxes[:top_k][keep]


def match(teacher: np.ndarray, student: np.ndarray, min_iou: float = MATCH_IOU) -> list[float]:
    """Greedy one-to-one matching by IoU (best pairs first); returns the IoUs of matched pairs."""
    if len(teacher) == 0 or len(student) == 0:
        return []
    ious = np.stack([iou_matrix(t, student) for t in teacher])
    out: list[float] = []
    while True:
        i, j = np.unravel_index(int(np.argmax(ious)), ious.shape)
        best = float(ious[i, j])
        if best < min_iou:
            return out
        out.append(best)
        ious[i, :] = -1.0
        ious[:, j] = -1.0


@dataclass(frozen=True)
class Agreement:
    f1: float
    precision: float
    recall: float
    iou_median: float
    teacher_boxes: int
    student_boxes: int
    matched: int


def agreement(teacher: Sequence[np.ndarray], student: Sequence[np.ndarray]) -> Agreement:
    """Box F1 and matched-IoU median over frames (lists of per-frame ``[N, 4]`` boxes)."""
    n_t = sum(len(t) for t in teacher)
    n_s = sum(len(s) for s in student)
    ious: list[float] = []
    for t, s in zip(teacher, student, strict=True):
        ious.extend(match(t, s))
    tp = len(ious)
    precision = tp / n_s if n_s else (1.0 if n_t == 0 else 0.0)
    recall = tp / n_t if n_t else (1.0 if n_s == 0 else 0.0)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return Agreement(f1, precision, recall, float(np.median(ious)) if ious else 0.0, n_t, n_s, tp)


def calibrate(
    teacher: Sequence[np.ndarray], student: Sequence[FrameDets], teacher_threshold: float
) -> tuple[float, Agreement]:
    """The student threshold with the best box F1 against the teacher (ties: closest to the teacher's)."""
    best: tuple[float, float, float] | None = None
    best_agree: Agreement | None = None
    for thr in np.round(np.arange(0.05, 0.96, 0.01), 2):
        a = agreement(teacher, [s.above(float(thr)) for s in student])
        key = (a.f1, -abs(float(thr) - teacher_threshold), a.iou_median)
        if best is None or key > best:
            best, best_agree = key, a
            chosen = float(thr)
    assert best_agree is not None
    return chosen, best_agree


@dataclass
class GateReport:
    """Everything the gate measured; ``passed`` only when every rule holds."""

    threshold: float
    agreement: Agreement
    negative_frames: int
    negative_person_frames: int
    student_ms: float
    teacher_ms: float
    reasons: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.reasons

    @property
    def latency_ratio(self) -> float:
        return self.student_ms / self.teacher_ms if self.teacher_ms > 0 else float("inf")

    def to_dict(self) -> dict[str, object]:
        return {
            "threshold": self.threshold,
            **{f"box_{k}": v for k, v in asdict(self.agreement).items()},
            "negative_frames": self.negative_frames,
            "negative_person_frames": self.negative_person_frames,
            "student_invoke_ms": round(self.student_ms, 3),
            "teacher_invoke_ms": round(self.teacher_ms, 3),
            "invoke_ratio": round(self.latency_ratio, 3),
            "passed": self.passed,
            "reasons": list(self.reasons),
        }


def judge(
    teacher: Sequence[np.ndarray],
    student: Sequence[FrameDets],
    negatives: Sequence[FrameDets],
    teacher_threshold: float,
    student_ms: float,
    teacher_ms: float,
) -> GateReport:
    """Calibrate, then apply every rule of the gate."""
    thr, agree = calibrate(teacher, student, teacher_threshold)
    neg = sum(1 for d in negatives if len(d.above(thr)) > 0)
    report = GateReport(thr, agree, len(negatives), neg, student_ms, teacher_ms)
    if sum(len(t) for t in teacher) == 0:
        report.reasons.append("the teacher sees no person on the validation frames: nothing to compare")
    if agree.f1 < F1_MIN:
        report.reasons.append(f"person box F1 {agree.f1:.3f} < {F1_MIN} against the teacher")
    if agree.iou_median < IOU_MEDIAN_MIN:
        report.reasons.append(f"matched-box IoU median {agree.iou_median:.3f} < {IOU_MEDIAN_MIN}")
    if neg:
        report.reasons.append(f"a person on {neg} of {len(negatives)} negative frame(s)")
    if not student_ms < teacher_ms:
        report.reasons.append(
            f"invokes in {student_ms:.2f} ms, not faster than the teacher's {teacher_ms:.2f} ms"
        )
    return report
