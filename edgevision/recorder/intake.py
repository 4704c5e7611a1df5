"""Where the recorder's packets come from: the capture's packet feed, or the one encode of the frames it is given.

* With a :class:`~edgevision.capture.feed.PacketFeed` (a file, stream or camera recorded from its own packets or
  its capture-side encode), :meth:`PacketIntake.pull` hands over the feed's packets up to a frame time: the
  recorder asks for packets up to the frame it is handling, so an event's start and end fall on the same
  instant in the packets as in the frames (packets run ahead of results by the pipeline's latency).
* Without one (privacy blur: only redacted frames may reach the disk), :meth:`PacketIntake.encode` encodes the
  frames handed to the recorder once, into the same packet ring and clips.

Used by the recorder thread only.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from edgevision.capture.encoder import FrameEncoder
from edgevision.capture.feed import FeedItem, PacketFeed, StreamStart
from edgevision.capture.packets import EncodedPacket


class PacketIntake:
    """The recorder's source of packets (and stream changes)."""

    def __init__(self, feed: PacketFeed | None, codec: str = "auto", fps: float = 25.0) -> None:
        self.feed = feed
        self.codec = codec
        self.fps = fps
        self.encoder: FrameEncoder | None = None
        self._held: FeedItem | None = None  # the first packet past the last limit asked for

    @property
    def from_feed(self) -> bool:
        return self.feed is not None

    def pull(self, until_ts: float | None, inclusive: bool = True) -> Iterator[FeedItem]:
        """Feed items in order while packets are at or before ``until_ts`` (before it when not ``inclusive``;
        all that are there for None)."""
        if self.feed is None:
            return
        while True:
            item, self._held = self._held, None
            if item is None:
                item = self.feed.get()
            if item is None:
                return
            if (
                until_ts is not None
                and isinstance(item, EncodedPacket)
                and (item.ts > until_ts or (not inclusive and item.ts >= until_ts))
            ):
                self._held = item
                return
            yield item

    def pull_backlog(self) -> Iterator[FeedItem]:
        """Feed items, oldest first, while the feed is more than half full (by packets or by bytes).

        For a live recorder whose results stopped coming: the feed is emptied down to half its bound so the
        capture never has to drop a packet. Anything less stays in the feed until a result asks for it, so
        results slower than packets (a slow detector) never move packets newer than the frame being handled
        into the pre-roll ring or the open clip."""
        feed = self.feed
        if feed is None:
            return
        while len(feed) > feed.max_packets // 2 or feed.bytes > feed.max_bytes // 2:
            item, self._held = self._held, None
            if item is None:
                item = feed.get()
            if item is None:
                return
            yield item

    def encode(self, image: np.ndarray, ts: float) -> Iterator[FeedItem]:
        """The packets of one more frame (the encoder is made at the first, with its size)."""
        if self.encoder is None:
            h, w = image.shape[:2]
            self.encoder = FrameEncoder(w, h, self.fps, self.codec)
            yield StreamStart(self.encoder.stream_info)
        yield from self.encoder.encode(image, ts)

    @property
    def dropped(self) -> int:
        """Packets of the source that never reached the recorder (a full feed, up to the next keyframe)."""
        return self.feed.dropped if self.feed is not None else 0

    def backlog(self) -> int:
        """Packets waiting in the feed."""
        return len(self.feed) if self.feed is not None else 0

    def close(self) -> None:
        if self.feed is not None:
            self.feed.close()  # a producer waiting for room (replay) returns
