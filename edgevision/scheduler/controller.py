"""The rung controller: a pure function of latency samples, the profile and an injected clock.

Rungs are ordered best (most expensive) first. The controller keeps a window of end-to-end frame latencies
and decides on its p95:

* **down** after the window's p95 has been over budget for ``down_after`` frames in a row, at most once per
  ``cooldown_s``, to the best
  rung predicted to fit; while a person event is active only if p95 exceeds ``event_overrun_factor`` x budget;
* **up** one rung when the profile, scaled by the load measured now, predicts it fits with ``up_margin``
  headroom, and nothing has switched for ``stable_s`` (hysteresis: no oscillation between two rungs).

Load factor = measured p95 / profiled p95 of the current rung: it carries whatever else the device is doing
(other processes, thermal throttling, pre/post-processing) over to the predictions for the other rungs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np


@dataclass(frozen=True)
class ControllerSettings:
    budget_ms: float
    window: int = 60
    down_after: int = 25
    up_margin: float = 0.75
    stable_s: float = 10.0
    cooldown_s: float = 2.0
    event_overrun_factor: float = 2.0


@dataclass(frozen=True)
class ControllerState:
    rung: int
    last_switch: float = 0.0
    over: int = 0
    samples: tuple[float, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class Switch:
    """A decision to change rung, with the reason logged and written to the detections output."""

    from_rung: int
    to_rung: int
    reason: str


def p95(samples: Sequence[float]) -> float:
    return float(np.percentile(np.asarray(samples, dtype=np.float64), 95)) if samples else 0.0


def step(
    state: ControllerState,
    sample_ms: float,
    now: float,
    profile_ms: Sequence[float],
    s: ControllerSettings,
    event_active: bool = False,
    budget_factor: float = 1.0,
) -> tuple[ControllerState, Switch | None]:
    """Fold in one frame's latency; return the new state and a switch when one is due."""
    budget = s.budget_ms * budget_factor
    samples = (*state.samples, sample_ms)[-s.window :]
    if len(samples) < s.window:  # decide only on a full window (after a switch too): spikes stay outliers
        return replace(state, samples=samples), None
    measured = p95(samples)
    over = state.over + 1 if measured > budget else 0  # sustained: the window's p95, frame after frame
    st = replace(state, samples=samples, over=over)
    load = max(measured / max(profile_ms[st.rung], 1e-3), 0.05)
    since = now - st.last_switch
    if over >= s.down_after and measured > budget and since >= s.cooldown_s and st.rung < len(profile_ms) - 1:
        if event_active and measured <= budget * s.event_overrun_factor:
            return st, None
        target = next(
            (j for j in range(st.rung + 1, len(profile_ms)) if profile_ms[j] * load <= budget),
            len(profile_ms) - 1,
        )
        reason = f"p95 {measured:.1f} ms > budget {budget:.1f} ms for {over} frames (load x{load:.2f})"
        return ControllerState(target, now, 0, ()), Switch(st.rung, target, reason)
    if st.rung > 0 and since >= s.stable_s and measured <= budget:
        predicted = profile_ms[st.rung - 1] * load
        if predicted <= budget * s.up_margin:
            reason = f"predicted {predicted:.1f} ms <= {s.up_margin:.0%} of budget {budget:.1f} ms (p95 {measured:.1f} ms)"
            return ControllerState(st.rung - 1, now, 0, ()), Switch(st.rung, st.rung - 1, reason)
    return st, None
