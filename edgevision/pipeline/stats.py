"""Rolling statistics for the status line and the run summary (pure, clock injected)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np


def percentile(values: list[float] | deque[float], q: float) -> float:
    """The q-th percentile (0..100) of ``values``; 0.0 when empty."""
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if len(values) else 0.0


@dataclass
class StatusWindow:
    """Frames and latencies since the last status line."""

    started: float
    frames: int = 0

    def __post_init__(self) -> None:
        self.latency: deque[float] = deque(maxlen=2048)

    def add(self, latency_ms: float) -> None:
        self.frames += 1
        self.latency.append(latency_ms)

    def due(self, now: float, interval: float) -> bool:
        return now - self.started >= interval

    def line(self, now: float, dropped: int, model: str, extra: str = "") -> str:
        elapsed = max(now - self.started, 1e-9)
        return (
            f"fps {self.frames / elapsed:.1f} | latency p50 {percentile(self.latency, 50):.1f} ms "
            f"p95 {percentile(self.latency, 95):.1f} ms | dropped {dropped} | model {model}{extra}"
        )
