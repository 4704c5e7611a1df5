"""``edgevision bench models``: measure every scheduler rung on this device and write the profile."""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from edgevision.cli.common import add_model_flags, config_from_args
from edgevision.cli.progress import Progress
from edgevision.errors import InputError, UsageError
from edgevision.writable import check_output_file

if TYPE_CHECKING:  # numpy and the scheduler load when the command runs, not for --help
    import numpy as np

    from edgevision.scheduler.ladder import Rung


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="measure models on this device")
    bsub = p.add_subparsers(dest="bench_command", required=True)
    q = bsub.add_parser("models", help="profile every scheduler rung: latency, memory, person agreement")
    add_model_flags(q)
    q.add_argument("--video", type=Path, help="replay clip for person agreement (and realistic frames)")
    q.add_argument("--frames", type=int, default=100, help="frames of the clip to use (default 100)")
    q.add_argument("--invokes", type=int, default=50, help="timed invokes per rung (default 50)")
    q.add_argument("--out", type=Path, help="profile file (default: <derived dir>/profile.json)")
    q.add_argument("--json", action="store_true", help="the measured rungs as one JSON object on stdout")
    q.set_defaults(func=cmd_models)


def _frames(video: Path, count: int) -> list[np.ndarray]:
    from edgevision.capture.sources import read_frames

    frames = read_frames(video, count)
    if not frames:
        raise InputError(f"{video}: cannot open video or no decodable frame")
    return frames


def person_boxes(
    rung: Rung, frames: list[np.ndarray], fps: float = 25.0, tick: Callable[[], None] | None = None
) -> list[np.ndarray]:
    """Each frame's person boxes ``[N, 4]`` (xmin, ymin, xmax, ymax) as this rung sees them (cadence rungs carry
    boxes between detections)."""
    import numpy as np

    from edgevision.scheduler.carry import BoxCarrier

    carrier = BoxCarrier()
    out = []
    k = rung.profile.cadence
    for i, f in enumerate(frames):
        ts = i / fps
        if i % k == 0:
            dets, _ = rung.detector.detect(f)
            carrier.update(ts, dets)
        else:
            dets = carrier.predict(ts)
        people = [d.box for d in dets if d.label == "person"]
        out.append(np.array([[b.xmin, b.ymin, b.xmax, b.ymax] for b in people], np.float32).reshape(-1, 4))
        if tick is not None:
            tick()
    return out


def cmd_models(args: argparse.Namespace) -> int:
    import numpy as np

    from edgevision.paths import profile_path
    from edgevision.scheduler.ladder import build_ladder, profile_conditions, save_profile

    for flag in ("invokes", "frames"):  # 0 invokes: np.percentile([]) after every model loaded
        if getattr(args, flag) < 1:
            raise UsageError(f"--{flag} must be at least 1")
    cfg = config_from_args(args)
    check_output_file("--out", args.out or profile_path(cfg))  # before minutes of timing, not after
    rng = np.random.default_rng(0)
    frames = (
        _frames(args.video, args.frames) if args.video else [rng.integers(0, 256, (480, 640, 3), np.uint8)]
    )
    unprofiled = cfg.model_copy(update={"scheduler": cfg.scheduler.model_copy(update={"profile": None})})
    with Progress("bench: rungs timed", unit="rungs") as bar:

        def timed(name: str) -> None:
            bar.note(name)
            bar.update()

        rungs = build_ladder(unprofiled, frames[:5], args.invokes, on_rung=timed)
    reference = rungs[0]  # the best expected quality (the ladder is ordered by it)
    if args.video:
        from edgevision.distill.gate import agreement

        with Progress("bench: person agreement", len(frames) * (len(rungs) + 1), unit="frames") as bar:
            ref = person_boxes(reference, frames, tick=bar.update)
            for r in rungs:
                bar.note(r.name)
                boxes = person_boxes(r, frames, tick=bar.update)
                r.profile.agreement = float(
                    np.mean([(len(a) > 0) == (len(b) > 0) for a, b in zip(boxes, ref, strict=True)])
                )
                r.profile.box_f1 = agreement(ref, boxes).f1
    out = args.out or profile_path(cfg)
    meta = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": platform.machine(),
        **profile_conditions(cfg),  # threads, kernels and the runtime the rungs were timed with
        "reference": reference.name,
        "video": str(args.video) if args.video else None,
        "frames": len(frames),
    }
    save_profile(out, [r.profile for r in rungs], meta)
    if args.json:
        rows = [
            {
                "rung": r.profile.name,
                "size": r.profile.size,
                "cadence": r.profile.cadence,
                "p50_ms": round(r.profile.p50_ms, 3),
                "p95_ms": round(r.profile.p95_ms, 3),
                "ms_per_frame": round(r.profile.cost_ms, 3),
                "rss_mb": round(r.profile.rss_mb, 1),
                "agreement": r.profile.agreement,
                "box_f1": r.profile.box_f1,
            }
            for r in rungs
        ]
        print(json.dumps({**meta, "profile": str(out), "rungs": rows}, indent=2))
        return 0
    print(
        f"{'rung':<44} {'p50 ms':>7} {'p95 ms':>7} {'ms/frame':>8} {'RSS MiB':>8} {'agree':>6} {'box F1':>6}"
    )
    for r in rungs:
        p = r.profile
        agree = f"{p.agreement:6.3f}" if p.agreement is not None else "     -"
        f1 = f"{p.box_f1:6.3f}" if p.box_f1 is not None else "     -"
        print(f"{p.name:<44} {p.p50_ms:7.2f} {p.p95_ms:7.2f} {p.cost_ms:8.2f} {p.rss_mb:8.1f} {agree} {f1}")
    print(f"profile written to {out}")
    return 0
