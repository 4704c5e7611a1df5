"""Distillation data: frames from videos, an image folder and the recorder's event clips, split by time.

With ``--events`` the recorder's clips give two sources: the frames inside each event and the frames of its
pre- and post-roll (the camera's scenes between events; see :func:`read_events`).

Every source is decoded in time order and resized to the model input (``size x size`` RGB uint8, the same
stretch-resize the detector does); the last ``val_fraction`` of each source validates, the rest trains, so a
validation frame never sits between two training frames of the same scene.
"""

from __future__ import annotations

import hashlib
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from edgevision.detection.detector import to_rgb
from edgevision.errors import InputError, UsageError
from edgevision.paths import events_index
from edgevision.safe_read import read_image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


@dataclass
class Source:
    """Frames of one video / folder / event clip, in time order."""

    path: str
    kind: str  # video | images | event
    frames: list[np.ndarray] = field(default_factory=list)
    indexes: list[int] = field(default_factory=list)  # frame numbers in the source
    total: int = 0  # frames in the source (before sampling)
    files: list[str] = field(default_factory=list)  # the files behind a source made of several (event clips)


@dataclass
class Dataset:
    """Train and validation frames (RGB uint8 ``[size, size, 3]``) with their provenance."""

    size: int
    sources: list[Source]
    train: np.ndarray
    val: np.ndarray
    val_source: list[int]  # which source each validation frame came from
    split: list[dict[str, object]]

    def describe(self) -> dict[str, object]:
        """The manifest's ``data`` record: paths, frame counts and a hash of the frames used."""
        h = hashlib.sha256()
        for arr in (self.train, self.val):
            h.update(np.ascontiguousarray(arr).tobytes())
        return {
            "size": self.size,
            "sources": self.split,
            "train_frames": len(self.train),
            "val_frames": len(self.val),
            "frames_sha256": h.hexdigest(),
        }


def to_input(frame_bgr: np.ndarray, size: int) -> np.ndarray:
    """BGR or grayscale frame → RGB ``size x size`` uint8, as :class:`~edgevision.detection.Detector` does."""
    return cv2.resize(to_rgb(frame_bgr), (size, size), interpolation=cv2.INTER_LINEAR)


def read_video(
    path: Path, size: int, every: int = 1, first: int = 0, last: int | None = None, kind: str = "video"
) -> Source:
    """Decode ``path`` (frames ``first..last`` inclusive, every ``every``-th one); unreadable → InputError."""
    if not path.is_file():
        raise InputError(f"{path}: video not found")
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise InputError(f"{path}: cannot open video (not a video file, or an unsupported codec)")
        src = Source(str(path), kind)
        i = 0
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            if i >= first and (last is None or i <= last) and (i - first) % every == 0:
                src.frames.append(to_input(frame, size))
                src.indexes.append(i)
            i += 1
            if last is not None and i > last:
                break
        src.total = i
    finally:
        cap.release()
    if i == 0:
        raise InputError(f"{path}: no frame could be decoded (corrupt or empty video)")
    return src


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError as exc:  # a link to nothing, a file gone meanwhile
        raise InputError(f"{path}: not a readable image ({exc.strerror or exc})") from None


def read_images(folder: Path, size: int, every: int = 1, limit: int | None = None) -> Source:
    """Images of ``folder`` in time order (modification time, then name): every ``every``-th, at most ``limit``
    of them, and only those are decoded (a folder of a year's snapshots would not fit in a Pi's memory)."""
    if not folder.is_dir():
        raise InputError(f"{folder}: image folder not found")
    files = sorted(
        (p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES),
        key=lambda p: (_mtime(p), p.name),
    )
    src = Source(str(folder), "images", total=len(files))
    for i, p in enumerate(files):
        if i % every:
            continue
        if limit is not None and len(src.frames) >= limit:
            break
        src.frames.append(to_input(read_image(p), size))
        src.indexes.append(i)
    return src


@dataclass(frozen=True)
class EventClip:
    """One recorded event's clip and where the event lies in it (frame clock seconds, as the index stores)."""

    path: Path
    clip_start_ts: float | None  # frame clock of the clip's first frame (its pts 0)
    start_ts: float
    end_ts: float | None


def event_clips(data_dir: Path) -> list[EventClip]:
    """Clips of finalized / recovered events in the recorder's index, oldest first (recording order: the wall
    clock of a Pi without a real-time clock can run backwards across a reboot; read only)."""
    db = events_index(data_dir)
    if not db.is_file():
        raise InputError(f"{db}: no event index (record events with `edgevision run` first)")
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10.0)
    try:
        rows = con.execute(
            "SELECT clip_path, clip_start_ts, start_ts, end_ts FROM events WHERE clip_path IS NOT NULL "
            "AND status IN ('finalized', 'recovered') ORDER BY id"
        ).fetchall()
    finally:
        con.close()
    out = []
    for clip, clip_start, start, end in rows:
        p = Path(clip)
        p = p if p.is_absolute() else data_dir / p
        if p.is_file():
            out.append(EventClip(p, clip_start, float(start), end))
    return out


