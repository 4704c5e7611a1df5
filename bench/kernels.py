"""The int8 per-channel copy against the model file as shipped, measured in one run (a benchmark, never a test).

For each uint8 catalog model: median invoke time of the file as shipped and of its int8 per-channel copy
(``edgevision/inference/requant.py``) at 1 and 2 threads, interleaved in one process; how far the copy's head
outputs are from the original's, beside the original's own spread between LiteRT's two kernel paths; and for the
SSDs, the tie-aware person-box F1 of the copy against the original on the walking clip's frames 241-340 (the
distillation gate's rule), beside the original against itself with ±1 pixel noise.

Usage: ``python bench/kernels.py [--rounds N]`` (models from ``$EDGEVISION_SHARED/models``).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import cv2
import numpy as np

from edgevision.distill.gate import compare
from edgevision.distill.teacher import Teacher
from edgevision.inference import adapter
from edgevision.inference.requant import to_int8
from edgevision.inference.requant_cache import agreement

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("EDGEVISION_SHARED", REPO.parent / "shared"))
MODELS = SHARED / "models"
SSDS = ["ssd_mobilenet_v1_1.0_coco_quant_detect", "ssd_mobilenet_v2_coco_quant_postprocess"]
CLASSIFIERS = [
    "mobilenet_v1_0.25_128_quant",
    "mobilenet_v1_0.5_160_quant",
    "mobilenet_v1_0.75_192_quant",
    "mobilenet_v3_small_1.0_224_quant",
]


def invoke_ms(models: list[bytes], threads: int, rounds: int) -> list[float]:
    """Median invoke time of each model, the models interleaved round by round on the same input."""
    interps = [adapter.load(m, threads) for m in models]
    shape = tuple(int(x) for x in adapter.inputs(interps[0])[0]["shape"])
    x = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    times: list[list[float]] = [[] for _ in interps]
    for it in interps:
        adapter.invoke_on(it, x)
    for _ in range(rounds):
        for k, it in enumerate(interps):
            t0 = time.perf_counter()
            adapter.invoke_on(it, x)
            times[k].append((time.perf_counter() - t0) * 1e3)
    return [float(np.median(t)) for t in times]


def walking_frames(size: int) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(SHARED / "media" / "video" / "supervision_walking.mp4"))
    out, k = [], 0
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        if k >= 240:
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            out.append(cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA))
        k += 1
    return out


def person_f1(original: bytes, copy: bytes) -> tuple[float, float]:
    """Tie-aware person-box F1 at 0.5 of the copy against the original, and of the original against itself
    with ±1 pixel noise (the gate's ceiling reference), on the walking clip's validation frames."""
    a, b = Teacher(original), Teacher(copy)
    frames = walking_frames(a.size)
    rng = np.random.default_rng(0)
    ref = [a.detections(a.run(x)) for x in frames]
    ours = [b.detections(b.run(x)) for x in frames]
    noisy = [
        a.detections(
            a.run(np.clip(x.astype(np.int16) + rng.integers(-1, 2, x.shape), 0, 255).astype(np.uint8))
        )
        for x in frames
    ]
    return compare(ref, ours, 0.5, 0.5, tolerance=0).f1, compare(ref, noisy, 0.5, 0.5, tolerance=0).f1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=60, help="invokes of each model per thread count")
    args = ap.parse_args()
    print(
        f"{os.cpu_count()} core(s); median invoke ms, file as shipped vs its int8 per-channel copy, interleaved"
    )
    print(
        "| model | 1 thread: shipped / int8 (ratio) | 2 threads: shipped / int8 (ratio) | channels exact | "
        "head steps max / mean (original's own spread) | person F1 vs original (±1 px noise) |"
    )
    print("|---|---|---|---|---|---|")
    for name in SSDS + CLASSIFIERS:
        path = MODELS / f"{name}.tflite"
        if not path.exists():
            print(f"| {name} | not in {MODELS} |")
            continue
        original = path.read_bytes()
        c = to_int8(original)
        cells = []
        for threads in (1, 2):
            a, b = invoke_ms([original, c.model], threads, args.rounds)
            cells.append(f"{a:.2f} / {b:.2f} ({b / a:.2f}x)")
        agree = agreement(original, c.model)
        f1 = "-"
        if name in SSDS:
            ours, noise = person_f1(original, c.model)
            f1 = f"{ours:.3f} ({noise:.3f})"
        exact = f"{c.exact_channels} / {c.exact_channels + c.requantized_channels}"
        print(
            f"| {name} | {cells[0]} | {cells[1]} | {exact} | {agree.max_steps:.0f} / {agree.mean_steps:.3f} "
            f"({agree.own_max_steps:.0f} / {agree.own_mean_steps:.3f}) | {f1} |",
            flush=True,
        )
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
