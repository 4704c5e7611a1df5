"""The rung controller: predictive, and a pure function of per-frame samples, the rungs' costs and an injected clock.

Rungs are ordered by expected quality, best first (see :mod:`edgevision.scheduler.quality`); their costs come
from the profile and need not be monotonic along the ladder. Every frame brings a :class:`Sample` of its
measured stage times. From them the controller estimates, within a few frames:

* the **load factor** = measured invoke / profiled invoke of the rung it ran on (the median of the last
  ``load_frames`` detect frames, so one spike is an outlier, not a trend). It carries whatever else the device
  is doing (other processes, capture competing for the cores, thermal throttling) over to every other rung;
* the **overhead** = total - invoke (capture wait, preprocessing, parsing, later stages), its median likewise;

and predicts each rung's frame latency as ``profiled cost x load + overhead``. Then:

* **down**, on the first frame whose prediction for the current rung is clearly over the budget (over
  ``clear_over`` x budget: a load that arrived shows there on its third frame, when most of the median's
  frames carry it; a one- or two-frame spike never does), or once it has been over the budget at all for
  ``down_after`` frames in a row (a load only just too high, which noise could fake for a frame or two), or
  when ``window // 5`` of the last ``window`` frames were actually over budget (a heavy tail the median does
  not see); straight to the best rung predicted to fit within ``down_fit`` x budget. The landing rung is
  checked again once ``load_frames`` of its own frames make up the median (the choice was made partly on
  frames from before the load changed, and its profile may be off): predicted over ``down_fit`` x budget, it
  steps down once more. While a person event
  is active only when the prediction exceeds ``event_overrun_factor`` x budget;
* **up**, to the best better rung that has been predicted to fit within ``up_margin`` x budget at every frame
  of the last ``stable_s`` (with at most one frame over budget), and never within ``cooldown_s`` of a step down.

A step down lands within ``down_fit`` x budget and a step up needs ``up_margin`` <= ``down_fit``: the rung a
step down skipped cannot qualify for a step up under the same load, so the two never alternate. Load that
comes back in bursts just after each step up is damped too: a step down soon after a step up doubles the
stable period the next step up needs (up to ``max_hold`` x ``stable_s``); a step down after a quiet spell
resets it. No flapping.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edgevision.config import SchedulerConfig


@dataclass(frozen=True)
class ControllerSettings:
    """Tuning of :func:`step`: a frozen view of the ``scheduler:`` section (:meth:`of`) plus the controller's own
    constants, so the pure decision functions take plain numbers."""

    budget_ms: float
    window: int = 25  # frames whose over-budget count catches a heavy tail
    down_after: int = 3  # consecutive frames the current rung must be predicted over budget
    up_margin: float = 0.75  # step up only to a rung predicted <= up_margin x budget ...
    stable_s: float = 10.0  # ... for this long
    cooldown_s: float = 2.0  # no step up sooner than this after a step down
    event_overrun_factor: float = 2.0  # during a person event, step down only beyond this x budget
    down_fit: float = 0.85  # a step down lands on a rung predicted <= down_fit x budget
    load_frames: int = 5  # detect frames the load and overhead medians run over
    max_hold: float = 8.0  # flap damping: the stable period grows to at most this x stable_s
    clear_over: float = 1.1  # a rise predicting the current rung over this x budget steps down at once

    @classmethod
    def of(cls, section: SchedulerConfig) -> ControllerSettings:
        """The view of a ``scheduler:`` section: ``budget_ms`` is its budget (from ``budget_ms`` or
        ``target_fps``); every other field of the same name is copied, so a new knob is a config field and a
        field here, nothing else."""
        same = {f.name: getattr(section, f.name) for f in fields(cls) if f.name in type(section).model_fields}
        same.pop("budget_ms", None)
        return cls(budget_ms=section.budget, **same)

    @property
    def fit(self) -> float:
        """Landing fraction of a step down; never below ``up_margin`` (the hysteresis depends on it)."""
        return max(self.down_fit, self.up_margin)

    @property
    def max_over(self) -> int:
        """Frames over budget within ``window`` that count as a tail worth stepping down for."""
        return max(2, self.window // 5)


@dataclass(frozen=True)
class RungCost:
    """What the controller knows of a rung in advance: its profiled invoke time and cadence."""

    invoke_ms: float  # p50 of one invoke, profiled on this device
    cadence: int = 1  # detects every k-th frame

    @property
    def per_frame_ms(self) -> float:
        return self.invoke_ms / self.cadence


@dataclass(frozen=True)
class Sample:
    """One processed frame's measured stage times (ms). ``invoke_ms`` is None when no detector ran
    (a carried or gated frame)."""

    total_ms: float
    invoke_ms: float | None = None
    preprocess_ms: float = 0.0
    postprocess_ms: float = 0.0
    wait_ms: float = 0.0  # capture to the start of processing


@dataclass(frozen=True)
class ControllerState:
    rung: int
    last_switch: float = 0.0
    last_down: float | None = None
    over: int = 0  # consecutive frames predicted over budget on this rung
    loads: tuple[float, ...] = field(default_factory=tuple)  # invoke / profiled invoke, recent detect frames
    overheads: tuple[float, ...] = field(default_factory=tuple)  # total - invoke, recent detect frames
    flags: tuple[bool, ...] = field(default_factory=tuple)  # over budget, recent frames on this rung
    fit_since: float | None = None  # since when a better rung is predicted to fit with margin
    up_target: int | None = None  # the worst of the rungs that fitted since fit_since (the safe target)
    last_up: float | None = None
    hold_s: float = 0.0  # the stable period the next step up needs, when damped above stable_s
    landed: int | None = None  # detect frames measured on this rung since a step down landed here


@dataclass(frozen=True)
class Switch:
    """A decision to change rung, with the reason logged and written to the detections output."""

    from_rung: int
    to_rung: int
    reason: str

    @property
    def direction(self) -> str:
        return "down" if self.to_rung > self.from_rung else "up"


def _median(values: tuple[float, ...], n: int, prior: float) -> float:
    """The median of the last ``n`` values, the missing ones taken as ``prior``: the first frames of a run
    (often slow: cold caches, capture warming up) outvote the profile only when most of ``n`` agree."""
    return statistics.median((*([prior] * max(0, n - len(values))), *values[-n:]))


def load_factor(state: ControllerState, frames: int = 5) -> float:
    """The current load estimate (1.0 = as profiled): the median over the last ``frames`` detect frames."""
    return _median(state.loads, frames, 1.0)


def overhead_ms(state: ControllerState, frames: int = 5) -> float:
    return _median(state.overheads, frames, 0.0)


def predict(state: ControllerState, rungs: Sequence[RungCost], frames: int = 5) -> list[float]:
    """Predicted per-frame latency (ms) of every rung under the load measured over the last ``frames``."""
    load, extra = load_factor(state, frames), overhead_ms(state, frames)
    return [r.per_frame_ms * load + extra for r in rungs]


def _observe(
    state: ControllerState, sample: Sample, rungs: Sequence[RungCost], s: ControllerSettings, budget: float
) -> ControllerState:
    loads, overheads = state.loads, state.overheads
    if sample.invoke_ms is not None:  # a detect frame: the load on the rung it ran on
        loads = (*loads, sample.invoke_ms / max(rungs[state.rung].invoke_ms, 1e-3))[-s.load_frames :]
        overheads = (*overheads, max(sample.total_ms - sample.invoke_ms, 0.0))[-s.load_frames :]
    flags = (*state.flags, sample.total_ms > budget)[-s.window :]
    landed = state.landed
    if landed is not None and sample.invoke_ms is not None:
        landed += 1
    return replace(state, loads=loads, overheads=overheads, flags=flags, landed=landed)


def step(
    state: ControllerState,
    sample: Sample,
    now: float,
    rungs: Sequence[RungCost],
    s: ControllerSettings,
    event_active: bool = False,
    budget_factor: float = 1.0,
) -> tuple[ControllerState, Switch | None]:
    """Fold in one frame's sample (measured on ``state.rung``); return the new state and a switch when due."""
    budget = s.budget_ms * budget_factor
    st = _observe(state, sample, rungs, s, budget)
    if not st.loads:
        return st, None
    pred = predict(st, rungs, s.load_frames)
    cur = st.rung
    over = st.over + 1 if pred[cur] > budget else 0
    st = replace(st, over=over)
    tail = sum(st.flags)
    load = load_factor(st, s.load_frames)
    clear = pred[cur] > budget * s.clear_over
    # A step down chose its landing rung from frames that were partly under the old load; once the rung's own
    # frames make up the median it must fit like a landing rung, or it would sit just under the budget with
    # every bit of noise crossing it.
    checked = st.landed is not None and st.landed >= s.load_frames
    if checked:
        st = replace(st, landed=None)
    landing_over = checked and pred[cur] > budget * s.fit
    wants_down = clear or landing_over or over >= s.down_after or tail >= s.max_over
    if wants_down and cur < len(rungs) - 1:
        held = event_active and pred[cur] <= budget * s.event_overrun_factor
        if not held:
            below = range(cur + 1, len(rungs))
            target = next((j for j in below if pred[j] <= budget * s.fit), min(below, key=lambda j: pred[j]))
            if clear:
                why = f"predicted {pred[cur]:.1f} ms > {s.clear_over:.0%} of budget {budget:.1f} ms"
            elif landing_over:
                why = f"landed at {pred[cur]:.1f} ms > {s.fit:.0%} of budget {budget:.1f} ms"
            elif over >= s.down_after:
                why = f"predicted {pred[cur]:.1f} ms > budget {budget:.1f} ms for {over} frames"
            else:
                why = f"{tail} of the last {len(st.flags)} frames over budget {budget:.1f} ms"
            reason = f"{why} (load x{load:.2f}); predicted {pred[target]:.1f} ms on the new rung"
            return _switched(st, target, now, down=True, s=s), Switch(cur, target, reason)
    better = next((j for j in range(cur) if pred[j] <= budget * s.up_margin), None)
    if better is None or tail > 1:
        return replace(st, fit_since=None, up_target=None), None
    fit_since = st.fit_since if st.fit_since is not None else now
    target = better if st.up_target is None else max(st.up_target, better)  # fitted at every frame since
    st = replace(st, fit_since=fit_since, up_target=target)
    cooled = st.last_down is None or now - st.last_down >= s.cooldown_s
    hold = max(s.stable_s, st.hold_s)
    if now - fit_since >= hold and cooled:
        reason = (
            f"predicted {pred[target]:.1f} ms <= {s.up_margin:.0%} of budget {budget:.1f} ms for "
            f"{now - fit_since:.1f} s (load x{load:.2f})"
        )
        return _switched(st, target, now, down=False, s=s), Switch(cur, target, reason)
    return st, None


def _switched(
    st: ControllerState, target: int, now: float, down: bool, s: ControllerSettings
) -> ControllerState:
    """The state on a new rung: load estimates carry over (they describe the device), the rest restarts."""
    hold = st.hold_s
    if down:  # a step up that did not last doubles the next hold; one that did resets it
        held = max(s.stable_s, st.hold_s)
        failed_up = st.last_up is not None and now - st.last_up < held
        hold = min(2 * held, s.max_hold * s.stable_s) if failed_up else 0.0
    return replace(
        st,
        rung=target,
        last_switch=now,
        last_down=now if down else st.last_down,
        last_up=None if down else now,
        hold_s=hold,
        landed=0 if down else None,
        over=0,
        flags=(),
        fit_since=None,
        up_target=None,
    )


def initial_rung(rungs: Sequence[RungCost], s: ControllerSettings) -> int:
    """The best rung the start-up profile (taken under the current load) says fits with the up margin."""
    fits = [i for i, r in enumerate(rungs) if r.per_frame_ms <= s.budget_ms * s.up_margin]
    if fits:
        return fits[0]
    return min(range(len(rungs)), key=lambda i: rungs[i].per_frame_ms)
