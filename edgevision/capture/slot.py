"""A latest-frame slot: the only hand-off between a live capture thread and inference.

It holds at most one item; ``put`` replaces an unconsumed item and counts it as dropped, so a slow consumer
never makes the producer wait or memory grow. ``get`` blocks with a timeout.
"""

from __future__ import annotations

import threading
from typing import Generic, TypeVar

T = TypeVar("T")


class LatestSlot(Generic[T]):
    """Single-item, overwrite-on-put hand-off with drop counting. Thread-safe."""

    def __init__(self) -> None:
        self._cond = threading.Condition()  # guards _item, _closed, dropped, put_count
        self._item: T | None = None
        self._closed = False
        self.dropped = 0
        self.put_count = 0

    def put(self, item: T) -> bool:
        """Store ``item``; returns False (and counts a drop) when it replaced an unconsumed one."""
        with self._cond:
            replaced = self._item is not None
            if replaced:
                self.dropped += 1
            self._item = item
            self.put_count += 1
            self._cond.notify()
            return not replaced

    def get(self, timeout: float) -> T | None:
        """The latest item, waiting up to ``timeout`` seconds; None on timeout or when closed and empty."""
        with self._cond:
            if self._item is None and not self._closed:
                self._cond.wait(timeout)
            item, self._item = self._item, None
            return item

    def close(self) -> None:
        """Wake any waiter; later ``get`` calls return what is left, then None."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        with self._cond:
            return self._closed
