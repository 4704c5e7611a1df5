"""Snapshot and thumbnail JPEGs of an event's best frame, and its best face crop, written atomically: the
recorder's snapshot output (:class:`EventStills`)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np

from edgevision.fsutil import fsync_dir, mkdir_synced
from edgevision.render import draw_detections
from edgevision.results.detection import Detection
from edgevision.results.face import Face
from edgevision.results.frame import Frame


def write_jpeg(path: Path, image: np.ndarray, quality: int = 90) -> int:
    """Encode and write ``image`` via a temporary file + rename; returns the size. Raises OSError."""
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise OSError(f"{path}: JPEG encoding failed")
    mkdir_synced(path.parent)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(buf.tobytes())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a disk that filled up needs every byte back, not at the next start
        raise
    fsync_dir(path.parent)
    return len(buf)


def write_snapshot(
    snapshot: Path,
    thumb: Path,
    image: np.ndarray,
    detections: Sequence[Detection],
    thumb_width: int = 320,
    landed: Callable[[Path], None] | None = None,
    quality: int = 90,
) -> None:
    """The best frame with its boxes drawn (JPEG ``quality``), and a small thumbnail of it; ``landed`` is told of
    each file as it lands (the snapshot stays when the thumbnail then fails)."""
    annotated = draw_detections(
        cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image.copy(), detections
    )
    write_jpeg(snapshot, annotated, quality)
    if landed is not None:
        landed(snapshot)
    h, w = annotated.shape[:2]
    tw = min(thumb_width, w)
    small = cv2.resize(annotated, (tw, max(1, round(h * tw / w))), interpolation=cv2.INTER_AREA)
    write_jpeg(thumb, small, min(quality, 80))
    if landed is not None:
        landed(thumb)


def face_crop(image: np.ndarray, face: Face, margin: float = 0.3) -> np.ndarray:
    """The face box grown by ``margin``, cut out of ``image`` (a copy)."""
    h, w = image.shape[:2]
    bw, bh = face.box.width * w, face.box.height * h
    x1, y1 = max(0, int(face.box.xmin * w - bw * margin)), max(0, int(face.box.ymin * h - bh * margin))
    x2, y2 = (
        min(w, int(face.box.xmax * w + bw * margin) + 1),
        min(h, int(face.box.ymax * h + bh * margin) + 1),
    )
    return image[y1:y2, x1:x2].copy()


class EventStills:
    """The snapshot output of one event: picks its stills while the event runs, writes them once at its end.

    Like a picamera2 output it only receives what the recorder hands it; it never decodes while the event runs.
    It keeps *references* to frames (frames are immutable), so a packet source's full-resolution image is made
    once, at :meth:`write`, for the best frame and, when face crops are kept, the frame of the best face.
    """

    def __init__(self, thumb_width: int = 320, store_face: bool = False, quality: int = 90) -> None:
        self.thumb_width = thumb_width
        self.store_face = store_face
        self.quality = quality  # recorder.jpeg_quality: snapshot and face crop (the thumbnail at most 80)
        self.frame: Frame | None = None
        self.detections: list[Detection] = []
        self.face: tuple[Frame, Face] | None = None

    def offer(
        self, frame: Frame, best: bool, detections: Sequence[Detection], faces: Sequence[Face] | None
    ) -> None:
        """One frame of the event: kept when the event says it is the best so far (or nothing is kept yet);
        its best face is kept when it scores above the best so far."""
        if best or self.frame is None:
            self.frame, self.detections = frame, list(detections)
        if self.store_face and faces:
            top = max(faces, key=lambda f: f.score)
            if self.face is None or top.score > self.face[1].score:
                self.face = (frame, top)

    def write(self, data_dir: Path, event_id: int, values: dict[str, object]) -> None:
        """Write the snapshot + thumbnail, then the face crop, each atomically; ``values`` gets the index column of
        each file as it lands, so a disk error (``OSError``, raised) leaves the row naming only what exists."""
        if self.frame is not None:
            snap, thumb = f"snapshots/{event_id:06d}.jpg", f"snapshots/{event_id:06d}-thumb.jpg"
            columns = {data_dir / snap: ("snapshot_path", snap), data_dir / thumb: ("thumb_path", thumb)}

            def landed(path: Path) -> None:
                key, rel = columns[path]
                values[key] = rel

            write_snapshot(
                data_dir / snap,
                data_dir / thumb,
                self.frame.best_image,
                self.detections,
                self.thumb_width,
                landed,
                self.quality,
            )
        if self.face is not None:
            rel = f"snapshots/{event_id:06d}-face.jpg"
            frame, face = self.face
            crop = face_crop(frame.image, face)
            if crop.size:  # a face box clipped to the frame's edge can hold no pixel: nothing to keep
                write_jpeg(data_dir / rel, crop, self.quality)
                values["face_path"] = rel
