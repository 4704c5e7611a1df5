"""What Home Assistant shows about the scene, with or without ``--record``: per-label counts, occupancy ON/OFF
(from the event stage's update on each result, the one the recorder reads, so it matches the recorded events),
the best snapshot of each event, and, when nothing records, the events themselves.

The pipeline thread only counts and reads ``result.events``; JPEG encoding happens in a snapshot thread that
takes the latest offered frame (a reference, never a copy: frames are not written after capture).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import cv2
import numpy as np

from edgevision.events.stage import EventStage
from edgevision.publish.mqtt import Publisher, on_off
from edgevision.publish.mqtt_events import EventRelay, MessageType, event_unrecorded
from edgevision.render import draw_detections
from edgevision.results import EventEnd, EventStart, EventUpdate, FrameResult
from edgevision.results.detection import Detection

log = logging.getLogger(__name__)


class SnapshotPublisher:
    """Encodes and publishes (retained) the best frame of the current event at most every ``interval`` s;
    the last offered frame is always published, at the latest when closing."""

    def __init__(self, publish: Callable[[bytes], object], interval: float = 1.0, quality: int = 85) -> None:
        self.publish = publish
        self.interval = interval
        self.quality = quality
        self.published = 0
        self._cond = threading.Condition()  # guards _pending
        self._pending: tuple[np.ndarray, list[Detection]] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mqtt-snapshot", daemon=True)
        self._thread.start()

    def offer(self, image: np.ndarray, detections: list[Detection]) -> None:
        with self._cond:
            self._pending = (image, detections)
            self._cond.notify()

    def _take(self) -> tuple[np.ndarray, list[Detection]] | None:
        with self._cond:
            if self._pending is None and not self._stop.is_set():
                self._cond.wait(0.5)
            pending, self._pending = self._pending, None
        return pending

    def _send(self, image: np.ndarray, detections: list[Detection]) -> None:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image.copy()
        draw_detections(image, detections)
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if ok:
            self.publish(buf.tobytes())
            self.published += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            pending = self._take()
            if pending is not None:
                try:
                    self._send(*pending)
                except Exception as exc:  # a snapshot is not worth stopping the run for
                    log.error("mqtt: snapshot failed: %s", exc)
                self._stop.wait(self.interval)

    def close(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self._thread.join(timeout=5)
        pending, self._pending = self._pending, None
        if pending is not None:
            self._send(*pending)


class Presence:
    """A pipeline sink: counts per label, occupancy, event snapshots and (``emit_events``) the events.

    Reads the update the pipeline's ``events`` stage put on each result; at ``close`` it takes the stage's final
    update (the end of an event still running when the input ended)."""

    def __init__(
        self,
        publisher: Publisher,
        relay: EventRelay,
        events: EventStage,
        emit_events: bool,
        count_interval: float = 0.5,
        snapshot_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.publisher = publisher
        self.relay = relay
        self.events = events
        self.settings = events.settings
        self.emit_events = emit_events
        self.count_interval = count_interval
        self.clock = clock
        self.wall = wall
        self.label = self.settings.labels[0]  # the event label (as in the index)
        topics = publisher.topics
        self.snapshots = SnapshotPublisher(
            lambda jpeg: publisher.state(topics.snapshot(self.label), jpeg, force=True), snapshot_interval
        )
        self._counts_at = -1e9
        self._start_wall = 0.0
        self._last_update = 0.0
        self._occupied = False
        # Retained: a run killed during an event left ON at the broker (recovery closes it only with --record).
        # Nobody is seen yet (an event needs trigger_frames first), so say so before anything else.
        publisher.queue(topics.occupancy(self.label), on_off(False), retain=True)
        # retained counts too: none counted yet, whatever a killed run left
        for label in self.settings.labels:
            publisher.state(topics.count(label), b"0")

    def _counts(self, detections: list[Detection], force: bool = False) -> None:
        now = self.clock()
        if not force and now - self._counts_at < self.count_interval:
            return
        self._counts_at = now
        for label in self.settings.labels:
            n = sum(1 for d in detections if d.label == label and self.settings.qualifies(d))
            self.publisher.state(self.publisher.topics.count(label), str(n).encode())

    def _event(self, kind: MessageType, top_score: float, peak_count: int, end: bool = False) -> None:
        event = event_unrecorded(
            self.relay.camera,
            self.label,
            self._start_wall,
            self.wall() if end else None,
            top_score,
            peak_count,
        )
        self.relay.publish(kind, event)

    def _signal(self, sig: EventStart | EventEnd, update: EventUpdate) -> None:
        occupancy = self.publisher.topics.occupancy(self.label)
        if isinstance(sig, EventStart):
            if not self._occupied:  # an event split at max_length stays occupied
                self.publisher.queue(occupancy, on_off(True), retain=True)
                self._occupied = True
            self._start_wall = self.wall()
            if self.emit_events:
                self._event(MessageType.NEW, update.stats.max_score, update.stats.peak_count)
        else:
            if self.emit_events:
                self._event(MessageType.END, sig.max_score, sig.peak_count, end=True)
            if not sig.split:
                self.publisher.queue(occupancy, on_off(False), retain=True)
                self._occupied = False

    def on_result(self, result: FrameResult) -> None:
        self._counts(result.detections)
        ev = result.events
        if ev is None:
            raise RuntimeError("MQTT presence needs the event stage in the pipeline (result.events is unset)")
        for sig in ev.signals:
            self._signal(sig, ev)
        ts = result.frame.ts
        if ev.active and ev.best_frame:
            self.snapshots.offer(result.frame.best_image, list(ev.matches))
            if self.emit_events and ts - self._last_update >= 1.0:
                self._last_update = ts
                self._event(MessageType.UPDATE, ev.stats.max_score, ev.stats.peak_count)

    def on_idle_events(self, update: EventUpdate) -> None:
        """The camera gave no frame and the event's post-roll passed: occupancy off, the end sent, counts 0."""
        for sig in update.signals:
            self._signal(sig, update)
        self._counts([], force=True)

    def close(self) -> None:
        final = self.events.flush()
        if final is not None:
            for sig in final.signals:
                self._signal(sig, final)
        self.snapshots.close()
        self._counts([], force=True)  # nothing is seen once the run is over
