"""Dense distillation, anchor by anchor, against the teacher's raw outputs.

Loss per frame (A anchors, teacher person score ``p`` and logit ``z_t``, student logit ``z_s``, encodings
``e_t``/``e_s``):

* class: ``T² · KL(σ(z_t / T) ‖ σ(z_s / T))`` (binary, per anchor) — temperature-softened targets (the optimum is still ``z_s = z_t``,
  so scores stay calibrated to the teacher's); anchors are weighted ``1 + person_weight · p`` and the sum is
  normalised by the teacher's person mass, so the few person anchors are not drowned by background;
* box: Huber(``e_s - e_t``) weighted by ``p`` (the teacher's confidence that the anchor holds a person);
* optional: squared logit error ``(z_s - z_t)²`` weighted by ``p`` (``logit_weight``) or by ``exp(-z_t²/2)``, i.e.
  on anchors the teacher scores near 0.5, where the gate's threshold decides (``boundary_weight``).

Batches are drawn so that ``person_share`` of their frames hold a teacher person (footage is mostly empty).
Horizontal flips double the data; their targets come from the teacher run on the flipped frame.

With ``freeze_stem`` (the default) the backbone up to stride 8 keeps its ImageNet weights and its
features are computed once per frame (and flipped frame); the rest of the backbone, the extra layers and the
heads train on those cached features, which is what makes a student fit in minutes on two cores.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from edgevision.distill import require_tf
from edgevision.distill.teacher import Teacher, person_logit


@dataclass(frozen=True)
class TrainSettings:
    steps: int = 700
    batch: int = 8
    lr: float = 1e-3
    temperature: float = 2.0
    person_weight: float = 10.0
    box_weight: float = 1.0
    seed: int = 0
    logit_weight: float = 0.0  # squared logit error on the teacher's person anchors (ranking among people)
    boundary_weight: float = 0.0  # squared logit error on anchors the teacher scores near 0.5 (the threshold)
    person_share: float = 0.75  # share of each batch drawn from frames where the teacher sees a person
    augment: int = 0  # jittered copies of each training frame, labelled by the teacher (data.augment)
    freeze_stem: bool = (
        True  # keep the backbone up to stride 8 at its ImageNet weights; train on cached features
    )


def settings_from_args(args: object) -> TrainSettings:
    """The settings a command line gives: each field its option of the same name where the parser has one (the
    CLI exposes fewer knobs than ``bench/distill.py``), the default elsewhere; ``--train-stem`` unfreezes the stem."""
    given = {f.name: getattr(args, f.name) for f in fields(TrainSettings) if hasattr(args, f.name)}
    return TrainSettings(**given, freeze_stem=not getattr(args, "train_stem", False))


@dataclass
class Targets:
    """Teacher targets for a stack of frames: person logits ``[N, A]`` and box encodings ``[N, A, 4]``."""

    logits: np.ndarray
    boxes: np.ndarray


@dataclass(frozen=True)
class Progress:
    """One progress report: what is being done, how far, the loss and the estimated time left."""

    stage: str
    done: int
    total: int
    loss: float | None
    eta_s: float | None


ProgressFn = Callable[[Progress], None]


def teacher_targets(teacher: Teacher, frames: np.ndarray, progress: ProgressFn | None = None) -> Targets:
    """Run the teacher on every frame."""
    logits, boxes = [], []
    t0 = time.monotonic()
    for i, f in enumerate(frames):
        out = teacher.run(f)
        logits.append(person_logit(out.person))
        boxes.append(out.boxes)
        if progress and (i % 10 == 9 or i == len(frames) - 1):
            rate = (time.monotonic() - t0) / (i + 1)
            progress(Progress("teacher", i + 1, len(frames), None, rate * (len(frames) - i - 1)))
    return Targets(np.stack(logits), np.stack(boxes))


def distill_loss(tf: Any, s: TrainSettings, t_logit: Any, t_box: Any, s_box: Any, s_logit: Any) -> Any:
    """The loss of the module docstring, on a batch (teacher tensors ``[B, A]`` / ``[B, A, 4]``)."""
    temp = s.temperature
    p = tf.sigmoid(t_logit)
    soft = tf.sigmoid(t_logit / temp)
    zs = s_logit[..., 0]
    # KL(soft || student) = BCE - H(soft): same gradient as BCE, but 0 when the student matches, so the loss
    # shown in the progress line falls towards 0 instead of flattening at the targets' entropy
    entropy = tf.nn.sigmoid_cross_entropy_with_logits(labels=soft, logits=t_logit / temp)
    bce = (tf.nn.sigmoid_cross_entropy_with_logits(labels=soft, logits=zs / temp) - entropy) * (temp * temp)
    w = 1.0 + s.person_weight * p
    norm = tf.maximum(tf.reduce_sum(p), 1.0)
    cls_loss = tf.reduce_sum(w * bce) / norm
    d = tf.abs(s_box - t_box)
    huber = tf.reduce_sum(tf.where(d < 1.0, 0.5 * d * d, d - 0.5), axis=-1)
    box_loss = tf.reduce_sum(p * huber) / norm
    loss = cls_loss + s.box_weight * box_loss
    if s.logit_weight:
        # crowds: the teacher's top-10 are picked among people scored 0.5-0.7, so the student's logits must
        # rank them like the teacher's; the KL above barely separates a 0.55 from a 0.6
        loss += s.logit_weight * tf.reduce_sum(p * tf.square(zs - t_logit)) / norm
    if s.boundary_weight:
        # the gate's errors sit at the threshold: teacher boxes scored 0.45-0.6 that the student puts on the other
        # side; weight the logit error of anchors with teacher logit near 0 (score near 0.5), exp(-z²/2)
        near = tf.exp(-0.5 * tf.square(t_logit))
        loss += s.boundary_weight * tf.reduce_sum(near * tf.square(zs - t_logit)) / norm
    return loss


def train(
    model: Any,
    frames: np.ndarray,
    targets: Targets,
    flipped: Targets,
    settings: TrainSettings,
    progress: ProgressFn | None = None,
    on_step: Callable[[int], None] | None = None,
) -> list[float]:
    """Train ``model`` in place; returns the loss history (one value per step). Ctrl-C propagates.

    ``on_step(i)`` runs after optimizer step ``i`` (gradual pruning zeroes dropped channels there)."""
    tf = require_tf()
    import keras

    from edgevision.distill.students import split_at_stem

    rng = np.random.default_rng(settings.seed)
    schedule = keras.optimizers.schedules.CosineDecay(settings.lr, settings.steps, alpha=0.05)
    opt = keras.optimizers.Adam(learning_rate=schedule)
    if settings.freeze_stem:
        stem, net = split_at_stem(model)
        inputs = _features(stem, frames, progress)
        inputs_flipped = _features(stem, np.ascontiguousarray(frames[:, :, ::-1]), progress)
    else:
        net = model
        inputs, inputs_flipped = frames, np.ascontiguousarray(frames[:, :, ::-1])
    variables = net.trainable_variables

    @tf.function(reduce_retracing=True)
    def step(x: Any, t_logit: Any, t_box: Any) -> Any:
        with tf.GradientTape() as tape:
            s_box, s_logit = net(x, training=True)
            loss = distill_loss(tf, settings, t_logit, t_box, s_box, s_logit)
        grads = tape.gradient(loss, variables)
        grads, _ = tf.clip_by_global_norm(grads, 10.0)
        opt.apply_gradients(zip(grads, variables, strict=True))
        return loss

    n = len(frames)
    history: list[float] = []
    t0 = time.monotonic()
    batch = min(settings.batch, n)
    weights = sampling_weights(targets.logits, settings.person_share)
    for i in range(settings.steps):
        idx = rng.choice(n, size=batch, replace=False, p=weights)
        flip = rng.random(batch) < 0.5
        x = np.where(flip[:, None, None, None], inputs_flipped[idx], inputs[idx]).astype(np.float32)
        t_logit = np.where(flip[:, None], flipped.logits[idx], targets.logits[idx])
        t_box = np.where(flip[:, None, None], flipped.boxes[idx], targets.boxes[idx])
        loss = float(step(tf.constant(x), tf.constant(t_logit), tf.constant(t_box)))
        if not math.isfinite(loss):
            raise FloatingPointError(f"distillation diverged at step {i + 1} (loss {loss})")
        history.append(loss)
        if on_step is not None:
            on_step(i)
        if progress and (i % 10 == 9 or i == settings.steps - 1):
            rate = (time.monotonic() - t0) / (i + 1)
            recent = float(np.mean(history[-10:]))
            progress(Progress("train", i + 1, settings.steps, recent, rate * (settings.steps - i - 1)))
    return history


def sampling_weights(logits: np.ndarray, person_share: float) -> np.ndarray:
    """Per-frame sampling probabilities: frames with a teacher person (score ≥ 0.5) get ``person_share`` of the mass.

    Footage is mostly empty (a hallway clip beside a street clip); uniform batches would spend most steps on
    background the student learns in a few hundred steps, and too few on the person anchors the gate judges.
    """
    has = (logits.max(axis=1) >= 0.0).astype(np.float64)
    n_pos = has.sum()
    n_neg = len(has) - n_pos
    if n_pos == 0 or n_neg == 0:
        return np.full(len(has), 1.0 / len(has))
    return np.where(has > 0, person_share / n_pos, (1.0 - person_share) / n_neg)


def _features(stem: Any, frames: np.ndarray, progress: ProgressFn | None, chunk: int = 16) -> np.ndarray:
    out = []
    t0 = time.monotonic()
    for i in range(0, len(frames), chunk):
        out.append(np.asarray(stem(frames[i : i + chunk].astype(np.float32), training=False)))
        if progress:
            done = min(i + chunk, len(frames))
            rate = (time.monotonic() - t0) / done
            progress(Progress("features", done, len(frames), None, rate * (len(frames) - done)))
    return np.concatenate(out)
