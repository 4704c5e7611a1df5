"""``edgevision bench models``: measure every scheduler rung on this device and write the profile."""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np

from edgevision.capture.sources import read_frames
from edgevision.cli.common import add_model_flags, config_from_args
from edgevision.detection.factory import models_dir
from edgevision.errors import InputError
from edgevision.scheduler.carry import BoxCarrier
from edgevision.scheduler.ladder import Rung, build_ladder, save_profile


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="measure models on this device")
    bsub = p.add_subparsers(dest="bench_command", required=True)
    q = bsub.add_parser("models", help="profile every scheduler rung: latency, memory, person agreement")
    add_model_flags(q)
    q.add_argument("--video", type=Path, help="replay clip for person agreement (and realistic frames)")
    q.add_argument("--frames", type=int, default=100, help="frames of the clip to use (default 100)")
    q.add_argument("--invokes", type=int, default=50, help="timed invokes per rung (default 50)")
    q.add_argument("--out", type=Path, help="profile file (default: <models dir>/derived/profile.json)")
    q.set_defaults(func=cmd_models)


def _frames(video: Path, count: int) -> list[np.ndarray]:
    frames = read_frames(video, count)
    if not frames:
        raise InputError(f"{video}: cannot open video or no decodable frame")
    return frames


def person_flags(rung: Rung, frames: list[np.ndarray], fps: float = 25.0) -> list[bool]:
    """Per-frame "a person is there" as this rung sees it (cadence rungs carry boxes between detections)."""
    carrier = BoxCarrier()
    flags = []
    k = rung.profile.cadence
    for i, f in enumerate(frames):
        ts = i / fps
        if i % k == 0:
            dets, _ = rung.detector.detect(f)
            carrier.update(ts, dets)
        else:
            dets = carrier.predict(ts)
        flags.append(any(d.label == "person" for d in dets))
    return flags


def cmd_models(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    rng = np.random.default_rng(0)
    frames = (
        _frames(args.video, args.frames) if args.video else [rng.integers(0, 256, (480, 640, 3), np.uint8)]
    )
    rungs = build_ladder(cfg.model_copy(update={"scheduler": cfg.scheduler.model_copy(update={"profile": None})}),
                         frames[:5], args.invokes)  # fmt: skip
    reference = rungs[0]  # the best expected quality (the ladder is ordered by it)
    if args.video:
        ref_flags = person_flags(reference, frames)
        for r in rungs:
            flags = person_flags(r, frames)
            r.profile.agreement = float(np.mean([a == b for a, b in zip(flags, ref_flags, strict=True)]))
    out = args.out or models_dir(cfg) / "derived" / "profile.json"
    save_profile(out, [r.profile for r in rungs], {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": platform.machine(),
        "threads": cfg.runtime.threads, "runtime": rungs[0].detector.handle.runtime, "reference": reference.name,
        "video": str(args.video) if args.video else None, "frames": len(frames),
    })  # fmt: skip
    print(f"{'rung':<44} {'p50 ms':>7} {'p95 ms':>7} {'ms/frame':>8} {'RSS MiB':>8} {'agree':>6}")
    for r in rungs:
        p = r.profile
        agree = f"{p.agreement:6.3f}" if p.agreement is not None else "     -"
        print(f"{p.name:<44} {p.p50_ms:7.2f} {p.p95_ms:7.2f} {p.cost_ms:8.2f} {p.rss_mb:8.1f} {agree}")
    print(f"profile written to {out}")
    return 0
