"""The packet pre-roll ring: whole GOPs, time and byte bounds, always a keyframe first (synthetic packets)."""

from __future__ import annotations

from fractions import Fraction

import pytest

from edgevision.capture.packets import EncodedPacket
from edgevision.recorder.packet_ring import PacketRing


def stream(gop: int, count: int, fps: float = 10.0, size: int = 100) -> list[EncodedPacket]:
    """``count`` packets at ``fps``, a keyframe every ``gop`` packets, ``size`` bytes each (keyframes 4x)."""
    out = []
    for i in range(count):
        key = i % gop == 0
        out.append(
            EncodedPacket(
                data=bytes([i % 256]) * (size * 4 if key else size),
                pts=i,
                dts=i,
                time_base=Fraction(1, 10),
                keyframe=key,
                ts=i / fps,
            )
        )
    return out


def fill(ring: PacketRing, packets: list[EncodedPacket]) -> PacketRing:
    for p in packets:
        ring.push(p)
    return ring


@pytest.mark.parametrize(
    ("gop", "count", "seconds", "ask", "first_pts", "reason"),
    [
        (10, 100, 3.0, 9.9 - 3.0, 60, "last keyframe at or before trigger - pre-roll (6.0 <= 6.9)"),
        (10, 100, 3.0, 7.0, 70, "a keyframe exactly at the start is used"),
        (10, 100, 3.0, 9.9, 90, "a trigger after the last keyframe starts at that keyframe"),
        (10, 100, 3.0, 0.0, 60, "asking before the ring's start gives the oldest GOP"),
        (50, 100, 1.0, 8.9, 50, "a GOP longer than the pre-roll keeps its keyframe"),
        (1, 100, 2.0, 7.9, 79, "all-intra: the exact frame"),
    ],
)
def test_since_starts_at_the_right_keyframe(
    gop: int, count: int, seconds: float, ask: float, first_pts: int, reason: str
) -> None:
    ring = fill(PacketRing(seconds, 1 << 30), stream(gop, count))
    got = ring.since(ask)
    assert got[0].keyframe, reason
    assert got[0].pts == first_pts, reason
    assert got[-1].pts == count - 1
    assert [p.pts for p in got] == list(range(first_pts, count)), "no packet lost or reordered"


@pytest.mark.parametrize(
    ("gop", "seconds", "oldest"), [(10, 3.0, 60), (10, 2.5, 70), (10, 0.0, 90), (30, 1.0, 60)]
)
def test_time_bound_drops_whole_gops_from_the_front(gop: int, seconds: float, oldest: int) -> None:
    ring = fill(PacketRing(seconds, 1 << 30), stream(gop, 100))
    st = ring.stats()
    assert ring.since(-1.0)[0].pts == oldest
    assert st.packets == 100 - oldest and st.trimmed_gops == 0 and st.overflows == 0
    assert st.payload_bytes == sum(p.size for p in ring.since(-1.0))
    assert st.memory_bytes > st.payload_bytes


def test_byte_bound_trims_gops_and_counts_them() -> None:
    # GOP of 10 = 400 + 9 * 100 = 1300 bytes; a 3000-byte bound holds two GOPs (the newest may be partial).
    ring = fill(PacketRing(100.0, 3000), stream(10, 100))
    st = ring.stats()
    assert st.payload_bytes <= 3000
    assert ring.since(-1.0)[0].keyframe and ring.since(-1.0)[0].pts == 80
    assert st.trimmed_gops == 8 and st.gops == 2


def test_a_gop_larger_than_the_byte_bound_empties_and_resyncs_at_the_next_keyframe() -> None:
    ring = PacketRing(100.0, 1000)
    packets = stream(20, 45)  # a 20-packet GOP is 400 + 19 * 100 = 2300 bytes > 1000
    fill(ring, packets[:12])
    st = ring.stats()
    assert st.overflows == 1 and st.payload_bytes <= 1000
    assert ring.since(-1.0) == []  # nothing decodable is held until the next keyframe
    fill(ring, packets[12:25])
    got = ring.since(-1.0)
    assert got[0].keyframe and got[0].pts == 20 and got[-1].pts == 24
    assert ring.stats().skipped == 12  # pts 7 overflowed (400 + 7 * 100 > 1000); 8..19 wait for pts 20


def test_packets_before_the_first_keyframe_are_skipped() -> None:
    packets = stream(10, 30)[3:]  # joins mid-GOP, as an RTSP stream does
    ring = fill(PacketRing(100.0, 1 << 30), packets)
    assert ring.since(-1.0)[0].pts == 10 and ring.stats().skipped == 7


def test_clear_and_bad_bounds() -> None:
    ring = fill(PacketRing(1.0, 1 << 20), stream(5, 20))
    ring.clear()
    assert len(ring) == 0 and ring.stats().payload_bytes == 0 and ring.since(10.0) == []
    with pytest.raises(ValueError):
        PacketRing(-1.0, 10)
    with pytest.raises(ValueError):
        PacketRing(1.0, 0)
