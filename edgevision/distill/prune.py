"""Start a MobileNet V1 student from the teacher itself, thinned by channel pruning (``--init teacher``).

MobileNet's own recipe for a narrower model is width α plus compression (pruning, quantization, distillation).
The default student starts from the ImageNet classifier of its width; this starts it from the SSD it is to
imitate instead. The catalog's SSD-MobileNet V1 is depth 0.75, so a V1 student of width α ≤ 0.75 has the
teacher's layer sequence (conv, then 13 depthwise / pointwise pairs) with fewer channels in each:

* every full convolution keeps the output channels with the largest L1 weight norm (``keep`` of them, the
  student's own width), and the next layer keeps the matching input channels; a depthwise convolution keeps its
  input's channels. The teacher's folded batch norm (bias) and ReLU6 come along, so each kept channel computes
  exactly what it did in the teacher, from a subset of its inputs;
* the box and class predictors on the two backbone maps (stride 16 and 32: the 19x19 and 10x10 grids at 300 px,
  1683 of the 1917 anchors) are the teacher's, restricted to the kept channels and, for classes, to person;
* the four extra layers (the teacher's are full 3x3 convolutions, the student's depthwise separable) and their
  predictors keep their fresh initialisation.

At α 0.75 nothing is pruned: the student's backbone anchors reproduce the teacher's raw outputs (up to the
teacher's uint8 quantization), which is what ``tests/test_distill_prune.py`` checks.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgevision.distill.replica import read_graph
from edgevision.distill.students import ANCHORS_PER_CELL, StudentSpec
from edgevision.errors import ModelError, UsageError


class StudentInit(enum.Enum):
    """Where a student's weights start (``--init``)."""

    IMAGENET = "imagenet"  # the ImageNet classifier of the student's width (the default)
    TEACHER = "teacher"  # the teacher itself, pruned to the student's width and refitted (V1 students)


REFIT_FRAMES = 32  # training frames the refit sees (spread over the training span)
BACKBONE_OPS = 27  # conv + 13 depthwise / pointwise pairs
TAP_OPS = (22, 26)  # Conv2d_11_pointwise (stride 16) and Conv2d_13_pointwise (stride 32)


@dataclass(frozen=True)
class PruneReport:
    """What was transplanted: per backbone layer the channels kept of the teacher's, and the heads."""

    kept: tuple[tuple[int, int], ...]  # (student channels, teacher channels) per backbone op
    heads: tuple[str, ...]  # student head layers that start from the teacher's predictors
    residual: float | None = None  # worst relative least-squares residual of the refit (None: not refitted)
    channels: tuple[np.ndarray, ...] = ()  # per backbone op, the teacher's channels it kept (ascending)

    def describe(self) -> dict[str, Any]:
        kept = sum(k for k, _ in self.kept)
        total = sum(t for _, t in self.kept)
        pruned = "nothing pruned (the teacher's width)" if kept == total else "L1 channel pruning"
        method = f"teacher, {pruned}" + ("" if self.residual is None else " + least-squares refit")
        out: dict[str, Any] = {
            "method": method,
            "channels_kept": f"{kept}/{total}",
            "heads": list(self.heads),
        }
        if self.residual is not None:
            out["refit_residual_max"] = round(self.residual, 4)
        return out


def refit_frames(frames: np.ndarray, n: int = REFIT_FRAMES) -> np.ndarray:
    """``n`` frames spread evenly over ``frames`` (the training span), for :func:`refit`."""
    if len(frames) <= n:
        return frames
    return frames[np.linspace(0, len(frames) - 1, n).round().astype(int)]


def _teacher_layers(g: Any) -> list[tuple[str, np.ndarray, np.ndarray, int, int]]:
    """(kind, weights, bias, input tensor, output tensor) of every convolution of the teacher, in order."""
    out = []
    for op in g.sg.operators:
        kind = g.op_name(op)
        if kind not in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            continue
        w = g.constant(int(op.inputs[1]))
        b = g.constant(int(op.inputs[2]))
        if w is None or b is None:
            raise ModelError("teacher: a convolution without constant weights and bias")
        out.append(
            (
                kind,
                np.asarray(w, np.float32),
                np.asarray(b, np.float32),
                int(op.inputs[0]),
                int(op.outputs[0]),
            )
        )
    return out


