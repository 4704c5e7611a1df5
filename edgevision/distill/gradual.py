"""Gradual channel pruning under distillation: a V1 student narrower than the teacher, grown out of it.

Pruning a third of every layer's channels at once (:mod:`edgevision.distill.prune`) loses more of the teacher's
function than a few hundred steps on one camera's frames can teach back. Here the student is trained at the
teacher's own width, starting as the teacher itself, while channels are taken away a few at a time:

* the stem (the layers up to stride 8, frozen in training: their features are cached) is pruned at once and
  refitted, as :func:`~edgevision.distill.prune.init_from_teacher` does for the narrow student, and embedded in
  the wide model with zeros in the channels it dropped;
* every later group — a convolution's output channels and the depthwise layer on them — loses channels of
  smallest L1 weight norm in ``rounds`` steps spread over ``start``..``end`` of training, down to the narrow
  student's width; a dropped channel's weights are zeroed after every optimizer step, so it stays dead while the
  channels left learn to do without it;
* at the end the live channels are copied into the narrow student (:func:`to_narrow`), which then computes what
  the masked wide model computes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edgevision.distill.prune import BACKBONE_OPS, PruneReport
from edgevision.errors import ModelError

EXTRAS = 4
HEADS = 6


@dataclass
class Group:
    """Channels pruned together: a convolution's outputs and the depthwise layer that filters them."""

    conv: Any
    dw: Any | None
    target: int  # channels the narrow student keeps
    alive: np.ndarray  # bool over the wide layer's channels
    frozen: bool = False  # the stem's groups: pruned once at the start


def _conv_names() -> list[tuple[str, str | None]]:
    """(convolution, depthwise after it) of every group, in order."""
    out: list[tuple[str, str | None]] = []
    for i in range(0, BACKBONE_OPS, 2):
        out.append(
            (f"backbone_{i}_conv_2d", f"backbone_{i + 1}_depthwise_conv_2d" if i + 1 < BACKBONE_OPS else None)
        )
    for j in range(EXTRAS):
        out += [(f"extra{j}_reduce", f"extra{j}_dw"), (f"extra{j}_expand", None)]
    return out


def stem_ops(model: Any) -> int:
    """Backbone ops inside the frozen stem (those up to the stride-8 feature map)."""
    name = model.stem_output._keras_history.operation.name  # e.g. backbone_10_conv_2d_act
    try:
        return int(name.split("_")[1]) + 1
    except (IndexError, ValueError):
        raise ModelError(f"cannot tell where the stem ends ({name})") from None


