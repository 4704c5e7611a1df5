"""One continuous encode for sources of raw frames (V4L2 YUYV/MJPEG cameras, the Pi camera).

A camera that delivers pictures, not a compressed stream, is encoded once, as it captures, into packets that
feed the same pre-roll ring and clip remuxer as a file or RTSP source: recording never encodes a second time,
and a clip is cut from packets. Encoders, best first: the Pi 4's hardware H.264 encoder (``h264_v4l2m2m``),
libx264 (ultrafast, zerolatency: no B-frames, a packet out per frame in), MPEG-4 part 2.

Packets are Annex B with the parameter sets repeated at every keyframe (no global header), so any clip that
starts at a keyframe carries what a decoder needs and the muxer takes them from there.

* :class:`FrameEncoder` — BGR/YUYV arrays or decoded PyAV frames in, :class:`EncodedPacket` out.
* :class:`Picamera2Encoding` — picamera2's own ``H264Encoder`` (hardware on a Pi 4) on the main stream, its
  output delivered to us through a ``picamera2.outputs.Output`` subclass (imported lazily).
* :func:`decode_jpeg_for_model` — an MJPEG camera's JPEG decoded at 1/2, 1/4 or 1/8 scale for inference.
"""

from __future__ import annotations

import importlib
import logging
import platform
import threading
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import cv2
import numpy as np

from edgevision.capture.packets import EncodedPacket, StreamInfo
from edgevision.errors import ConfigError
from edgevision.results.frame import UndecodablePicture

log = logging.getLogger(__name__)

TIME_BASE = Fraction(1, 1000)  # ms: camera frames arrive at a variable rate
# An announced rate above this is a clock, not frames (90000 or 1000 from some HTTP MJPEG streams): the encoder
# takes 25 fps instead, or its bitrate target and keyframe interval scale with it.
MAX_FPS = 240.0
IN_FLIGHT = 64  # frames an encoder may hold before their packets come out (a hardware one holds a few)
_MUX_CODEC = {"h264_v4l2m2m": "h264", "libx264": "h264", "libopenh264": "h264", "mpeg4": "mpeg4"}


def _usable(name: str) -> bool:
    import av

    try:
        av.codec.Codec(name, "w")
    except Exception:
        return False
    return True


def choose_encoder(preference: str = "auto", machine: str | None = None, has_m2m: bool | None = None) -> str:
    """The encoder to use: the Pi's hardware H.264 encoder when present, else libx264, else MPEG-4 part 2."""
    if preference != "auto":
        if preference not in _MUX_CODEC or not _usable(preference):
            raise ConfigError(
                f"video encoder '{preference}' is not available (choose from {sorted(_MUX_CODEC)})"
            )
        return preference
    machine = machine if machine is not None else platform.machine()
    if has_m2m is None:
        has_m2m = Path("/dev/video11").exists()  # the bcm2835 codec's encoder node (Pi 4 and older)
    candidates = ["libx264", "mpeg4"]
    if machine in ("aarch64", "armv7l") and has_m2m:
        candidates.insert(0, "h264_v4l2m2m")
    for name in candidates:
        if _usable(name):
            return name
    raise ConfigError("no usable H.264 or MPEG-4 encoder in this PyAV build")


