"""``edgevision run``: the capture loop; ``edgevision config check``: validate config files."""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from edgevision.cli.common import add_model_flags, config_from_args
from edgevision.cli.progress import Progress

if TYPE_CHECKING:  # the capture loop's modules load when `run` runs, not for `--help`
    import numpy as np

    from edgevision.capture.runner import LiveRunner, Prepare, ReplayRunner
    from edgevision.capture.sources import FrameSource
    from edgevision.config import EdgeVisionConfig
    from edgevision.pipeline.loop import Runner
    from edgevision.recorder.recorder import Recorder
    from edgevision.service.monitor import ServiceMonitor

log = logging.getLogger("edgevision.run")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run the detector on a camera, the Pi camera, a video file or a stream")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--camera", type=int, metavar="N", help="V4L2/USB camera index (e.g. 0 for /dev/video0)")
    src.add_argument("--picamera", action="store_true", help="the Raspberry Pi camera (picamera2)")
    src.add_argument("--video", metavar="PATH|URL", help="a video file, or an rtsp:// / http(s):// stream")
    add_model_flags(p)
    p.add_argument(
        "--realtime", action="store_true", help="replay a file at its own fps, dropping frames like a camera"
    )
    p.add_argument(
        "--detections", type=Path, metavar="FILE", help="write JSON lines, one per processed frame"
    )
    p.add_argument(
        "--no-timing",
        action="store_true",
        help="leave latency_ms out of --detections (byte-identical replays)",
    )
    p.add_argument("--save-video", type=Path, metavar="FILE", help="write the annotated video")
    p.add_argument("--show", action="store_true", help="open a window (needs an OpenCV build with a GUI)")
    p.add_argument("--status-interval", type=float, metavar="S", help="seconds between status lines")
    p.add_argument("--max-frames", type=int, metavar="N", help="stop after N processed frames")
    p.add_argument("--record", action="store_true", help="record person events (clips, snapshots, index)")
    p.add_argument("--data-dir", type=Path, help="where recordings and the event index live")
    p.add_argument("--faces", action="store_true", help="run the face stage (BlazeFace + Face Mesh)")
    p.add_argument("--blur-faces", action="store_true", help="blur every face before anything is written")
    p.add_argument("--budget-ms", type=float, help="enable the latency scheduler with this frame budget")
    p.set_defaults(func=run)


def register_config(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="configuration tools")
    csub = p.add_subparsers(dest="config_command", required=True)
    q = csub.add_parser("check", help="validate config files without running")
    q.add_argument("files", nargs="+", type=Path, metavar="FILE")
    q.add_argument("--json", action="store_true", help="one JSON list on stdout: file, ok, errors")
    q.set_defaults(func=check)


def check(args: argparse.Namespace) -> int:
    from edgevision.config import load_config
    from edgevision.config_check import check_config
    from edgevision.errors import ConfigError

    errors = []
    rows: list[dict[str, Any]] = []
    for path in args.files:
        try:
            check_config(load_config(path))
        except ConfigError as exc:
            errors.append(str(exc))
            rows.append({"file": str(path), "ok": False, "errors": str(exc).splitlines()})
            continue
        rows.append({"file": str(path), "ok": True, "errors": []})
        if not args.json:
            print(f"{path}: ok")
    if args.json:
        import json

        print(json.dumps(rows, indent=2))
    if errors:
        raise ConfigError("\n".join(errors))
    return 0


def _source_overrides(args: argparse.Namespace) -> dict[str, Any]:
    o: dict[str, Any] = {}
    if args.camera is not None:
        o.update({"source.kind": "camera", "source.camera": args.camera})
    elif args.picamera:
        o["source.kind"] = "picamera2"
    elif args.video is not None:
        from edgevision.capture.sources import parse_video_target

        target = parse_video_target(args.video)
        if "://" in target:
            o.update({"source.kind": "url", "source.url": target})
        else:
            o.update({"source.kind": "video", "source.path": target})
    if args.realtime:
        o["source.realtime"] = True
    o["output.detections"] = str(args.detections) if args.detections else None
    o["output.save_video"] = str(args.save_video) if args.save_video else None
    o["output.status_interval_s"] = args.status_interval
    if args.show:
        o["output.show"] = True
    if args.record:
        o["recorder.enabled"] = True
    if args.faces:
        o["faces.enabled"] = True
    if args.blur_faces:
        o["privacy.blur_faces"] = True
    if args.budget_ms is not None:
        o.update({"scheduler.enabled": True, "scheduler.budget_ms": args.budget_ms})
    o["recorder.data_dir"] = str(args.data_dir) if args.data_dir else None
    return o


