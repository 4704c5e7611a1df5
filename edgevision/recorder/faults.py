"""Deterministic fault points for crash tests: a named instant at which the process kills itself.

``EDGEVISION_FAULT_POINT=NAME`` (or ``NAME@N``: the N-th time that point is reached) makes the process send
itself SIGKILL at :func:`fault_point` ``(NAME)``, which is exactly what a power cut or ``kill -9`` at that
instant leaves on disk. ``EDGEVISION_FAULT_ACTION=stop`` sends SIGSTOP instead, so a test can look at the disk
at that instant and then SIGKILL. Unset (always, outside tests), a fault point is one dictionary lookup.

Points: ``finish.synced`` (clip fsync'd, before the rename), ``finish.renamed`` (before the directory fsync),
``finish.dir_synced``, ``finish.hashed``, ``finish.snapshot`` (all before the index row), ``recover.salvaged``,
``recover.renamed``, ``recover.hashed`` (inside start-up recovery, before its index row), ``event.started``.
"""

from __future__ import annotations

import os
import signal
import threading

_hits: dict[str, int] = {}
_lock = threading.Lock()


def fault_point(name: str) -> None:
    """Kill (or stop) this process here when ``EDGEVISION_FAULT_POINT`` names this point."""
    spec = os.environ.get("EDGEVISION_FAULT_POINT")
    if not spec:
        return
    target, _, nth = spec.partition("@")
    if target != name:
        return
    with _lock:
        _hits[name] = _hits.get(name, 0) + 1
        count = _hits[name]
    if count != (int(nth) if nth else 1):
        return
    sig = signal.SIGSTOP if os.environ.get("EDGEVISION_FAULT_ACTION") == "stop" else signal.SIGKILL
    os.kill(os.getpid(), sig)
