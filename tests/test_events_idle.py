"""A live source gone quiet (a camera unplugged, a stream down) ends the running event by time alone.

Events are on the frame clock, and a tracker fed only by frames kept an event open for as long as no frame came:
the index row stayed ``recording``, MQTT occupancy stayed ON and the metrics' active gauge at 1 until the camera
came back. The pipeline now asks the event stage at every empty poll of a live source
(:meth:`EventStage.idle`), and every :class:`~edgevision.results.IdleEventSink` hears the end.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import recorder_driver as drv
from mqtt_helpers import FakePublisher
from test_mqtt import TOPICS, _messages, _result, _staged
from test_pipeline import IMAGE, PERSON, FakeRunner, FakeSink, FakeStep, frames

from edgevision.events import EventSettings, EventStage
from edgevision.events.state import EventTracker
from edgevision.pipeline.control import Controls, RecordingGate
from edgevision.pipeline.loop import Pipeline
from edgevision.publish.metrics import Metrics
from edgevision.publish.mqtt_events import EventRelay
from edgevision.publish.presence import Presence
from edgevision.recorder.index import EventIndex
from edgevision.recorder.recorder import Recorder
from edgevision.results import EventEnd, EventStart, EventUpdate, Frame

POST_ROLL = 2.0


def _tracker_seen_at(last_seen: float) -> EventTracker:
    t = EventTracker(EventSettings(post_roll=POST_ROLL, trigger_frames=1, window_frames=1))
    t.update(last_seen, [PERSON])  # starts the event; last person frame at last_seen
    assert t.active
    return t


@pytest.mark.parametrize(
    ("now", "end_ts"),
    [
        (10.5, None),  # within the post-roll: a frame may still come
        (11.999, None),
        (12.0, 12.0),  # the post-roll has passed: ends where the next frame would have ended it
        (300.0, 12.0),  # a long outage ends it at the same time, not at "now"
    ],
)
def test_expire_ends_the_event_once_its_post_roll_passed(now: float, end_ts: float | None) -> None:
    t = _tracker_seen_at(10.0)
    end = t.expire(now)
    assert (end.end_ts if end is not None else None) == end_ts
    assert t.active == (end_ts is None)


def test_expire_without_an_event_and_after_one_says_nothing() -> None:
    t = EventTracker(EventSettings(post_roll=POST_ROLL))
    assert t.expire(100.0) is None
    t = _tracker_seen_at(10.0)
    assert t.expire(20.0) is not None and t.expire(30.0) is None  # ended once


def test_stage_idle_gives_the_closing_update_and_flush_then_has_nothing() -> None:
    stage = EventStage(EventSettings(post_roll=POST_ROLL, trigger_frames=1, window_frames=1))
    stage.update(_result(0, 1))
    assert stage.active and stage.idle(1.0) is None
    update = stage.idle(5.0)
    assert update is not None and not update.active and not stage.active
    (end,) = update.signals
    assert isinstance(end, EventEnd) and end.end_ts == POST_ROLL and end.seq == 1
    assert stage.flush() is None  # the end is not announced twice at close


class Listening(FakeSink):
    """A sink that hears idle event updates."""

    def __init__(self) -> None:
        super().__init__("idle", [])
        self.idle: list[EventUpdate] = []

    def on_idle_events(self, update: EventUpdate) -> None:
        self.idle.append(update)


@pytest.mark.parametrize(("live", "heard"), [(True, 1), (False, 0)], ids=["live", "file"])
def test_the_pipeline_asks_at_empty_polls_of_a_live_source_only(live: bool, heard: int) -> None:
    stage = EventStage(EventSettings(post_roll=POST_ROLL, trigger_frames=1, window_frames=1))
    runner = FakeRunner([*frames(2), None, None, None], live=live)
    listening, deaf = Listening(), FakeSink("deaf", [])
    clock = iter([0.0, 0.5, 1.0, 3.0, 9.0, 10.0, 11.0, 12.0, 13.0, 14.0])
    Pipeline(
        runner,
        FakeStep([], detections={0: [PERSON], 1: [PERSON]}),
        [deaf, listening],
        [stage],
        clock=lambda: next(clock),
        idle_events=stage.idle,
    ).run(threading.Event())
    assert len(listening.idle) == heard  # once: the event ended at the first poll past its post-roll
    if heard:
        (end,) = listening.idle[0].signals
        assert isinstance(end, EventEnd) and end.end_ts == pytest.approx(0.1 + POST_ROLL)


@pytest.mark.parametrize("offset", [5000.0, 1.5], ids=["paced-file-media-clock", "stream-anchor-lagging"])
def test_a_short_gap_does_not_end_an_event_whose_frames_are_not_on_the_pipeline_clock(offset: float) -> None:
    """Frames of a paced file (``source.realtime``, a live runner) are on the media clock, a stream's on an anchor
    that may lag the monotonic clock by up to its drift limit. The idle check compared the pipeline's clock with
    the frames' and ended the event at the first empty poll (a paced file) or up to 1.5 s early (the stream);
    the frame after a 0.5 s gap, a person in it, then started a second event."""
    stage = EventStage(EventSettings(post_roll=POST_ROLL, trigger_frames=1, window_frames=1))
    shown = [Frame(IMAGE, ts, i, "fake") for i, ts in enumerate((0.0, 0.1, 0.7))]
    runner = FakeRunner([shown[0], shown[1], None, shown[2]], live=True)
    listening = Listening()
    # the pipeline clock: the frames' time shifted by ``offset``; the empty poll comes 0.5 s after frame 1
    clock = iter([0.0, 0.0, 0.1, 0.6, 0.7, 0.8, 0.9, 1.0])
    Pipeline(
        runner,
        FakeStep([], detections={i: [PERSON] for i in range(3)}),
        [listening],
        [stage],
        clock=lambda: next(clock) + offset,
        idle_events=stage.idle,
    ).run(threading.Event())
    assert listening.idle == [] and stage.tracker.seq == 1 and stage.active  # one event, still going


def _end(seq: int) -> EventUpdate:
    return EventUpdate((EventEnd(seq, 5.0, 3.0, False, 0.9, 0.8, 1, 2.0),), False, seq)


@pytest.mark.parametrize(
    ("recording", "seq", "passed"),
    [(1, 1, True), (1, 2, False), (None, 1, False)],
    ids=["the-recorded-event", "another-event", "nothing-recorded"],
)
def test_the_recording_gate_passes_on_the_end_of_the_event_it_records(
    recording: int | None, seq: int, passed: bool
) -> None:
    inner = Listening()
    gate = RecordingGate(inner, Controls(detect=True, recordings=True))
    gate._recording = recording
    gate.on_idle_events(_end(seq))
    assert len(inner.idle) == int(passed)
    assert gate._recording == (None if passed else recording)


def test_presence_turns_occupancy_off_and_sends_the_end_while_no_frame_comes() -> None:
    pub = FakePublisher(TOPICS)
    stage = EventStage(EventSettings(post_roll=0.5))
    presence = Presence(pub, EventRelay(pub), stage, emit_events=True)
    for i in range(10):  # a person for 1 s at 10 fps, then the camera is gone
        presence.on_result(_staged(presence, _result(i, 1)))
    assert [p for t, p, _ in pub.queued if t.endswith("/occupancy")] == [b"OFF", b"ON"]
    update = stage.idle(2.0)
    assert update is not None
    presence.on_idle_events(update)
    assert [p for t, p, _ in pub.queued if t.endswith("/occupancy")] == [b"OFF", b"ON", b"OFF"]
    assert [m["type"] for m in _messages(pub) if m["type"] != "update"] == ["new", "end"]
    assert pub.states[-1] == (TOPICS.count("person"), b"0")
    presence.close()  # nothing more at close: the end went out once
    assert [p for t, p, _ in pub.queued if t.endswith("/occupancy")] == [b"OFF", b"ON", b"OFF"]


def test_metrics_event_gauge_falls_with_an_idle_end() -> None:
    m = Metrics()
    m.event_active.set(1.0)
    m.on_idle_events(_end(1))
    assert m.event_active._value.get() == 0.0


def test_the_recorder_closes_the_clip_and_row_while_no_frame_comes(tmp_path: Path) -> None:
    data = tmp_path / "data"
    stage = EventStage(drv.settings(data).events)  # post_roll 1 s
    rec = Recorder(drv.settings(data), blocking=True, events=stage)
    try:
        for r in drv.results(10.0, 3.0, [(0.5, 2.5)]):  # the camera is unplugged at 2.9 s, mid-event
            rec.on_result(r)
        update = stage.idle(10.0)
        assert update is not None
        rec.on_idle_events(update)
        assert rec.drain(30.0)
        (row,) = EventIndex(data).list()
        assert row.status == "finalized" and row.end_ts == pytest.approx(2.4 + 1.0)
        assert row.clip_path is not None and (data / row.clip_path).is_file()
    finally:
        rec.close()
    assert rec.events_finalized == 1 and [r.status for r in EventIndex(data).list()] == ["finalized"]


def test_start_signals_never_come_from_idle() -> None:
    stage = EventStage(EventSettings(post_roll=POST_ROLL))
    for i in range(5):
        stage.update(_result(i, 1))
    update = stage.idle(100.0)
    assert update is not None and not any(isinstance(s, EventStart) for s in update.signals)
