"""The unit that flows through the pipeline."""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Protocol, cast

import numpy as np


@dataclass(frozen=True, eq=False)
class PreparedInput:
    """A model input tensor made ahead of time (on the capture thread) for a detector of ``size`` (w, h).

    ``ms`` is what making it cost. The tensor is owned by the frame that carries it; nobody writes into it.
    ``pending`` is the frame's inference already running on a worker (:mod:`edgevision.detection.parallel`): a
    future of ``(detections, latency)``, set by the capture thread before the hand-off, awaited by the loop.
    ``started_at`` (monotonic s) is then when the frame's own work began: its submission less ``ms``, so a
    replay's latency counts the preprocessing and the inference in flight, not the wait for a free worker.
    ``domain`` is the input domain besides the size (dtype, float range) it was made in: a detector of the same
    size but another domain makes its own tensor.
    """

    size: tuple[int, int]
    tensor: np.ndarray
    ms: float
    pending: Future[Any] | None = None
    started_at: float | None = None
    domain: object = None


class UndecodablePicture(ValueError):
    """A picture whose header parsed but whose image does not decode (a camera's JPEG cut short): the frame is
    skipped, like a dropped one; it is no reason to stop capturing."""


class DecodedImage(Protocol):
    """A decoded picture that converts only on request (:class:`edgevision.capture.demux.DecodedFrame`).

    ``model_input`` and ``bgr`` raise :class:`UndecodablePicture` when the picture turns out to be damaged.
    """

    @property
    def size(self) -> tuple[int, int]: ...

    def model_input(self, width: int, height: int, pixel_format: str = "rgb24") -> np.ndarray: ...

    def bgr(self) -> np.ndarray: ...


class _LazyImage:
    """``Frame.image``: the stored array, or — for a frame made from a decoded picture — its full-resolution BGR,
    made on first access (a snapshot, the live view, saved video, privacy blur) and kept."""

    def __get__(self, obj: Any, owner: Any = None) -> Any:
        if obj is None:
            return self
        image = obj.__dict__.get("_image")
        if image is None:
            decoded = obj.__dict__.get("decoded")
            if decoded is None:
                raise ValueError("frame has neither an image nor a decoded picture")
            image = obj.__dict__["_image"] = decoded.bgr()  # two threads may race: both make the same array
        return image

    def __set__(self, obj: Any, value: Any) -> None:
        obj.__dict__["_image"] = value


@dataclass(frozen=True, eq=False)
class Frame:
    """One captured frame.

    ``ts`` is seconds on the source's clock: the media timestamp for files (so replays are deterministic), the
    monotonic clock for live sources. ``index`` counts frames read from the source (dropped ones included).
    ``image`` is BGR uint8 (or grayscale) and owned by this frame: nobody writes into it after capture.
    ``full`` is an optional higher-resolution image kept for recording (the Pi camera's main stream).
    ``captured_at`` is ``time.monotonic()`` when the frame left the source (for end-to-end latency).
    ``prepared`` is the tensor the capture thread already made for the detector current at capture time, so
    preprocessing overlaps with inference; a frame is immutable, so the capture thread attaches it by making a new
    frame (:meth:`with_prepared`) before the hand-off, and the queue orders that write before every read.
    ``decoded`` is the decoder's picture of a compressed source (:meth:`lazy`): inference scales it straight to
    the model input, and ``image`` is converted from it only when a consumer reads ``image``. A frame made with
    an explicit ``image`` (a redacted copy, say) carries no ``decoded``, so nothing can reach the original.
    """

    image: np.ndarray
    ts: float
    index: int
    source_id: str
    full: np.ndarray | None = None
    captured_at: float = 0.0
    prepared: PreparedInput | None = None
    decoded: DecodedImage | None = None

    def __post_init__(self) -> None:
        if self.__dict__.get("_image") is not None and self.decoded is not None:
            object.__setattr__(self, "decoded", None)

    @classmethod
    def lazy(
        cls, decoded: DecodedImage, ts: float, index: int, source_id: str, captured_at: float = 0.0
    ) -> Frame:
        """A frame of a decoded picture whose BGR ``image`` is made only when asked for."""
        return cls(cast(np.ndarray, None), ts, index, source_id, None, captured_at, None, decoded)

    @property
    def materialized(self) -> bool:
        """Whether ``image`` exists as an array already (False for a lazy frame nobody looked at yet)."""
        return self.__dict__.get("_image") is not None

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of ``image``."""
        if not self.materialized and self.decoded is not None:
            return self.decoded.size
        return int(self.image.shape[1]), int(self.image.shape[0])

    @property
    def best_image(self) -> np.ndarray:
        """The highest-resolution image this frame has (``full`` when the source gave one, else ``image``)."""
        return self.full if self.full is not None else self.image

    def _copy(self, **changes: Any) -> Frame:
        """A copy with ``changes``; a lazy frame stays lazy (``dataclasses.replace`` would convert it)."""
        values: dict[str, Any] = dict(
            image=self.__dict__.get("_image"),
            ts=self.ts,
            index=self.index,
            source_id=self.source_id,
            full=self.full,
            captured_at=self.captured_at,
            prepared=self.prepared,
            decoded=self.decoded,
        )
        values.update(changes)
        return Frame(**values)

    def with_prepared(self, prepared: PreparedInput) -> Frame:
        """This frame carrying ``prepared``."""
        return self._copy(prepared=prepared)

    def with_captured_at(self, captured_at: float) -> Frame:
        """This frame with another capture time (replay measures latency from when the loop takes it)."""
        return self._copy(captured_at=captured_at)


Frame.image = _LazyImage()  # type: ignore[assignment]  # after @dataclass: the field stays a positional argument
