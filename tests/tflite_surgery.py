"""Test helper: make a raw-output SSD from a real postprocess SSD by removing the postprocess op.

Uses the flatbuffer schema module shipped inside ai-edge-litert (test-time only; the product never needs it).
"""

from __future__ import annotations

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema


def strip_postprocess(buf: bytes) -> bytes:
    """Return a model whose outputs are the postprocess op's inputs (box encodings, class scores)."""
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(buf, 0))
    sg = model.subgraphs[0]
    codes = model.operatorCodes
    idx = next(
        i
        for i, op in enumerate(sg.operators)
        if codes[op.opcodeIndex].customCode
        in (b"TFLite_Detection_PostProcess", "TFLite_Detection_PostProcess")
    )
    op = sg.operators.pop(idx)
    sg.outputs = np.array(list(op.inputs[:2]), dtype=np.int32)
    builder = flatbuffers.Builder(len(buf) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def corrupt_postprocess_options(buf: bytes, fill: int = 0xFF) -> bytes:
    """Return ``buf`` with the bytes of the postprocess op's custom options (a flexbuffer) overwritten in place.

    The model still parses and allocates; only running it fails (the kernel reads nonsense class counts).
    """
    model = schema.Model.GetRootAs(buf, 0)
    sg = model.Subgraphs(0)
    base = np.frombuffer(buf, np.uint8).ctypes.data
    for i in range(sg.OperatorsLength()):
        op = sg.Operators(i)
        if model.OperatorCodes(op.OpcodeIndex()).CustomCode() == b"TFLite_Detection_PostProcess":
            options = op.CustomOptionsAsNumpy()
            start = options.ctypes.data - base
            out = bytearray(buf)
            out[start : start + len(options)] = bytes([fill]) * len(options)
            return bytes(out)
    raise ValueError("no TFLite_Detection_PostProcess op in this model")