class FrameEncoder:
    """Encode frames as they are captured; every frame in gives its packets out (in decode order).

    Not thread-safe: one capture thread owns it. ``encode`` accepts a BGR (or grayscale, or YUYV when
    ``pixel_format="yuyv422"``) array, or a decoded ``av.VideoFrame`` (an MJPEG camera's YUV, converted by
    FFmpeg without a BGR detour). Frames of another size are scaled to the encoder's. ``fps`` (the source's
    announced rate) sets the bitrate target; one beyond :data:`MAX_FPS` is taken for 25.
    """

    def __init__(
        self,
        width: int,
        height: int,
        fps: float = 25.0,
        codec: str = "auto",
        gop_s: float = 1.0,
        bitrate: int | None = None,
    ) -> None:
        import av

        self.codec = choose_encoder(codec)
        if not 0 < fps <= MAX_FPS:
            log.info("announced frame rate %g is no frame rate: encoding for 25 fps", fps)
            fps = 25.0
        self.width, self.height = width - width % 2, height - height % 2
        ctx: Any = av.CodecContext.create(self.codec, "w")
        ctx.width, ctx.height, ctx.pix_fmt = self.width, self.height, "yuv420p"
        ctx.time_base = TIME_BASE
        ctx.framerate = Fraction(round(fps * 1000), 1000)
        ctx.gop_size = max(1, round(fps * gop_s))  # a keyframe a second: pre-roll and fragments cut there
        ctx.max_b_frames = 0
        # The Pi's encoder has no quality mode: give it a bitrate (about 0.1 bit per pixel per frame).
        ctx.bit_rate = bitrate or int(self.width * self.height * fps * 0.1)
        if self.codec == "libx264":
            ctx.options = {"preset": "ultrafast", "tune": "zerolatency", "g": str(ctx.gop_size)}
        self._ctx = ctx
        self.gop_s = gop_s
        self._first_ts: float | None = None
        self._last_key_ts: float | None = None
        self._last_pts = -1
        self._ts_of: dict[int, float] = {}  # pts -> ts of the frames in the encoder; at most IN_FLIGHT
        self.frames_in = 0
        self.packets_out = 0

    @property
    def stream_info(self) -> StreamInfo:
        """What the clip muxer needs: parameter sets travel in band, so no template."""
        return StreamInfo(_MUX_CODEC[self.codec], self.width, self.height, TIME_BASE, self._ctx.framerate)

    def encode(self, image: Any, ts: float, pixel_format: str = "bgr24") -> list[EncodedPacket]:
        """Encode one frame taken at ``ts`` (seconds, the frame clock); returns the packets it released."""
        import av

        if isinstance(image, np.ndarray):
            if image.ndim == 2 and pixel_format == "bgr24":
                pixel_format = "gray"
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format=pixel_format)
        else:
            frame = image
        if (
            frame.format.name != "yuv420p"
            or frame.color_range == 2
            or frame.width != self.width
            or frame.height != self.height
        ):
            # One FFmpeg pass to the encoder's format and size; full-range (JPEG) YUV is brought to the TV
            # range H.264 players assume, or an MJPEG camera's pictures would play back too contrasty.
            frame = frame.reformat(self.width, self.height, "yuv420p", dst_color_range="MPEG")
        if self._first_ts is None:
            self._first_ts = ts
        pts = max(round((ts - self._first_ts) * 1000), self._last_pts + 1)
        frame.pts, frame.time_base = pts, TIME_BASE
        if self._last_key_ts is None or ts - self._last_key_ts >= self.gop_s - 1e-6:
            # A keyframe every gop_s of the frame clock, whatever the frame rate really is (a camera slower than
            # announced, a recorder fed by a slow pipeline): pre-roll and fragments are cut there.
            from av.video.frame import PictureType

            frame.pict_type = PictureType.I
            self._last_key_ts = ts
        self._ts_of[pts] = ts
        if (
            len(self._ts_of) > IN_FLIGHT
        ):  # an encoder that drops frames or renumbers pts never gives these back
            del self._ts_of[next(iter(self._ts_of))]
        self._last_pts = pts
        self.frames_in += 1
        return self._packets(self._ctx.encode(frame))

    def flush(self) -> list[EncodedPacket]:
        """Drain the encoder (end of capture)."""
        return self._packets(self._ctx.encode(None))

    def _packets(self, packets: list[Any]) -> list[EncodedPacket]:
        out = []
        for p in packets:
            ts = self._ts_of.pop(p.pts, None)
            if ts is None:
                ts = (self._first_ts or 0.0) + float(p.pts * TIME_BASE)
            if p.time_base is None:
                p.time_base = TIME_BASE
            out.append(EncodedPacket.from_av(p, ts))
        self.packets_out += len(out)
        return out


