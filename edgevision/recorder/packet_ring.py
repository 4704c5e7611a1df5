"""The pre-roll ring of encoded packets: whole GOPs, bounded by time and by bytes, always starting at a keyframe.

A packet before a keyframe cannot be decoded without it, so the ring is a queue of GOPs (a keyframe and the
packets that follow it) and trimming drops whole GOPs from the front:

* by time: the front GOP goes once the *next* GOP's keyframe is at or before ``newest - seconds``, so the
  last keyframe at or before any trigger − pre-roll stays available. A GOP longer than the pre-roll therefore
  keeps its keyframe (the clip starts earlier than asked, never at an undecodable packet);
* by bytes: the oldest GOPs go while the payload exceeds ``max_bytes`` (``trimmed_gops`` counts them: the
  pre-roll is then shorter than configured). When a single GOP alone exceeds the bound the ring empties and
  waits for the next keyframe (``overflows``), so memory stays bounded whatever the source's GOP length.

Pure: no clock, no I/O; time is the packets' ``ts``. Used by one thread (the recorder's).
"""

from __future__ import annotations

import sys
from collections import deque
from dataclasses import dataclass

from edgevision.capture.packets import EncodedPacket

# Python object overhead of one buffered packet besides its payload: the dataclass instance, the bytes
# header and the list slot (measured with sys.getsizeof on CPython 3.11, rounded up).
_PACKET_OVERHEAD = 200


@dataclass(frozen=True)
class RingStats:
    """What the ring holds and what it had to give up."""

    packets: int
    gops: int
    payload_bytes: int
    memory_bytes: int
    span_s: float
    trimmed_gops: int
    overflows: int
    skipped: int

    def line(self) -> str:
        return (
            f"pre-roll ring: {self.packets} packets in {self.gops} GOP(s), {self.span_s:.1f} s, "
            f"{self.memory_bytes / 1e6:.2f} MB; {self.trimmed_gops} GOP(s) trimmed for memory, "
            f"{self.overflows} overflow(s), {self.skipped} packet(s) before a keyframe skipped"
        )


class PacketRing:
    """Time- and memory-bounded pre-roll of encoded packets, held as whole GOPs."""

    def __init__(self, seconds: float, max_bytes: int) -> None:
        if seconds < 0 or max_bytes <= 0:
            raise ValueError("pre-roll seconds must be >= 0 and max_bytes > 0")
        self.seconds = seconds
        self.max_bytes = max_bytes
        self._gops: deque[list[EncodedPacket]] = deque()
        self.bytes = 0
        self._newest = float("-inf")
        self.trimmed_gops = 0
        self.overflows = 0
        self.skipped = 0

    def push(self, packet: EncodedPacket) -> None:
        """Append one packet (in decode order); trims the front to the time and byte bounds."""
        if packet.keyframe:
            self._gops.append([packet])
        elif self._gops:
            self._gops[-1].append(packet)
        else:
            self.skipped += 1  # no keyframe yet (start of stream, or after an overflow): undecodable
            return
        self.bytes += packet.size
        self._newest = max(self._newest, packet.ts)
        horizon = self._newest - self.seconds
        while len(self._gops) >= 2 and self._gops[1][0].ts <= horizon:
            self._drop_front()
        while self.bytes > self.max_bytes and len(self._gops) >= 2:
            self._drop_front()
            self.trimmed_gops += 1
        if self.bytes > self.max_bytes:  # one GOP alone is larger than the bound: start again at a keyframe
            self.clear()
            self.overflows += 1

    def _drop_front(self) -> None:
        gop = self._gops.popleft()
        self.bytes -= sum(p.size for p in gop)

    def since(self, ts: float) -> list[EncodedPacket]:
        """Packets from the last keyframe at or before ``ts`` onwards (from the oldest one when none is).

        The result always starts at a keyframe, or is empty when the ring holds none.
        """
        start = 0
        for i, gop in enumerate(self._gops):
            if gop[0].ts <= ts:
                start = i
        return [p for gop in list(self._gops)[start:] for p in gop]

    def clear(self) -> None:
        """Forget everything (a reconnect, new codec parameters, an overflow)."""
        self._gops.clear()
        self.bytes = 0
        self._newest = float("-inf")

    def stats(self) -> RingStats:
        packets = sum(len(g) for g in self._gops)
        span = self._gops[-1][-1].ts - self._gops[0][0].ts if self._gops else 0.0
        return RingStats(
            packets=packets,
            gops=len(self._gops),
            payload_bytes=self.bytes,
            memory_bytes=self.bytes + packets * _PACKET_OVERHEAD + sys.getsizeof(self._gops),
            span_s=max(0.0, span),
            trimmed_gops=self.trimmed_gops,
            overflows=self.overflows,
            skipped=self.skipped,
        )

    def __len__(self) -> int:
        return sum(len(g) for g in self._gops)
