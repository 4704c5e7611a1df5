"""The event stage: one tracker for every consumer, its update on each result, an idempotent end-of-input flush;
and the recording switch, which edits the update the recorder sees."""

from __future__ import annotations

import numpy as np
import pytest

from edgevision.events.stage import EventStage
from edgevision.events.state import EventSettings
from edgevision.pipeline.control import Controls, RecordingGate
from edgevision.results import EventEnd, EventStart, EventUpdate, FrameResult, Latency
from edgevision.results.detection import BBox, Detection
from edgevision.results.frame import Frame

IMAGE = np.zeros((4, 4, 3), np.uint8)
SETTINGS = EventSettings(trigger_frames=2, window_frames=3, post_roll=0.25, min_score=0.5)


def person(score: float = 0.9) -> Detection:
    return Detection("person", 0, score, BBox(0.1, 0.1, 0.5, 0.9))


def result(i: int, dets: list[Detection]) -> FrameResult:
    return FrameResult(Frame(IMAGE, i / 10, i, "t"), dets, Latency(), "m")


def run(stage: EventStage, pattern: str) -> list[EventUpdate]:
    """Feed frames at 10 fps: ``P`` a person (score rising), ``w`` a weak (non-qualifying) one, ``.`` nobody."""
    out = []
    for i, c in enumerate(pattern):
        dets = {"P": [person(0.6 + i / 100), Detection("car", 2, 0.9, BBox(0, 0, 1, 1))], "w": [person(0.3)]}
        r = result(i, dets.get(c, []))
        stage.process(r)
        assert r.events is not None
        out.append(r.events)
    return out


@pytest.mark.parametrize(
    ("pattern", "starts", "ends"),
    [
        ("....", [], []),
        ("P..P..", [], []),  # never 2 of the last 3 frames
        ("PP....", [1], [4]),  # started on the 2nd hit; ended 0.25 s after the last one
        ("wwww", [], []),  # below min_score: never qualifies
        ("PP....PP....", [1, 7], [4, 10]),
    ],
)
def test_each_result_carries_the_signals_of_its_frame(
    pattern: str, starts: list[int], ends: list[int]
) -> None:
    ups = run(EventStage(SETTINGS), pattern)
    assert [i for i, u in enumerate(ups) if u.started] == starts
    assert [i for i, u in enumerate(ups) if u.ended] == ends


def test_an_update_holds_the_state_matches_and_statistics() -> None:
    ups = run(EventStage(SETTINGS), "PPP.")
    first, started, third, empty = ups
    assert not first.active and first.stats.max_score == 0.0 and first.seq == 0
    assert len(first.matches) == 1 and first.matches[0].label == "person"  # the car does not qualify
    assert started.active and started.seq == 1 and isinstance(started.started, EventStart)
    assert started.best_frame and started.stats.max_score == pytest.approx(0.61)
    assert third.best_frame and third.stats.max_score == pytest.approx(0.62) and third.stats.peak_count == 1
    assert third.stats.best_ts == pytest.approx(0.2) and third.stats.mean_score == pytest.approx(0.615)
    assert empty.active and not empty.best_frame and empty.matches == ()


def test_flush_ends_an_active_event_once_for_every_consumer() -> None:
    stage = EventStage(SETTINGS)
    assert stage.flush() is None  # nothing seen
    run(stage, "PPP")
    assert stage.active
    final = stage.flush()
    assert final is not None and stage.flush() is final and not stage.active  # idempotent: same update
    end = final.ended
    assert isinstance(end, EventEnd) and end.seq == 1 and end.end_ts == pytest.approx(0.2) and not end.split
    assert final.stats.max_score == pytest.approx(end.max_score) and end.max_score == pytest.approx(0.62)


def test_flush_without_an_active_event_is_none() -> None:
    stage = EventStage(SETTINGS)
    run(stage, "PP....")
    assert stage.flush() is None and stage.flush() is None


class Collect:
    def __init__(self) -> None:
        self.results: list[FrameResult] = []
        self.closed = False

    def on_result(self, result: FrameResult) -> None:
        self.results.append(result)

    def close(self) -> None:
        self.closed = True


def gated(pattern: str, switch: str) -> list[tuple[str, int, float]]:
    """Run ``pattern`` through a stage and a gate whose recordings switch is ``switch`` (``1`` on, ``0`` off)
    per frame; the signals the recorder sees as (kind, seq, frame index)."""
    stage, controls, inner = EventStage(SETTINGS), Controls(recordings=True), Collect()
    gate = RecordingGate(inner, controls)
    for i, (c, on) in enumerate(zip(pattern, switch, strict=True)):
        controls.set("recordings", on == "1")
        r = result(i, [person()] if c == "P" else [])
        stage.process(r)
        gate.on_result(r)
    seen: list[tuple[str, int, float]] = []
    for r in inner.results:
        assert r.events is not None
        for sig in r.events.signals:
            kind = "start" if isinstance(sig, EventStart) else "end"
            seen.append((kind, sig.seq, r.frame.index))
        if switch[r.frame.index] == "0":
            assert r.detections == [] and r.events.matches == ()
    return seen


@pytest.mark.parametrize(
    ("pattern", "switch", "seen"),
    [
        ("PPPP....", "11111111", [("start", 1, 1), ("end", 1, 6)]),  # on: everything passes
        ("PPPP....", "00000000", []),  # off: nothing is recorded
        ("PPPP....", "11100000", [("start", 1, 1), ("end", 1, 3)]),  # off mid-event: ends at that frame
        ("PPPPPP....", "0001111111", [("start", 1, 3), ("end", 1, 8)]),  # on mid-event: starts at that frame
        ("PP....PP....", "000000111111", [("start", 2, 7), ("end", 2, 10)]),  # only the visit while on
        ("PPPP....", "11011111", [("start", 1, 1), ("end", 1, 2), ("start", 1, 3), ("end", 1, 6)]),
    ],
)
def test_the_recordings_switch_edits_what_the_recorder_sees(
    pattern: str, switch: str, seen: list[tuple[str, int, int]]
) -> None:
    assert gated(pattern, switch) == seen


def test_the_gate_leaves_the_stage_and_other_consumers_alone() -> None:
    stage, controls, inner = EventStage(SETTINGS), Controls(recordings=False), Collect()
    gate = RecordingGate(inner, controls)
    r = result(0, [person()])
    stage.process(r)
    r2 = result(1, [person()])
    stage.process(r2)
    gate.on_result(r2)
    assert (
        r2.events is not None and r2.events.started is not None and r2.detections
    )  # the original is untouched
    assert inner.results[0].events is not None and inner.results[0].events.signals == ()
    gate.close()
    assert inner.closed
