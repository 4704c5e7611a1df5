"""Build the running system from the configuration, in dependency order.

The order is the guarantee a user sees:

1. output paths (``--detections``, ``--save-video``) and the configuration are checked, then the web port is
   bound: a bad path is exit 2, a bad model name, data directory or port exit 78, before any model loads or
   anything is opened;
2. the detect step (a fixed detector, or the scheduler with every rung loaded and profiled) and the face stages:
   every model is loaded and probed before the source opens;
3. the capture runner (the source opens when the pipeline starts it), then the sinks, the recorder (it locks the
   data directory and recovers what a crash left open before the first frame), the service monitor, sharing;
4. the pipeline.

Every component is built once, from its config section, and handed to those that use it.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgevision.app.source import interpreters, replays, sample_frames
from edgevision.app.system import System
from edgevision.capture.factory import open_runner
from edgevision.capture.replay import ReplayRunner
from edgevision.capture.runner import LiveRunner
from edgevision.config import EdgeVisionConfig
from edgevision.config_check import check_config
from edgevision.detection.detector import FixedDetect
from edgevision.detection.factory import build_detector
from edgevision.detection.parallel import ParallelDetect
from edgevision.events import EventSettings, EventStage
from edgevision.face.factory import build_face_stages
from edgevision.face.privacy import PrivacyStage
from edgevision.naming import camera_name
from edgevision.paths import data_dir
from edgevision.pipeline.control import Controls, RecordingGate
from edgevision.pipeline.loop import Pipeline
from edgevision.pipeline.sinks import DetectionsLog, VideoSink, WindowSink, check_video_target
from edgevision.publish.factory import build_sharing
from edgevision.publish.http_server import listen
from edgevision.recorder.factory import recorder_settings
from edgevision.recorder.recorder import Recorder
from edgevision.recorder.recovery import check_allowance_s
from edgevision.results import DetectStep, Frame, Sink
from edgevision.scheduler.factory import build_scheduler
from edgevision.scheduler.runtime import Scheduler
from edgevision.service.health import HealthState
from edgevision.service.monitor import ServiceMonitor
from edgevision.service.notify import Notifier, supervised, watchdog_interval
from edgevision.writable import check_output_file

log = logging.getLogger("edgevision.run")


@dataclass(frozen=True)
class RunOptions:
    """What a run adds to the configuration (command-line only, no config key)."""

    timing: bool = True  # latency_ms in the detections log (False: byte-identical replays)
    # Sinks the caller adds (the command line's replay progress bar), made in their turn: after the models load.
    extra_sinks: Sequence[Callable[[], Sink]] = ()


def preflight(cfg: EdgeVisionConfig) -> socket.socket | None:
    """Everything that can refuse the run before a model loads: the ``--detections`` and ``--save-video``
    targets (exit 2), model names and the data directory (exit 78), then the web port, bound now (in use or
    unresolvable: exit 78). The returned socket is the web server's."""
    if cfg.output.detections and str(cfg.output.detections) != "-":
        check_output_file("--detections", Path(cfg.output.detections))
    if cfg.output.save_video:
        check_video_target(Path(cfg.output.save_video))
    check_config(cfg)
    web = cfg.web
    return listen(web.host, web.port, loopback_only=web.token is None) if web.enabled else None


def build(cfg: EdgeVisionConfig, options: RunOptions = RunOptions()) -> System:
    """The running system for ``cfg``: :func:`preflight`, then every component in dependency order. Nothing runs
    until :meth:`System.run`; on a failure here what was made (web socket, recorder and its data-directory lock,
    monitor, sharing) is closed and the error raised."""
    web_sock = preflight(cfg)
    with contextlib.ExitStack() as undo:  # on a failure, what was made is closed, the latest first
        if web_sock is not None:
            undo.callback(web_sock.close)
        system = _build(cfg, options, web_sock, undo)
        undo.pop_all()  # built: the system closes them from now on
    return system


def _detect_step(
    cfg: EdgeVisionConfig, health: HealthState, events: EventStage
) -> tuple[DetectStep, Scheduler | None, str, str]:
    """The fixed detector, its parallel form (``runtime.parallel``) or the scheduler (every rung loaded and
    profiled); its name and how it runs (runtime, interpreters, threads) for the log."""
    if cfg.scheduler.enabled:
        scheduler = build_scheduler(
            cfg,
            sample_frames(cfg.source),
            event_active=lambda: events.active,
            budget_factor=health.budget_factor,
        )
        d = scheduler.detector
        return scheduler, scheduler, d.name, f"{d.handle.runtime}, {cfg.runtime.threads} thread(s)"
    n, per = interpreters(cfg)
    if n > 1:
        # frames side by side: one interpreter per worker, the configured threads split among them
        one = cfg.model_copy(update={"runtime": cfg.runtime.model_copy(update={"threads": per})})
        detectors = [build_detector(one) for _ in range(n)]
        d = detectors[0]
        how = f"{d.handle.runtime}, {n} interpreters of {per} thread(s)"
        return ParallelDetect(detectors), None, d.name, how
    detector = build_detector(cfg)
    return (
        FixedDetect(detector),
        None,
        detector.name,
        f"{detector.handle.runtime}, {cfg.runtime.threads} thread(s)",
    )


