"""``edgevision models distill``: make a narrow / V3 student from the catalog SSD on your own footage.

Exit codes: 0 installed; 2 usage (unknown student, bad option, name taken); 65 no person anywhere in the data;
66 no frames / unreadable video or folder; 69 the ``train`` extra (TensorFlow) is missing; 73 the student failed
the gate (nothing installed); 78 teacher or backbone model error (not an SSD, not installed); 130 interrupted
(nothing installed).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from edgevision.distill.gate import GateReport

STUDENT_CHOICES = ("mobilenet_v1_0.75", "mobilenet_v1_0.5", "mobilenet_v1_0.25", "mobilenet_v3_small")


def register(msub: argparse._SubParsersAction) -> None:
    """Add ``distill`` to the ``models`` sub-commands."""
    q = msub.add_parser(
        "distill",
        help="distil a narrow or V3 student detector from the catalog SSD on your footage",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    q.add_argument("--student", required=True, help=f"one of: {', '.join(STUDENT_CHOICES)}")
    q.add_argument("--video", type=Path, action="append", default=[], metavar="FILE", help="training footage")
    q.add_argument("--images", type=Path, metavar="DIR", help="a folder of images (time order: mtime, name)")
    q.add_argument(
        "--events",
        action="store_true",
        help="also use the recorded event clips in the data dir: the events and the pre-/post-roll between them",
    )
    q.add_argument(
        "--between-every",
        type=int,
        default=3,
        metavar="N",
        help="with --events: use every N-th frame between events (pre-/post-roll; default 3)",
    )
    q.add_argument(
        "--negative",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="footage with no person: the student must find none there (checked by the gate, not trained on)",
    )
    q.add_argument("--teacher", default="ssd_mobilenet_v1_coco_quant", help="catalog SSD to learn from")
    q.add_argument(
        "--init",
        choices=("imagenet", "teacher"),
        default="imagenet",
        help="where the student's weights start: the ImageNet classifier of its width (default), or the teacher "
        "itself, pruned to the student's width during training (MobileNet V1 students; best at alpha 0.75, the "
        "teacher's width: narrower ones measured worse than from ImageNet, and need mobilenet_v1_0.75_192_quant "
        "fetched)",
    )
    q.add_argument("--name", help="installed name (default: ssd_<student>_distilled)")
    q.add_argument("--size", type=int, default=300, help="input side in px (default 300, the teacher's)")
    # the defaults are TrainSettings' (edgevision.distill.train, not imported here: it is only needed to run)
    q.add_argument("--steps", type=int, default=700, help="training steps (default 700)")
    q.add_argument("--batch", type=int, default=8, help="frames per step (default 8)")
    q.add_argument("--lr", type=float, default=1e-3, help="peak learning rate, cosine decay (default 0.001)")
    q.add_argument("--temperature", type=float, default=2.0, help="distillation temperature (default 2)")
    q.add_argument(
        "--augment",
        type=int,
        default=0,
        help="jittered copies of each training frame, teacher-labelled (default 0)",
    )
    q.add_argument(
        "--train-stem",
        action="store_true",
        help="train the backbone's stem (the layers up to stride 8) too, instead of keeping it and caching its "
        "features: slower; with --init teacher the stem is then pruned gradually too, not at once (recorded in "
        "the manifest)",
    )
    q.add_argument("--every", type=int, default=1, help="use every N-th frame of each source (default 1)")
    q.add_argument("--max-frames", type=int, help="at most this many frames per source")
    q.add_argument("--negative-every", type=int, default=2, help="use every N-th negative frame (default 2)")
    q.add_argument(
        "--val-fraction",
        type=float,
        default=0.3,
        help="the later part of each source that validates (default 0.3)",
    )
    q.add_argument("--teacher-threshold", type=float, default=0.5, help="teacher's person score threshold")
    q.add_argument(
        "--min-f1",
        type=float,
        default=0.9,
        help="the gate's person box F1 bar against the teacher (default 0.9); a lower bar trades accuracy for "
        "speed knowingly and is recorded in the manifest (models info shows it); the other rules stay",
    )
    q.add_argument("--threads", type=int, default=2, help="interpreter threads for teacher and gate")
    q.add_argument("--force", action="store_true", help="replace an installed student of the same name")
    q.add_argument("--json", action="store_true", help="print the result as JSON; no progress output")
    q.add_argument("--config", type=Path, help="config file (for models.dir and recorder.data_dir)")
    q.add_argument("--models-dir", type=Path, help="installed models directory (default: models.dir)")
    q.add_argument("--data-dir", type=Path, help="data directory with recorded events, for --events")
    q.set_defaults(func=cmd_distill)


class TerminalProgress:
    """One updating status line on a terminal (frames, step, loss, ETA); silent elsewhere."""

    def __init__(self, stream: TextIO, enabled: bool) -> None:
        self.stream = stream
        self.enabled = enabled and stream.isatty()

    def __call__(self, p: object) -> None:
        if not self.enabled:
            return
        stage = getattr(p, "stage", "")
        done, total = getattr(p, "done", 0), getattr(p, "total", 0)
        loss, eta = getattr(p, "loss", None), getattr(p, "eta_s", None)
        unit = {"teacher": "frames", "features": "frames", "train": "steps"}.get(stage, "")
        line = f"{stage:<9} {done}/{total} {unit}"
        if loss is not None:
            line += f"  loss {loss:.4f}"
        if eta is not None:
            line += f"  ETA {int(eta) // 60}:{int(eta) % 60:02d}"
        self.stream.write("\r" + line.ljust(72))
        if done >= total:
            self.stream.write("\n")
        self.stream.flush()


def f1_only(report: GateReport) -> bool:
    """Whether the box F1 bar is the only rule a refused student failed (then ``--min-f1`` would install it)."""
    return bool(report.reasons) and all(r.startswith("person box F1") for r in report.reasons)


def cmd_distill(args: argparse.Namespace) -> int:
    from edgevision.distill import check_tf_installed
    from edgevision.distill.students import spec_for
    from edgevision.errors import UsageError

    spec_for(args.student)  # unknown student → usage error before anything else
    for flag in ("size", "steps", "batch", "every", "negative_every", "between_every", "threads"):
        if getattr(args, flag) < 1:
            raise UsageError(f"--{flag.replace('_', '-')} must be at least 1")
    if args.size < 64 or args.size % 2:
        raise UsageError("--size must be an even number of pixels ≥ 64")
    if not 0.5 <= args.min_f1 <= 1.0:
        raise UsageError(f"--min-f1 {args.min_f1}: give a box F1 between 0.5 and 1.0")
    if not 0.0 < args.teacher_threshold < 1.0:  # its logit, log(t / (1 - t)), is taken after the teacher ran
        raise UsageError(f"--teacher-threshold {args.teacher_threshold:g}: give a score between 0 and 1")
    for flag in ("lr", "temperature"):
        if not 0.0 < getattr(args, flag) < math.inf:
            raise UsageError(f"--{flag} {getattr(args, flag):g}: must be a positive number")
    if args.augment < 0:
        raise UsageError(f"--augment {args.augment}: must be 0 or more")
    if args.max_frames is not None and args.max_frames < 1:
        raise UsageError(f"--max-frames {args.max_frames}: must be at least 1")
    if not 0.0 < args.val_fraction < 1.0:  # checked again by the split, but only after every frame was read
        raise UsageError(f"--val-fraction {args.val_fraction:g}: give a share between 0 and 1")
    # Past the arguments, before any work (and before the imports below, which load LiteRT): without the train
    # extra, exit 69 at once rather than after reading the config, the models and the frames.
    check_tf_installed()
    # Imported here: the distill package is only needed by this command (and TensorFlow only inside it).
    from edgevision.config import Kernels, load_config
    from edgevision.distill import GateFailed
    from edgevision.distill.gate import F1_MIN
    from edgevision.distill.pipeline import DistillOptions, distill
    from edgevision.distill.prune import StudentInit
    from edgevision.distill.train import settings_from_args
    from edgevision.paths import data_dir, derived_dir, models_dir

    cfg = load_config(
        args.config,
        {
            "models.dir": str(args.models_dir) if args.models_dir else None,
            "recorder.data_dir": str(args.data_dir) if args.data_dir else None,
        },
    )
    opts = DistillOptions(
        student=args.student,
        videos=list(args.video),
        models_dir=models_dir(cfg),
        data_dir=data_dir(cfg),
        images=args.images,
        events=args.events,
        negatives=list(args.negative),
        teacher=args.teacher,
        name=args.name,
        size=args.size,
        every=args.every,
        max_frames=args.max_frames,
        negative_every=args.negative_every,
        between_every=args.between_every,
        val_fraction=args.val_fraction,
        teacher_threshold=args.teacher_threshold,
        f1_min=args.min_f1,
        init=StudentInit(args.init),
        threads=args.threads,
        teacher_int8=cfg.runtime.kernels is Kernels.INT8,
        derived_dir=derived_dir(cfg),
        force=args.force,
        settings=settings_from_args(args),
    )
    progress = TerminalProgress(sys.stderr, enabled=not args.json)
    try:
        result = distill(opts, progress)
    except GateFailed as exc:
        if args.json and exc.result is not None:
            print(json.dumps({"installed": False, "name": exc.result.name, **exc.result.report.to_dict()}))
        elif exc.result is not None and f1_only(exc.result.report):
            f1 = exc.result.report.agreement.f1
            print(
                f"edgevision: only the box F1 bar failed; to install this student at F1 {f1:.3f} anyway, run "
                f"again with --min-f1 {math.floor(f1 * 100) / 100:.2f} (the manifest records the lowered bar)",
                file=sys.stderr,
            )
        raise
    m = result.manifest
    assert m is not None
    if args.json:
        print(json.dumps({"installed": True, "path": str(result.path), **m.model_dump(by_alias=True)}))
        return 0
    v = result.report
    a = v.agreement
    print(f"installed {m.name}: {result.path}")
    if v.f1_min < F1_MIN:
        print(f"  under a lowered gate: box F1 bar {v.f1_min} (--min-f1; the default is {F1_MIN})")
    print(
        f"  person box F1 {a.f1:.3f} (top-10 F1 {v.top10.f1:.3f}, IoU median {a.iou_median:.3f}) "
        f"against {m.teacher.name}; "
        f"threshold {m.threshold:.2f}; person on {v.negative_person_frames}/{v.negative_frames} negative frames"
    )
    print(
        f"  invoke {v.student_ms:.2f} ms vs teacher {v.teacher_ms:.2f} ms ({v.latency_ratio:.2f}x); "
        f"trained {result.train_minutes:.1f} min"
    )
    print(f"  run it: edgevision run --model {m.name} ...")
    return 0
