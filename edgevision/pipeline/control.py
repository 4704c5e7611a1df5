"""Run-time switches: turn detection and recording off and on while the pipeline runs (MQTT ``.../set``).

The pipeline thread reads a switch on every frame; any other thread (MQTT's network thread) flips it. Each
switch is a :class:`threading.Event`, so a read is lock-free and a flip is seen at the next frame.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import replace

from edgevision.results import EventEnd, EventStart, EventUpdate, FrameResult, IdleEventSink, Sink

log = logging.getLogger(__name__)

SWITCHES = ("detect", "recordings")


class Controls:
    """The ``detect`` and ``recordings`` switches; listeners hear ``(name, on)`` after every change."""

    def __init__(self, detect: bool = True, recordings: bool = True) -> None:
        self._on = {name: threading.Event() for name in SWITCHES}
        self._lock = threading.Lock()  # serializes set() so listeners see changes in order
        self.listeners: list[Callable[[str, bool], object]] = []
        for name, on in (("detect", detect), ("recordings", recordings)):
            if on:
                self._on[name].set()

    @property
    def detect(self) -> bool:
        return self._on["detect"].is_set()

    @property
    def recordings(self) -> bool:
        return self._on["recordings"].is_set()

    def get(self, name: str) -> bool:
        return self._on[name].is_set()

    def set(self, name: str, on: bool) -> None:
        """Turn switch ``name`` on or off (``KeyError`` for an unknown switch); listeners always hear it."""
        event = self._on[name]
        with self._lock:
            changed = event.is_set() != on
            event.set() if on else event.clear()
            if changed:
                log.warning("control: %s turned %s", name, "on" if on else "off")
            for listener in self.listeners:
                try:
                    listener(name, on)
                except Exception as exc:  # a failing listener never undoes the switch
                    log.error("control: %s listener failed: %s", name, exc)


class RecordingGate:
    """Wraps the recorder sink so it records only what happens while ``recordings`` is on.

    The event stage runs whatever the switch says (MQTT occupancy and the metrics follow the scene); the gate
    edits the event update the recorder sees: an event that starts while recordings are off is not recorded; an
    event being recorded when they are turned off ends at that frame (its clip is finalized as usual); turning
    them on while an event runs starts recording it at that frame. While off, the recorder sees no detections.
    A result without an event update (no event stage) only loses its detections, so an event ends after its
    post-roll.
    """

    def __init__(self, sink: Sink, controls: Controls) -> None:
        self.sink = sink
        self.controls = controls
        self._recording: int | None = None  # seq of the event the recorder is recording

    def on_result(self, result: FrameResult) -> None:
        on = self.controls.recordings
        if result.events is not None:
            result = replace(result, events=self._gate(result.events, result.frame.ts, on))
        if not on and result.detections:
            result = replace(result, detections=[])
        self.sink.on_result(result)

    def _gate(self, ev: EventUpdate, ts: float, on: bool) -> EventUpdate:
        signals: list[EventStart | EventEnd] = []
        for sig in ev.signals:
            if isinstance(sig, EventEnd) and sig.seq == self._recording:
                signals.append(sig)
                self._recording = None
            elif isinstance(sig, EventStart) and on:
                signals.append(sig)
                self._recording = sig.seq
        if on and self._recording is None and ev.active:  # turned on during an event
            signals.append(EventStart(ev.seq, ts, ts))
            self._recording = ev.seq
        elif not on and self._recording is not None:  # turned off during a recorded event
            st = ev.stats
            signals.append(
                EventEnd(
                    self._recording, ts, ts, False, st.max_score, st.mean_score, st.peak_count, st.best_ts
                )
            )
            self._recording = None
        recording = self._recording is not None
        return replace(
            ev,
            signals=tuple(signals),
            active=recording,
            best_frame=ev.best_frame and recording,
            matches=ev.matches if on else (),
        )

    def on_idle_events(self, update: EventUpdate) -> None:
        """An event ended without a frame (a live source gone quiet): passed on when it is the one recorded."""
        ends = tuple(s for s in update.signals if isinstance(s, EventEnd) and s.seq == self._recording)
        if not ends:
            return
        self._recording = None
        if isinstance(self.sink, IdleEventSink):
            self.sink.on_idle_events(replace(update, signals=ends, active=False, matches=()))

    def close(self) -> None:
        self.sink.close()
