"""The predictive controller on synthetic traces: a pure function of samples and an injected clock.

Frame model: a detect frame's invoke = profiled invoke x load x noise, its total = invoke + overhead; a carried
frame (cadence rung, not its turn) costs a fraction of a millisecond. 25 fps, so frame i is at i / 25 s.
"""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass, field

import pytest

from edgevision.scheduler.controller import (
    ControllerSettings,
    ControllerState,
    RungCost,
    Sample,
    initial_rung,
    predict,
    rise_base,
    start_state,
    step,
    up_margin,
)

FPS = 25.0
OVERHEAD = 2.0
# A ladder like the measured one: SSD V1 at 300/256/224/192/160/128, then cadence 2 and 3 of the last.
INVOKE = [16.0, 11.5, 9.0, 6.5, 4.8, 3.4]
RUNGS = [RungCost(ms) for ms in INVOKE] + [RungCost(3.4, 2), RungCost(3.4, 3)]
BUDGET = 22.5  # rung 0 at load 1 is predicted at 18 ms = 0.8 x budget
PREEMPT_MS = 8.0  # a preempted detect frame: rung 0 (18 + 8 ms) goes over budget, rung 1 (13.5 + 8) does not


@dataclass
class Trace:
    rungs: list[int] = field(default_factory=list)  # rung each frame ran on
    totals: list[float] = field(default_factory=list)
    switches: list[tuple[int, int, int]] = field(default_factory=list)  # (frame, from, to)

    def within(self, start: int = 0, end: int | None = None, budget: float = BUDGET) -> float:
        t = self.totals[start:end]
        return sum(x <= budget for x in t) / len(t)


def simulate(
    load: list[float],
    budget: float = BUDGET,
    seed: int = 0,
    sigma: float = 0.05,
    spikes: float = 0.0,
    preempt: float = 0.0,
    settings: ControllerSettings | None = None,
    rungs: list[RungCost] | None = None,
    event: list[bool] | None = None,
    start: int = 0,
) -> Trace:
    """Run the controller over a per-frame load trace with lognormal noise, rare 4x spikes and a ``preempt``
    share of detect frames 8 ms late (another process holding the core: the same delay on every rung)."""
    rng = random.Random(seed)
    rungs = rungs or RUNGS
    s = settings or ControllerSettings(budget_ms=budget, stable_s=4.0, cooldown_s=1.0)
    state = ControllerState(start, 0.0)
    tr = Trace()
    n = 0  # frames since the last switch (cadence phase)
    for i, factor in enumerate(load):
        r = rungs[state.rung]
        invoke: float | None = None
        if n % r.cadence == 0:
            ms = r.invoke_ms * factor * math.exp(rng.gauss(0.0, sigma))
            if spikes and rng.random() < spikes:
                ms *= 4
            if preempt and rng.random() < preempt:
                ms += PREEMPT_MS
            invoke, total = ms, ms + OVERHEAD
        else:
            total = 0.3
        tr.rungs.append(state.rung)
        tr.totals.append(total)
        before = state.rung
        ev = event[i] if event else False
        state, sw = step(state, Sample(total, invoke), i / FPS, rungs, s, event_active=ev)
        n += 1
        if sw is not None:
            assert sw.from_rung == before and state.rung == sw.to_rung != before
            tr.switches.append((i, sw.from_rung, sw.to_rung))
            n = 0
    return tr


def best_fitting(load: float, fraction: float, budget: float = BUDGET) -> int:
    """The best rung whose prediction at ``load`` is within ``fraction`` x budget."""
    return next(j for j, r in enumerate(RUNGS) if r.per_frame_ms * load + OVERHEAD <= fraction * budget)


def with_room(load: float, rise: float) -> int:
    """Where a step down after a rise of ``rise`` lands under ``load``: the best rung fitting within down_fit x
    budget, or a lower one whose detect frame would still fit the budget after another such rise (at most
    max_step); a cadence rung's detect frame costs as much as its base rung's, so it gives no room."""
    s = ControllerSettings(BUDGET)
    fit = best_fitting(load, s.fit)
    room = BUDGET / min(rise, s.max_step)
    return next((j for j in range(fit, len(RUNGS)) if RUNGS[j].invoke_ms * load + OVERHEAD <= room), fit)


def test_load_arrives_steps_down_on_its_third_frame_straight_to_a_rung_with_room() -> None:
    load = [1.0] * 250 + [2.5] * 500
    tr = simulate(load)
    assert tr.rungs[249] == 0  # fits at full quality before the load
    (at, frm, to), *rest = tr.switches
    assert frm == 0 and at == 250 + ControllerSettings(BUDGET).confirm_frames - 1  # a few frames, not seconds
    roomy = with_room(2.5, 2.5)
    assert roomy > best_fitting(2.5, 0.85)  # room for another rise costs a rung here
    # One jump, not rung by rung, to the rung with room, or one lower: the landing load is the highest of the
    # three noisy frames that showed the rise, so that the load a step up trusts (their median) may let it
    # climb back once, never past the rung with room.
    assert to in (roomy, roomy + 1)
    assert rest == ([] if to == roomy else [(rest[0][0], to, roomy)])
    assert tr.within(at + 1) == 1.0