def check_applicable(spec: StudentSpec, teacher_path: Path) -> None:
    """Raise UsageError unless a V1 student can be pruned from this teacher (V1 backbone, width ≥ the student's)."""
    if spec.family != "mobilenet_v1" or spec.head != "ssd":
        raise UsageError(
            f"--init teacher: only the MobileNet V1 students can be pruned from the teacher, not {spec.key}"
        )
    g = read_graph(teacher_path)
    scale, zero, _ = g.quant(int(g.sg.inputs[0]))
    if scale.size != 1 or abs(float(scale[0]) - 1 / 128) > 1e-6 or int(zero[0]) != 128:
        # the student's backbone normalises pixels like the ImageNet classifiers: (x - 128) / 128
        raise UsageError(
            "--init teacher: the teacher's input is not normalised to [-1, 1]; use --init imagenet"
        )
    layers = _teacher_layers(g)
    kinds = [k for k, *_ in layers[:BACKBONE_OPS]]
    expected = ["CONV_2D"] + ["DEPTHWISE_CONV_2D", "CONV_2D"] * 13
    if kinds != expected:
        raise UsageError(
            "--init teacher: the teacher's backbone is not MobileNet V1 (conv + 13 depthwise / pointwise pairs); "
            "use the default --init imagenet"
        )


def init_from_teacher(
    model: Any,
    spec: StudentSpec,
    teacher_path: Path,
    columns: int,
    person_column: int,
    frames: np.ndarray | None = None,
    seed: int = 0,
    refit_ops: int | None = None,
) -> PruneReport:
    """Set ``model``'s backbone and backbone-map predictors from the pruned teacher, in place.

    ``columns`` is the number of class columns of the teacher's predictions per anchor (background included when
    it has one) and ``person_column`` the column of person among them. With ``frames`` (RGB uint8 at the
    student's input size), each pruned pointwise layer and predictor is then refitted by least squares so that
    its outputs on those frames match the teacher's for the channels it kept (:func:`refit`); ``refit_ops``
    refits only the backbone ops before that index and no predictor (gradual pruning keeps only the stem).
    """
    check_applicable(spec, teacher_path)
    g = read_graph(teacher_path)
    layers = _teacher_layers(g)
    by_name = {layer.name: layer for layer in model.layers}
    keep_in = np.arange(3)
    kept: list[tuple[int, int]] = []
    channels: list[np.ndarray] = []
    tap_keep: dict[int, np.ndarray] = {}  # teacher output tensor -> channels the student kept
    for i, (kind, w, b, _, out) in enumerate(layers[:BACKBONE_OPS]):
        layer = by_name.get(f"backbone_{i}_{kind.lower()}")
        if layer is None:
            raise ModelError(f"student {spec.key}: no backbone layer {i} ({kind}) to transplant into")
        kernel = layer.get_weights()[0]
        if kind == "CONV_2D":
            n_out = int(kernel.shape[3])
            if n_out > w.shape[0]:
                raise UsageError(
                    f"--init teacher: the student ({n_out} channels) is wider than the teacher ({w.shape[0]})"
                )
            # TFLite conv weights are [out, kh, kw, in]; Keras kernels [kh, kw, in, out]
            norms = np.abs(w).reshape(w.shape[0], -1).sum(axis=1)
            keep = np.sort(np.argsort(-norms, kind="stable")[:n_out])
            layer.set_weights([w[keep][..., keep_in].transpose(1, 2, 3, 0), b[keep]])
        else:  # depthwise [1, kh, kw, C] -> Keras [kh, kw, C, 1], the channels of its input
            keep = keep_in
            layer.set_weights([w[0][..., keep][..., np.newaxis], b[keep]])
        kept.append((len(keep), int(w.shape[0] if kind == "CONV_2D" else w.shape[3])))
        tap_keep[out] = keep
        channels.append(keep)
        keep_in = keep
    heads = []
    head_rows: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}
    taps = [layers[i][4] for i in TAP_OPS]
    for h, (tap, n) in enumerate(zip(taps, ANCHORS_PER_CELL[:2], strict=True)):
        keep = tap_keep[tap]
        preds = [
            (w, b) for kind, w, b, src, _ in layers[BACKBONE_OPS:] if src == tap and w.shape[1:3] == (1, 1)
        ]
        box = [p for p in preds if p[0].shape[0] == n * 4]
        cls = [p for p in preds if p[0].shape[0] == n * columns]
        if len(box) != 1 or len(cls) != 1:
            raise ModelError(f"teacher: no single box and class predictor on backbone map {h}")
        bw, bb = box[0]
        cw, cb = cls[0]
        rows = np.arange(n) * columns + person_column  # anchor k's person logit
        by_name[f"head{h}_box"].set_weights([bw[..., keep].transpose(1, 2, 3, 0), bb])
        by_name[f"head{h}_cls"].set_weights([cw[rows][..., keep].transpose(1, 2, 3, 0), cb[rows]])
        heads += [f"head{h}_box", f"head{h}_cls"]
        head_rows[h] = (bw, bb, cw[rows], cb[rows])
    residual = None
    if frames is not None and len(frames):
        residual = refit(model, teacher_path, layers, tap_keep, head_rows, frames, seed, refit_ops)
    return PruneReport(tuple(kept), tuple(heads), residual, tuple(channels))


