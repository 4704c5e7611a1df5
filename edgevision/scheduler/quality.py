"""Expected quality of a rung, known before anything is measured: a prior from MobileNet's published accuracy.

The ladder is ordered by this prior — family, width α, input side, cadence — and never by measured latency:
measurements only decide which rungs fit the budget, so a noisy profile cannot rank 256 px above 300 px of the
same model. The prior is MobileNet V1's ImageNet top-1 over (α, input side) (Howard et al. 2017, the TF-slim
release table), with a per-family offset at α 1.0 / 224 px. An SSD's input side maps onto the classifier's as
``224 x side / 300`` (300 px is the SSD's training size), and sides below the table extrapolate its slope.
"""

from __future__ import annotations

import bisect

# ImageNet top-1 (%) of MobileNet V1 by width multiplier and input side.
_V1_TOP1: dict[float, dict[int, float]] = {
    0.25: {128: 41.5, 160: 45.5, 192: 47.7, 224: 49.8},
    0.5: {128: 56.3, 160: 59.1, 192: 61.7, 224: 63.3},
    0.75: {128: 62.1, 160: 65.3, 192: 67.2, 224: 68.4},
    1.0: {128: 65.2, 160: 68.0, 192: 70.0, 224: 70.9},
}
# Top-1 at alpha 1.0 / 224 px relative to MobileNet V1 (V2: 72.0, V3-Small: 67.4, V3-Large: 75.2).
FAMILY_OFFSET: dict[str, float] = {
    "mobilenet_v1": 0.0,
    "mobilenet_v2": 1.1,
    "mobilenet_v3_small": -3.5,
    "mobilenet_v3_large": 4.3,
}
SSD_SIDE = 300
_SIDES = sorted(next(iter(_V1_TOP1.values())))
_ALPHAS = sorted(_V1_TOP1)


def _interp(x: float, xs: list[float], ys: list[float]) -> float:
    """Piecewise linear through (xs, ys), extrapolating the end segments' slopes."""
    i = min(max(bisect.bisect_left(xs, x), 1), len(xs) - 1)
    x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
    return y0 + (y1 - y0) * (x - x0) / (x1 - x0)


def _top1_at(alpha: float, side: float) -> float:
    by_alpha = [_interp(side, [float(s) for s in _SIDES], [_V1_TOP1[a][s] for s in _SIDES]) for a in _ALPHAS]
    return _interp(alpha, _ALPHAS, by_alpha)


def expected_quality(family: str, alpha: float, side: int) -> float:
    """Prior quality score of a detector (higher is better); strictly increasing in ``alpha`` and ``side``."""
    classifier_side = 224.0 * side / SSD_SIDE
    return _top1_at(alpha, classifier_side) + FAMILY_OFFSET.get(family, 0.0)


def ladder_key(
    family: str, alpha: float, side: int, cadence: int, name: str = "", distilled: bool = False
) -> tuple[int, float, bool, str]:
    """Sort key of a rung, best first: every cadence 1 rung before any k > 1, then by expected quality; at equal
    prior a student (``distilled``: it imitates a model, at best as well) comes after the catalog model."""
    return (cadence, -expected_quality(family, alpha, side), distilled, name)