def build_runner(cfg: EdgeVisionConfig, prepare: Prepare) -> LiveRunner | ReplayRunner:
    """The capture runner for the configured source (replay, realtime replay or live)."""
    from edgevision.capture.runner import LiveRunner, ReplayRunner
    from edgevision.capture.sources import OpenCVSource, Picamera2Source
    from edgevision.service.notify import supervised

    s = cfg.source
    wait = supervised()  # under systemd a camera or stream absent at start is retried, not fatal
    if s.kind == "picamera2":

        def pi_factory() -> FrameSource:
            return Picamera2Source(s.camera, s.picamera_main_size, s.picamera_lores_size, s.fps)

        return LiveRunner(pi_factory, prepare, s.stall_timeout_s, s.reconnect_initial_s, s.reconnect_max_s,
                          wait_at_start=wait, open_timeout=s.open_timeout_s)  # fmt: skip
    target: int | str
    if s.kind == "camera":
        target = s.camera
    elif s.kind == "url" and s.url is not None:
        target = s.url
    else:
        target = str(s.path)

    def factory() -> FrameSource:
        return OpenCVSource(
            target, width=s.width, height=s.height, fps=s.fps, fourcc=s.fourcc,
            open_timeout_s=s.open_timeout_s, read_timeout_s=s.stall_timeout_s,
        )  # fmt: skip

    if s.kind == "video" and not s.realtime:
        return ReplayRunner(factory(), prepare)
    return LiveRunner(factory, prepare, s.stall_timeout_s, s.reconnect_initial_s, s.reconnect_max_s,
                      pace=s.kind == "video", wait_at_start=wait and s.kind != "video",
                      open_timeout=s.open_timeout_s)  # fmt: skip


def _stats(runner: Runner, recorder: Recorder | None, monitor: ServiceMonitor) -> dict[str, Any]:
    out: dict[str, Any] = {"dropped": runner.stats.dropped, "health": monitor.health.text()}
    if recorder is not None:
        out.update(events_started=recorder.events_started, events_finalized=recorder.events_finalized,
                   recording_mode=recorder.mode)  # fmt: skip
    return out


def sample_frames(cfg: EdgeVisionConfig, count: int = 5) -> list[np.ndarray]:
    """Frames to profile rungs on: the first frames of a video source, else deterministic noise (invoke
    latency of these models does not depend on image content)."""
    import numpy as np

    from edgevision.capture.sources import read_frames

    frames: list[np.ndarray] = []
    if cfg.source.kind == "video" and cfg.source.path is not None:
        frames = read_frames(cfg.source.path, count)
    rng = np.random.default_rng(0)
    while len(frames) < count:
        frames.append(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8))
    return frames


class ReplayProgress:
    """A sink that shows how far a video replay got (a bar on a terminal; nothing otherwise)."""

    def __init__(self, path: Path, max_frames: int | None) -> None:
        self.bar = Progress(f"replay {path.name}", unit="frames")
        if self.bar.enabled:  # the frame count costs a container open: only for a bar that is drawn
            import cv2

            cap = cv2.VideoCapture(str(path))
            total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
            cap.release()
            if max_frames is not None:
                total = min(total, max_frames) if total > 0 else max_frames
            self.bar.total = total if total > 0 else None

    def on_result(self, result: Any) -> None:
        self.bar.set(result.frame.index + 1)

    def close(self) -> None:
        self.bar.close()


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args, _source_overrides(args))
    if args.max_frames is not None and args.max_frames < 1:
        from edgevision.errors import UsageError

        raise UsageError("--max-frames must be >= 1")
    if cfg.output.save_video:
        from edgevision.pipeline.sinks import check_video_target

        check_video_target(Path(cfg.output.save_video))  # before any model loads or frame is read
    from edgevision.config_check import check_config
    from edgevision.share.web import listen

    check_config(cfg)  # model names, data directory: exit 78 before anything is loaded or opened
    # Bind the web port first: a port in use or an unresolvable host is exit 78 before models load,
    # recovery runs or the source opens. The socket is handed to the server below.
    web_sock = listen(cfg.web.host, cfg.web.port) if cfg.web.enabled else None
    try:
        return _run(args, cfg, web_sock)
    finally:
        if web_sock is not None:
            web_sock.close()  # the server closed it already, unless the run failed before starting it