# (load arriving at frame 100, frame of the step down, rung it lands on): a rise of rise_factor (1.3) or more
# that predicts the current rung over down_fit x budget steps down on its third frame (confirm_frames), the
# first one on which all agree, to a rung that fits under the new load and has room for another rise like it
# (at most max_step, 1.5: x4 and x6 land where they fit, the cadence rungs below give no room for a detect
# frame); a smaller rise (x1.29) that puts the rung over the budget waits for down_after (3) frames of the
# median over budget and lands where it fits, without room; one that keeps it under the budget (x1.2) never
# steps down (no frame over budget).
@pytest.mark.parametrize(
    ("load", "at", "to"),
    [
        (1.35, 102, with_room(1.35, 1.35)),
        (1.6, 102, with_room(1.6, 1.6)),
        (2.5, 102, with_room(2.5, 2.5)),
        (4.0, 102, best_fitting(4.0, 0.85)),
        (6.0, 102, best_fitting(6.0, 0.85)),
        (1.29, 104, best_fitting(1.29, 0.85)),
        (1.2, None, None),
    ],
)
def test_rising_load_steps_down_on_the_first_frames_that_agree(
    load: float, at: int | None, to: int | None
) -> None:
    tr = simulate([1.0] * 100 + [load] * 200, sigma=0.0)
    assert tr.switches == ([] if at is None else [(at, 0, to)])


def test_the_rise_table_lands_with_room_where_that_differs_from_fitting() -> None:
    # The expectations above are not all the same rung: room for another rise moves x1.35, x1.6 and x2.5 one
    # rung lower than fitting; x4 and x6 have no lower rung whose detect frame is cheaper.
    assert [with_room(x, x) for x in (1.35, 1.6, 2.5)] == [2, 3, 4]
    assert [best_fitting(x, 0.85) for x in (1.35, 1.6, 2.5, 4.0, 6.0, 1.29)] == [1, 2, 3, 5, 6, 1]
    assert [with_room(x, x) for x in (4.0, 6.0)] == [5, 6]


# (the loads of the three frames that show a rise from 1.0, the rung it lands on): the landing load rises fast, to
# the highest of them (x2.5: rung 3 fits, rung 4 has room for another x1.5), whichever of the three it was; the
# median of the last 5 (1.6) would land higher.
@pytest.mark.parametrize(
    ("rise", "to"), [([2.5, 1.6, 1.6], 4), ([1.6, 2.5, 1.6], 4), ([1.6, 1.6, 2.5], 4), ([1.6, 1.6, 1.6], 3)]
)
def test_a_rise_lands_under_the_highest_load_of_the_frames_that_showed_it(rise: list[float], to: int) -> None:
    s = ControllerSettings(budget_ms=BUDGET)
    state = ControllerState(0, 0.0)
    switches = []
    for i, load in enumerate([1.0] * 20 + rise):
        invoke = RUNGS[0].invoke_ms * load
        state, sw = step(state, Sample(invoke + OVERHEAD, invoke), i / FPS, RUNGS, s)
        if sw:
            switches.append((i, sw.from_rung, sw.to_rung))
    assert switches == [(22, 0, to)]
    assert with_room(2.5, 2.5) == 4 and with_room(1.6, 1.6) == 3


# (loads before the last confirm_frames (3), the last three, the base a rise is measured from or None)
@pytest.mark.parametrize(
    ("before", "last", "base"),
    [
        ([1.0] * 10, [1.5, 1.5, 1.5], 1.0),  # a rise, confirmed by three frames
        ([1.0] * 10, [1.3, 1.3, 1.3], 1.0),  # exactly rise_factor
        ([1.0] * 10, [1.25, 1.25, 1.25], None),  # less than rise_factor: noise could do that
        ([1.0] * 10, [1.5, 1.0, 1.5], None),  # one frame does not confirm it
        ([1.0] * 10, [1.0, 4.0, 4.0], None),  # two spikes in a row are not a load
        ([2.0] * 10, [2.6, 2.7, 2.8], 2.0),  # measured from the load before, not from the profile
        ([1.0] * 5 + [2.0] * 5, [2.6, 2.6, 2.6], 1.5),  # the median of base_frames (10) before
        ([1.0] * 4, [1.5, 1.5, 1.5], None),  # too few frames before to tell (the first frames of a run)
        ([1.0] * 5, [1.5, 1.5, 1.5], 1.0),
    ],
)
def test_a_rise_is_confirm_frames_in_a_row_above_rise_factor_x_the_load_before(
    before: list[float], last: list[float], base: float | None
) -> None:
    state = ControllerState(0, loads=(*before, *last), overheads=(1.0,) * (len(before) + len(last)))
    assert rise_base(state, ControllerSettings(BUDGET)) == base


# (rises learned, up margin): the up margin leaves room for another rise like the typical (median) one, at
# most max_step (1.5); never looser than up_margin (0.75).
@pytest.mark.parametrize(
    ("rises", "margin"),
    [
        ((), 0.75),
        ((1.2,), 0.75),
        ((1.5,), 1 / 1.5),
        ((1.4,), 1 / 1.4),
        ((3.0,), 1 / 1.5),
        ((1.4, 1.6, 3.0), 1 / 1.5),
        ((1.3, 1.4, 2.0), 1 / 1.4),
    ],
)
def test_the_up_margin_leaves_room_for_the_typical_rise(rises: tuple[float, ...], margin: float) -> None:
    assert up_margin(ControllerState(0, rises=rises), ControllerSettings(BUDGET)) == pytest.approx(margin)


