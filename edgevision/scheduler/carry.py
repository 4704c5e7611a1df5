"""Cadence rungs: detect every k-th frame and carry boxes in between with IoU tracking.

Between two detection frames each track moves at the velocity measured between its last two matched
detections (constant-velocity extrapolation), which keeps boxes on walking pedestrians for the few skipped
frames. Pure apart from its own small state; no optical flow needed on a Pi.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgevision.results.detection import BBox, Detection


@dataclass
class _Track:
    det: Detection
    ts: float
    vel: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)


class BoxCarrier:
    """Remembers the last detections, matched by IoU into tracks, and predicts them for skipped frames."""

    def __init__(self, iou: float = 0.3, max_age_s: float = 1.0) -> None:
        self.iou = iou
        self.max_age = max_age_s
        self.tracks: list[_Track] = []

    def update(self, ts: float, detections: list[Detection]) -> None:
        new: list[_Track] = []
        unused = list(self.tracks)
        for d in detections:
            best, best_iou = None, self.iou
            for t in unused:
                if t.det.label == d.label:
                    o = t.det.box.iou(d.box)
                    if o > best_iou:
                        best, best_iou = t, o
            if best is not None and ts > best.ts:
                unused.remove(best)
                dt = ts - best.ts
                a, b = best.det.box, d.box
                vel = (
                    (b.xmin - a.xmin) / dt,
                    (b.ymin - a.ymin) / dt,
                    (b.xmax - a.xmax) / dt,
                    (b.ymax - a.ymax) / dt,
                )
                new.append(_Track(d, ts, vel))
            else:
                new.append(_Track(d, ts))
        self.tracks = new

    def predict(self, ts: float) -> list[Detection]:
        """The tracks' detections moved to ``ts``. A box that shrank between its detections is not extrapolated
        past zero size (it stays where it was last seen); one that has moved out of the frame is not carried."""
        out = []
        for t in self.tracks:
            dt = ts - t.ts
            if dt > self.max_age:
                continue
            b = t.det.box
            v = t.vel
            x1, y1, x2, y2 = b.xmin + v[0] * dt, b.ymin + v[1] * dt, b.xmax + v[2] * dt, b.ymax + v[3] * dt
            if x1 >= x2 or y1 >= y2:  # collapsed or inside out: the velocity no longer describes the box
                x1, y1, x2, y2 = b.xmin, b.ymin, b.xmax, b.ymax

            def c(x: float) -> float:
                return min(1.0, max(0.0, x))

            box = BBox(c(x1), c(y1), c(x2), c(y2))
            if box.area <= 0.0:  # left the frame
                continue
            out.append(Detection(t.det.label, t.det.class_id, t.det.score, box))
        return out
