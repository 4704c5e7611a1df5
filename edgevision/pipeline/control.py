"""Run-time switches: turn detection and recording off and on while the pipeline runs (MQTT ``.../set``).

The pipeline thread reads a switch on every frame; any other thread (MQTT's network thread) flips it. Each
switch is a :class:`threading.Event`, so a read is lock-free and a flip is seen at the next frame.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import replace

from edgevision.results import FrameResult, Sink

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
    """Wraps the recorder sink: while ``recordings`` is off the recorder sees frames without detections, so an
    active event ends after its post-roll (its clip is finalized as usual) and no new event starts."""

    def __init__(self, sink: Sink, controls: Controls) -> None:
        self.sink = sink
        self.controls = controls

    def on_result(self, result: FrameResult) -> None:
        if not self.controls.recordings and result.detections:
            result = replace(result, detections=[])
        self.sink.on_result(result)

    def close(self) -> None:
        self.sink.close()