_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def jpeg_size(jpeg: bytes) -> tuple[int, int]:
    """(width, height) from a JPEG's start-of-frame segment, without decoding anything."""
    pos = 2
    n = len(jpeg)
    if jpeg[:2] != b"\xff\xd8":
        raise ValueError("not a JPEG")
    while pos + 4 <= n:
        if jpeg[pos] != 0xFF:
            raise ValueError("corrupt JPEG header")
        marker = jpeg[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        length = int.from_bytes(jpeg[pos + 2 : pos + 4], "big")
        if marker in _SOF_MARKERS and pos + 9 <= n:
            height = int.from_bytes(jpeg[pos + 5 : pos + 7], "big")
            width = int.from_bytes(jpeg[pos + 7 : pos + 9], "big")
            return width, height
        pos += 2 + length
    raise ValueError("JPEG without a frame header")


def decode_jpeg_for_model(jpeg: bytes, min_size: tuple[int, int]) -> np.ndarray:
    """A JPEG decoded at the smallest of 1/8, 1/4, 1/2, 1 scale still at least ``min_size`` (w, h), as BGR.

    libjpeg scales in the DCT domain, so a reduced decode of a 720p MJPEG frame costs a fraction of a full
    one. The caller resizes the rest of the way (or lets the model's preprocessing do it).
    """
    width, height = jpeg_size(jpeg)
    flag = cv2.IMREAD_COLOR
    for factor, reduced in (
        (8, cv2.IMREAD_REDUCED_COLOR_8),
        (4, cv2.IMREAD_REDUCED_COLOR_4),
        (2, cv2.IMREAD_REDUCED_COLOR_2),
    ):
        if width // factor >= min_size[0] and height // factor >= min_size[1]:
            flag = reduced
            break
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), flag)
    if image is None:
        raise UndecodablePicture("not a decodable JPEG")
    return image


class MjpegPicture:
    """An MJPEG camera's frame as it came off the wire, converted only on request (a
    :class:`~edgevision.results.frame.DecodedImage`): inference decodes it at reduced scale
    (:func:`decode_jpeg_for_model`), a consumer that needs the picture gets a full decode, once; the recording's
    encoder takes the JPEG itself (:class:`MjpegDecoder`, YUV without a BGR detour)."""

    def __init__(self, jpeg: bytes) -> None:
        self.jpeg = jpeg
        self.size = jpeg_size(jpeg)
        self._bgr: np.ndarray | None = None

    def model_input(self, width: int, height: int, pixel_format: str = "rgb24") -> np.ndarray:
        small = decode_jpeg_for_model(self.jpeg, (width, height))
        if small.shape[1] != width or small.shape[0] != height:
            small = cv2.resize(small, (width, height), interpolation=cv2.INTER_AREA)
        return cv2.cvtColor(small, cv2.COLOR_BGR2RGB if pixel_format == "rgb24" else cv2.COLOR_BGR2BGRA)[
            ..., :3
        ]

    def bgr(self) -> np.ndarray:
        if self._bgr is None:
            image = cv2.imdecode(np.frombuffer(self.jpeg, np.uint8), cv2.IMREAD_COLOR)
            if image is None:
                raise UndecodablePicture("not a decodable JPEG")
            self._bgr = image
        return self._bgr


class MjpegDecoder:
    """A camera's JPEG frames decoded by FFmpeg to YUV (for the encoder and the scaler; no BGR detour)."""

    def __init__(self) -> None:
        import av

        self._ctx: Any = av.CodecContext.create("mjpeg", "r")

    def decode(self, jpeg: bytes) -> Any:
        """The decoded ``av.VideoFrame`` of one JPEG; :class:`UndecodablePicture` for a damaged one."""
        import av

        try:
            frames = self._ctx.decode(av.Packet(jpeg))
        except av.error.FFmpegError as exc:
            raise UndecodablePicture(f"not a decodable JPEG: {exc}") from None
        if not frames:
            raise UndecodablePicture("JPEG produced no frame")
        return frames[-1]


PacketSink = Callable[[EncodedPacket], bool]
"""Takes a packet; returns False when it could not (a full hand-off queue): the packet was dropped."""


