"""Tensor domains at the interpreter's edge: an RGB image into a model's input dtype, an output back to float.

The one place edgevision maps pixels and quantized outputs (the detector, the person gate and the profiler use
it; pycoral's ``adapters/common.py`` has the same small functions).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np


def quantize_input(rgb: np.ndarray, dtype: np.dtype[Any], float_range: tuple[float, float]) -> np.ndarray:
    """Map an RGB uint8 image into the model's input domain.

    Quantized models take the pixel values in their own domain (uint8 as is, int8 shifted by -128), which is how
    their input quantization (e.g. scale 1/128, zero point 128 for [-1, 1]) was calibrated. Float models take
    ``float_range`` linearly.
    """
    if dtype == np.uint8:
        return rgb
    if dtype == np.int8:
        return (rgb.astype(np.int16) - 128).astype(np.int8)
    lo, hi = float_range
    return (rgb.astype(np.float32) * ((hi - lo) / 255.0) + lo).astype(dtype)


def dequantize(values: np.ndarray, detail: Mapping[str, Any]) -> np.ndarray:
    """A quantized output tensor as float32 by its ``quantization`` (scale, zero point); float ones as they are."""
    scale, zero = detail.get("quantization", (0.0, 0))
    if scale and values.dtype != np.float32:
        return (values.astype(np.float32) - zero) * scale
    return values.astype(np.float32, copy=False)