# (max_step, rung it climbs back to): rung 0 costs 14 ms here (16 ms predicted at load 1, 0.71 x budget: within
# the 0.75 up margin). After a x1.5 rise has come and gone it climbs only where another one would fit (1 / 1.5
# = 0.67 x budget: rung 1); with max_step 1 (nothing learned) back to rung 0.
@pytest.mark.parametrize(("max_step", "up_to"), [(1.0, 0), (1.5, 1)])
def test_after_a_rise_it_climbs_only_where_another_would_fit(max_step: float, up_to: int) -> None:
    rungs = [RungCost(14.0), *RUNGS[1:]]
    s = ControllerSettings(budget_ms=BUDGET, stable_s=4.0, cooldown_s=1.0, max_step=max_step)
    tr = simulate([1.0] * 100 + [1.5] * 200 + [1.0] * 400, sigma=0.0, settings=s, rungs=rungs)
    (down_at, _, _), (up_at, _, to) = tr.switches
    assert down_at == 102 and up_at > 300 and to == up_to


# (calm seconds after the rise, rung it ends on): a learned rise is forgotten after rise_memory_s (here 20 s)
# without a new one; then the plain up margin applies again and it climbs back to rung 0.
@pytest.mark.parametrize(("calm_s", "ends_on"), [(15, 1), (60, 0)])
def test_a_learned_rise_is_forgotten_after_a_calm_period(calm_s: int, ends_on: int) -> None:
    rungs = [RungCost(14.0), *RUNGS[1:]]
    s = ControllerSettings(budget_ms=BUDGET, stable_s=4.0, cooldown_s=1.0, rise_memory_s=20.0)
    tr = simulate([1.0] * 100 + [1.5] * 200 + [1.0] * int(calm_s * FPS), sigma=0.0, settings=s, rungs=rungs)
    assert tr.switches[0][0] == 102 and tr.rungs[-1] == ends_on


# After a x1.5 rise it lands where another x1.6 costs no frame over budget; without learning (max_step 1) it
# lands where the first one fits, and the second arrival costs frames.
@pytest.mark.parametrize(("max_step", "lost"), [(1.5, 0), (1.0, 200)])
def test_a_second_arrival_like_the_first_costs_no_frames(max_step: float, lost: int) -> None:
    s = ControllerSettings(budget_ms=BUDGET, stable_s=4.0, cooldown_s=1.0, max_step=max_step)
    tr = simulate([1.0] * 100 + [1.5] * 200 + [2.4] * 200, sigma=0.0, settings=s)
    assert tr.switches[0][0] == 102
    over = sum(t > BUDGET for t in tr.totals[300:])
    assert over == 0 if lost == 0 else over >= 2


@pytest.mark.parametrize("spike", [1, 2])
def test_a_spike_shorter_than_confirm_frames_does_not_step_down(spike: int) -> None:
    load = [1.0] * 100 + [4.0] * spike + [1.0] * 200
    assert not simulate(load, sigma=0.0).switches
    assert simulate([1.0] * 100 + [4.0] * 3 + [1.0] * 200, sigma=0.0).switches  # three frames are a rise


@pytest.mark.parametrize("slow", [1, 2])
def test_slow_first_frames_do_not_step_down(slow: int) -> None:
    # The first invokes after loading are often slow (cold caches, lazy allocation): 4x here.
    assert not simulate([4.0] * slow + [1.0] * 300, sigma=0.0).switches
    assert simulate([4.0] * 3 + [1.0] * 300, sigma=0.0).switches  # three frames are a load


# (how much more the first rung really costs than its profile says, the rung it ends on): a run starts on a
# rung picked from the profile, which knows nothing of the overhead or of a misprofiled cost: rung 0 predicted
# at 18 ms (0.8 x budget). Once check_frames (10) of its own frames are measured their median must fit like a
# landing rung (down_fit x budget): 1.05x (18.8 ms) does and it stays; 1.1x and 1.2x (19.6 / 21.2 ms: under the
# budget, so no other rule would move it, but every bit of noise crosses it) step down once, on the 10th frame.
@pytest.mark.parametrize(("misprofiled", "ends_on"), [(1.0, 0), (1.05, 0), (1.1, 1), (1.2, 1)])
def test_the_first_rung_is_checked_once_its_own_frames_are_measured(misprofiled: float, ends_on: int) -> None:
    tr = simulate([misprofiled] * 300, sigma=0.0)
    assert tr.switches == (
        [] if ends_on == 0 else [(ControllerSettings(BUDGET).check_frames - 1, 0, ends_on)]
    )


