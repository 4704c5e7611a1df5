"""Inference: TFLite file checks and the interpreter backends (LiteRT, tflite-runtime, Edge TPU)."""

from edgevision.inference.backends import (
    BACKENDS,
    InterpreterHandle,
    RuntimeOptions,
    available_runtimes,
    open_interpreter,
)
from edgevision.inference.tflite_file import TFLiteInfo, inspect_tflite, inspect_tflite_bytes

__all__ = [
    "BACKENDS",
    "InterpreterHandle",
    "RuntimeOptions",
    "TFLiteInfo",
    "available_runtimes",
    "inspect_tflite",
    "inspect_tflite_bytes",
    "open_interpreter",
]
