"""Prometheus exposition: names, types and units by Prometheus' conventions, read back with prometheus_client's
own text parser."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import numpy as np
import pytest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from edgevision.pipeline.control import Controls
from edgevision.pipeline.loop import CaptureRunner
from edgevision.publish.factory import Sharing
from edgevision.publish.metrics import Metrics
from edgevision.recorder.recorder import Recorder
from edgevision.results import DetectMode, FrameResult, Latency, SwitchInfo
from edgevision.results.detection import BBox, Detection
from edgevision.results.frame import Frame
from edgevision.service.monitor import ServiceMonitor

UNITS = ("_seconds", "_bytes", "_frames", "_messages", "_per_second")


def _result(
    i: int,
    total_ms: float,
    rung: str = "v1@300",
    switch: SwitchInfo | None = None,
    mode: DetectMode = DetectMode.DETECTED,
) -> FrameResult:
    det = Detection("person", 0, 0.9, BBox(0.1, 0.1, 0.3, 0.8))
    latency = Latency(preprocess=2.0, invoke=10.0, postprocess=0.5, total=total_ms)
    frame = Frame(np.zeros((8, 8, 3), np.uint8), i / 25, i, "t")
    return FrameResult(frame, [det], latency, "m", mode, rung, switch)


def _families(metrics: Metrics) -> dict[str, Metric]:
    return {f.name: f for f in text_string_to_metric_families(metrics.render().decode())}


@pytest.fixture()
def scraped(tmp_path: Path) -> dict[str, Metric]:
    metrics = Metrics(budget_ms=12.0)
    metrics.watch_disk(tmp_path)
    runner = SimpleNamespace(stats=SimpleNamespace(dropped=7))
    recorder = SimpleNamespace(
        events_started=3,
        events_finalized=2,
        queue_depth=4,
        dropped=1,
        intake=SimpleNamespace(dropped=6),
        clips=SimpleNamespace(ring=SimpleNamespace(trimmed_gops=5, overflows=2)),
    )
    monitor = SimpleNamespace(health=SimpleNamespace(throttling=False))
    controls = Controls(detect=True, recordings=True)
    # Stand-ins with just what the metrics read at scrape time.
    Sharing(metrics=metrics).attach(
        cast(CaptureRunner, runner), cast(Recorder, recorder), cast(ServiceMonitor, monitor), controls
    )
    for i, total in enumerate([8.0, 15.0, 20.0, 9.0]):
        metrics.on_result(_result(i, total))
    metrics.on_result(
        _result(
            4, 30.0, rung="v1@224", switch=SwitchInfo("v1@300", "v1@224", "resolution", "down", "over budget")
        )
    )
    controls.set("detect", False)
    metrics.on_result(_result(5, 1.0, rung="v1@224", mode=DetectMode.OFF))
    return _families(metrics)


def test_names_types_and_units_follow_prometheus_conventions(scraped: dict[str, Metric]) -> None:
    for name, fam in scraped.items():
        assert name.startswith("edgevision_"), name
        assert "_ms" not in name and "millis" not in name, name  # base units only
        kind = fam.type
        samples: list[Sample] = fam.samples
        if kind == "counter":
            assert {s.name for s in samples} <= {f"{name}_total", f"{name}_created"}, name
            assert any(s.name == f"{name}_total" for s in samples)
        elif kind == "histogram":
            assert name.endswith("_seconds"), name
            bounds = [float(s.labels["le"]) for s in samples if s.name.endswith("_bucket")]
            assert max(b for b in bounds if math.isfinite(b)) <= 10.0  # buckets in seconds, not ms
        else:
            assert kind == "gauge", (name, kind)
            assert not name.endswith("_total"), name  # a _total is always a real counter
    kinds = {n: f.type for n, f in scraped.items()}
    assert {n for n, k in kinds.items() if k == "counter"} >= {
        "edgevision_frames_processed",
        "edgevision_budget_violations",
        "edgevision_rung_switches",
        "edgevision_dropped_frames",
        "edgevision_events_started",
        "edgevision_events_finalized",
        "edgevision_recorder_dropped_frames",
        "edgevision_recorder_dropped_packets",
        "edgevision_recorder_preroll_trimmed_gops",
        "edgevision_recorder_preroll_overflows",
        "edgevision_detect_skipped_frames",
    }
    assert (
        kinds["edgevision_stage_latency_seconds"] == kinds["edgevision_frame_latency_seconds"] == "histogram"
    )
    for gauge in (
        "edgevision_disk_free_bytes",
        "edgevision_disk_used_bytes",
        "edgevision_frames_per_second",
        "edgevision_latency_budget_seconds",
        "edgevision_active_rung",
        "edgevision_detect_enabled",
    ):
        assert kinds[gauge] == "gauge", gauge


def _value(fams: dict[str, Metric], sample: str, **labels: str) -> float:
    for fam in fams.values():
        for s in fam.samples:
            if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    raise KeyError(sample)


def test_values_are_in_base_units_and_keep_the_slo_and_rung_metrics(scraped: dict[str, Metric]) -> None:
    f = scraped
    assert _value(f, "edgevision_frames_processed_total") == 6
    assert _value(f, "edgevision_budget_violations_total") == 3  # 15, 20, 30 ms > 12 ms
    assert _value(f, "edgevision_latency_budget_seconds") == pytest.approx(0.012)
    assert _value(f, "edgevision_rung_switches_total") == 1
    assert _value(f, "edgevision_active_rung", rung="v1@224") == 1
    assert _value(f, "edgevision_active_rung", rung="v1@300") == 0
    # invoke: 10 ms = 0.01 s lands in the le="0.01" bucket, not below it
    assert _value(f, "edgevision_stage_latency_seconds_bucket", stage="invoke", le="0.0075") == 0
    assert _value(f, "edgevision_stage_latency_seconds_bucket", stage="invoke", le="0.01") == 6
    assert _value(f, "edgevision_stage_latency_seconds_sum", stage="invoke") == pytest.approx(0.06)
    assert _value(f, "edgevision_frame_latency_seconds_count") == 6
    assert _value(f, "edgevision_frame_latency_seconds_sum") == pytest.approx(0.083)
    assert _value(f, "edgevision_dropped_frames_total") == 7
    assert _value(f, "edgevision_events_started_total") == 3
    assert _value(f, "edgevision_recorder_queue_frames") == 4
    assert _value(f, "edgevision_recorder_dropped_packets_total") == 6
    assert _value(f, "edgevision_recorder_preroll_trimmed_gops_total") == 5
    assert _value(f, "edgevision_recorder_preroll_overflows_total") == 2
    assert _value(f, "edgevision_detect_skipped_frames_total") == 1
    assert _value(f, "edgevision_detect_enabled") == 0 and _value(f, "edgevision_recordings_enabled") == 1
    assert _value(f, "edgevision_detected_objects", label="person") == 1
    assert _value(f, "edgevision_disk_free_bytes") > 0
    assert "edgevision_stage_latency_seconds" in f and not any(
        s.labels.get("stage") == "total" for s in f["edgevision_stage_latency_seconds"].samples
    )  # end to end is its own histogram


def test_person_events_come_from_the_event_stage_with_or_without_a_recorder() -> None:
    from edgevision.events.stage import EventStage
    from edgevision.events.state import EventSettings

    metrics, stage = Metrics(), EventStage(EventSettings(trigger_frames=2, window_frames=2, post_roll=0.2))
    active = []
    for i, people in enumerate([1, 1, 1, 0, 0, 0, 0, 0, 1, 1, 0]):  # two visits at 25 fps
        r = _result(i, 5.0)
        if not people:
            r.detections = []
        stage.process(r)
        metrics.on_result(r)
        active.append(_value(_families(metrics), "edgevision_person_event_active"))
    assert _value(_families(metrics), "edgevision_person_events_total") == 2
    assert active == [0, 1, 1, 1, 1, 1, 1, 0, 0, 1, 1]


def test_without_a_budget_no_budget_gauge_says_zero_seconds() -> None:
    """With the scheduler off there is no budget, yet the gauge was exposed as 0 s: a dashboard or alert comparing
    frame latency with ``edgevision_latency_budget_seconds`` saw every frame over a budget of nothing."""
    metrics = Metrics()
    metrics.on_result(_result(0, 30.0))
    fams = _families(metrics)
    assert "edgevision_latency_budget_seconds" not in fams
    assert _value(fams, "edgevision_budget_violations_total") == 0


def test_the_frame_rate_falls_to_zero_once_frames_stop(monkeypatch: pytest.MonkeyPatch) -> None:
    """The rate was worked out only when a frame came: a camera unplugged or a pipeline stuck left
    ``edgevision_frames_per_second`` at its last value (10 fps) for good, so an alert on a rate of 0 never fired."""
    now = [100.0]
    monkeypatch.setattr("edgevision.publish.metrics.time", SimpleNamespace(monotonic=lambda: now[0]))
    metrics = Metrics()
    for i in range(11):
        now[0] = 100.0 + i / 10
        metrics.on_result(_result(i, 5.0))
    assert _value(_families(metrics), "edgevision_frames_per_second") == pytest.approx(10.0)
    now[0] += 60.0  # a minute without a frame
    assert _value(_families(metrics), "edgevision_frames_per_second") == 0