# (how much more the landing rung really costs than its profile says, the rung it ends on): a x1.33 load from
# the start (no rise to measure: the median over the budget for 3 frames) steps down to rung 1, predicted at
# 17.3 ms (over the up margin, within down_fit x budget). Once check_frames of rung 1's own frames are
# measured: 1.1x (18.8 ms) fits within down_fit x budget and it stays; 1.2x and 1.25x (20.4 / 21.1 ms: under the
# budget, and less than rise_factor over the load before) step down once more, 10 frames after landing; never
# twice, and never back up.
@pytest.mark.parametrize(("misprofiled", "ends_on"), [(1.0, 1), (1.1, 1), (1.2, 2), (1.25, 2)])
def test_a_landing_rung_that_does_not_fit_once_measured_steps_down_again(
    misprofiled: float, ends_on: int
) -> None:
    s = ControllerSettings(budget_ms=BUDGET, stable_s=4.0, cooldown_s=1.0)
    state = ControllerState(0, 0.0)
    switches = []
    for i in range(400):
        invoke = RUNGS[state.rung].invoke_ms * 1.33 * (misprofiled if state.rung == 1 else 1.0)
        state, sw = step(state, Sample(invoke + OVERHEAD, invoke), i / FPS, RUNGS, s)
        if sw:
            switches.append((i, sw.from_rung, sw.to_rung))
    (landed_at, _, _), *rest = switches
    assert switches[0][1:] == (0, 1)
    assert state.rung == ends_on
    assert rest == ([] if ends_on == 1 else [(landed_at + s.check_frames, 1, 2)])


def test_load_leaves_steps_up_after_the_stable_period_and_not_before() -> None:
    load = [2.5] * 300 + [1.0] * 400
    s = ControllerSettings(budget_ms=BUDGET, stable_s=4.0, cooldown_s=1.0)
    tr = simulate(load, settings=s, start=best_fitting(2.5, s.fit))
    ups = [(at, frm, to) for at, frm, to in tr.switches if to < frm]
    assert len(ups) == 1 and tr.switches == ups
    at, _, to = ups[0]
    assert 300 + s.stable_s * FPS <= at <= 300 + s.stable_s * FPS + 8
    assert to == best_fitting(1.0, s.up_margin) < tr.switches[0][1] - 1  # straight up, not rung by rung
    assert tr.within() >= 0.99


def test_no_step_up_within_the_cooldown_after_a_step_down() -> None:
    # The load drops right after the step down; the stable period alone (0.4 s) would allow an early step up.
    load = [1.0] * 100 + [2.5] * 15 + [1.0] * 400
    s = ControllerSettings(budget_ms=BUDGET, stable_s=0.4, cooldown_s=5.0)
    tr = simulate(load, settings=s)
    (down_at, _, _), (up_at, _, to) = tr.switches
    assert to == 1 and up_at - down_at >= 5.0 * FPS


def test_step_up_needs_the_margin() -> None:
    # Rung 0 predicted at 0.8 x budget: it fits, but not within the 0.75 up margin; start one rung below.
    tr = simulate([1.0] * 1000, start=1)
    assert not tr.switches
    loose = ControllerSettings(budget_ms=BUDGET, up_margin=0.85, stable_s=4.0, cooldown_s=1.0)
    assert simulate([1.0] * 1000, start=1, settings=loose).switches[0][2] == 0


def test_ramp_moves_monotonically() -> None:
    load = [1.0 + 3.0 * i / 2000 for i in range(2000)]
    tr = simulate(load)
    assert all(b >= a for a, b in itertools.pairwise(tr.rungs))  # only ever down on a rising load
    assert tr.within(200) >= 0.98


def test_noise_crossing_the_budget_now_and_then_does_not_cause_switching() -> None:
    # sigma 0.08: about 0.1 % of rung 0's frames over budget, well within the 1 % a budget allows
    traces = [simulate([1.0] * 3000, sigma=0.08, seed=seed) for seed in range(5)]
    assert sum(t > BUDGET for tr in traces for t in tr.totals) >= 5  # the noise does cross the budget
    assert not any(tr.switches for tr in traces)


@pytest.mark.parametrize("seed", range(5))
def test_noise_that_puts_more_than_a_percent_over_budget_steps_down_once_and_stays(seed: int) -> None:
    # sigma 0.12: about 2 % of rung 0's frames over budget (a median with room hides it); rung 1 meets every
    # frame. One step down once a hundred frames show it, never back up (rung 0 is predicted at 0.8 x budget,
    # over the up margin), so never a flap.
    tr = simulate([1.0] * 3000, sigma=0.12, seed=seed)
    (at, frm, to), *rest = tr.switches
    assert (frm, to) == (0, 1) and not rest
    assert at < 1000 and tr.within(at + 1) == 1.0
    assert tr.within() >= 0.99


@pytest.mark.parametrize(
    ("preempt", "start", "rungs_after"),
    [
        (0.05, 0, {1}),  # 5 % of rung 0's frames preempted over budget; rung 1 absorbs the delay
        (0.0, 0, {0}),  # the same load without preemption: rung 0 meets the budget, no switch
        (0.005, 0, {0}),  # 0.5 % preempted: within the budget's 1 %, no switch
        (0.05, 1, {1}),  # rung 1 absorbs them all: nothing to step down for
    ],
)
def test_a_tail_over_budget_that_the_rung_below_saves_steps_down(
    preempt: float, start: int, rungs_after: set[int]
) -> None:
    # load 0.9: rung 0 at 16.4 ms (0.73 x budget), the median far from over budget; a preempted frame is
    # 24.4 ms on rung 0 and 20.4 ms on rung 1
    tr = simulate([0.9] * 2000, sigma=0.02, preempt=preempt, start=start)
    assert set(tr.rungs[1000:]) == rungs_after
    assert len(tr.switches) <= 1
    if preempt >= 0.05 and start == 0:
        assert tr.switches[0][0] < 600  # 3 frames it saves within the last 100 of the rung
        assert tr.within(tr.switches[0][0] + 1) == 1.0


