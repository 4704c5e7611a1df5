"""Build the scheduler from the configuration and a few real frames to profile on."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from edgevision.catalog.resolve import open_model
from edgevision.config import EdgeVisionConfig
from edgevision.detection.factory import runtime_options
from edgevision.paths import models_dir
from edgevision.scheduler.controller import ControllerSettings
from edgevision.scheduler.ladder import build_ladder
from edgevision.scheduler.runtime import PersonGate, Scheduler


def build_scheduler(
    cfg: EdgeVisionConfig,
    sample_frames: Sequence[np.ndarray],
    event_active: Callable[[], bool] = lambda: False,
    budget_factor: Callable[[], float] = lambda: 1.0,
) -> Scheduler:
    rungs = build_ladder(cfg, sample_frames, cfg.scheduler.profile_invokes)
    gate = None
    g = cfg.scheduler.person_gate
    if g.enabled:
        handle, _ = open_model(g.model, models_dir(cfg), runtime_options(cfg), cfg.runtime.cpu_fallback)
        gate = PersonGate(handle, g.min_person_prob)
    return Scheduler(
        rungs,
        ControllerSettings.of(cfg.scheduler),
        event_active=event_active,
        budget_factor=budget_factor,
        gate=gate,
    )
