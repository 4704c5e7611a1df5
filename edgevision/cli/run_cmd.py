"""``edgevision run``: the capture loop; ``edgevision config check``: validate config files."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgevision.cli.common import add_model_flags, config_from_args, models_reachable
from edgevision.cli.progress import Progress

if TYPE_CHECKING:  # the capture loop's modules load when `run` runs, not for `--help`
    from collections.abc import Callable

    from edgevision.results import FrameResult, Sink


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
    p.add_argument(
        "--parallel",
        type=int,
        metavar="N",
        help="run frames side by side on N interpreters (--threads split among them): throughput, not latency",
    )
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
    o["runtime.parallel"] = args.parallel
    o["recorder.data_dir"] = str(args.data_dir) if args.data_dir else None
    return o


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

    def on_result(self, result: FrameResult) -> None:
        self.bar.set(result.frame.index + 1)

    def close(self) -> None:
        self.bar.close()


def run(args: argparse.Namespace) -> int:
    """Parse → build → run → summary. Building checks the paths and the config and binds the web port before any
    model loads (exit 2 / 78), then loads every model before the source opens (see :mod:`edgevision.app`)."""
    cfg = config_from_args(args, _source_overrides(args))
    if args.max_frames is not None and args.max_frames < 1:
        from edgevision.errors import UsageError

        raise UsageError("--max-frames must be >= 1")
    from edgevision.app import RunOptions, build
    from edgevision.config import SourceKind
    from edgevision.paths import derived_dir, models_dir

    progress: list[Callable[[], Sink]] = []
    path = cfg.source.path
    if cfg.source.kind is SourceKind.VIDEO and path is not None:
        progress.append(lambda: ReplayProgress(path, args.max_frames))
    # models.dir this user may not enter (the service's without sudo): exit 78 in one line, as `models` says
    with models_reachable("run", [models_dir(cfg), derived_dir(cfg)]):
        system = build(cfg, RunOptions(timing=not args.no_timing, extra_sinks=progress))
    summary = system.run(args.max_frames)
    for line in system.summary(summary):
        print(f"edgevision: {line}", file=sys.stderr)
    return 0
