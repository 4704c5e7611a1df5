"""The interpreter adapter's tensor domains: pixels into a model's input dtype, quantized outputs back to float."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from edgevision.inference.quant import dequantize, quantize_input

PIXELS = np.array([[[0, 128, 255]]], dtype=np.uint8)


@pytest.mark.parametrize(
    ("dtype", "float_range", "expected"),
    [
        (np.uint8, (-1.0, 1.0), [0, 128, 255]),  # uint8 models take the pixels as they are
        (np.int8, (-1.0, 1.0), [-128, 0, 127]),  # int8: shifted by -128
        (np.float32, (-1.0, 1.0), [-1.0, 128 / 127.5 - 1.0, 1.0]),  # TF OD API SSDs
        (np.float32, (0.0, 1.0), [0.0, 128 / 255, 1.0]),
    ],
)
def test_quantize_input(dtype: Any, float_range: tuple[float, float], expected: list[float]) -> None:
    out = quantize_input(PIXELS, np.dtype(dtype), float_range)
    assert out.dtype == np.dtype(dtype)
    np.testing.assert_allclose(out.reshape(-1).astype(np.float64), expected, atol=1e-6)


@pytest.mark.parametrize(
    ("values", "detail", "expected"),
    [
        (np.array([0, 128, 255], np.uint8), {"quantization": (0.5, 128)}, [-64.0, 0.0, 63.5]),
        (
            np.array([-128, 127], np.int8),
            {"quantization": (0.00390625, -128)},
            [0.0, 0.99609375],
        ),  # the VWW head
        (np.array([0.25, 2.0], np.float32), {"quantization": (0.5, 3)}, [0.25, 2.0]),  # float: untouched
        (np.array([3, 4], np.uint8), {"quantization": (0.0, 0)}, [3.0, 4.0]),  # no quantization
        (np.array([3, 4], np.uint8), {}, [3.0, 4.0]),
    ],
)
def test_dequantize(values: np.ndarray, detail: dict[str, Any], expected: list[float]) -> None:
    out = dequantize(values, detail)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, expected)
