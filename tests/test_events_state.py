"""The pure event state machine and retention planning."""

from __future__ import annotations

import pytest

from edgevision.events.state import EventEnd, EventSettings, EventStart, EventTracker, point_in_polygon
from edgevision.recorder.retention import RetentionPolicy, StoredEvent, plan_retention
from edgevision.results.detection import BBox, Detection

PERSON = Detection("person", 0, 0.8, BBox(0.4, 0.4, 0.6, 0.9))
WEAK = Detection("person", 0, 0.3, BBox(0.4, 0.4, 0.6, 0.9))
TINY = Detection("person", 0, 0.9, BBox(0.4, 0.4, 0.41, 0.41))
CAR = Detection("car", 2, 0.9, BBox(0.1, 0.1, 0.5, 0.5))


def feed(tracker: EventTracker, pattern: str, fps: float = 10.0) -> list[tuple[int, EventStart | EventEnd]]:
    """Feed frames: 'P' a person frame, '.' an empty one. Returns (frame, signal) pairs."""
    out = []
    for i, c in enumerate(pattern):
        for sig in tracker.update(i / fps, [PERSON] if c == "P" else []):
            out.append((i, sig))
    return out


def test_m_of_n_start_and_post_roll_end() -> None:
    t = EventTracker(EventSettings(trigger_frames=3, window_frames=5, post_roll=1.0))
    sigs = feed(t, "..P.P.P....." + "." * 10)
    assert [(i, type(s).__name__) for i, s in sigs] == [(6, "EventStart"), (16, "EventEnd")]
    start, end = sigs[0][1], sigs[1][1]
    assert (
        isinstance(start, EventStart)
        and start.trigger_ts == pytest.approx(0.6)
        and start.first_seen_ts == pytest.approx(0.2)
    )
    assert isinstance(end, EventEnd) and end.end_ts == pytest.approx(1.6) and not end.split
    assert end.peak_count == 1 and end.max_score == pytest.approx(0.8)


def test_no_post_roll_ends_at_the_first_frame_without_a_person() -> None:
    """recorder.post_roll_s: 0 (allowed) means no tail after the person leaves, not one event per few frames of
    a person standing in view: the event ends at the first frame that has nobody."""
    t = EventTracker(EventSettings(trigger_frames=3, window_frames=5, post_roll=0.0))
    sigs = feed(t, "PPPPPPPPPP...")
    assert [(i, type(s).__name__) for i, s in sigs] == [(2, "EventStart"), (10, "EventEnd")]
    end = sigs[1][1]
    assert isinstance(end, EventEnd) and end.end_ts == pytest.approx(0.9) and not end.split


def test_sparse_hits_do_not_trigger() -> None:
    t = EventTracker(EventSettings(trigger_frames=3, window_frames=5))
    assert feed(t, "P...P...P...P...P...") == []


def test_flicker_inside_post_roll_keeps_one_event() -> None:
    t = EventTracker(EventSettings(trigger_frames=2, window_frames=3, post_roll=0.5))
    sigs = feed(t, "PP..P...P..P" + "." * 10)
    assert [type(s).__name__ for _, s in sigs] == ["EventStart", "EventEnd"]


def test_long_event_is_split() -> None:
    t = EventTracker(EventSettings(trigger_frames=1, window_frames=1, post_roll=1.0, max_length=2.0))
    sigs = feed(t, "P" * 50)
    kinds = [(i, type(s).__name__, getattr(s, "split", None)) for i, s in sigs]
    assert kinds[:5] == [
        (0, "EventStart", None),
        (20, "EventEnd", True),
        (20, "EventStart", None),
        (40, "EventEnd", True),
        (40, "EventStart", None),
    ]


@pytest.mark.parametrize(
    ("pattern", "expected", "end_ts"),
    [
        # the person leaves at 1.25 s; max_length falls due at 2.0 s, inside the post-roll: the event ends at
        # 1.25 + 1.0 as any other, it is not split into a second event with nobody in it that ends at 3.0
        ("P" * 6 + "." * 12, [(0, "EventStart", None), (9, "EventEnd", False)], 2.25),
        # a person back within the post-roll, past max_length: the event is split there, once
        (
            "P" * 6 + "..." + "PP" + "." * 8,
            [
                (0, "EventStart", None),
                (9, "EventEnd", True),
                (9, "EventStart", None),
                (14, "EventEnd", False),
            ],
            3.5,
        ),
        # a person in view throughout: split at max_length, ended post_roll after the last sighting
        (
            "P" * 10 + "." * 8,
            [
                (0, "EventStart", None),
                (8, "EventEnd", True),
                (8, "EventStart", None),
                (13, "EventEnd", False),
            ],
            3.25,
        ),
    ],
)
def test_an_event_in_its_post_roll_at_max_length_ends_post_roll_after_the_last_sighting(
    pattern: str, expected: list[tuple[int, str, bool | None]], end_ts: float
) -> None:
    """An event ends post_roll after the last qualifying frame. A split that fell due while nobody was seen
    used to start a new event with its own post-roll counted from the split: an extra clip, index row and MQTT
    event with no person in it, ending post_roll after the split instead of after the person left."""
    t = EventTracker(EventSettings(trigger_frames=1, window_frames=1, post_roll=1.0, max_length=2.0))
    sigs = feed(t, pattern, fps=4.0)
    assert [(i, type(s).__name__, getattr(s, "split", None)) for i, s in sigs] == expected
    last = sigs[-1][1]
    assert isinstance(last, EventEnd) and last.end_ts == pytest.approx(end_ts)