def _run(args: argparse.Namespace, cfg: EdgeVisionConfig, web_sock: socket.socket | None) -> int:
    from edgevision.detection.detector import FixedDetect
    from edgevision.detection.factory import build_detector
    from edgevision.face.factory import build_face_stages
    from edgevision.naming import camera_name
    from edgevision.pipeline.control import Controls, RecordingGate
    from edgevision.pipeline.loop import Pipeline
    from edgevision.pipeline.sinks import DetectionsLog, VideoSink, WindowSink
    from edgevision.recorder.factory import recorder_settings
    from edgevision.recorder.recorder import Recorder
    from edgevision.results import DetectStep, Sink
    from edgevision.scheduler.factory import build_scheduler
    from edgevision.service.health import budget_factor
    from edgevision.service.monitor import ServiceMonitor
    from edgevision.service.notify import Notifier, watchdog_interval
    from edgevision.share.factory import build_sharing

    recorder: Recorder | None = None
    monitor: ServiceMonitor | None = None
    scheduler = None
    if cfg.scheduler.enabled:
        # Rungs are loaded (and profiled) before anything opens the camera or starts a thread.
        scheduler = build_scheduler(
            cfg,
            sample_frames(cfg),
            event_active=lambda: recorder is not None and recorder.tracker.active,
            budget_factor=lambda: (
                budget_factor(monitor.health, cfg.service.throttle_budget_factor) if monitor else 1.0
            ),
        )
    detector = scheduler.detector if scheduler is not None else build_detector(cfg)
    step: DetectStep = scheduler if scheduler is not None else FixedDetect(detector)
    stages = build_face_stages(cfg)  # every model is loaded and probed before the source opens
    # The capture thread preprocesses for whichever detector (rung) the step runs at that moment.
    from edgevision.capture.factory import open_runner

    runner, packets = open_runner(cfg, step.prepare)
    sinks: list[Sink] = []
    controls = Controls(detect=True, recordings=cfg.recorder.enabled)  # flipped at run time over MQTT
    out = cfg.output
    if out.show:
        sinks.append(WindowSink())
    if out.detections:
        sinks.append(
            DetectionsLog(out.detections, timing=not args.no_timing, landmarks=cfg.faces.landmarks_in_log)
        )
    video_sink: VideoSink | None = None
    if out.save_video:
        video_sink = VideoSink(
            out.save_video, lambda: getattr(runner, "fps", None) or cfg.source.fps, not runner.live
        )
        sinks.append(video_sink)
    if cfg.recorder.enabled:
        settings = recorder_settings(cfg, camera_name(cfg), cfg.source.fps)
        # The recorder locks the data directory, then recovers what a crash left open, before any frame.
        recorder = Recorder(settings, blocking=not runner.live,
                            fps_source=lambda: getattr(runner, "fps", None), packets=packets)  # fmt: skip
        sinks.append(RecordingGate(recorder, controls))
    notifier = Notifier()
    monitor = ServiceMonitor(
        notifier, watchdog_interval(), cfg.service.progress_timeout_s, cfg.service.status_interval_s,
        extra_status=lambda: f"{recorder.events_started} events" if recorder else "", capture=runner,
    )  # fmt: skip
    sinks.append(monitor)
    if cfg.source.kind == "video" and cfg.source.path is not None:
        sinks.append(ReplayProgress(cfg.source.path, args.max_frames))
    data = recorder.s.data_dir if recorder is not None else None
    sharing = build_sharing(
        cfg,
        camera_name(cfg),
        data,
        monitor,
        lambda: _stats(runner, recorder, monitor),
        controls,
        web_socket=web_sock,
    )
    sinks += sharing.sinks
    sharing.attach(runner, recorder, monitor, controls)
    pipeline = Pipeline(runner, step, sinks, stages, status_interval=out.status_interval_s, controls=controls)
    pipeline.on_status = lambda line: log.info(
        "status: %s%s", line, f" | {monitor.health.text()}" if monitor and monitor.health.text() else ""
    )
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s; stopping", signal.Signals(signum).name)
        if monitor is not None:
            monitor.stopping()  # tell systemd now: finalizing a recording may take a moment
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        log.info(
            "model %s (%s, %d thread(s)) on %s",
            detector.name,
            detector.handle.runtime,
            cfg.runtime.threads,
            cfg.source.kind,
        )
        summary = pipeline.run(stop, args.max_frames)
    finally:
        sharing.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print(f"edgevision: {summary.line()}", file=sys.stderr)
    if scheduler is not None:
        print(f"edgevision: scheduler: {len(scheduler.switches)} switch(es); final rung {scheduler.rung.name}; "
              f"{scheduler.gated} frame(s) skipped by the person gate", file=sys.stderr)  # fmt: skip
    if recorder is not None:
        print(f"edgevision: events: {recorder.events_started} started, {recorder.events_finalized} finalized; "
              f"{recorder.dropped} frame(s) dropped by the recorder; recording mode {recorder.mode}",
              file=sys.stderr)  # fmt: skip
    return 0
