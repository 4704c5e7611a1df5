"""Distillation benchmark (issue 11's targets), measured in one run; a benchmark, never a test.

Per student: distil on supervision_walking.mp4 frames 0-240 plus frigate_test_motion_video-1.mp4 (an empty hallway,
trained on as negative footage), validate on walking frames 241-340, check frigate_test_motion_video-3.mp4 (the
other empty hallway) for person frames, and print one table row: person box F1 against the teacher (IoU 0.5,
top-10 boxes, calibrated threshold), matched-box IoU median, person frames on the negative clip, invoke time
ratio vs the teacher at the same input size (median of interleaved invokes, 2 threads), training minutes.

Targets: α 0.5 / α 0.25 / V3-Small: F1 ≥ 0.9, zero negative frames, ratio ≤ 0.35 / 0.25 / 0.5, ≤ 20 min training.
Usage: ``nice -n 5 python bench/distill.py [--students mobilenet_v1_0.5 ...] [--steps N] [--install-dir DIR]``
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from edgevision.catalog import fetch_entry, load_catalog
from edgevision.distill import GateFailed
from edgevision.distill.pipeline import DistillOptions, distill
from edgevision.distill.students import SPECS
from edgevision.distill.train import TrainSettings

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("EDGEVISION_SHARED", REPO.parent / "shared"))
VIDEO = SHARED / "media" / "video"
TARGET_RATIO = {"mobilenet_v1_0.5": 0.35, "mobilenet_v1_0.25": 0.25, "mobilenet_v3_small": 0.5}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--students", nargs="+", default=["mobilenet_v1_0.5", "mobilenet_v1_0.25", "mobilenet_v3_small"]
    )
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--install-dir", type=Path, help="models directory to install into (default: a temp dir)")
    args = ap.parse_args()
    models = args.install_dir or Path(tempfile.mkdtemp(prefix="distill-bench-"))
    cat = load_catalog()
    needed = ["ssd_mobilenet_v1_coco_quant"] + [
        SPECS[s].backbone.removesuffix(".tflite") for s in args.students
    ]
    for n in needed:
        for e in cat.files_for(n):
            fetch_entry(e, models, mirror=str(SHARED / "models"))
    rows = []
    for student in args.students:
        opts = DistillOptions(
            student=student,
            videos=[VIDEO / "supervision_walking.mp4", VIDEO / "frigate_test_motion_video-1.mp4"],
            negatives=[VIDEO / "frigate_test_motion_video-3.mp4"],
            models_dir=models,
            data_dir=models / "data",
            val_fraction=100 / 341,  # walking: frames 0-240 train, 241-340 validate
            negative_every=1,
            force=True,
            settings=TrainSettings(steps=args.steps, batch=args.batch, lr=args.lr),
        )
        t0 = time.monotonic()
        try:
            res = distill(opts)
            installed = "yes"
        except GateFailed as exc:
            res = exc.result
            installed = "no: " + "; ".join(res.report.reasons) if res else str(exc)
        wall = (time.monotonic() - t0) / 60
        r = res.report
        rows.append((student, r, res.train_minutes, wall, installed))
        print(
            f"{student}: F1 {r.agreement.f1:.3f} IoU {r.agreement.iou_median:.3f} thr {r.threshold:.2f} "
            f"neg {r.negative_person_frames}/{r.negative_frames} ratio {r.latency_ratio:.2f} "
            f"({r.student_ms:.2f}/{r.teacher_ms:.2f} ms) train {res.train_minutes:.1f} min, wall {wall:.1f} min",
            flush=True,
        )
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f} (2 cores; other work shares the machine)\n")
    print("| student | box F1 | matched IoU median | threshold | person frames on negative clip | invoke ratio "
          "(student / teacher ms) | target ratio | training min | installed |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for student, r, minutes, _wall, installed in rows:
        print(
            f"| {student} | {r.agreement.f1:.3f} | {r.agreement.iou_median:.3f} | {r.threshold:.2f} | "
            f"{r.negative_person_frames}/{r.negative_frames} | {r.latency_ratio:.2f} "
            f"({r.student_ms:.1f} / {r.teacher_ms:.1f}) | ≤ {TARGET_RATIO.get(student, 1.0)} | {minutes:.1f} | "
            f"{installed} |"
        )


if __name__ == "__main__":
    main()
