"""The packet hand-off from capture to the recorder: a bounded FIFO of encoded packets and stream changes.

The capture thread puts every packet of the source (or of its one continuous encode) here; the recorder thread
takes them into its pre-roll ring and the open clip. Bounded by packets and by bytes:

* live (``blocking=False``), a full FIFO drops the packet and every packet after it up to the next keyframe
  (those could not be decoded without it), counting them in ``dropped``: capture never waits for the disk;
* replay (``blocking=True``), the producer waits (with a timeout per attempt, until :meth:`close`), so a
  replayed file records every packet, deterministically.

A :class:`StreamStart` marks a (re)opened source: packets after it cannot join a clip of packets before it
(the parameter sets may differ), so the recorder finalizes any open clip and empties its ring there. Markers are
never dropped. A producer that names its stream in :meth:`PacketFeed.put` has its packets refused once a newer
stream started (a capture thread a stall replaced, back from its source): see :meth:`PacketFeed.replaced`.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

from edgevision.capture.packets import EncodedPacket, StreamInfo


@dataclass(frozen=True)
class StreamStart:
    """The source (re)opened: the packets that follow belong to ``info``."""

    info: StreamInfo


FeedItem = EncodedPacket | StreamStart


class PacketFeed:
    """Bounded, thread-safe FIFO of packets from one producer (capture) to one consumer (the recorder)."""

    def __init__(self, max_packets: int = 1024, max_bytes: int = 32 << 20, blocking: bool = False) -> None:
        self.max_packets = max_packets
        self.max_bytes = max_bytes
        self.blocking = blocking
        self._cond = threading.Condition()  # guards everything below
        self._q: deque[FeedItem] = deque()
        self._bytes = 0
        self._skip_to_key = False
        self._closed = False
        self.put_count = 0
        self.dropped = 0
        self.stream: StreamInfo | None = None  # the newest stream announced (for a consumer attached late)

    def start_stream(self, info: StreamInfo) -> None:
        """Announce a (re)opened source; the next packet must be a keyframe to be kept."""
        with self._cond:
            self.stream = info
            self._q.append(StreamStart(info))
            self._skip_to_key = False
            self._cond.notify_all()

    def _full(self, packet: EncodedPacket) -> bool:
        return len(self._q) >= self.max_packets or (
            bool(self._q) and self._bytes + packet.size > self.max_bytes
        )

    def put(self, packet: EncodedPacket, timeout: float = 0.5, stream: StreamInfo | None = None) -> bool:
        """Hand over one packet; False when it was dropped (live and full, or skipping to a keyframe) or refused:
        ``stream``, the info its producer announced, is no longer the newest (not counted as dropped: the
        packet belongs to a connection that was given up)."""
        with self._cond:
            if self._closed or (stream is not None and stream is not self.stream):
                return False
            if self._skip_to_key and not packet.keyframe:
                self.dropped += 1
                return False
            while self._full(packet):
                if not self.blocking or self._closed:
                    self._skip_to_key = True
                    self.dropped += 1
                    return False
                self._cond.wait(timeout)  # replay: wait for the recorder (close() wakes us)
            self._skip_to_key = False
            self._q.append(packet)
            self._bytes += packet.size
            self.put_count += 1
            self._cond.notify_all()
            return True

    def replaced(self, stream: StreamInfo) -> bool:
        """Whether a stream started after ``stream`` (the one its producer announced): that producer's source
        was given up for a new one, and its packets are refused."""
        with self._cond:
            return stream is not self.stream

    def discard(self) -> None:
        """Count a packet its producer dropped itself (picamera2's encoder output waiting for a keyframe), so
        ``dropped`` is every packet of the source that never reached the recorder."""
        with self._cond:
            self.dropped += 1

    def get(self, timeout: float = 0.0) -> FeedItem | None:
        """The oldest item, waiting up to ``timeout`` seconds; None when there is none."""
        with self._cond:
            if not self._q and timeout > 0 and not self._closed:
                self._cond.wait(timeout)
            if not self._q:
                return None
            item = self._q.popleft()
            if isinstance(item, EncodedPacket):
                self._bytes -= item.size
            self._cond.notify_all()
            return item

    def __len__(self) -> int:
        with self._cond:
            return len(self._q)

    @property
    def bytes(self) -> int:
        with self._cond:
            return self._bytes

    def close(self) -> None:
        """No more packets are accepted; a waiting producer returns at once."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
