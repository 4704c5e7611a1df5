"""`models distill --init teacher`: a V1 student started from the teacher, pruned to its width and refitted.

Needs the ``train`` extra (TensorFlow); skipped where it is not installed.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SHARED

tf = pytest.importorskip("tensorflow")

pytestmark = pytest.mark.timeout(1200)

from edgevision.distill.data import read_video  # noqa: E402
from edgevision.distill.gate import PERSON  # noqa: E402
from edgevision.distill.prune import _teacher_layers, check_applicable, init_from_teacher  # noqa: E402
from edgevision.distill.replica import read_graph  # noqa: E402
from edgevision.distill.students import SPECS, build_student  # noqa: E402
from edgevision.distill.teacher import Teacher, person_logit  # noqa: E402
from edgevision.errors import UsageError  # noqa: E402

MODELS = SHARED / "models"
WALKING = SHARED / "media" / "video" / "supervision_walking.mp4"
TEACHER = MODELS / "ssd_mobilenet_v1_1.0_coco_quant_detect.tflite"
BACKBONE_ANCHORS = 19 * 19 * 3 + 10 * 10 * 6  # the two maps whose predictors come from the teacher


@pytest.fixture(scope="module")
def teacher() -> Teacher:
    return Teacher(TEACHER, threads=1)


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    """Walking frames 0, 20, ... 300 at 300 px: the first 12 to refit on, the rest held out."""
    return np.stack(read_video(WALKING, 300, 20, 0, 319).frames)


def _agreement(model, teacher: Teacher, frame: np.ndarray) -> tuple[float, float, float]:  # type: ignore[no-untyped-def]
    """(person-logit correlation, mean |Δ logit|, mean |Δ box encoding|) over the backbone maps' anchors."""
    out = teacher.run(frame)
    t_logit, t_box = person_logit(out.person)[:BACKBONE_ANCHORS], out.boxes[:BACKBONE_ANCHORS]
    s_box, s_logit = model(frame[np.newaxis].astype(np.float32), training=False)
    s_logit = np.asarray(s_logit)[0, :BACKBONE_ANCHORS, 0]
    s_box = np.asarray(s_box)[0, :BACKBONE_ANCHORS]
    corr = float(np.corrcoef(t_logit, s_logit)[0, 1])
    return corr, float(np.abs(t_logit - s_logit).mean()), float(np.abs(t_box - s_box).mean())


def test_at_the_teachers_width_nothing_is_pruned_and_the_student_is_the_teacher(
    teacher: Teacher, frames: np.ndarray
) -> None:
    spec = SPECS["mobilenet_v1_0.75"]
    model = build_student(spec, MODELS / spec.backbone, 300)
    report = init_from_teacher(model, spec, TEACHER, teacher.columns, teacher.label_offset + PERSON)
    assert all(k == t for k, t in report.kept) and len(report.kept) == 27
    assert report.heads == ("head0_box", "head0_cls", "head1_box", "head1_cls")
    for frame in frames[12:15]:
        corr, d_logit, d_box = _agreement(model, teacher, frame)
        # the float replica against the uint8 teacher: quantization noise only
        assert corr > 0.99 and d_logit < 0.15 and d_box < 0.1, (corr, d_logit, d_box)


def test_refit_recovers_what_pruning_loses(teacher: Teacher, frames: np.ndarray) -> None:
    spec = SPECS["mobilenet_v1_0.25"]
    args = (spec, TEACHER, teacher.columns, teacher.label_offset + PERSON)
    pruned = build_student(spec, MODELS / spec.backbone, 300)
    plain = init_from_teacher(pruned, *args)
    refitted = build_student(spec, MODELS / spec.backbone, 300)
    report = init_from_teacher(refitted, *args, frames=frames[:12])
    assert plain.residual is None and report.residual is not None and report.residual < 1.0
    kept, total = zip(*report.kept, strict=True)
    assert sum(kept) < 0.4 * sum(total)  # two thirds of the teacher's channels are gone
    for frame in frames[12:15]:  # frames the refit never saw
        corr_plain, _, _ = _agreement(pruned, teacher, frame)
        corr, _, _ = _agreement(refitted, teacher, frame)
        assert corr > 0.75 and corr > corr_plain + 0.4, (corr, corr_plain)
    assert report.describe()["method"].endswith("least-squares refit")