# (every n-th detect frame preempted 8 ms, where the 128 px rung steps to): on the cheapest full-rate rung at
# load 4 (15.6 ms) a preempted frame is 23.6 ms, over budget; a detect frame of cadence 2 costs as much, but only
# every other frame is one, so it saves half of them. Every 12th frame (8 of 100): 4 saved, it steps down;
# every 25th (4 of 100): 2 saved, it stays (a tail of 4 % in detect frames, 2 % at cadence 2).
# From cadence 2 (rung 6) to 3: the 98 detect frames span 196 frames, which hold 65 detect frames of cadence 3,
# so it saves a third of its frames over budget: every 8th (12) saves 4, it steps; every 20th (4.9) does not.
@pytest.mark.parametrize(("start", "every", "to"), [(5, 12, 6), (5, 25, None), (6, 8, 7), (6, 20, None)])
def test_a_tail_on_every_full_rate_rung_moves_to_a_cadence_where_fewer_frames_pay_it(
    start: int, every: int, to: int | None
) -> None:
    s = ControllerSettings(budget_ms=BUDGET)
    state = ControllerState(start, 0.0, checking=None)
    switches = []
    for i in range(300):
        # detect frames only: a carried frame costs no invoke and never goes over budget
        invoke = RUNGS[5].invoke_ms * 4.0 + (PREEMPT_MS if i % every == every - 1 else 0.0)
        state, sw = step(state, Sample(invoke + OVERHEAD, invoke), i / FPS, RUNGS, s)
        if sw:
            switches.append((sw.from_rung, sw.to_rung, sw.reason))
            break
    if to is None:
        assert not switches
    else:
        ((frm, got, reason),) = switches
        assert (frm, got) == (start, to) and "saved below" in reason


def test_a_tail_step_down_names_the_frames_it_counted() -> None:
    # every 5th detect frame on rung 0 preempted (24.4 ms, over budget; 20.4 ms on rung 1): the 3rd one saved
    # comes at frame 16, when 17 frames were measured on the rung and the newest 2 are left to the rise rule.
    # The reason names those 15 frames, not tail_frames (100), which the rung has not run for yet.
    s = ControllerSettings(budget_ms=BUDGET)
    state = ControllerState(0, 0.0, checking=None)
    for i in range(100):
        invoke = RUNGS[0].invoke_ms + (PREEMPT_MS if i % 5 == 4 else 0.0)
        state, sw = step(state, Sample(invoke + OVERHEAD, invoke), i / FPS, RUNGS, s)
        if sw:
            break
    assert sw is not None and (i, sw.to_rung) == (16, 1)
    assert sw.reason.startswith("3.0 frames over budget 22.5 ms in the last 15 detect frames saved below")


def test_a_step_up_waits_for_a_stable_period_in_which_the_better_rung_met_every_frame() -> None:
    # On rung 1 at load 0.9, rung 0 is predicted at 0.73 x budget (within the up margin) for the whole stable
    # period; 5 % of frames are preempted 8 ms, which rung 1 absorbs and rung 0 would not: no step up, though
    # the median alone would climb. The control: without preemption it climbs after the stable period.
    tail = simulate([0.9] * 2000, sigma=0.02, preempt=0.05, start=1)
    assert not tail.switches
    quiet = simulate([0.9] * 2000, sigma=0.02, start=1)
    assert [(frm, to) for _, frm, to in quiet.switches] == [(1, 0)]
    assert quiet.switches[0][0] == pytest.approx(4.0 * FPS, abs=2)


# (rung, load, every n-th detect frame a 4x spike, the first step up's frame or None): on rung 1 at load 0.8 rung 0
# fits the up margin (14.8 ms, 0.66 x budget); a 4x spike is over budget on rung 1 (38.8 ms) and on rung 0
# (53.2 ms) alike, so climbing costs no frame and, like the tail rule (which saves nothing on it), the climb does
# not count it. Every 30th frame is at most one frame over budget in the last window (25) on rung 1: it climbs
# after the stable period (4 s, 100 frames), and stays. Every 20th frame puts two in a window over budget on
# rung 1: held. From cadence 2 (rung 6, load 4) to the full-rate rung 5 (15.6 ms, 0.69 x budget) the same spike
# costs frames (rung 5 pays it on every frame, not every other): held.
@pytest.mark.parametrize(
    ("start", "load", "every", "up_at"), [(1, 0.8, 30, 100), (1, 0.8, 20, None), (6, 4.0, 30, None)]
)
def test_a_spike_over_budget_on_both_rungs_does_not_hold_a_step_up(
    start: int, load: float, every: int, up_at: int | None
) -> None:
    s = ControllerSettings(budget_ms=BUDGET, stable_s=4.0, cooldown_s=1.0)
    state = ControllerState(start, 0.0, checking=None)
    switches = []
    for i in range(600):
        # detect frames only: a carried frame costs no invoke and never goes over budget
        invoke = RUNGS[state.rung].invoke_ms * load * (4.0 if i % every == every - 1 else 1.0)
        state, sw = step(state, Sample(invoke + OVERHEAD, invoke), i / FPS, RUNGS, s)
        if sw:
            switches.append((i, sw.from_rung, sw.to_rung))
    if up_at is None:
        assert not switches
    else:
        ((at, frm, to),) = switches
        assert (frm, to) == (start, start - 1) and up_at <= at <= up_at + 2