def _picamera2_modules() -> Any:
    try:
        encoders = importlib.import_module("picamera2.encoders")
        outputs = importlib.import_module("picamera2.outputs")
    except ImportError:
        raise ConfigError(
            "picamera2 is not installed: on Raspberry Pi OS run `sudo apt install python3-picamera2` "
            "(or pip install '.[pi]' in the edgevision checkout); it only works on a Raspberry Pi"
        ) from None
    return SimpleNamespace(H264Encoder=encoders.H264Encoder, Output=outputs.Output)


class Picamera2Encoding:
    """picamera2's H264Encoder on the camera's main stream, its packets delivered to ``sink``.

    On a Pi 4 the encoder is the hardware one (V4L2 M2M), so the CPU never touches the main stream; inference
    runs on the ``lores`` stream. picamera2 calls the output from its encoder thread: ``sink`` must not block
    (a bounded queue's put_nowait). When it refuses a packet, the packets up to the next keyframe are dropped
    too (they could not be decoded) and counted in ``dropped``; ``skipped`` (the feed's ``discard``) is told of
    each packet dropped without being offered to ``sink``, so the feed counts every drop once.

    Timestamps: picamera2 gives microseconds of the sensor clock; packets carry them as pts/dts, and ``ts`` on
    our ``clock`` (anchored at the first packet, re-anchored on a drift beyond ``max_drift_s``).
    """

    def __init__(
        self,
        camera: Any,
        sink: PacketSink,
        size: tuple[int, int],
        fps: float = 25.0,
        gop_s: float = 1.0,
        bitrate: int | None = None,
        module_loader: Callable[[], Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_drift_s: float = 2.0,
        skipped: Callable[[], None] | None = None,
    ) -> None:
        self.camera = camera
        self.sink = sink
        self.skipped = skipped
        self.size = size
        self.fps = fps
        self.gop = max(1, round(fps * gop_s))
        self.bitrate = bitrate or int(size[0] * size[1] * fps * 0.1)
        self._loader = module_loader or _picamera2_modules
        self._clock = clock
        self._max_drift = max_drift_s
        self._encoder: Any = None
        self._lock = threading.Lock()  # outputframe runs on picamera2's thread; counters are read elsewhere
        self._anchor: float | None = None
        self._waiting_for_keyframe = True
        self.packets = 0
        self.dropped = 0

    @property
    def stream_info(self) -> StreamInfo:
        return StreamInfo(
            "h264", self.size[0], self.size[1], Fraction(1, 1_000_000), Fraction(round(self.fps))
        )

    def start(self) -> None:
        """Create the H264Encoder (SPS/PPS repeated at every keyframe) and start it on the main stream."""
        mods = self._loader()
        encoder = mods.H264Encoder(bitrate=self.bitrate, repeat=True, iperiod=self.gop)
        owner = self

        class _PacketOutput(mods.Output):  # type: ignore[name-defined]
            """picamera2 Output: every encoded frame becomes an EncodedPacket for the sink."""

            def outputframe(
                self,
                frame: bytes,
                keyframe: bool = True,
                timestamp: int | None = None,
                packet: Any = None,
                audio: bool = False,
            ) -> None:
                if audio:
                    return
                owner._deliver(bytes(frame), keyframe, timestamp)

        self._encoder = encoder
        self.camera.start_encoder(encoder, _PacketOutput(), name="main")

    def _deliver(self, data: bytes, keyframe: bool, timestamp_us: int | None) -> None:
        now = self._clock()
        with self._lock:
            us = timestamp_us if timestamp_us is not None else round(now * 1e6)
            media = us / 1e6
            if self._anchor is None or abs(self._anchor + media - now) > self._max_drift:
                self._anchor = now - media
            if self._waiting_for_keyframe and not keyframe:
                self.dropped += 1
                if self.skipped is not None:
                    self.skipped()
                return
            packet = EncodedPacket(data, us, us, Fraction(1, 1_000_000), keyframe, self._anchor + media)
            if self.sink(packet):
                self._waiting_for_keyframe = False
                self.packets += 1
            else:
                self._waiting_for_keyframe = True
                self.dropped += 1

    def stop(self) -> None:
        if self._encoder is not None:
            encoder, self._encoder = self._encoder, None
            self.camera.stop_encoder(encoder)