def read_events(data_dir: Path, size: int, every: int = 1, between_every: int = 3) -> list[Source]:
    """The camera's own scenes from the recorder: frames inside the events and frames between them.

    The recorder keeps nothing but event clips, each with its pre-roll (before the event started) and post-roll
    (after it ended); those frames are the camera's scenes between events. Each clip frame is placed on the frame
    clock (``clip_start_ts`` + its pts) and goes to one of two sources, both in time order across all clips:
    ``event`` (inside ``start_ts..end_ts``, every ``every``-th frame) and ``between`` (outside it, every
    ``between_every``-th). A clip whose start is not indexed counts as event frames only. Decoding stops at the
    first undecodable packet of a clip (a salvaged clip keeps its sound part), never failing the whole run.
    """
    import av

    event = Source(str(data_dir / "events.db"), "event")
    between = Source(str(data_dir / "events.db"), "between")
    for clip in event_clips(data_dir):
        event.files.append(str(clip.path))
        between.files.append(str(clip.path))
        end = clip.end_ts if clip.end_ts is not None else float("inf")
        try:
            with av.open(str(clip.path)) as c:
                for fr in c.decode(video=0):
                    t = fr.time
                    inside = (
                        clip.clip_start_ts is None
                        or t is None
                        or clip.start_ts <= clip.clip_start_ts + t <= end
                    )
                    src, step = (event, every) if inside else (between, between_every)
                    if src.total % step == 0:
                        src.frames.append(to_input(fr.to_ndarray(format="bgr24"), size))
                        src.indexes.append(src.total)
                    src.total += 1
        except av.error.FFmpegError:
            continue
    return [event, between]


def split_sources(sources: list[Source], size: int, val_fraction: float) -> Dataset:
    """Split each source by time: its last ``val_fraction`` of frames validates."""
    if not 0 < val_fraction < 1:
        raise UsageError(f"--val-fraction must lie between 0 and 1, got {val_fraction}")
    train: list[np.ndarray] = []
    val: list[np.ndarray] = []
    val_source: list[int] = []
    split: list[dict[str, object]] = []
    for k, s in enumerate(sources):
        n = len(s.frames)
        n_val = round(n * val_fraction) if n > 1 else 0
        cut = n - n_val
        train.extend(s.frames[:cut])
        val.extend(s.frames[cut:])
        val_source.extend([k] * n_val)
        split.append(
            {
                "path": s.path,
                "kind": s.kind,
                "source_frames": s.total,
                "train_frames": cut,
                "val_frames": n_val,
                "train_range": [s.indexes[0], s.indexes[cut - 1]] if cut else None,
                "val_range": [s.indexes[cut], s.indexes[-1]] if n_val else None,
                **({"files": list(s.files)} if s.files else {}),
            }
        )
    if not train:
        raise InputError("no frames to train on: the videos / images gave no frames")
    if not val:
        raise InputError("no validation frames: give more frames (the later part of each source validates)")
    return Dataset(size, sources, np.stack(train), np.stack(val), val_source, split)


def augment(frames: np.ndarray, copies: int, seed: int = 0) -> np.ndarray:
    """``copies`` jittered versions of every frame: zoom 0.85-1.25, shift ±10 %, brightness and contrast ±20 %.

    The camera is fixed but the people move: the validation frames hold the same scene with people elsewhere and at
    other sizes. The teacher labels each jittered frame itself (its targets, not transformed boxes), so the
    student learns the teacher's answer on it; borders are reflected, which the teacher labels like the rest.
    """
    if copies <= 0 or len(frames) == 0:
        return np.zeros((0, *frames.shape[1:]), np.uint8)
    rng = np.random.default_rng(seed)
    size = frames.shape[1]
    out = np.empty((len(frames) * copies, *frames.shape[1:]), np.uint8)
    k = 0
    for _ in range(copies):
        for f in frames:
            zoom = rng.uniform(0.85, 1.25)
            dx, dy = rng.uniform(-0.1, 0.1, 2) * size
            m = cv2.getRotationMatrix2D((size / 2, size / 2), 0.0, zoom)
            m[:, 2] += (dx, dy)
            warped = cv2.warpAffine(
                f, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101
            )
            gain, bias = rng.uniform(0.8, 1.2), rng.uniform(-0.2, 0.2) * 64
            out[k] = np.clip(warped.astype(np.float32) * gain + bias, 0, 255).astype(np.uint8)
            k += 1
    return out