def test_filters_score_area_label_and_zones() -> None:
    s = EventSettings(min_score=0.5, min_area=0.001)
    assert s.qualifies(PERSON) and not s.qualifies(WEAK) and not s.qualifies(TINY) and not s.qualifies(CAR)
    left = ((0.0, 0.0), (0.6, 0.0), (0.6, 1.0), (0.0, 1.0))
    right = ((0.65, 0.0), (1.0, 0.0), (1.0, 1.0), (0.65, 1.0))
    assert EventSettings(zones=(left,)).qualifies(PERSON)  # foot point (0.5, 0.9)
    assert not EventSettings(zones=(right,)).qualifies(PERSON)
    assert point_in_polygon(0.2, 0.5, left) and not point_in_polygon(0.7, 0.5, left)


def test_flush_closes_active_event() -> None:
    t = EventTracker(EventSettings(trigger_frames=1, window_frames=1, post_roll=5.0))
    feed(t, "PPP")
    end = t.flush(0.2)
    assert end is not None and end.end_ts == pytest.approx(0.2) and not t.active
    assert t.flush(1.0) is None


def ev(i: int, age_days: float, size: int, status: str = "finalized") -> StoredEvent:
    return StoredEvent(i, status, 1_000_000.0 - age_days * 86400, size)


def test_retention_by_age_never_active() -> None:
    events = [ev(1, 40, 10, "recording"), ev(2, 35, 10), ev(3, 31, 10), ev(4, 1, 10)]
    plan = plan_retention(
        events, 1_000_000.0, 10**12, RetentionPolicy(max_age_s=30 * 86400, min_free_bytes=None)
    )
    assert plan == [(2, "max_age"), (3, "max_age")]


def test_retention_by_total_size_oldest_first() -> None:
    events = [ev(1, 5, 100, "recording"), ev(2, 4, 100), ev(3, 3, 100), ev(4, 2, 100)]
    pol = RetentionPolicy(max_age_s=None, max_total_bytes=250, min_free_bytes=None)
    assert plan_retention(events, 1_000_000.0, 10**12, pol) == [(2, "max_total_size"), (3, "max_total_size")]


GB = 1 << 30
MB = 1 << 20
CARD = [ev(1, 3, 300 * MB), ev(2, 2, 300 * MB), ev(3, 1, 300 * MB)]  # newest last


@pytest.mark.parametrize(
    ("events", "free", "min_free", "keep_newest", "max_age_days", "expected"),
    [
        # deleting the two older events reaches the target: exactly what is needed, oldest first
        (
            [ev(1, 3, 100), ev(2, 2, 100), ev(3, 1, 100)],
            850,
            1000,
            1,
            0,
            [(1, "min_free_space"), (2, "min_free_space")],
        ),
        ([ev(1, 3, 100), ev(2, 2, 100), ev(3, 1, 100)], 950, 1000, 1, 0, [(1, "min_free_space")]),
        # the issue: default min_free 1 GB, a card with < 1 GB free. Deleting every candidate cannot reach it:
        # delete nothing (the next event is recorded in the space there is)
        (CARD, 300 * MB, GB, 1, 0, []),
        (CARD, 0, GB, 1, 0, []),
        # without keep_newest the three events (900 MB) do reach it: all go, at WARNING
        (CARD, 300 * MB, GB, 0, 0, [(1, "min_free_space"), (2, "min_free_space"), (3, "min_free_space")]),
        # enough space: nothing to do
        (CARD, 2 * GB, GB, 1, 0, []),
        # age runs first; the space it frees counts, and free space then needs no more
        (CARD, 800 * MB, GB, 1, 2, [(1, "max_age")]),
        # a recording event is never a candidate, and does not count towards reaching the target
        ([ev(1, 3, 600 * MB, "recording"), ev(2, 2, 100 * MB), ev(3, 1, 100 * MB)], 100 * MB, GB, 0, 0, []),
    ],
)
def test_retention_for_free_space_deletes_only_what_reaches_the_target(
    events: list[StoredEvent], free: int, min_free: int, keep_newest: int, max_age_days: float, expected: list
) -> None:
    max_age = max_age_days * 86400 if max_age_days else None
    pol = RetentionPolicy(max_age_s=max_age, min_free_bytes=min_free, keep_newest=keep_newest)
    assert plan_retention(events, 1_000_000.0, free, pol) == expected


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (
            RetentionPolicy(max_age_s=None, max_total_bytes=250, min_free_bytes=None),
            [(1, "max_total_size"), (2, "max_total_size")],
        ),
        (
            RetentionPolicy(max_age_s=None, min_free_bytes=1000, keep_newest=1),
            [(1, "min_free_space"), (2, "min_free_space")],
        ),
    ],
    ids=["total-size", "free-space-keep-newest"],
)
def test_retention_goes_by_recording_order_when_the_clock_ran_backwards(
    policy: RetentionPolicy, expected: list
) -> None:
    """Events 3 and 4 were recorded after a reboot whose clock restarted 10 days back (no RTC, no network yet):
    their wall times look older than 1 and 2. Ordered by wall time, the newest recordings went first (and
    keep_newest protected event 2)."""
    events = [ev(1, 2, 100), ev(2, 1, 100), ev(3, 12, 100), ev(4, 11, 100)]
    assert plan_retention(events, 1_000_000.0, 800, policy) == expected
