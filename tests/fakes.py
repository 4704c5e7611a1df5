"""Test doubles at the hardware boundaries: ``cv2.VideoCapture`` and the picamera2 module; a frameless runner."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, ClassVar

import cv2
import numpy as np

from edgevision.capture.runner import CaptureStats
from edgevision.capture.sources import read_frames
from edgevision.results.frame import Frame


def frames_from(path: str, limit: int) -> list[np.ndarray]:
    return read_frames(path, limit)


class NoFrames:
    """A runner (``pipeline.loop.Runner``) that delivers no frame: for tests that call ``Pipeline.process``."""

    def __init__(self) -> None:
        self.stats = CaptureStats()
        self.live = False

    def start(self) -> None:
        pass

    def get(self, timeout: float) -> Frame | None:
        return None

    @property
    def finished(self) -> bool:
        return True

    def stop(self) -> None:
        pass


@dataclass
class CameraScript:
    """What a fake camera does: per connection, how many frames it delivers and how it then fails.

    ``connections`` lists, per successful open, ``(frames, failure)`` with failure ``"unplug"`` (read returns
    False, as V4L2 does when the device disappears) or ``"stall"`` (read blocks until released). ``refuse_opens``
    is how many open attempts fail after an unplug (the device is gone for a while).
    """

    frames: list[np.ndarray]
    connections: list[tuple[int, str]]
    refuse_opens: int = 0
    opens: int = 0
    attempts: int = 0
    released: int = 0
    stall_release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def factory(self, target: Any, api: int | None = None, params: Any = None) -> FakeCapture:
        with self.lock:
            self.attempts += 1
            if self.opens > 0 and self.refuse_opens > 0:
                self.refuse_opens -= 1
                return FakeCapture(self, None)
            if self.opens >= len(self.connections):
                return FakeCapture(self, (len(self.frames), "unplug"))
            plan = self.connections[self.opens]
            self.opens += 1
            return FakeCapture(self, plan)


class FakeCapture:
    """Implements the part of ``cv2.VideoCapture`` the source uses: isOpened/read/get/set/release."""

    def __init__(self, script: CameraScript, plan: tuple[int, str] | None) -> None:
        self.script = script
        self.plan = plan
        self.served = 0
        self.props: dict[int, float] = {cv2.CAP_PROP_FPS: 30.0}

    def isOpened(self) -> bool:
        return self.plan is not None

    def read(self) -> tuple[bool, np.ndarray | None]:
        assert self.plan is not None
        count, failure = self.plan
        if self.served >= count:
            if failure == "stall":
                self.script.stall_release.wait(30)
            return False, None
        img = self.script.frames[self.served % len(self.script.frames)]
        self.served += 1
        time.sleep(0.005)
        return True, img

    def get(self, prop: int) -> float:
        return self.props.get(prop, 0.0)

    def set(self, prop: int, value: float) -> bool:
        self.props[prop] = value
        return True

    def release(self) -> None:
        with self.script.lock:
            self.script.released += 1


class FakePicamera2:
    """The picamera2 API shape used by the source: create_video_configuration/configure/start/capture_arrays/stop."""

    instances: ClassVar[list[FakePicamera2]] = []

    def __init__(self, camera_num: int = 0) -> None:
        self.camera_num = camera_num
        self.calls: list[str] = []
        self.config: dict[str, Any] | None = None
        self.started = False
        FakePicamera2.instances.append(self)

    def create_video_configuration(
        self, main: dict[str, Any], lores: dict[str, Any], controls: dict[str, Any]
    ) -> dict[str, Any]:
        self.calls.append("create_video_configuration")
        return {"main": main, "lores": lores, "controls": controls}

    def configure(self, config: dict[str, Any]) -> None:
        self.calls.append("configure")
        self.config = config

    def start(self) -> None:
        self.calls.append("start")
        self.started = True

    def capture_arrays(self, names: list[str]) -> tuple[list[np.ndarray], dict[str, Any]]:
        assert self.started and self.config is not None
        self.calls.append("capture_arrays")
        mw, mh = self.config["main"]["size"]
        lw, lh = self.config["lores"]["size"]
        main = np.full((mh, mw, 3), 200, np.uint8)  # RGB888: BGR byte order, as OpenCV wants
        yuv = np.full((lh * 3 // 2, lw), 128, np.uint8)  # YUV420 planar, as picamera2 returns lores
        yuv[:lh] = 90
        arrays = {"main": main, "lores": yuv}
        return [arrays[n] for n in names], {"SensorTimestamp": time.monotonic_ns()}

    def stop(self) -> None:
        self.calls.append("stop")
        self.started = False

    def close(self) -> None:
        self.calls.append("close")


def fake_picamera2_module() -> SimpleNamespace:
    return SimpleNamespace(Picamera2=FakePicamera2)


class V4l2Camera:
    """``cv2.VideoCapture`` of a V4L2 camera (a factory that returns itself): properties kept as set, frames from
    :meth:`frame` until it returns None."""

    def __init__(self) -> None:
        self.props: dict[int, float] = {cv2.CAP_PROP_FPS: 25.0}
        self.served = 0

    def __call__(self, target: object, api: object = None, params: object = None) -> V4l2Camera:
        return self

    def isOpened(self) -> bool:
        return True

    def set(self, prop: int, value: float) -> bool:
        self.props[prop] = value
        return True

    def get(self, prop: int) -> float:
        return self.props.get(prop, 0.0)

    def frame(self, index: int) -> np.ndarray | None:
        raise NotImplementedError

    def read(self) -> tuple[bool, np.ndarray | None]:
        image = self.frame(self.served)
        if image is None:
            return False, None
        self.served += 1
        return True, image

    def release(self) -> None:
        pass


class MjpegCamera(V4l2Camera):
    """A camera asked for MJPG: with CONVERT_RGB off, ``read`` gives the JPEG bytes (a 1 x N array), as OpenCV's
    V4L2 backend does."""

    def __init__(self, frames: int = 150) -> None:
        super().__init__()
        base = np.add.outer(np.arange(240), np.arange(320))
        self.jpegs = [
            cv2.imencode(
                ".jpg", (np.dstack([base + 3 * i, base[::-1], base * 0 + i]) % 256).astype(np.uint8)
            )[1]
            for i in range(frames)
        ]

    def frame(self, index: int) -> np.ndarray | None:
        if index >= len(self.jpegs):
            return None
        jpeg = self.jpegs[index]
        if self.props.get(cv2.CAP_PROP_CONVERT_RGB, 1) == 0:
            return jpeg.reshape(1, -1)
        return cv2.imdecode(jpeg, cv2.IMREAD_COLOR)


class RawCamera(V4l2Camera):
    """A camera delivering raw YUYV: OpenCV converts to BGR, ``read`` gives the image."""

    def __init__(self, images: list[np.ndarray]) -> None:
        super().__init__()
        self.images = images

    def frame(self, index: int) -> np.ndarray | None:
        return self.images[index].copy() if index < len(self.images) else None