class GradualPruner:
    """Prunes ``wide`` (a student at the teacher's width) towards ``narrow``'s widths during training."""

    def __init__(
        self, wide: Any, narrow: Any, steps: int, start: float = 0.1, end: float = 0.6, rounds: int = 8
    ):
        wl = {layer.name: layer for layer in wide.layers}
        nl = {layer.name: layer for layer in narrow.layers}
        self.groups = []
        for conv, dw in _conv_names():
            if conv not in wl or conv not in nl:
                raise ModelError(f"student has no layer {conv}: not a MobileNet V1 SSD student")
            width = int(wl[conv].kernel.shape[-1])
            target = int(nl[conv].kernel.shape[-1])
            self.groups.append(Group(wl[conv], wl[dw] if dw else None, target, np.ones(width, bool)))
        self.wide, self.narrow = wide, narrow
        self.schedule = {
            max(0, int(steps * (start + (end - start) * k / rounds)) - 1): k / rounds
            for k in range(1, rounds + 1)
        }

    def seed_stem(self, report: PruneReport) -> None:
        """Put the narrow student's pruned, refitted stem into the wide model (zeros where it has no channel)."""
        wl = {layer.name: layer for layer in self.wide.layers}
        nl = {layer.name: layer for layer in self.narrow.layers}
        n = stem_ops(self.wide)
        prev = np.arange(3)
        for i in range(n):
            keep = report.channels[i]
            kind = "conv_2d" if i % 2 == 0 else "depthwise_conv_2d"
            name = f"backbone_{i}_{kind}"
            kernel, bias = nl[name].get_weights()
            wide_kernel = np.zeros(wl[name].kernel.shape, np.float32)
            wide_bias = np.zeros(wl[name].bias.shape, np.float32)
            if kind == "conv_2d":
                wide_kernel[:, :, prev[:, None], keep[None, :]] = kernel
            else:
                wide_kernel[:, :, keep, :] = kernel
            wide_bias[keep] = bias
            wl[name].set_weights([wide_kernel, wide_bias])
            prev = keep
        for g in self.groups[: (n + 1) // 2]:
            g.alive[:] = False
            g.alive[report.channels[int(g.conv.name.split("_")[1])]] = True
            g.frozen = True
        self.apply()

    def on_step(self, step: int) -> None:
        """After optimizer step ``step`` (0-based): prune the next share when it is due, and keep the dead dead."""
        share = self.schedule.get(step)
        if share is not None:
            self.prune(share)
        self.apply()

    def prune(self, share: float) -> None:
        """Drop channels until each group is ``share`` of the way from its wide to its narrow width."""
        for g in self.groups:
            if g.frozen:
                continue
            want = round(g.alive.size - (g.alive.size - g.target) * share)
            live = np.flatnonzero(g.alive)
            if len(live) <= want:
                continue
            kernel = np.asarray(g.conv.kernel)
            norms = np.abs(kernel).reshape(-1, kernel.shape[-1]).sum(axis=0)
            weakest = live[np.argsort(norms[live], kind="stable")[: len(live) - want]]
            g.alive[weakest] = False

    def apply(self) -> None:
        """Zero the weights of every dropped channel (the convolution's outputs, the depthwise layer's channels)."""
        for g in self.groups:
            if g.alive.all():
                continue
            m = g.alive.astype(np.float32)
            g.conv.kernel.assign(np.asarray(g.conv.kernel) * m)
            g.conv.bias.assign(np.asarray(g.conv.bias) * m)
            if g.dw is not None:
                g.dw.kernel.assign(np.asarray(g.dw.kernel) * m[:, None])
                g.dw.bias.assign(np.asarray(g.dw.bias) * m)

    def describe(self) -> dict[str, Any]:
        """Channels left of the teacher's, for the manifest."""
        kept = sum(int(g.alive.sum()) for g in self.groups)
        return {
            "channels_kept": f"{kept}/{sum(g.alive.size for g in self.groups)}",
            "rounds": len(self.schedule),
        }

    def finish(self) -> None:
        """Prune what is left to the narrow widths (a short training may end before the last round)."""
        self.prune(1.0)
        self.apply()
        for g in self.groups:
            if int(g.alive.sum()) != g.target:
                raise ModelError(f"{g.conv.name}: {int(g.alive.sum())} channels left, {g.target} wanted")


def to_narrow(pruner: GradualPruner) -> None:
    """Copy the wide model's live channels into the narrow student (which then computes what the masked wide
    model computes)."""
    wl = {layer.name: layer for layer in pruner.wide.layers}
    nl = {layer.name: layer for layer in pruner.narrow.layers}
    live = {g.conv.name: np.flatnonzero(g.alive) for g in pruner.groups}

    def conv(name: str, cin: np.ndarray, cout: np.ndarray | None = None) -> None:
        kernel, bias = wl[name].get_weights()
        out = slice(None) if cout is None else cout
        nl[name].set_weights([kernel[:, :, cin][..., out], bias[out]])

    def depthwise(name: str, channels: np.ndarray) -> None:
        kernel, bias = wl[name].get_weights()
        nl[name].set_weights([kernel[:, :, channels, :], bias[channels]])

    prev = np.arange(3)
    for i in range(0, BACKBONE_OPS, 2):
        name = f"backbone_{i}_conv_2d"
        conv(name, prev, live[name])
        prev = live[name]
        if i + 1 < BACKBONE_OPS:
            depthwise(f"backbone_{i + 1}_depthwise_conv_2d", prev)
    feeds = [live["backbone_22_conv_2d"], live["backbone_26_conv_2d"]]
    for j in range(EXTRAS):
        reduce, expand = live[f"extra{j}_reduce"], live[f"extra{j}_expand"]
        conv(f"extra{j}_reduce", prev, reduce)
        depthwise(f"extra{j}_dw", reduce)
        conv(f"extra{j}_expand", reduce, expand)
        feeds.append(expand)
        prev = expand
    for h in range(HEADS):
        conv(f"head{h}_box", feeds[h])
        conv(f"head{h}_cls", feeds[h])
