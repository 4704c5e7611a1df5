"""Resolution rungs derived on the device from a real SSD, by rewriting its TFLite flatbuffer (no TensorFlow).

For an input side ``s`` the rewrite changes: the input tensor shape; the constant shape of the one reshape that
hard-codes the anchor count (``Squeeze``; the per-layer reshapes use -1) and its ``ReshapeOptions`` — in a
buffer of its own, since reshape shape constants can share one; every intermediate tensor shape (read back from
an interpreter that ran shape inference on a probe copy); and the postprocess op's anchors, regenerated for the
new feature-map grid with heights and widths scaled by ``trained / s`` (each SSD layer keeps the pixel size it
was trained for; without it boxes shrink toward the centre), requantized so the larger sizes fit in uint8.

The flatbuffer schema module ships inside ai-edge-litert (``ai_edge_litert.schema_py_generated``); deriving is
done once per (model, size) and cached with a manifest, so a Pi with only tflite-runtime can use the cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgevision.detection.ssd import ssd_anchors
from edgevision.errors import ModelError
from edgevision.fsutil import install_atomically, sha256_file

log = logging.getLogger(__name__)

POSTPROCESS = "TFLite_Detection_PostProcess"
DERIVE_VERSION = 1


def _schema() -> Any:
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:
        raise ModelError(
            "deriving resolution rungs needs ai-edge-litert (pip install ai-edge-litert) for the TFLite schema; "
            "or copy a derived cache made on another machine"
        ) from None
    return schema


def _code(model: Any, op: Any) -> tuple[int, str | None]:
    oc = model.operatorCodes[op.opcodeIndex]
    custom = oc.customCode.decode() if isinstance(oc.customCode, bytes) else oc.customCode
    return max(oc.builtinCode, oc.deprecatedBuiltinCode), custom


def _pack(model: Any) -> bytes:
    import flatbuffers

    builder = flatbuffers.Builder(1 << 20)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


@dataclass(frozen=True)
class SsdGraph:
    """Where the parts the rewrite touches live in the graph."""

    input_tensor: int
    postprocess_op: int
    box_input: int  # tensor feeding the postprocess box encodings
    anchors: int  # anchors tensor
    fixed_reshapes: list[int]  # RESHAPE ops whose constant shape [1, anchors, ...] depends on the grid
    trained_size: int


def analyse(model: Any) -> SsdGraph:
    schema = _schema()
    sg = model.subgraphs[0]
    pp = [i for i, op in enumerate(sg.operators) if _code(model, op)[1] == POSTPROCESS]
    if len(pp) != 1:
        raise ModelError(
            "not an SSD with one TFLite_Detection_PostProcess op: cannot derive resolution rungs"
        )
    op = sg.operators[pp[0]]
    inp = sg.inputs[0]
    shape = list(sg.tensors[inp].shape)
    if len(shape) != 4 or shape[1] != shape[2]:
        raise ModelError(f"unsupported input shape {shape} (expected a square [1, s, s, 3])")
    fixed = []
    for i, o in enumerate(sg.operators):
        if _code(model, o)[0] == schema.BuiltinOperator.RESHAPE:
            opts = o.builtinOptions
            target = (
                list(opts.newShape)
                if opts is not None and getattr(opts, "newShape", None) is not None
                else []
            )
            if len(target) >= 3 and target[0] == 1:  # [1, anchors, ...]: predictor and squeeze reshapes
                fixed.append(i)
    return SsdGraph(inp, pp[0], int(op.inputs[0]), int(op.inputs[2]), fixed, int(shape[1]))


def _set_reshape(model: Any, op_index: int, new_shape: list[int]) -> None:
    """Give one reshape a new target shape, in ``ReshapeOptions`` and in a private shape buffer."""
    schema = _schema()
    sg = model.subgraphs[0]
    op = sg.operators[op_index]
    shape = np.array(new_shape, dtype=np.int32)
    op.builtinOptions.newShape = shape
    if len(op.inputs) > 1 and op.inputs[1] >= 0:
        buf = schema.BufferT()
        buf.data = np.frombuffer(shape.tobytes(), dtype=np.uint8)
        model.buffers.append(buf)
        sg.tensors[op.inputs[1]].buffer = len(model.buffers) - 1  # never shared with another reshape


def _probe_shapes(model: Any, g: SsdGraph, size: int) -> dict[int, list[int]]:
    """Shapes of every tensor after shape inference, on a copy whose postprocess op is removed."""
    import copy

    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    probe = copy.deepcopy(model)
    sg = probe.subgraphs[0]
    sg.tensors[g.input_tensor].shape = np.array([1, size, size, 3], dtype=np.int32)
    sg.tensors[g.input_tensor].shapeSignature = None
    for i in g.fixed_reshapes:
        shape = [int(d) for d in sg.operators[i].builtinOptions.newShape]
        _set_reshape(probe, i, [shape[0], -1, *shape[2:]])
    op = sg.operators.pop(g.postprocess_op)
    sg.outputs = np.array(list(op.inputs[:2]), dtype=np.int32)
    # Reference kernels only: shape inference is all we need, and XNNPACK fixes shapes at delegation time.
    interp = Interpreter(
        model_content=_pack(probe), num_threads=1,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )  # fmt: skip
    interp.allocate_tensors()
    return {int(t["index"]): [int(x) for x in t["shape"]] for t in interp.get_tensor_details()}


def feature_maps(model: Any, g: SsdGraph, shapes: dict[int, list[int]]) -> list[tuple[int, int]]:
    """The predictor grids, in anchor order: inputs of the per-layer box reshapes feeding the concat."""
    sg = model.subgraphs[0]
    producer = {int(t): i for i, op in enumerate(sg.operators) for t in op.outputs}
    # box input <- (reshape) <- concat <- per-layer reshapes <- [1, H, W, A*4] predictions
    t = g.box_input
    while True:
        op = sg.operators[producer[t]]
        if len(op.inputs) > 2 or _code(model, op)[0] == _schema().BuiltinOperator.CONCATENATION:
            break
        t = int(op.inputs[0])
    grids = []
    for layer_t in op.inputs:
        src = sg.operators[producer[int(layer_t)]]
        h, w = shapes[int(src.inputs[0])][1:3]
        grids.append((h, w))
    return grids


def derive(source: Path, size: int) -> tuple[bytes, dict[str, Any]]:
    """The model bytes at input ``size`` and a manifest describing the derivation."""
    schema = _schema()
    buf = source.read_bytes()
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(buf, 0))
    g = analyse(model)
    sg = model.subgraphs[0]
    shapes = _probe_shapes(model, g, size)
    grids = feature_maps(model, g, shapes)
    anchors = ssd_anchors(grids, size_scale=g.trained_size / size)
    if size != g.trained_size:
        # The postprocess kernel reads anchors in the box encodings' type: keep them uint8, with a scale that
        # fits the enlarged anchors (up to ~0.95 * trained / s).
        a = sg.tensors[g.anchors]
        scale = float(anchors.max()) / 255.0
        q = np.clip(np.round(anchors / scale), 0, 255).astype(np.uint8)
        anchor_buf = schema.BufferT()
        anchor_buf.data = np.frombuffer(q.tobytes(), dtype=np.uint8)
        model.buffers.append(anchor_buf)
        a.buffer = len(model.buffers) - 1
        a.type = schema.TensorType.UINT8
        quant = schema.QuantizationParametersT()
        quant.scale = np.array([scale], dtype=np.float32)
        quant.zeroPoint = np.array([0], dtype=np.int64)
        a.quantization = quant
        a.shape = np.array(anchors.shape, dtype=np.int32)
    for i in g.fixed_reshapes:
        _set_reshape(model, i, shapes[int(sg.operators[i].outputs[0])])
    if shapes[g.box_input][1] != len(anchors):
        raise ModelError(
            f"{source}: {shapes[g.box_input][1]} boxes at {size}x{size} but {len(anchors)} anchors"
        )
    for idx, shape in shapes.items():
        if (
            idx < len(sg.tensors) and idx != g.anchors and sg.tensors[idx].buffer == 0
        ) or idx == g.input_tensor:
            sg.tensors[idx].shape = np.array(shape, dtype=np.int32)
            sg.tensors[idx].shapeSignature = None
    out = _pack(model)
    manifest = {
        "version": DERIVE_VERSION, "source": source.name, "source_sha256": hashlib.sha256(buf).hexdigest(),
        "trained_size": g.trained_size, "size": size, "rho": size / g.trained_size, "feature_maps": grids,
        "anchors": len(anchors), "anchor_size_scale": g.trained_size / size,
        "anchors_regenerated": size != g.trained_size,
    }  # fmt: skip
    return out, manifest


def derived_path(cache: Path, source: Path, size: int) -> Path:
    return cache / f"{source.stem}@{size}.tflite"


def ensure_derived(source: Path, size: int, cache: Path) -> Path:
    """The cached derived model, re-derived when missing, stale (source changed) or of an older version."""
    path = derived_path(cache, source, size)
    meta = path.with_suffix(".json")
    src_sha = sha256_file(source)
    if path.exists() and meta.exists():
        try:
            m = json.loads(meta.read_text())
            if (
                m.get("source_sha256") == src_sha
                and m.get("version") == DERIVE_VERSION
                and m.get("sha256") == sha256_file(path)
            ):
                return path
        except (ValueError, OSError):
            pass
    data, manifest = derive(source, size)
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    install_atomically(tmp, path)
    manifest["sha256"] = hashlib.sha256(data).hexdigest()
    tmpm = meta.with_name(f".{meta.name}.{os.getpid()}.tmp")
    tmpm.write_text(json.dumps(manifest, indent=2) + "\n")
    install_atomically(tmpm, meta)
    log.info("derived %s at %dx%d (%d anchors)", source.name, size, size, manifest["anchors"])
    return path