@pytest.mark.parametrize("seed", range(5))
def test_spiky_load_does_not_flap(seed: int) -> None:
    tr = simulate([1.0] * 3000, sigma=0.08, spikes=0.02, seed=seed)  # 2 % of frames take 4x as long
    assert len(tr.switches) <= 2 and tr.rungs.count(0) >= 0.9 * len(tr.rungs)
    for (a, *_), (b, *_) in itertools.pairwise(tr.switches):
        assert b - a >= 4.0 * FPS  # never faster than the stable period


def test_bursty_load_steps_down_and_never_back_up() -> None:
    # 0.4 s bursts at 2.5x every 2 s: the first burst steps down (to a rung that fits it within down_fit x budget,
    # 0.81); a later burst that noise puts over down_fit is a rise, and steps once more, to a rung with room for
    # it. The quiet gaps never last the stable period.
    load = [2.5 if i % 50 < 10 else 1.0 for i in range(3000)]
    tr = simulate(load)
    assert 1 <= len(tr.switches) <= 2 and all(to > frm for _, frm, to in tr.switches)
    assert tr.switches[0] == (2, 0, best_fitting(2.5, 0.85))
    assert tr.within(100) == 1.0


def test_load_that_returns_after_each_step_up_is_damped() -> None:
    # 5 s quiet, 1.5 s at 2.5x, repeated for 2 min: each quiet spell outlasts the 4 s stable period, so every
    # step up would meet the next burst. After the first step up that does not last, the hold doubles.
    load = [2.5 if i % 162 >= 125 else 1.0 for i in range(3000)]
    tr = simulate(load, start=best_fitting(1.0, 0.75))
    ups = [sw for sw in tr.switches if sw[2] < sw[1]]
    assert 1 <= len(ups) <= 2 and len(tr.switches) <= 5, tr.switches
    assert tr.within(500) >= 0.99


def test_a_step_up_goes_only_as_far_as_fitted_for_the_whole_stable_period() -> None:
    # The load falls in two steps; the step up waits for the stable period after the first fall and goes to
    # the rung that fitted all along, not to the one the last frames alone would allow.
    load = [2.5] * 100 + [1.5] * 95 + [1.0] * 10 + [1.5] * 200
    s = ControllerSettings(budget_ms=BUDGET, stable_s=4.0, cooldown_s=1.0)
    tr = simulate(load, settings=s, start=best_fitting(2.5, s.fit))
    (_, _, to), *rest = tr.switches
    assert to == best_fitting(1.5, s.up_margin) != best_fitting(1.0, s.up_margin) and not rest


def test_event_holds_the_rung_unless_far_over_budget() -> None:
    s = ControllerSettings(budget_ms=BUDGET, stable_s=4.0, cooldown_s=1.0, event_overrun_factor=2.0)
    load = [1.0] * 50 + [1.7] * 300  # rung 0 predicted at 1.3 x budget
    assert simulate(load, settings=s).switches  # without an event: steps down
    held = simulate(load, settings=s, event=[True] * 350)
    assert not held.switches  # during an event: holds, for well over the window
    far = [1.0] * 50 + [3.0] * 100  # rung 0 predicted at 2.2 x budget: steps down even during an event
    tr = simulate(far, settings=s, event=[True] * 150)
    assert tr.switches and 50 <= tr.switches[0][0] <= 56


def test_throttle_factor_tightens_the_budget() -> None:
    s = ControllerSettings(budget_ms=BUDGET)
    state = ControllerState(0, 0.0)
    for i in range(10):
        state, sw = step(state, Sample(18.0, 16.0), i / FPS, RUNGS, s, budget_factor=0.7)
        if sw:
            break
    assert sw is not None and sw.to_rung >= 1
    state = ControllerState(0, 0.0)
    for i in range(50):
        state, sw = step(state, Sample(18.0, 16.0), i / FPS, RUNGS, s)
        assert sw is None


@pytest.mark.parametrize(("max_step", "to"), [(1.0, 2), (1.5, 3)])
def test_noisy_profile_never_picks_a_rung_predicted_not_to_fit(max_step: float, to: int) -> None:
    # The profile measured 256 px slower than 300 px (noise); the ladder keeps quality order, so a step down
    # from 300 under a x1.5 rise skips 256 (predicted not to fit) and lands on the best rung that does (2); with
    # room for another such rise (rung 2's 15.5 ms > 22.5 / 1.5), on rung 3.
    rungs = [RungCost(16.0), RungCost(17.0), RungCost(9.0), RungCost(6.5)]
    s = ControllerSettings(budget_ms=BUDGET, stable_s=4.0, cooldown_s=1.0, max_step=max_step)
    tr = simulate([1.0] * 50 + [1.5] * 100, rungs=rungs, settings=s)
    assert tr.switches[0][1:] == (0, to)


