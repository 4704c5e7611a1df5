"""The face detector protocol and the plugin contract (after Frigate's ``detectors/detector_types.py``).

A face detector plugin is a class that declares its ``key`` (how the factory picks it), its own pydantic
config (``config_type``, a :class:`FaceDetectorConfig` whose ``type`` is that key) and ``from_config`` to bind
itself to a loaded interpreter; its instances find faces with one call, :meth:`FaceDetector.detect`. The
plugins are listed in :mod:`edgevision.face.plugins`; the factory (:mod:`edgevision.face.factory`) picks one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    import numpy as np

    from edgevision.inference.backends import InterpreterHandle
    from edgevision.results.detection import BBox
    from edgevision.results.face import Face


class FaceDetectorConfig(BaseModel):
    """What every face detector plugin's config has: its key and a score threshold."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str
    min_score: float | None = Field(None, ge=0.0, le=1.0)  # None: the model's own default


class FaceDetector(Protocol):
    """Finds faces in a frame, or in a square around a region of it, in frame-normalized coordinates.

    ``keypoints`` of a returned :class:`Face` are the model's own (empty for a model without keypoints: they
    are never invented); the acceptance rule (:mod:`edgevision.face.accept`) judges what is there.
    """

    key: ClassVar[str]
    name: str

    def detect(self, frame_bgr: np.ndarray, region: BBox | None = None) -> list[Face]:
        """Candidate faces in ``region`` (or the whole frame), best first."""
        ...


class FaceDetectorPlugin(Protocol):
    """A face detector class as the factory sees it: its key, its config type and its constructor.

    (Plain members, not ``ClassVar``: the class object itself is what implements this protocol.)
    """

    key: str
    config_type: type[FaceDetectorConfig]

    def from_config(self, handle: InterpreterHandle, config: FaceDetectorConfig, name: str) -> FaceDetector:
        """Bind the plugin to a loaded model; a model the plugin cannot drive is a ``ModelError``."""
        ...
