"""The rung controller: predictive, and a pure function of per-frame samples, the rungs' costs and an injected clock.

Rungs are ordered by expected quality, best first (see :mod:`edgevision.scheduler.quality`); their costs come
from the profile and need not be monotonic along the ladder. Every frame brings a :class:`Sample` of its
measured stage times. From them the controller estimates:

* the **load factor** = measured invoke / profiled invoke of the rung it ran on (the median of the last
  ``load_frames`` detect frames, so one spike is an outlier, not a trend). It carries whatever else the device
  is doing (other processes, capture competing for the cores, thermal throttling) over to every other rung;
* the **overhead** = total - invoke (capture wait, preprocessing, parsing, later stages), its median likewise;

and predicts each rung's frame latency as ``profiled cost x load + overhead``. Then:

* **down**, at once on a **rise**: the last ``confirm_frames`` detect frames each ran at ``rise_factor`` x
  the median load of the ``base_frames`` before them or more, and predict the current rung over ``down_fit``
  x budget (a load that arrives, on its third frame; one spike, two in a row, or noise around a steady load
  does not do that), or when the median predicts the current rung over ``clear_over`` x budget. Also once the
  median has predicted it over the budget for ``down_after`` frames; on a **tail** the median does not see,
  when the rung a step down lands on would have saved ``tail_down`` frames over budget among the last
  ``tail_frames`` detect frames measured on this rung (each frame **replayed** on both rungs: its load x the
  rung's invoke + its overhead; a cadence-k rung pays the invoke on every k-th frame only, see
  :func:`_absorbed`; a spike over budget on every rung saves nothing and moves nothing); and on the
  **check**: the first rung of a run, the rung its first climb lands on and every rung a step down lands on
  must, once ``check_frames`` of its own detect frames are measured, have their median within ``down_fit`` x
  budget, or it steps down once more. A step down lands on the best rung predicted within
  ``down_fit`` x budget; after a rise, under the highest load of the frames that showed it (a load estimate
  that rises fast: the median, which falls slowly, still holds frames from before), and it **learns** the
  rise (load after / before) and lands lower if a rung there would still fit a detect frame within the
  budget under another rise like the typical one (the next arrival then costs no frames). While a person
  event is active, only when the prediction exceeds ``event_overrun_factor`` x budget;
* **up**, to the best better rung that has been predicted to fit within the up margin at every frame of the
  last ``stable_s`` and, replayed, met the budget at every detect frame of it that the current rung met (a
  frame over budget on both, at no lower cadence, costs nothing; at most one frame over budget in the last
  ``window`` on the current rung), and never within ``cooldown_s`` of a step down; a run starts on the cheapest
  rung that detects every frame, and its first climb needs only the first rung's check (see
  :func:`initial_rung`). The up margin is ``up_margin``, tightened to 1 / the typical rise learned (the median
  of the recent ones, at most ``max_step``): it climbs only where the next such arrival would still fit.
  Rises are forgotten after ``rise_memory_s`` without a new one, so one burst (a backup, an update) does not
  cost quality for good.

A step down lands within ``down_fit`` x budget and a step up needs at most ``up_margin`` <= ``down_fit``: the
rung a step down skipped cannot qualify for a step up under the same load, so the two never alternate. Load
that comes back in bursts just after each step up is damped too: a step down soon after a step up doubles the
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
    window: int = 25  # recent frames on this rung: more than one of them over budget holds a step up
    down_after: int = 3  # consecutive detect frames the current rung must be predicted over budget
    up_margin: float = 0.75  # step up only to a rung predicted <= up_margin x budget ...
    stable_s: float = 10.0  # ... for this long
    cooldown_s: float = 2.0  # no step up sooner than this after a step down
    event_overrun_factor: float = 2.0  # during a person event, step down only beyond this x budget
    down_fit: float = 0.85  # a step down lands on a rung predicted <= down_fit x budget
    load_frames: int = 5  # detect frames the load and overhead medians run over
    max_hold: float = 8.0  # flap damping: the stable period grows to at most this x stable_s
    confirm_frames: int = 3  # a rise: this many detect frames in a row ...
    rise_factor: float = 1.3  # ... each at least this x the load of ...
    base_frames: int = 10  # ... the median of this many detect frames before them
    check_frames: int = 10  # detect frames on a new rung before its own median is checked against down_fit
    max_step: float = 1.5  # a learned rise counts at most this much (the up margin never drops below 1/this)
    clear_over: float = 1.1  # the median predicting the current rung over this x budget steps down at once
    rise_memory_s: float = 600.0  # learned rises are forgotten after this long without a new one
    tail_frames: int = 100  # detect frames whose (load, overhead) replay each rung's tail
    tail_down: float = 3.0  # frames of them over budget the landing rung would have saved: step down

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
    over: int = 0  # consecutive detect frames predicted over budget on this rung
    loads: tuple[float, ...] = field(default_factory=tuple)  # invoke / profiled invoke, recent detect frames
    overheads: tuple[float, ...] = field(default_factory=tuple)  # total - invoke, recent detect frames
    flags: tuple[bool, ...] = field(default_factory=tuple)  # over budget, recent frames on this rung
    fit_since: float | None = None  # since when a better rung is predicted to fit with margin
    up_target: int | None = None  # the worst of the rungs that fitted since fit_since (the safe target)
    last_up: float | None = None
    hold_s: float = 0.0  # the stable period the next step up needs, when damped above stable_s
    # per-frame latency of this rung's detect frames while it awaits its check; None once checked (a new
    # state starts unchecked: its rung came from the profile, which knew nothing of the overhead)
    checking: tuple[float, ...] | None = field(default_factory=tuple)
    rises: tuple[float, ...] = field(default_factory=tuple)  # load after / before, the recent rises
    last_rise: float | None = None  # when the last rise was learned
    # on the run's first rung (see start_state): it climbs as soon as its check has passed, not after stable_s,
    # and the rung it climbs to is checked like a landing; the shortcut ends when, after the check, no better
    # rung fits (a busy start: the next climb is an ordinary one)
    starting: bool = False
    on_rung: int = 0  # detect frames measured on this rung since the switch to it (the tail rule's window)


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


def rise_base(state: ControllerState, s: ControllerSettings) -> float | None:
    """The load before a rise, when the last ``confirm_frames`` detect frames each ran at least ``rise_factor``
    x the median of the ``base_frames`` before them (that median); else None."""
    n = s.confirm_frames
    before = state.loads[:-n][-s.base_frames :]
    if len(before) < min(s.base_frames, s.load_frames):
        return None  # too few frames to tell a rise from the first frames' noise
    base = max(statistics.median(before), 1e-3)
    return base if min(state.loads[-n:]) >= s.rise_factor * base else None


def replayed_over(state: ControllerState, rung: RungCost, s: ControllerSettings, budget: float) -> list[bool]:
    """Whether each of the last ``tail_frames`` detect frames would have been over ``budget`` as a detect frame
    of ``rung``: its load x the rung's profiled invoke + its overhead. On the rung it ran on that is the frame's
    measured latency; on another rung it is the tail the median does not see, under the same moments of load."""
    n = s.tail_frames
    return [
        rung.invoke_ms * ld + ov > budget
        for ld, ov in zip(state.loads[-n:], state.overheads[-n:], strict=True)
    ]


def up_margin(state: ControllerState, s: ControllerSettings) -> float:
    """The fraction of the budget a step up must fit in: ``up_margin``, tightened so that another rise like
    the typical one seen (median of the recent ones, at most ``max_step``) would still fit."""
    if not state.rises:
        return s.up_margin
    return min(s.up_margin, 1.0 / min(statistics.median(state.rises), s.max_step))


def _observe(
    state: ControllerState, sample: Sample, rungs: Sequence[RungCost], s: ControllerSettings, budget: float
) -> ControllerState:
    loads, overheads, checking = state.loads, state.overheads, state.checking
    flags = (*state.flags, sample.total_ms > budget)[-s.window :]
    if sample.invoke_ms is None:  # a carried or gated frame says nothing about the load
        return replace(state, flags=flags)
    keep = max(s.load_frames, s.base_frames + s.confirm_frames, s.tail_frames)
    extra = max(sample.total_ms - sample.invoke_ms, 0.0)
    loads = (*loads, sample.invoke_ms / max(rungs[state.rung].invoke_ms, 1e-3))[-keep:]
    overheads = (*overheads, extra)[-keep:]
    if checking is not None:
        checking = (*checking, sample.invoke_ms / rungs[state.rung].cadence + extra)
    return replace(
        state, loads=loads, overheads=overheads, flags=flags, checking=checking, on_rung=state.on_rung + 1
    )


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
    if st.last_rise is not None and now - st.last_rise >= s.rise_memory_s:
        st = replace(st, rises=(), last_rise=None)  # calm for long: climb with the plain up margin again
    if not st.loads:
        return st, None
    cur = st.rung
    pred = predict(st, rungs, s.load_frames)
    detect = sample.invoke_ms is not None
    over = st.over
    if detect:
        over = over + 1 if pred[cur] > budget else 0
    st = replace(st, over=over)
    tail = sum(st.flags)
    load = load_factor(st, s.load_frames)
    n = s.confirm_frames  # the least of the last n frames: what each of them predicts at least
    rising = max(pred[cur], rungs[cur].per_frame_ms * min(st.loads[-n:]) + min(st.overheads[-n:]))
    base = rise_base(st, s) if detect else None
    rose = base is not None and rising > budget * s.fit
    measured = None  # the median of this rung's own first check_frames detect frames, once
    if st.checking is not None and len(st.checking) >= s.check_frames:
        measured = statistics.median(st.checking)
        st = replace(st, checking=None)
    unfit = measured is not None and measured > budget * s.fit
    clear = pred[cur] > budget * s.clear_over
    absorbed, counted = _absorbed(st, rungs, s, budget) if detect else (0.0, 0)
    wants_down = rose or clear or unfit or over >= s.down_after or absorbed >= s.tail_down
    if wants_down and cur < len(rungs) - 1:
        held = event_active and rising <= budget * s.event_overrun_factor
        if not held:
            target, rises, landing = _landing(st, rungs, s, budget, base if rose else None)
            if rose:
                rose_by = min(st.loads[-n:]) / (base or 1.0)
                why = (
                    f"load rose x{rose_by:.2f} for {n} frames: {rising:.1f} ms > {s.fit:.0%} of budget "
                    f"{budget:.1f} ms"
                )
            elif clear:
                why = f"predicted {pred[cur]:.1f} ms > {s.clear_over:.0%} of budget {budget:.1f} ms"
            elif unfit:
                why = f"measured {measured:.1f} ms on this rung > {s.fit:.0%} of budget {budget:.1f} ms"
            elif over >= s.down_after:
                why = f"predicted {pred[cur]:.1f} ms > budget {budget:.1f} ms for {over} frames"
            else:  # the tail
                why = (
                    f"{absorbed:.1f} frames over budget {budget:.1f} ms in the last {counted} detect frames saved "
                    "below"
                )
            reason = f"{why} (load x{load:.2f}); predicted {landing:.1f} ms on the new rung"
            st = replace(st, rises=rises, last_rise=now if rose else st.last_rise)
            return _switched(st, target, now, down=True, s=s), Switch(cur, target, reason)
    margin = up_margin(st, s)
    better = next((j for j in range(cur) if pred[j] <= budget * margin), None)
    if better is None or tail > 1:
        # the first climb's shortcut (no stable period) lasts only while a better rung has fitted at every
        # frame since the first rung's check: once none does, the next climb waits for a stable period
        starting = st.starting and (st.checking is not None or better is not None)
        return replace(st, fit_since=None, up_target=None, starting=starting), None
    fit_since = st.fit_since if st.fit_since is not None else now
    target = better if st.up_target is None else max(st.up_target, better)  # fitted at every frame since
    # and met the budget at every frame since: this one replayed there (a tail the median hides), unless this
    # rung missed it too and the better one detects no more often: climbing costs no frame over budget then (a
    # spike over budget on both moves nothing up, as in the tail rule; `tail` above bounds such frames)
    if detect:
        ld, ov = st.loads[-1], st.overheads[-1]
        missed = rungs[cur].invoke_ms * ld + ov > budget
        target = next(
            (
                j
                for j in range(target, cur)
                if rungs[j].invoke_ms * ld + ov <= budget
                or (missed and rungs[j].cadence >= rungs[cur].cadence)
            ),
            cur,
        )
        if target == cur:
            return replace(st, fit_since=None, up_target=None), None
    st = replace(st, fit_since=fit_since, up_target=target)
    cooled = st.last_down is None or now - st.last_down >= s.cooldown_s
    # the run's first climb waits for no stable period: the first rung's check stands for it
    first_climb = st.starting and st.checking is None
    hold = 0.0 if first_climb else max(s.stable_s, st.hold_s)
    if now - fit_since >= hold and cooled:
        waited = (
            "on the run's first climb, after its first rung's check"
            if first_climb
            else f"for {now - fit_since:.1f} s"
        )
        reason = f"predicted {pred[target]:.1f} ms <= {margin:.0%} of budget {budget:.1f} ms {waited} (load x{load:.2f})"
        return _switched(st, target, now, down=False, s=s), Switch(cur, target, reason)
    return st, None


def _absorbed(
    st: ControllerState, rungs: Sequence[RungCost], s: ControllerSettings, budget: float
) -> tuple[float, int]:
    """Frames over budget the rung a step down lands on would have saved over the last ``tail_frames`` detect
    frames: a tail worth stepping down for. Each frame is replayed on both rungs (its load x the rung's invoke
    + its overhead); on a cadence rung only every k-th frame is a detect frame and pays it, so the span of
    those frames holds k_here / k_below as many detect frames below. A spike over budget on both rungs (at
    the same cadence) saves nothing. Also returns how many detect frames of this rung it counted."""
    if st.rung >= len(rungs) - 1:
        return 0.0, 0
    here, below = rungs[st.rung], rungs[_landing(st, rungs, s, budget, None)[0]]
    # only frames measured on this rung: frames from before a switch describe a load that may have gone (a
    # step up follows a quiet stable period; what the rung below it met before does not count against it).
    # The newest confirm_frames - 1 frames are left to the rise rule, which waits for confirm_frames in a row
    # before it believes a load arrived, and then lands with room for it.
    window = min(st.on_rung, s.tail_frames)
    n = window - (s.confirm_frames - 1)
    if n <= 0:
        return 0.0, 0
    # the n detect frames span n x k_here frames; on the rung below, k_here / k_below of them detect
    over_here = sum(replayed_over(st, here, s, budget)[-window:][:n])
    over_below = sum(replayed_over(st, below, s, budget)[-window:][:n]) * here.cadence / below.cadence
    return over_here - over_below, n


def _landing(
    st: ControllerState, rungs: Sequence[RungCost], s: ControllerSettings, budget: float, base: float | None
) -> tuple[int, tuple[float, ...], float]:
    """Where a step down from ``st.rung`` lands, the rises known after it, and the landing rung's prediction.

    The load is the median's; after a rise the highest of the frames that showed it, when higher. The landing
    rung is the best predicted within ``down_fit`` x budget (else the cheapest). After a rise from load ``base``
    the rise is learned (landing load / ``base``), and the step lands lower when a rung there would fit a
    detect frame within the budget even if another rise like the typical one came. Cadence rungs
    give no such room: their detect frames cost the full invoke."""
    load, extra = load_factor(st, s.load_frames), overhead_ms(st, s.load_frames)
    if base is not None:  # the median may still hold frames from before the rise; these n do not
        n = s.confirm_frames
        load = max(load, *st.loads[-n:])
        extra = max(extra, *st.overheads[-n:])
    est = [r.per_frame_ms * load + extra for r in rungs]
    below = range(st.rung + 1, len(rungs))
    target = next((j for j in below if est[j] <= budget * s.fit), min(below, key=lambda j: est[j]))
    rises = st.rises
    if base is not None:
        rises = (*rises, load / base)[-5:]
        room = budget / min(statistics.median(rises), s.max_step)
        target = next((j for j in below if j >= target and rungs[j].invoke_ms * load + extra <= room), target)
    return target, rises, est[target]


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
        over=0,
        on_rung=0,
        flags=(),
        fit_since=None,
        up_target=None,
        checking=() if down or st.starting else None,
        starting=False,
    )


def initial_rung(rungs: Sequence[RungCost], s: ControllerSettings) -> int:
    """Where a run starts: the cheapest rung that detects every frame (the cheapest of all when none does).

    The start-up profile times each rung alone, back to back; in the running pipeline capture competes for the
    cores and caches go cold between frames, so a rung the profile says fits may not (measured: 256 px picked
    at 75 % of the budget ran 5 of its first 12 frames over it). The run starts where the budget is safest and
    climbs as soon as its own frames have been measured: the first rung's check (``check_frames`` detect frames)
    replaces the stable period of the first step up, and the rung it climbs to is checked in turn. When even
    that rung's profile (which only errs low) is over ``fit`` x budget, the run starts on the cheapest of all."""
    every = list(range(len(rungs)))
    full = [i for i in every if rungs[i].cadence == 1]
    first = min(full or every, key=lambda i: (rungs[i].per_frame_ms, i))
    if rungs[first].per_frame_ms > s.budget_ms * s.fit:
        first = min(every, key=lambda i: (rungs[i].per_frame_ms, i))
    return first


def start_state(rungs: Sequence[RungCost], s: ControllerSettings, now: float) -> ControllerState:
    """The state a run starts in: on :func:`initial_rung`, to be checked, its first climb due after the check."""
    return ControllerState(initial_rung(rungs, s), now, starting=True)
