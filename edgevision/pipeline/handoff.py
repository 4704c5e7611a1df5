"""Handing items to a worker thread through a bounded queue without ever waiting forever."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def put_waiting(
    q: queue.Queue[T], item: T, worker: threading.Thread, error: Callable[[], BaseException | None], what: str
) -> None:
    """Put ``item``, waiting in 0.5 s steps while the worker is alive; the worker's failure (``error()``) or
    death is raised here instead of blocking the pipeline for good."""
    while True:
        try:
            q.put(item, timeout=0.5)
            return
        except queue.Full:
            exc = error()
            if exc is not None:
                raise exc from None
            if not worker.is_alive():
                raise RuntimeError(f"{what} stopped") from None


def put_or_drop(q: queue.Queue[T], item: T) -> bool:
    """Put without waiting; False when the queue is full (the caller counts the drop)."""
    try:
        q.put_nowait(item)
    except queue.Full:
        return False
    return True
