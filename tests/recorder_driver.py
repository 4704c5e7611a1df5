"""Drive the recorder with synthetic detections on real frames: fast, deterministic, usable in a subprocess.

``python tests/recorder_driver.py DATA [--fps F] [--realtime] [--seconds S] [--person A:B ...]`` records into
DATA: frames at F fps of the frame clock, a person (score rising to 0.95, two people at the peak) in each A:B
second range. With ``--realtime`` frames are paced by the wall clock (what a live camera does), and the driver
prints ``frame <ts>`` lines so a test knows where the recording is. Fault points (EDGEVISION_FAULT_POINT) apply.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from edgevision.events.state import EventSettings
from edgevision.recorder.clip import choose_codec
from edgevision.recorder.recorder import Recorder
from edgevision.recorder.retention import RetentionPolicy
from edgevision.recorder.state import RecorderSettings
from edgevision.results import FrameResult, Latency
from edgevision.results.detection import BBox, Detection
from edgevision.results.frame import Frame

_FRAMES: list[np.ndarray] = []


def frames() -> list[np.ndarray]:
    """A few real frames (320x180) of the walking clip, decoded once."""
    if not _FRAMES:
        from conftest import WALKING
        from fakes import frames_from

        _FRAMES.extend(cv2.resize(f, (320, 180)) for f in frames_from(str(WALKING), 8))
    return _FRAMES


def person(score: float, x: float = 0.3) -> Detection:
    return Detection("person", 0, score, BBox(x, 0.2, x + 0.2, 0.9))


def detections_at(ts: float, spans: list[tuple[float, float]]) -> list[Detection]:
    for a, b in spans:
        if a <= ts < b:
            peak = (a + b) / 2
            score = 0.6 + 0.35 * (1 - abs(ts - peak) / max(1e-6, (b - a) / 2))
            return [person(score), person(0.55, 0.6)] if abs(ts - peak) < 0.5 else [person(score)]
    return []


def results(fps: float, seconds: float, spans: list[tuple[float, float]]) -> Iterator[FrameResult]:
    imgs = frames()
    for i in range(round(seconds * fps)):
        ts = i / fps
        frame = Frame(imgs[i % len(imgs)], ts, i, "driver")
        yield FrameResult(frame, detections_at(ts, spans), Latency(), "synthetic")


def settings(data: Path, **kw: Any) -> RecorderSettings:
    base: dict[str, Any] = dict(
        data_dir=data,
        camera="driver",
        events=EventSettings(post_roll=1.0),
        pre_roll=1.0,
        codec=choose_codec(),
        retention=RetentionPolicy(max_age_s=None, min_free_bytes=None),
        space_check_s=0.0,
    )
    base.update(kw)
    return RecorderSettings(**base)


def record(
    data: Path,
    fps: float,
    seconds: float,
    spans: list[tuple[float, float]],
    realtime: bool = False,
    recorder: Recorder | None = None,
    **kw: object,
) -> Recorder:
    """Feed a whole synthetic run through a recorder and close it."""
    rec = recorder or Recorder(settings(data, **kw), blocking=True)
    t0 = time.monotonic()
    for r in results(fps, seconds, spans):
        if realtime:
            delay = t0 + r.frame.ts - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        rec.on_result(r)
        if realtime:
            print(f"frame {r.frame.ts:.3f}", flush=True)
    rec.close()
    return rec


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("data", type=Path)
    p.add_argument("--fps", type=float, default=10.0)
    p.add_argument("--seconds", type=float, default=6.0)
    p.add_argument("--realtime", action="store_true")
    p.add_argument("--fps-hint", type=float, default=25.0)
    p.add_argument("--person", action="append", default=[], help="A:B seconds with a person")
    p.add_argument("--scenario", choices=["full-disk"])
    a = p.parse_args()
    if a.scenario == "full-disk":
        import json

        print(json.dumps(full_disk_scenario(a.data)), flush=True)
        return 0
    spans = [(float(s.split(":")[0]), float(s.split(":")[1])) for s in a.person] or [(1.0, 3.0)]
    rec = record(a.data, a.fps, a.seconds, spans, a.realtime, fps_hint=a.fps_hint)
    print(f"done {rec.events_started} {rec.events_finalized}", flush=True)
    return 0


def full_disk_scenario(data: Path) -> dict[str, object]:
    """On a tiny filesystem at ``data``: record, fill the disk to 0 bytes, record, free it, record.

    Returns what a test checks (printed as JSON by ``--scenario full-disk``)."""
    import errno
    import json  # noqa: F401 - used by the caller

    from edgevision.recorder.index import EventIndex

    rec = Recorder(settings(data), blocking=True)
    modes: list[str] = []
    spans = [(1.0, 2.0)]

    def feed(offset: float) -> None:
        for r in results(10.0, 4.0, spans):
            f = r.frame
            moved = Frame(f.image, f.ts + offset, f.index + round(offset * 10), "driver")
            rec.on_result(FrameResult(moved, r.detections, Latency(), "synthetic"))
        assert rec.drain()
        modes.append(str(rec.mode))

    feed(0.0)  # event 1 on a healthy disk
    filler = data / "filler"
    with open(filler, "wb", buffering=0) as fh:  # fill the filesystem to the last byte
        for block in (65536, 4096, 1):
            try:
                while True:
                    fh.write(b"\xff" * block)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    feed(10.0)  # event 2 on a full disk: no clip, no snapshot, no index row for now
    pending_while_full = rec.writer.pending
    filler.unlink()  # space comes back
    feed(20.0)  # event 3
    rec.close()
    index = EventIndex(data)
    rows = [r.to_dict() for r in index.list()]
    index.close()
    return {
        "modes": modes,
        "pending_while_full": pending_while_full,
        "rows": rows,
        "index_failures": rec.writer.failures,
    }


if __name__ == "__main__":
    sys.exit(main())
