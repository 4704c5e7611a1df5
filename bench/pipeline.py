"""Pipeline throughput vs the raw interpreter, measured in one run (a benchmark, never a test).

Replays ``supervision_walking.mp4`` (1280x720, 341 frames) and prints:

* raw invoke rate: ``invoke()`` alone on preprocessed frames, same model and threads;
* the pipeline's frames per second (``edgevision run`` path: capture thread + latest-frame hand-off +
  detector), detection only, no outputs;
* the usual synchronous tutorial loop (read, convert, resize, invoke, draw) for comparison;
* their ratios to the raw rate, and peak RSS.

Usage: ``python bench/pipeline.py [--model NAME] [--threads N] [--video PATH] [--repeat K]``
(models from ``$EDGEVISION_MODELS_DIR``; fetched from ``$EDGEVISION_SHARED/models`` when missing).
"""

from __future__ import annotations

import argparse
import os
import resource
import threading
import time
from pathlib import Path

import cv2
import numpy as np

from edgevision.capture.runner import ReplayRunner
from edgevision.capture.sources import OpenCVSource
from edgevision.catalog import fetch_entry, load_catalog
from edgevision.config import load_config
from edgevision.detection.factory import build_detector
from edgevision.pipeline.loop import Pipeline, make_prepare
from edgevision.render import draw_detections
from edgevision.settings import default_models_dir

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("EDGEVISION_SHARED", REPO.parent / "shared"))


def ensure_models(name: str, dest: Path) -> None:
    cat = load_catalog()
    for entry in cat.files_for(name):
        fetch_entry(entry, dest, mirror=str(SHARED / "models"))


def decode_and_prepare(detector, video: Path) -> tuple[list[np.ndarray], float]:  # type: ignore[no-untyped-def]
    """Preprocessed tensors of every frame, and the CPU ms per frame that decoding + preprocessing cost."""
    cap = cv2.VideoCapture(str(video))
    tensors = []
    c0 = time.process_time()
    while True:
        ok, img = cap.read()
        if not ok:
            break
        tensors.append(detector.preprocess(img))
    cap.release()
    return tensors, (time.process_time() - c0) / max(1, len(tensors)) * 1e3


def raw_rate(detector, tensors: list[np.ndarray]) -> float:  # type: ignore[no-untyped-def]
    h = detector.handle
    for t in tensors[:5]:
        h.set_input(t)
        h.invoke()
    t0 = time.perf_counter()
    for t in tensors:
        h.set_input(t)
        h.invoke()
    return len(tensors) / (time.perf_counter() - t0)


def pipeline_rate(detector, video: Path) -> float:  # type: ignore[no-untyped-def]
    runner = ReplayRunner(OpenCVSource(str(video)), make_prepare(lambda: detector))
    pipe = Pipeline(runner, detector, status_interval=1e9)
    summary = pipe.run(threading.Event())
    return summary.frames_processed / summary.seconds


def tutorial_rate(detector, video: Path) -> float:  # type: ignore[no-untyped-def]
    cap = cv2.VideoCapture(str(video))
    n = 0
    t0 = time.perf_counter()
    w, h = detector.input_size
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        tensor = cv2.resize(rgb, (w, h))[np.newaxis]
        detector.handle.set_input(tensor)
        detector.handle.invoke()
        dets = detector.parse([detector.handle.output(i) for i in range(len(detector.handle.output_details))])
        draw_detections(frame, dets)
        n += 1
    cap.release()
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="ssd_mobilenet_v1_coco_quant")
    ap.add_argument(
        "--threads", type=int, nargs="+", default=[1, 2], help="interpreter thread counts to measure"
    )
    ap.add_argument("--video", type=Path, default=SHARED / "media" / "video" / "supervision_walking.mp4")
    ap.add_argument("--repeat", type=int, default=2, help="runs of each measurement; the best is kept")
    args = ap.parse_args()
    models = default_models_dir()
    ensure_models(args.model, models)
    cores = os.cpu_count() or 1
    print(f"model {args.model} on {args.video.name}, {cores} CPU core(s)")
    for threads in args.threads:
        cfg = load_config(
            None, {"detector.model": args.model, "runtime.threads": threads, "models.dir": str(models)}
        )
        detector = build_detector(cfg)
        pipe = max(pipeline_rate(detector, args.video) for _ in range(args.repeat))
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        tut = max(tutorial_rate(detector, args.video) for _ in range(args.repeat))
        tensors, capture_cpu_ms = decode_and_prepare(detector, args.video)
        raw = max(raw_rate(detector, tensors) for _ in range(args.repeat))
        # CPU ceiling: with `threads` interpreter threads saturating min(threads, cores) cores, decoding and
        # preprocessing only get what is left; a pipeline cannot beat 1 / (1/raw + capture_cpu/cores).
        busy = min(threads, cores) / cores
        ceiling = 1.0 / (1.0 / raw + capture_cpu_ms / 1e3 / cores) if busy >= 1.0 else raw
        print(f"-- {threads} interpreter thread(s), {len(tensors)} frames")
        print(f"raw interpreter invoke rate : {raw:7.1f} /s")
        print(f"pipeline (edgevision run)   : {pipe:7.1f} fps   ratio {pipe / raw:.3f}   (target >= 0.95)")
        print(f"synchronous tutorial loop   : {tut:7.1f} fps   ratio {tut / raw:.3f}")
        print(
            f"decode + preprocess         : {capture_cpu_ms:7.2f} CPU ms/frame; CPU ceiling ratio {ceiling / raw:.3f}"
        )
        print(f"peak RSS after pipeline     : {rss_mb:7.1f} MiB")


if __name__ == "__main__":
    main()