def test_each_convolution_keeps_the_teachers_channels_of_largest_l1_norm(teacher: Teacher) -> None:
    """Pruning keeps, per full convolution, the output channels with the largest L1 weight norm, and the
    student's kernel is exactly those channels' weights (on the input channels the layer before kept)."""
    spec = SPECS["mobilenet_v1_0.5"]
    model = build_student(spec, MODELS / spec.backbone, 300)
    report = init_from_teacher(model, spec, TEACHER, teacher.columns, teacher.label_offset + PERSON)
    layers = _teacher_layers(read_graph(TEACHER))
    by_name = {layer.name: layer for layer in model.layers}
    keep_in = np.arange(3)
    convs = 0
    for i, ((kind, w, _, _, _), keep) in enumerate(zip(layers, report.channels, strict=False)):
        if kind == "CONV_2D":
            convs += 1
            norms = np.abs(w).reshape(w.shape[0], -1).sum(axis=1)
            dropped = np.setdiff1d(np.arange(w.shape[0]), keep)
            assert len(dropped) > 0 and norms[keep].min() >= norms[dropped].max(), i
            kernel = by_name[f"backbone_{i}_conv_2d"].get_weights()[0]  # Keras [kh, kw, in, out]
            np.testing.assert_array_equal(kernel, w[keep][..., keep_in].transpose(1, 2, 3, 0))
        keep_in = keep
    assert convs == 14  # the stem and 13 pointwise layers


@pytest.mark.parametrize(
    ("student", "teacher_file", "message"),
    [
        ("mobilenet_v3_small", "ssd_mobilenet_v1_1.0_coco_quant_detect.tflite", "only the MobileNet V1"),
        ("mobilenet_v1_0.5", "ssd_mobilenet_v2_coco_quant_postprocess.tflite", "not MobileNet V1"),
    ],
)
def test_init_teacher_refuses_what_cannot_be_pruned(student: str, teacher_file: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        check_applicable(SPECS[student], MODELS / teacher_file)


def test_gradual_pruning_ends_in_a_narrow_student_that_computes_the_masked_wide_one(
    teacher: Teacher, frames: np.ndarray
) -> None:
    from edgevision.distill.gradual import GradualPruner, stem_ops, to_narrow

    wide_spec, spec = SPECS["mobilenet_v1_0.75"], SPECS["mobilenet_v1_0.5"]
    columns, person = teacher.columns, teacher.label_offset + PERSON
    wide = build_student(wide_spec, MODELS / wide_spec.backbone, 300)
    init_from_teacher(wide, wide_spec, TEACHER, columns, person)
    narrow = build_student(spec, MODELS / spec.backbone, 300)
    report = init_from_teacher(
        narrow, spec, TEACHER, columns, person, frames=frames[:8], refit_ops=stem_ops(narrow)
    )
    assert (
        report.residual is not None
    )  # the stem was refitted (and only the stem: the wide copy keeps the rest)
    pruner = GradualPruner(wide, narrow, steps=40, rounds=4)
    pruner.seed_stem(report)
    stem_groups = (stem_ops(wide) + 1) // 2
    assert all(g.frozen and int(g.alive.sum()) == g.target for g in pruner.groups[:stem_groups])
    alive = [int(g.alive.sum()) for g in pruner.groups[stem_groups:]]
    assert all(a == g.alive.size for a, g in zip(alive, pruner.groups[stem_groups:], strict=True))
    shrinking = []
    rng = np.random.default_rng(0)
    for step in range(40):
        for g in pruner.groups:  # what an optimizer step does: every weight moves, dead ones included
            g.conv.kernel.assign(np.asarray(g.conv.kernel) + rng.normal(0, 1e-3, g.conv.kernel.shape))
        pruner.on_step(step)
        for g in pruner.groups:  # ... and the pruner puts the dropped channels back to zero
            assert not np.asarray(g.conv.kernel)[..., ~g.alive].any(), (step, g.conv.name)
        shrinking.append(sum(int(g.alive.sum()) for g in pruner.groups))
    assert shrinking == sorted(shrinking, reverse=True) and len(set(shrinking)) == 5  # four rounds, then done
    pruner.finish()
    to_narrow(pruner)
    x = frames[12:14].astype(np.float32)
    for w, n in zip(wide(x, training=False), narrow(x, training=False), strict=True):
        np.testing.assert_allclose(np.asarray(n), np.asarray(w), atol=1e-4)
