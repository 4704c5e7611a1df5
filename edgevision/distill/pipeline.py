"""One distillation, end to end: inputs checked → data → teacher targets → train → export → gate → install.

Nothing is written to the models directory until the gate has passed; the install itself is atomic
(:func:`edgevision.catalog.local.install_local_model`), so Ctrl-C or a failure at any step leaves no student.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgevision.catalog.entries import Architecture, load_catalog
from edgevision.catalog.local import LocalModel, TeacherRef, install_local_model, list_local_models
from edgevision.catalog.resolve import resolve_model
from edgevision.distill import GateFailed, check_tf_installed, require_tf
from edgevision.distill.data import (
    Dataset,
    Source,
    augment,
    read_events,
    read_images,
    read_video,
    split_sources,
)
from edgevision.distill.gate import F1_MIN, PERSON, FrameDets, GateReport, judge
from edgevision.distill.prune import StudentInit, check_applicable, init_from_teacher, refit_frames
from edgevision.distill.students import StudentSpec, build_student, spec_for
from edgevision.distill.teacher import Teacher
from edgevision.distill.train import Progress, TrainSettings, teacher_targets, train
from edgevision.errors import EdgeVisionError, InputError, ModelError, UsageError
from edgevision.fsutil import sha256_file
from edgevision.inference import adapter
from edgevision.inference.requant_cache import int8_copy

log = logging.getLogger(__name__)

DEFAULT_TEACHER = "ssd_mobilenet_v1_coco_quant"
EXIT_NO_PERSON = 65  # EX_DATAERR: the data has nothing to learn from


class NoPersonInData(EdgeVisionError):
    """The teacher finds no person anywhere in the training frames."""

    exit_code = EXIT_NO_PERSON


@dataclass
class DistillOptions:
    """Everything ``edgevision models distill`` takes."""

    student: str
    videos: list[Path]
    models_dir: Path
    data_dir: Path
    images: Path | None = None
    events: bool = False
    negatives: list[Path] = field(default_factory=list)
    teacher: str = DEFAULT_TEACHER
    name: str | None = None
    size: int = 300
    every: int = 1
    max_frames: int | None = None  # per source, after sampling
    negative_every: int = 2
    between_every: int = 3  # --events: every N-th frame of the pre-/post-roll between events
    val_fraction: float = 0.3
    teacher_threshold: float = 0.5
    f1_min: float = F1_MIN  # the gate's box F1 bar (--min-f1); recorded in the manifest's validation
    init: StudentInit = StudentInit.IMAGENET  # --init: where the student's weights start
    threads: int = 2
    # the teacher is timed the way `edgevision run` runs it: through its int8 copy (runtime.kernels: int8)
    # kept in the derived dir (scheduler.derived_dir; None: <models dir>/derived), or as shipped
    teacher_int8: bool = True
    derived_dir: Path | None = None
    force: bool = False
    gate: bool = True  # False only from Python (tests, experiments): installs whatever the gate says
    settings: TrainSettings = field(default_factory=TrainSettings)


@dataclass
class DistillResult:
    name: str
    report: GateReport
    manifest: LocalModel | None
    path: Path | None
    train_minutes: float
    model_bytes: bytes


def _resolve_teacher(opts: DistillOptions) -> tuple[Path, Path, Any]:
    """(catalog teacher file, teacher at the student's input size, catalog entry)."""
    cat = load_catalog()
    entry = cat.model(opts.teacher)
    if entry.task != "detect" or not entry.architecture.postprocess:
        raise ModelError(
            f"teacher '{opts.teacher}' is not an SSD detector with TFLite_Detection_PostProcess "
            f"(task {entry.task}); use {DEFAULT_TEACHER}"
        )
    if entry.device != "cpu":
        raise ModelError(f"teacher '{opts.teacher}' is compiled for the Edge TPU; use its CPU twin")
    res = resolve_model(opts.teacher, opts.models_dir, cat)
    Teacher(res.path, threads=1)  # the structural check: one postprocess op, raw inputs readable
    native = entry.architecture.input[0]
    if opts.size == native:
        return res.path, res.path, entry
    from edgevision.scheduler.derive import ensure_derived

    return res.path, ensure_derived(res.path, opts.size, opts.models_dir / "derived"), entry


def _resolve_backbone(spec: StudentSpec, models_dir: Path) -> Path:
    """The ImageNet classifier the student's backbone starts from (installed and sha256-verified)."""
    from edgevision.catalog.fetch import verify_installed

    entry = load_catalog().model(spec.backbone.removesuffix(".tflite"))
    ok, msg = verify_installed(entry, models_dir)
    if not ok:
        hint = (
            f"run: edgevision models fetch {entry.name}"
            if msg == "not installed"
            else "re-fetch it with --force"
        )
        raise ModelError(f"backbone '{entry.name}' in {models_dir}: {msg}; {hint}")
    return models_dir / entry.file


def load_data(opts: DistillOptions) -> tuple[Dataset, list[np.ndarray]]:
    """Training / validation frames and negative frames."""
    size = opts.size
    last = None if opts.max_frames is None else opts.max_frames * opts.every - 1
    sources: list[Source] = [read_video(v, size, opts.every, 0, last) for v in opts.videos]
    if opts.images is not None:
        sources.append(read_images(opts.images, size, opts.every, opts.max_frames))
    if opts.events:
        recorded = read_events(opts.data_dir, size, opts.every, opts.between_every)
        if not recorded[0].files:
            raise InputError(f"--events: no recorded event clip in {opts.data_dir}")
        for src in recorded:
            if opts.max_frames is not None:
                del src.frames[opts.max_frames :], src.indexes[opts.max_frames :]
        sources.extend(recorded)
    sources = [s for s in sources if s.frames]
    if not sources:
        raise InputError("no frames: give --video FILE, --images DIR or --events with recorded clips")
    negatives: list[np.ndarray] = []
    for n in opts.negatives:
        negatives.extend(read_video(n, size, opts.negative_every, kind="negative").frames)
    return split_sources(sources, size, opts.val_fraction), negatives


def detect_frames(model: Teacher, frames: list[np.ndarray] | np.ndarray) -> list[FrameDets]:
    """Each frame's detections, decoded from the model's raw outputs uncapped (what the gate judges)."""
    return [model.detections(model.run(f)) for f in frames]


def invoke_ms(models: list[bytes | Path], threads: int, rounds: int = 5, per_round: int = 10) -> list[float]:
    """Median invoke time of each model, measured interleaved (round-robin) so load changes hit all alike."""
    its = []
    for m in models:
        it = adapter.load(m if isinstance(m, bytes) else str(m), threads)
        adapter.invoke_blank(it, fill=128)
        for _ in range(2):
            adapter.invoke(it)
        its.append(it)
    samples: list[list[float]] = [[] for _ in its]
    for _ in range(rounds):
        for k, it in enumerate(its):
            for _ in range(per_round):
                t0 = time.perf_counter()
                adapter.invoke(it)
                samples[k].append((time.perf_counter() - t0) * 1e3)
    return [float(np.median(s)) for s in samples]


def distill(opts: DistillOptions, progress: Callable[[Progress], None] | None = None) -> DistillResult:
    """Run one distillation; installs the student only when the gate passes (raises :class:`GateFailed`)."""
    check_tf_installed()  # a missing train extra is said before any work (TensorFlow is imported later)
    spec = spec_for(opts.student)
    name = opts.name or f"ssd_{spec.key}_distilled"
    if not name.replace("_", "").replace("-", "").replace(".", "").isalnum():
        raise UsageError(f"--name '{name}': use letters, digits, '_', '-' and '.'")
    if name in load_catalog().models:
        raise UsageError(f"--name '{name}' is a catalog model; choose another name")
    if name in list_local_models(opts.models_dir) and not opts.force:
        raise UsageError(f"a local model '{name}' is installed already; use --force to replace it")
    if not opts.videos and opts.images is None and not opts.events:
        raise InputError("no frames: give --video FILE, --images DIR or --events")
    teacher_file, teacher_path, teacher_entry = _resolve_teacher(opts)
    if opts.init is StudentInit.TEACHER:
        check_applicable(spec, teacher_path)
        if spec.alpha < WIDE.alpha:  # the wide copy's layout: missing → exit 78 before any work
            _resolve_backbone(WIDE, opts.models_dir)
            log.warning(
                "--init teacher below the teacher's width measured worse than the default --init imagenet "
                "(box F1 at alpha 0.5: 0.78-0.80 against 0.80-0.84; at alpha 0.25: 0.57 against 0.77-0.81)"
            )
    backbone = _resolve_backbone(spec, opts.models_dir)
    data, negatives = load_data(opts)
    teacher = Teacher(teacher_path, threads=opts.threads)

    train_frames = data.train
    if opts.settings.augment:
        train_frames = np.concatenate(
            [data.train, augment(data.train, opts.settings.augment, opts.settings.seed)]
        )
    targets = teacher_targets(teacher, train_frames, progress)
    if float(targets.logits.max()) < float(np.log(opts.teacher_threshold / (1 - opts.teacher_threshold))):
        raise NoPersonInData(
            f"the teacher finds no person (score ≥ {opts.teacher_threshold}) in any of the {len(data.train)} "
            "training frames: nothing to learn; give footage with people in it"
        )
    require_tf()  # after every input check, so bad inputs fail fast (TensorFlow takes seconds to import)
    flipped = teacher_targets(teacher, np.ascontiguousarray(train_frames[:, :, ::-1]), progress)
    val_teacher = detect_frames(teacher, data.val)

    model = build_student(spec, backbone, opts.size)
    t0 = time.monotonic()
    if opts.init is StudentInit.TEACHER:
        history, init = _train_from_teacher(
            model, spec, teacher, teacher_path, opts, data.train, (train_frames, targets, flipped), progress
        )
    else:
        history = train(model, train_frames, targets, flipped, opts.settings, progress)
        init = {"method": "imagenet", "backbone": spec.backbone}
    train_minutes = (time.monotonic() - t0) / 60.0

    from edgevision.distill.export import (
        check_runs_in_subprocess,
        graft_postprocess,
        input_is_pixels,
        quantize_in_subprocess,
    )
    from edgevision.distill.replica import read_graph

    if progress:
        progress(Progress("quantize", 0, 1, None, None))
    raw = quantize_in_subprocess(model, spec.key, backbone, opts.size, data.train)
    g = read_graph(teacher_path)
    anchor_t = g.tensor(teacher.spec.anchors_input)
    anchors_q = np.asarray(g.model.buffers[anchor_t.buffer].data, np.uint8).reshape(-1, 4)
    a_scale, a_zero, _ = g.quant(teacher.spec.anchors_input)
    model_bytes = graft_postprocess(raw, anchors_q, (float(a_scale[0]), int(a_zero[0])), teacher.options)
    check_runs_in_subprocess(model_bytes)  # before this process loads it: LiteRT has aborted on one
    if not input_is_pixels(model_bytes):
        raise ModelError("quantized student does not take raw pixels (input scale 1, zero point 0)")

    if progress:
        progress(Progress("gate", 0, 1, None, None))
    # the installed file itself, read like the teacher: its op's raw inputs, decoded uncapped
    exported = Teacher(model_bytes, threads=opts.threads)
    val_student = detect_frames(exported, data.val)
    neg_student = detect_frames(exported, negatives)
    # the teacher as `edgevision run` runs it: through its checked int8 per-channel copy when it has one (the
    # catalog SSDs do, about 0.7x the file's time): a student no faster than that is no rung worth having
    derived = opts.derived_dir or opts.models_dir / "derived"
    teacher_copy = int8_copy(teacher_path, derived) if opts.teacher_int8 else None
    timed = invoke_ms([model_bytes, teacher_path, *([teacher_copy] if teacher_copy else [])], opts.threads)
    student_ms, teacher_file_ms = timed[0], timed[1]
    teacher_ms = min(timed[1:])
    report = judge(
        val_teacher,
        val_student,
        neg_student,
        opts.teacher_threshold,
        student_ms,
        teacher_ms,
        f1_min=opts.f1_min,
    )
    result = DistillResult(name, report, None, None, train_minutes, model_bytes)
    if not report.passed and opts.gate:
        exc = GateFailed(
            f"student '{name}' not installed: " + "; ".join(report.reasons) + f" ({_figures(report)})"
        )
        exc.result = result
        raise exc

    manifest = LocalModel.model_validate(
        {
            "schema": 1,
            "name": name,
            "file": f"{name}.tflite",
            "size": len(model_bytes),
            "sha256": hashlib.sha256(model_bytes).hexdigest(),
            "task": "detect",
            "architecture": Architecture(
                family=spec.family,
                alpha=spec.alpha,
                input=(opts.size, opts.size),
                quantization="int8",
                head=spec.head,
                postprocess=True,
            ),
            "labels": teacher_entry.labels,
            "threshold": report.threshold,
            "teacher": TeacherRef(name=opts.teacher, sha256=sha256_file(teacher_file)),
            "data": {
                **data.describe(),
                "negatives": [str(n) for n in opts.negatives],
                "negative_frames": len(negatives),
                "teacher_threshold": opts.teacher_threshold,
            },
            "validation": report.to_dict(),
            "latency": {
                "student_invoke_ms": round(student_ms, 3),
                "teacher_invoke_ms": round(teacher_ms, 3),
                "teacher_kernels": "int8 copy" if teacher_copy else "as shipped",
                "teacher_file_invoke_ms": round(teacher_file_ms, 3),
                "ratio": round(report.latency_ratio, 3),
                "ratio_to_teacher_file": round(student_ms / teacher_file_ms, 3),
                "threads": opts.threads,
                "size": opts.size,
            },
            "training": {
                "steps": opts.settings.steps,
                "batch": opts.settings.batch,
                "lr": opts.settings.lr,
                "temperature": opts.settings.temperature,
                "person_weight": opts.settings.person_weight,
                "augment": opts.settings.augment,
                "train_stem": not opts.settings.freeze_stem,
                "final_loss": round(float(np.mean(history[-20:])), 5),
                "minutes": round(train_minutes, 2),
                "backbone": spec.backbone,
                "init": init,
            },
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
    )
    path = install_local_model(opts.models_dir, manifest, model_bytes)
    result.manifest, result.path = manifest, path
    return result


WIDE = spec_for("mobilenet_v1_0.75")  # the teacher's width: where gradual pruning starts


def _train_from_teacher(
    model: Any,
    spec: StudentSpec,
    teacher: Teacher,
    teacher_path: Path,
    opts: DistillOptions,
    frames: np.ndarray,
    data: tuple[np.ndarray, Any, Any],
    progress: Callable[[Progress], None] | None,
) -> tuple[list[float], dict[str, Any]]:
    """``--init teacher``: train ``model`` from the teacher itself; returns the loss history and how it started.

    At the teacher's width the student is the teacher (nothing pruned) and trains from there. A narrower one is
    grown out of it (:mod:`edgevision.distill.gradual`): a copy of the teacher at its own width trains while it is
    pruned to the student's widths, and its live channels end in ``model``."""
    if progress:
        progress(Progress("init", 0, 1, None, None))
    columns, person = teacher.columns, teacher.label_offset + PERSON
    if spec.alpha >= WIDE.alpha:  # the teacher's width: nothing to prune or refit, the student is the teacher
        pruned = init_from_teacher(model, spec, teacher_path, columns, person)
        return train(model, *data, opts.settings, progress), pruned.describe()
    from edgevision.distill.gradual import GradualPruner, stem_ops, to_narrow

    wide = build_student(WIDE, _resolve_backbone(WIDE, opts.models_dir), opts.size)
    init_from_teacher(wide, WIDE, teacher_path, columns, person)
    pruner = GradualPruner(wide, model, opts.settings.steps)
    stem = "the stem pruned and trained gradually too"
    if (
        opts.settings.freeze_stem
    ):  # its features are cached once: prune and refit it now, in the narrow student
        sample, stem_end = refit_frames(frames), stem_ops(model)
        seed = opts.settings.seed
        pruned = init_from_teacher(
            model, spec, teacher_path, columns, person, sample, seed, refit_ops=stem_end
        )
        pruner.seed_stem(pruned)
        stem = "the stem pruned at once and refitted"
    history = train(wide, *data, opts.settings, progress, on_step=pruner.on_step)
    pruner.finish()
    to_narrow(pruner)
    return history, {
        "method": f"teacher, gradual L1 channel pruning under distillation ({stem})",
        **pruner.describe(),
    }


def _figures(r: GateReport) -> str:
    a = r.agreement
    return (
        f"F1 {a.f1:.3f} (top-10 F1 {r.top10.f1:.3f}), IoU median {a.iou_median:.3f}, threshold {r.threshold:.2f}, "
        f"negatives {r.negative_person_frames}/{r.negative_frames}, invoke {r.student_ms:.2f}/{r.teacher_ms:.2f} ms"
    )
