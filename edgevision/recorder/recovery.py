"""Start-up recovery, run before capture: nothing is left open or dangling after a crash.

* an event still ``recording`` gets its ``.partial`` clip cut back to the last complete fragment and renamed
  (status ``recovered``, with a snapshot taken from the clip when it has none) or, when nothing playable
  survived, the partial is removed and the event marked ``lost``;
* a ``finalized`` event whose clip vanished is marked ``lost``;
* ``.partial`` / ``.tmp`` files no event refers to are removed.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import cv2

from edgevision.fsutil import sha256_file
from edgevision.recorder.clip import PARTIAL_SUFFIX, salvage_fragmented_mp4
from edgevision.recorder.index import EventIndex
from edgevision.recorder.snapshots import write_snapshot

log = logging.getLogger(__name__)


@dataclass
class RecoveryReport:
    recovered: int = 0
    lost: int = 0
    orphans_removed: int = 0

    def line(self) -> str:
        return f"recovery: {self.recovered} clip(s) salvaged, {self.lost} lost, {self.orphans_removed} stray file(s) removed"


def _clip_facts(path: Path) -> tuple[int, float, object]:
    """(frames, duration s, middle frame) of a playable clip."""
    cap = cv2.VideoCapture(str(path))
    frames, last_ms = 0, 0.0
    samples = []  # every 10th frame: enough to pick a middle one without holding the whole clip
    while True:
        ok, img = cap.read()
        if not ok:
            break
        if frames % 10 == 0:
            samples.append(img)
        frames += 1
        last_ms = float(cap.get(cv2.CAP_PROP_POS_MSEC) or 0.0)
    cap.release()
    return frames, last_ms / 1000.0, samples[len(samples) // 2] if samples else None


def recover(index: EventIndex, data_dir: Path) -> RecoveryReport:
    """Close every event a crash left open; returns what was done (also logged)."""
    report = RecoveryReport()
    referenced: set[Path] = set()
    for row in index.list(status="recording"):
        clip = data_dir / row.clip_path if row.clip_path else None
        partial = clip.with_name(clip.name + PARTIAL_SUFFIX) if clip else None
        kept = 0
        if partial is not None and partial.exists():
            kept = salvage_fragmented_mp4(partial)
        frames, duration, middle = (0, 0.0, None)
        if kept and partial is not None and clip is not None:
            partial.replace(clip)
            frames, duration, middle = _clip_facts(clip)
        if frames == 0 or clip is None:
            if partial is not None:
                partial.unlink(missing_ok=True)
            if clip is not None and clip.exists() and frames == 0:
                clip.unlink()
            index.update(row.id, status="lost", clip_path=None, end_wall=time.time(),
                         note="process stopped while recording; no complete fragment survived")  # fmt: skip
            report.lost += 1
            log.warning("recovery: event %d lost (no playable clip survived)", row.id)
            continue
        values: dict[str, object] = {
            "status": "recovered", "end_ts": (row.clip_start_ts or row.start_ts) + duration, "end_wall": time.time(),
            "clip_frames": frames, "clip_size": clip.stat().st_size, "clip_sha256": sha256_file(clip),
            "note": f"salvaged after a crash: {kept} fragment(s), {frames} frame(s)",
        }  # fmt: skip
        if not row.snapshot_path and middle is not None:
            snap, thumb = f"snapshots/{row.id:06d}.jpg", f"snapshots/{row.id:06d}-thumb.jpg"
            try:
                write_snapshot(data_dir / snap, data_dir / thumb, middle, [])  # type: ignore[arg-type]
                values.update(snapshot_path=snap, thumb_path=thumb)
            except OSError as exc:
                log.error("recovery: event %d: cannot write snapshot: %s", row.id, exc)
        index.update(row.id, **values)
        report.recovered += 1
        log.info("recovery: event %d salvaged (%d frames)", row.id, frames)
    for row in index.list():
        for rel in (row.clip_path, row.snapshot_path, row.thumb_path):
            if rel:
                referenced.add(data_dir / rel)
        if row.status == "finalized" and row.clip_path and not (data_dir / row.clip_path).exists():
            index.update(row.id, status="lost", note="clip file missing at start-up")
            report.lost += 1
    for pattern in ("clips/**/*" + PARTIAL_SUFFIX, "**/*.tmp"):
        for stray in data_dir.glob(pattern):
            if stray not in referenced:
                stray.unlink(missing_ok=True)
                report.orphans_removed += 1
    if report.recovered or report.lost or report.orphans_removed:
        log.warning("%s", report.line())
    return report