def test_load_and_overhead_are_estimated_from_the_stage_times() -> None:
    s = ControllerSettings(budget_ms=100.0)
    state = ControllerState(0, 0.0)
    for i, (inv, extra) in enumerate([(32.0, 5.0), (32.0, 5.0), (300.0, 5.0), (32.0, 5.0), (32.0, 90.0)]):
        state, _ = step(state, Sample(inv + extra, inv, wait_ms=extra), i / FPS, RUNGS, s)
    assert predict(state, RUNGS)[1] == pytest.approx(11.5 * 2.0 + 5.0)  # median: the spikes are outliers
    state, _ = step(state, Sample(0.3), 1.0, RUNGS, s)  # a carried frame says nothing about the load
    assert predict(state, RUNGS)[1] == pytest.approx(11.5 * 2.0 + 5.0)


@pytest.mark.parametrize(
    ("rungs", "budget", "first"),
    [
        (RUNGS, 20.0, 5),  # the cheapest rung detecting every frame, not the best the profile says fits ...
        (RUNGS, 1000.0, 5),  # ... whatever the budget
        (RUNGS, 4.0, 5),  # its profile, 3.4 ms, is within 85 % of the budget: it starts there
        (RUNGS, 3.9, 7),  # over 85 % of the budget (the profile only errs low): the cheapest of all
        (RUNGS, 0.5, 7),
        ([RungCost(16.0), RungCost(17.0), RungCost(9.0), RungCost(9.0)], 20.0, 2),  # a tie: the better one
        ([RungCost(4.0, 2), RungCost(3.0, 3)], 20.0, 1),  # no full-rate rung: the cheapest of all
    ],
)
def test_a_run_starts_on_the_cheapest_rung_that_detects_every_frame(
    rungs: list[RungCost], budget: float, first: int
) -> None:
    # not from the profile: the profile times rungs back to back, and a live frame costs more
    assert initial_rung(rungs, ControllerSettings(budget_ms=budget)) == first


def start_run(load: list[float], s: ControllerSettings) -> Trace:
    """``simulate`` from the state a run starts in (start_state), no noise."""
    state, tr = start_state(RUNGS, s, 0.0), Trace()
    for i, factor in enumerate(load):
        ms = RUNGS[state.rung].invoke_ms * factor  # every rung here detects every frame
        tr.rungs.append(state.rung)
        tr.totals.append(ms + OVERHEAD)
        before = state.rung
        state, sw = step(state, Sample(ms + OVERHEAD, ms), i / FPS, RUNGS, s)
        if sw is not None:
            tr.switches.append((i, before, sw.to_rung))
    return tr


@pytest.mark.parametrize("load", [1.0, 1.6, 2.4])
def test_the_first_climb_needs_only_the_first_rungs_check(load: float) -> None:
    s = ControllerSettings(budget_ms=BUDGET, stable_s=4.0, cooldown_s=1.0)
    tr = start_run([load] * 400, s)
    # one switch, as soon as check_frames of the first rung's frames are measured (not stable_s: 100 frames),
    # straight to the best rung predicted within the up margin; never over budget on the way
    assert tr.switches == [(s.check_frames - 1, 5, best_fitting(load, s.up_margin))]
    assert tr.within() == 1.0


def test_the_rung_of_the_first_climb_is_checked() -> None:
    # The first rung's frames say load 1 and 2 ms of overhead; on the rung it climbs to, the overhead is 8 ms
    # (capture competes more): within the budget and no rise, but over down_fit, which that rung's own check
    # finds once it has measured check_frames frames.
    s = ControllerSettings(budget_ms=BUDGET, stable_s=4.0, cooldown_s=1.0)
    state = start_state(RUNGS, s, 0.0)
    i, switches = 0, list[tuple[int, int, int, str]]()
    while len(switches) < 2 and i < 200:
        ms = RUNGS[state.rung].invoke_ms
        extra = OVERHEAD if state.rung == 5 else 8.0
        before = state.rung
        state, sw = step(state, Sample(ms + extra, ms), i / FPS, RUNGS, s)
        if sw is not None:
            switches.append((i, before, sw.to_rung, sw.reason))
        i += 1
    (at_up, _, climbed, _), (at_down, frm, _, why) = switches
    assert climbed == best_fitting(1.0, s.up_margin) and frm == climbed
    assert at_down - at_up == s.check_frames and why.startswith("measured")


def test_only_the_first_climb_skips_the_stable_period() -> None:
    # the load falls just after the first climb: the rung climbed to passes its check with a better rung fitting,
    # but that second climb is an ordinary one and waits for the stable period
    s = ControllerSettings(budget_ms=BUDGET, stable_s=4.0, cooldown_s=1.0)
    tr = start_run([2.4] * s.check_frames + [1.0] * 300, s)
    assert [sw[1:] for sw in tr.switches] == [
        (5, best_fitting(2.4, s.up_margin)),
        (best_fitting(2.4, s.up_margin), best_fitting(1.0, s.up_margin)),
    ]
    assert tr.switches[0][0] == s.check_frames - 1
    assert tr.switches[1][0] - tr.switches[0][0] >= s.stable_s * FPS


