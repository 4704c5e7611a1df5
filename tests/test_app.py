"""The composition root: what it builds from a config, in which order, and the signals it wires."""

from __future__ import annotations

import ast
import socket
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, WALKING

from edgevision.app import RunOptions, build
from edgevision.config import EdgeVisionConfig, load_config
from edgevision.errors import ModelError
from edgevision.paths import data_dir, events_index
from edgevision.results import FrameResult
from edgevision.service.health import THROTTLED, HealthState, PiHealth


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


def test_only_the_command_line_imports_the_composition_root() -> None:
    package = REPO / "edgevision"
    offenders = [
        str(p.relative_to(package))
        for p in package.rglob("*.py")
        if p.parent.name not in ("app", "cli")
        and any(n == "edgevision.app" or n.startswith("edgevision.app.") for n in _imports(p))
    ]
    assert offenders == []


def test_the_budget_factor_follows_the_monitors_health_refresh() -> None:
    readings = iter([PiHealth(0, 50.0), PiHealth(THROTTLED, 82.0), PiHealth(0, 60.0)])
    health = HealthState(lambda: next(readings), tighten=0.7)
    factor = health.budget_factor  # what the scheduler is given
    assert factor() == 1.0
    health.refresh()
    assert factor() == 0.7 and health.current.throttling
    health.refresh()
    assert factor() == 1.0


def _recorded_replay(
    models_dir: Path, tmp_path: Path, more: dict[str, object] | None = None
) -> EdgeVisionConfig:
    """The walking clip replayed and recorded into ``tmp_path/data`` (an event from the first person frame), with
    its detections logged to ``tmp_path/d.jsonl``."""
    return load_config(
        overrides={
            "models.dir": str(models_dir),
            "source.kind": "video",
            "source.path": str(WALKING),
            "recorder.enabled": True,
            "recorder.data_dir": str(tmp_path / "data"),
            "recorder.trigger_frames": 1,
            "recorder.window_frames": 1,
            "output.detections": str(tmp_path / "d.jsonl"),
            **(more or {}),
        }
    )


def test_build_and_run_a_recorded_replay(models_dir: Path, tmp_path: Path) -> None:
    """One call builds the whole run; the recorder records into the configured data dir; the summary says so."""
    data = tmp_path / "data"
    cfg = _recorded_replay(models_dir, tmp_path)
    made: list[str] = []

    class Marker:
        def on_result(self, result: FrameResult) -> None:
            made.append(result.model)

        def close(self) -> None:
            made.append("closed")

    def marker() -> Marker:
        assert events_index(data).exists()  # extra sinks are made after the recorder recovered its data dir
        return Marker()

    system = build(cfg, RunOptions(timing=False, extra_sinks=[marker]))
    assert system.scheduler is None and system.recorder is not None and system.web_socket is None
    # a live source gone quiet still ends the event the recorder, MQTT and metrics read (test_events_idle.py)
    assert system.pipeline.idle_events == system.recorder.events.idle
    summary = system.run(max_frames=4)
    lines = system.summary(summary)
    assert summary.frames_processed == 4 and made[-1] == "closed" and len(made) == 5
    assert lines[0].startswith("processed 4 frames") and lines[-2].startswith(
        "events: 1 started, 1 finalized"
    )
    assert lines[-1].startswith("recording: 0 packet(s) dropped before the recorder; pre-roll ring: 0 GOP(s)")
    assert data_dir(cfg) == data and events_index(data).is_file()
    assert all('"latency_ms"' not in line for line in (tmp_path / "d.jsonl").read_text().splitlines())


def test_a_failed_build_closes_the_bound_web_port(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The web port is bound first; when a model then fails to load, the bound socket is closed, not leaked."""
    import edgevision.app.compose as app_build

    bound: list[socket.socket] = []

    def listen(host: str, port: int, *args: Any, **kwargs: Any) -> socket.socket:
        bound.append(
            real_listen(host, port, *args, **kwargs)
        )  # held here: only an explicit close() closes it
        return bound[-1]

    real_listen = app_build.listen
    monkeypatch.setattr(app_build, "listen", listen)
    cfg = load_config(overrides={"web.enabled": True, "web.port": 0, "models.dir": str(tmp_path / "empty")})
    with pytest.raises(ModelError, match=r"not installed|not found|fetch"):
        build(cfg)  # a known catalog name (passes the config check) that is not installed here
    assert len(bound) == 1 and bound[0].fileno() == -1


def test_a_build_failing_after_the_recorder_closes_it_and_frees_the_data_directory(
    models_dir: Path, tmp_path: Path
) -> None:
    """A part made after the recorder failing (here an extra sink) closes the recorder: its data-directory lock
    is free for the next process, not held (with its threads) until this one exits."""
    import subprocess
    import sys

    def broken() -> FrameResult:
        raise RuntimeError("sink failed")

    cfg = _recorded_replay(models_dir, tmp_path)
    with pytest.raises(RuntimeError, match="sink failed"):
        build(cfg, RunOptions(extra_sinks=[broken]))  # type: ignore[list-item]
    probe = (
        "import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDONLY); "
        "fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)"
    )
    lock = tmp_path / "data" / ".lock"
    assert lock.exists()
    r = subprocess.run([sys.executable, "-c", probe, str(lock)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr


def test_the_recorder_is_closed_before_the_output_sinks(
    models_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On SIGTERM the sinks are closed in turn within systemd's TimeoutStopSec: the event being recorded is
    finalized first, so an annotated video still encoding (or stuck, up to its own deadline) or a detections
    log on a slow disk cannot use up the time its clip needs."""
    from edgevision.pipeline.sinks import DetectionsLog, VideoSink
    from edgevision.recorder.recorder import Recorder

    closed: list[str] = []
    for cls, name in ((Recorder, "recorder"), (VideoSink, "video"), (DetectionsLog, "detections")):

        def close(self: object, _real: object = cls.close, _name: str = name) -> None:
            closed.append(_name)
            _real(self)  # type: ignore[operator]

        monkeypatch.setattr(cls, "close", close)
    cfg = _recorded_replay(models_dir, tmp_path, {"output.save_video": str(tmp_path / "v.mp4")})
    system = build(cfg, RunOptions(timing=False))
    summary = system.run(max_frames=3)
    assert summary.frames_processed == 3 and system.recorder is not None
    assert system.recorder.events_finalized == 1
    assert closed == ["recorder", "detections", "video"]