def _lstsq(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Ridge least squares ``y ≈ x @ w + b``; returns (w, b, relative residual)."""
    a = np.concatenate([x, np.ones((len(x), 1), np.float64)], axis=1)
    gram = a.T @ a
    gram[np.diag_indices_from(gram)] += 1e-4 * float(np.mean(np.diag(gram))) + 1e-9
    sol = np.linalg.solve(gram, a.T @ y)
    spread = float(np.linalg.norm(y - y.mean(axis=0)))
    err = float(np.linalg.norm(a @ sol - y)) / max(spread, 1e-9)
    return sol[:-1].astype(np.float32), sol[-1].astype(np.float32), err


def _rows(t: Any, take: np.ndarray) -> np.ndarray:
    arr = np.asarray(t, np.float64)
    return arr.reshape(-1, arr.shape[-1])[take]


def refit(
    model: Any,
    teacher_path: Path,
    layers: list[tuple[str, np.ndarray, np.ndarray, int, int]],
    keep: dict[int, np.ndarray],
    heads: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
    frames: np.ndarray,
    seed: int,
    ops: int | None = None,
    positions: int = 20000,
) -> float:
    """Refit the pruned student's pointwise layers, in order, then its two backbone predictors (least squares).

    Pruning removes a third (α 0.5) or two thirds (α 0.25) of every layer's inputs, and the errors compound
    over 14 layers; refitting each 1x1 convolution on the channels it still has (its inputs computed by the
    already refitted student, its targets the teacher's own pre-activation outputs of the kept channels) is the
    classic fix (channel pruning with reconstruction). With ``ops``, only the backbone ops before that index
    are refitted, and no predictor. Returns the worst relative residual.
    """
    import keras

    from edgevision.distill.replica import build_replica

    size = int(model.input.shape[1])
    last = BACKBONE_OPS if ops is None else ops
    teacher, ttensors, _ = build_replica(teacher_path, size, name="teacher", ops_limit=last)
    x_in = frames.astype(np.float32)
    rng = np.random.default_rng(seed)
    by_name = {layer.name: layer for layer in model.layers}
    worst = 0.0
    for i, (kind, *_rest, out) in enumerate(layers[:last]):
        if kind != "CONV_2D" or i == 0:  # the first conv sees all three colours: nothing to refit
            continue
        layer = by_name[f"backbone_{i}_conv_2d"]
        xs = np.asarray(keras.Model(model.input, layer.input)(x_in, training=False))
        yt = np.asarray(
            keras.Model(teacher.input, teacher.get_layer(f"teacher_{i}_conv_2d").output)(x_in, training=False)
        )[..., keep[out]]
        take = rng.choice(xs.shape[0] * xs.shape[1] * xs.shape[2], size=positions, replace=True)
        w, b, err = _lstsq(_rows(xs, take), _rows(yt, take))
        worst = max(worst, err)
        layer.set_weights([w[np.newaxis, np.newaxis], b])
    taps = [layers[i][4] for i in TAP_OPS] if ops is None else []
    for h, tap in enumerate(taps):
        bw, bb, cw, cb = heads[h]
        xs = np.asarray(keras.Model(model.input, by_name[f"head{h}_box"].input)(x_in, training=False))
        xt = np.asarray(keras.Model(teacher.input, ttensors[tap])(x_in, training=False))
        n = xs.shape[0] * xs.shape[1] * xs.shape[2]
        take = rng.choice(n, size=min(positions, n), replace=False)
        xs_r, xt_r = _rows(xs, take), _rows(xt, take)
        for lname, w_t, b_t in ((f"head{h}_box", bw, bb), (f"head{h}_cls", cw, cb)):
            target = xt_r @ w_t[:, 0, 0, :].T.astype(np.float64) + b_t
            w, b, err = _lstsq(xs_r, target)
            worst = max(worst, err)
            by_name[lname].set_weights([w[np.newaxis, np.newaxis], b])
    return worst
