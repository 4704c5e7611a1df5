"""Checks that a file really is a TFLite flatbuffer before any interpreter sees it.

An interpreter handed an HTML error page, a git-lfs pointer or a truncated download either crashes the
process or fails with an opaque message. :func:`inspect_tflite_bytes` walks just enough of the flatbuffer
(``Model.version``, ``operator_codes``, ``buffers``) with bounds checks on every read to tell which of those
it is, and reports the custom ops the model needs (``edgetpu-custom-op`` marks an Edge TPU model).

The reader is deliberately tiny and dependency-free so it works with either runtime installed.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

from edgevision.errors import ModelError
from edgevision.safe_read import open_regular

EDGETPU_CUSTOM_OP = "edgetpu-custom-op"
POSTPROCESS_CUSTOM_OP = "TFLite_Detection_PostProcess"


@dataclass(frozen=True)
class TFLiteInfo:
    """What the structural check learned about a model file."""

    version: int
    custom_ops: tuple[str, ...]
    size: int

    @property
    def needs_edgetpu(self) -> bool:
        """True for models compiled by the Edge TPU compiler."""
        return EDGETPU_CUSTOM_OP in self.custom_ops

    @property
    def has_postprocess(self) -> bool:
        """True when the SSD ``TFLite_Detection_PostProcess`` op is part of the graph."""
        return POSTPROCESS_CUSTOM_OP in self.custom_ops


class _Reader:
    """Bounds-checked flatbuffer table access (little endian, offsets relative to the field)."""

    def __init__(self, buf: bytes) -> None:
        self.buf = buf

    def _unpack(self, fmt: str, pos: int) -> int:
        if pos < 0 or pos + struct.calcsize(fmt) > len(self.buf):
            raise IndexError(pos)
        return int(struct.unpack_from(fmt, self.buf, pos)[0])

    def field(self, table: int, index: int) -> int | None:
        """Absolute position of field ``index`` of the table at ``table``, or None when absent."""
        vtable = table - self._unpack("<i", table)
        vt_size = self._unpack("<H", vtable)
        slot = 4 + 2 * index
        if slot >= vt_size:
            return None
        off = self._unpack("<H", vtable + slot)
        return table + off if off else None

    def indirect(self, pos: int) -> int:
        return pos + self._unpack("<I", pos)

    def vector(self, pos: int) -> tuple[int, int]:
        """(start, length) of the vector whose offset is stored at ``pos``."""
        vec = self.indirect(pos)
        n = self._unpack("<I", vec)
        return vec + 4, n

    def string(self, pos: int) -> str:
        start, n = self.vector(pos)
        if start + n > len(self.buf):
            raise IndexError(start + n)
        return self.buf[start : start + n].decode("utf-8", "replace")


def _describe_non_tflite(head: bytes) -> str:
    text = head.lstrip()[:200].lower()
    if text.startswith(b"version https://git-lfs"):
        return "a git-lfs pointer, not the model (fetch the real file, e.g. with `edgevision models fetch`)"
    if text.startswith((b"<!doctype html", b"<html", b"<?xml", b"<head")):
        return "an HTML/XML page (an error page from a download?), not a TFLite model"
    if text.startswith(b"pk\x03\x04"):
        return "a zip archive, not a TFLite model (extract the .tflite member)"
    if text.startswith(b"\x1f\x8b"):
        return "a gzip archive, not a TFLite model"
    return "not a TFLite flatbuffer (no TFL3 identifier)"


def inspect_tflite_bytes(buf: bytes, name: str = "model") -> TFLiteInfo:
    """Validate ``buf`` as a TFLite model; raise :class:`ModelError` with a clear reason otherwise."""
    if len(buf) < 16:
        raise ModelError(f"{name}: file is {len(buf)} bytes, too small to be a TFLite model")
    if buf[4:8] != b"TFL3":
        raise ModelError(f"{name}: {_describe_non_tflite(buf[:256])}")
    r = _Reader(buf)
    try:
        root = r.indirect(0)
        vpos = r.field(root, 0)
        version = r._unpack("<I", vpos) if vpos is not None else 0
        custom: list[str] = []
        opc = r.field(root, 1)
        if opc is not None:
            start, n = r.vector(opc)
            for i in range(n):
                code = r.indirect(start + 4 * i)
                cpos = r.field(code, 1)
                if cpos is not None:
                    custom.append(r.string(cpos))
        subgraphs = r.field(root, 2)
        if subgraphs is None or r.vector(subgraphs)[1] == 0:
            raise ModelError(f"{name}: TFLite model has no subgraph")
        bpos = r.field(root, 4)
        if bpos is not None:
            start, n = r.vector(bpos)
            for i in range(n):
                b = r.indirect(start + 4 * i)
                data = r.field(b, 0)
                if data is not None:
                    dstart, dlen = r.vector(data)
                    if dstart + dlen > len(buf):
                        raise IndexError(dstart + dlen)
                off = r.field(b, 1)
                size = r.field(b, 2)
                if off is not None and size is not None:
                    o, s = r._unpack("<Q", off), r._unpack("<Q", size)
                    if o > 1 and o + s > len(buf):
                        raise IndexError(o + s)
    except (IndexError, struct.error) as exc:
        raise ModelError(
            f"{name}: TFLite model is truncated or corrupt (data past end of file at byte {exc}, "
            f"file has {len(buf)} bytes)"
        ) from None
    if version != 3:
        raise ModelError(f"{name}: unsupported TFLite schema version {version} (expected 3)")
    return TFLiteInfo(version=version, custom_ops=tuple(custom), size=len(buf))


def inspect_tflite(path: Path) -> TFLiteInfo:
    """Read and validate a model file. Missing, unreadable or non-regular files raise :class:`ModelError`.

    The file is opened without blocking and checked with ``fstat`` first, so a FIFO or a device given as a
    model is refused at once (a FIFO would block a plain read forever, ``/dev/zero`` would never end).
    """
    try:
        fd = open_regular(path, "model file")
    except FileNotFoundError:
        raise ModelError(f"{path}: model file not found") from None
    except OSError as exc:
        raise ModelError(f"{path}: cannot read model file: {exc.strerror}") from None
    except ValueError as exc:
        raise ModelError(f"{path}: {exc}") from None
    try:
        with os.fdopen(fd, "rb") as f:
            head = f.read(256)
            if len(head) >= 16 and head[4:8] != b"TFL3":  # not a model: say so before reading it all
                return inspect_tflite_bytes(head, str(path))
            buf = head + f.read()
    except OSError as exc:
        raise ModelError(f"{path}: cannot read model file: {exc.strerror}") from None
    return inspect_tflite_bytes(buf, str(path))