def test_a_start_whose_check_finds_nothing_better_climbs_later_only_after_the_stable_period() -> None:
    # A run starting on a busy device (a Pi at boot): the first rung's check passes, but under that load no
    # better rung fits, so there is no first climb to make. The check's shortcut ends there: a dip in the load
    # much later (a few quiet frames) is not a stable period, and climbing on it would run over budget.
    s = ControllerSettings(budget_ms=BUDGET, stable_s=4.0, cooldown_s=1.0)
    busy = 4.0  # the cheapest rung fits (3.4 x 4 + 2 ms); the next one does not fit the up margin
    assert best_fitting(busy, s.up_margin) == 5
    tr = start_run([busy] * 200 + [1.0] * 6 + [busy] * 200, s)
    assert tr.switches == [] and tr.within() == 1.0
    # a load that really leaves is still climbed after, once it has fitted for the stable period
    tr = start_run([busy] * 200 + [1.0] * 300, s)
    assert len(tr.switches) == 1 and tr.switches[0][2] == best_fitting(1.0, s.up_margin)
    assert tr.switches[0][0] >= 200 + s.stable_s * FPS


def test_a_state_made_mid_run_climbs_only_after_the_stable_period() -> None:
    s = ControllerSettings(budget_ms=BUDGET, stable_s=4.0, cooldown_s=1.0)
    tr = simulate([1.0] * 300, settings=s, start=5)  # ControllerState(5, ...): not the start of a run
    assert tr.switches and tr.switches[0][0] >= s.stable_s * FPS


def test_settings_are_a_view_of_the_scheduler_section() -> None:
    """Every knob of ``scheduler:`` that the controller has reaches it (budget from budget_ms or target_fps)."""
    from edgevision.config import SchedulerConfig

    section = SchedulerConfig(
        enabled=True,
        target_fps=20,
        window=40,
        down_after=4,
        up_margin=0.6,
        stable_s=7,
        cooldown_s=3,
        event_overrun_factor=3,
    )
    assert ControllerSettings.of(section) == ControllerSettings(
        budget_ms=50.0,
        window=40,
        down_after=4,
        up_margin=0.6,
        stable_s=7,
        cooldown_s=3,
        event_overrun_factor=3,
    )
    assert ControllerSettings.of(SchedulerConfig(budget_ms=80)).budget_ms == 80


def test_frames_from_before_a_step_up_do_not_count_against_the_new_rung() -> None:
    # 8 s at load 1.3 on rung 1 (rung 0 would run 22.8 ms, over budget), then quiet at 0.9. With a 2 s stable
    # period the step up comes while most of the last 100 frames are still from the load: the tail rule looks
    # only at frames measured on the rung it judges, so the climb is kept.
    s = ControllerSettings(budget_ms=BUDGET, stable_s=2.0, cooldown_s=1.0)
    tr = simulate([1.3] * 200 + [0.9] * 400, sigma=0.02, settings=s, start=1)
    assert [(frm, to) for _, frm, to in tr.switches] == [(1, 0)]
    assert 200 + 2.0 * FPS <= tr.switches[0][0] < 200 + 100


def test_the_tail_window_on_a_cadence_rung_counts_its_detect_frames_only() -> None:
    # Cadence 3 under a load at which every detect frame is over budget on both cadence rungs (3.4 x 7 + 2 ms),
    # then quiet: it climbs to cadence 2 after the stable period (2 s: 17 detect frames of cadence 3). The tail
    # window there is the detect frames measured on cadence 2; counting its carried frames too would reach back
    # over the climb into the loaded frames, where cadence 3 saves a third of them, and step straight back down.
    s = ControllerSettings(budget_ms=BUDGET, stable_s=2.0, cooldown_s=1.0)
    rungs = [RungCost(3.4, 2), RungCost(3.4, 3)]
    tr = simulate([7.0] * 150 + [1.0] * 400, sigma=0.0, settings=s, rungs=rungs, start=1)
    ((at, frm, to),) = tr.switches
    assert (frm, to) == (1, 0) and 150 + 2.0 * FPS <= at < 150 + 100


@pytest.mark.parametrize("starting", [True, False])
def test_a_climbs_reason_says_whether_it_was_the_runs_first(starting: bool) -> None:
    """The run's first climb waits for the first rung's check, not a stable period, and says so; a later climb
    names the stable period it waited."""
    s = ControllerSettings(budget_ms=BUDGET, stable_s=1.0, cooldown_s=0.0)
    state = start_state(RUNGS, s, 0.0) if starting else ControllerState(5, 0.0, checking=None)
    for i in range(500):
        r = RUNGS[state.rung]
        state, sw = step(state, Sample(r.invoke_ms + OVERHEAD, r.invoke_ms), i / FPS, RUNGS, s)
        if sw is not None:
            break
    assert sw is not None and sw.direction == "up"
    if starting:
        assert (
            "on the run's first climb, after its first rung's check" in sw.reason and " for " not in sw.reason
        )
    else:
        assert "first climb" not in sw.reason and " for 1.0 s " in sw.reason, sw.reason