def _output_sinks(
    cfg: EdgeVisionConfig, options: RunOptions, runner: LiveRunner | ReplayRunner
) -> list[Sink]:
    """``output:``: the window, the detections log, the annotated video."""
    out = cfg.output
    sinks: list[Sink] = []
    if out.show:
        sinks.append(WindowSink())
    if out.detections:
        sinks.append(
            DetectionsLog(out.detections, timing=options.timing, landmarks=cfg.faces.landmarks_in_log)
        )
    if out.save_video:
        fallback = cfg.source.fps

        def fps() -> float | None:
            return runner.fps or fallback

        sinks.append(VideoSink(out.save_video, fps, not runner.live))
    return sinks


def _recorder_status(recorder: Recorder | None) -> Callable[[], str]:
    """The recorder's part of the service status line."""
    if recorder is None:
        return lambda: ""
    return lambda: f"{recorder.events_started} events"


def _stats(
    runner: LiveRunner | ReplayRunner, recorder: Recorder | None, monitor: ServiceMonitor
) -> Callable[[], dict[str, Any]]:
    """What the MQTT stats message adds to fps / rung / persons."""

    def stats() -> dict[str, Any]:
        out: dict[str, Any] = {"dropped": runner.stats.dropped, "health": monitor.health.text()}
        if recorder is not None:
            out.update(
                events_started=recorder.events_started,
                events_finalized=recorder.events_finalized,
                recording_mode=recorder.mode,
            )
        return out

    return stats


def _build(
    cfg: EdgeVisionConfig, options: RunOptions, web_sock: socket.socket | None, undo: contextlib.ExitStack
) -> System:
    camera = camera_name(cfg)
    health = HealthState(tighten=cfg.service.throttle_budget_factor)  # refreshed by the monitor
    # The person-event tracker is the last stage: the recorder, MQTT and metrics read its updates on the results,
    # the scheduler reads whether an event is open (it holds its rung and keeps the person gate open then).
    events = EventStage(EventSettings.from_config(cfg.recorder))
    step, scheduler, model, runtime = _detect_step(cfg, health, events)
    stages = [*build_face_stages(cfg), events]  # every model is loaded and probed before the source opens
    # The capture thread preprocesses for whichever detector (rung) the step runs at that moment.
    # Recording from packets: the runner also hands the recorder a feed of the source's own packets (or of one
    # continuous encode for cameras), so no frame is decoded or encoded for a clip.
    controls = Controls(detect=True, recordings=cfg.recorder.enabled)  # flipped at run time over MQTT

    def prepare(frame: Frame) -> Frame:  # detection off: no input made (nor, frames side by side, inferred)
        return step.prepare(frame) if controls.detect else frame

    runner, packets = open_runner(cfg, prepare, wait_at_start=supervised())
    sinks = _output_sinks(cfg, options, runner)
    recorder: Recorder | None = None
    notifier = Notifier()
    if cfg.recorder.enabled:

        def recovering(clip: Path, size: int) -> None:
            # decoding a long clip takes minutes on a Pi: past TimeoutStartSec, systemd would kill and restart
            # the service, which would start the same check again
            notifier.extend_timeout(
                check_allowance_s(size), f"checking {clip.name} ({size >> 20} MiB) after a crash"
            )

        # The recorder locks the data directory, then recovers what a crash left open, before any frame.
        recorder = Recorder(
            recorder_settings(cfg, camera, cfg.source.fps),
            blocking=replays(cfg.source),
            fps_source=lambda: runner.fps,
            events=events,
            packets=packets,
            on_recovery=recovering,
        )
        undo.callback(recorder.close)
        # First of the sinks, so the first closed: on SIGTERM the open event's clip is finalized before an
        # annotated video finishes encoding (or gives up on a stuck writer) within systemd's TimeoutStopSec.
        sinks.insert(0, RecordingGate(recorder, controls))
    monitor = ServiceMonitor(
        notifier,
        watchdog_interval(),
        cfg.service,
        health=health,
        extra_status=_recorder_status(recorder),
        capture=runner,
    )
    undo.callback(monitor.close)
    sinks.append(monitor)
    sinks += [make() for make in options.extra_sinks]
    sharing = build_sharing(
        cfg,
        camera,
        data_dir(cfg) if recorder is not None else None,
        monitor,
        _stats(runner, recorder, monitor),
        events,
        controls,
        web_socket=web_sock,
    )
    undo.callback(sharing.close)
    sinks += sharing.sinks
    sharing.attach(runner, recorder, monitor, controls)

    def on_status(line: str) -> None:
        text = monitor.health.text()
        log.info("status: %s%s", line, f" | {text}" if text else "")

    pipeline = Pipeline(
        runner,
        step,
        sinks,
        stages,
        status_interval=cfg.output.status_interval_s,
        controls=controls,
        on_status=on_status,
        idle_events=events.idle,  # a live source gone quiet: its event ends after the post-roll anyway
    )
    log.info("model %s (%s) on %s", model, runtime, cfg.source.kind)
    privacy = next((s for s in stages if isinstance(s, PrivacyStage)), None)
    return System(pipeline, monitor, sharing, scheduler, recorder, web_sock, privacy)
