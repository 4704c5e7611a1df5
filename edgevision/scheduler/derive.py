"""Resolution rungs derived on the device from a real SSD, by rewriting its TFLite flatbuffer (no TensorFlow).

For an input side ``s`` the rewrite changes: the input tensor shape; the target of every reshape to
``[1, anchors, ...]``, wherever the converter put it — the catalog SSDs' ``Squeeze`` hard-codes it in
``ReshapeOptions`` and a constant shape tensor (given a buffer of its own, since shape constants can be shared),
while students converted by TF >= 2.16 build it at run time from ``SHAPE -> STRIDED_SLICE`` (the batch) and
constant scalars (the anchor count) packed by ``PACK`` (given constants of their own); every intermediate tensor
shape (read back from an interpreter that ran one invoke on a probe copy: run-time reshape targets size their
outputs only when they run); and the postprocess op's anchors, regenerated for the
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
from edgevision.inference import adapter

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
class Reshape:
    """A reshape whose target shape depends on the predictor grids, and where that target lives: in
    ``ReshapeOptions`` / a constant shape tensor (TF 1.x-era converters), or built at run time by a ``PACK`` of
    scalars (TF >= 2.16: ``SHAPE -> STRIDED_SLICE`` for the batch, constants for the rest)."""

    op: int  # the RESHAPE op
    dims: tuple[int | None, ...]  # the target's constant dims; None where computed at run time
    pack: int | None = None  # the PACK op building the target, when it is built at run time


@dataclass(frozen=True)
class SsdGraph:
    """Where the parts the rewrite touches live in the graph."""

    input_tensor: int
    postprocess_op: int
    box_input: int  # tensor feeding the postprocess box encodings
    anchors: int  # anchors tensor
    fixed_reshapes: list[Reshape]  # reshapes to [1, anchors, ...]: their anchor count depends on the grid
    trained_size: int


def _has_data(model: Any, tensor: int) -> bool:
    """Whether a tensor is a constant (TF 2.x converters give computed tensors empty buffers of their own)."""
    t = model.subgraphs[0].tensors[tensor]
    data = model.buffers[t.buffer].data if t.buffer > 0 else None
    return data is not None and len(data) > 0


def _constant(model: Any, tensor: int) -> np.ndarray | None:
    """The int32 value of a constant tensor, or None when the tensor is computed."""
    t = model.subgraphs[0].tensors[tensor]
    if not _has_data(model, tensor) or t.type != _schema().TensorType.INT32:
        return None
    data = model.buffers[t.buffer].data
    return np.frombuffer(np.asarray(data, np.uint8).tobytes(), np.int32).reshape(-1)


def _reshape_target(model: Any, op_index: int) -> Reshape | None:
    """Where a RESHAPE's target shape lives, with its constant dims; None when it cannot be told."""
    schema = _schema()
    sg = model.subgraphs[0]
    op = sg.operators[op_index]
    opts = op.builtinOptions
    new_shape = getattr(opts, "newShape", None) if opts is not None else None
    if new_shape is not None and len(new_shape) > 0:
        return Reshape(op_index, tuple(int(d) for d in new_shape))
    if len(op.inputs) < 2 or op.inputs[1] < 0:
        return None
    const = _constant(model, int(op.inputs[1]))
    if const is not None:
        return Reshape(op_index, tuple(int(d) for d in const))
    producer = next((i for i, o in enumerate(sg.operators) if int(op.inputs[1]) in o.outputs), None)
    if producer is None or _code(model, sg.operators[producer])[0] != schema.BuiltinOperator.PACK:
        return None
    dims: list[int | None] = []
    for t in sg.operators[producer].inputs:
        c = _constant(model, int(t))
        dims.append(int(c[0]) if c is not None and c.size == 1 else None)
    return Reshape(op_index, tuple(dims), producer)


def _grid_dependent(r: Reshape) -> bool:
    """A reshape to ``[1, anchors, ...]`` (or ``[1, -1, ...]``): dim 1 counts anchors, so it follows the grid."""
    d = r.dims
    return (
        len(d) >= 3
        and d[0] in (1, None)
        and d[1] is not None
        and (d[1] == -1 or d[1] > 1)
        and all(x is not None and x > 0 for x in d[2:])
    )


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
            r = _reshape_target(model, i)
            if r is not None and _grid_dependent(r):  # predictor and squeeze reshapes
                fixed.append(r)
    return SsdGraph(inp, pp[0], int(op.inputs[0]), int(op.inputs[2]), fixed, int(shape[1]))


def _private_constant(model: Any, name: str, value: np.ndarray) -> int:
    """A new int32 constant tensor with a buffer of its own (constants can be shared between ops)."""
    schema = _schema()
    buf = schema.BufferT()
    buf.data = np.frombuffer(value.astype(np.int32).tobytes(), dtype=np.uint8)
    model.buffers.append(buf)
    t = schema.TensorT()
    t.shape = np.array(value.shape, dtype=np.int32)
    t.type = schema.TensorType.INT32
    t.buffer = len(model.buffers) - 1
    t.name = name.encode()
    sg = model.subgraphs[0]
    sg.tensors.append(t)
    return len(sg.tensors) - 1


def _set_reshape(model: Any, r: Reshape, new_shape: list[int]) -> None:
    """Give one reshape a new target shape, wherever it lives: in ``ReshapeOptions`` and a private shape buffer,
    or in private constants feeding its PACK (the parts computed at run time, the batch, are left alone)."""
    schema = _schema()
    sg = model.subgraphs[0]
    if r.pack is not None:
        pack = sg.operators[r.pack]
        inputs = [int(t) for t in pack.inputs]
        for k, (old, new) in enumerate(zip(r.dims, new_shape, strict=True)):
            if old is not None:
                inputs[k] = _private_constant(model, f"edgevision/derived_shape_{r.op}_{k}", np.array(new))
        pack.inputs = np.array(inputs, dtype=np.int32)
        return
    op = sg.operators[r.op]
    shape = np.array(new_shape, dtype=np.int32)
    if op.builtinOptions is not None and getattr(op.builtinOptions, "newShape", None) is not None:
        op.builtinOptions.newShape = shape
    if len(op.inputs) > 1 and op.inputs[1] >= 0:
        buf = schema.BufferT()
        buf.data = np.frombuffer(shape.tobytes(), dtype=np.uint8)
        model.buffers.append(buf)
        sg.tensors[op.inputs[1]].buffer = len(model.buffers) - 1  # never shared with another reshape


def _probe_shapes(model: Any, g: SsdGraph, size: int) -> dict[int, list[int]]:
    """Shapes of every tensor after shape inference, on a copy whose postprocess op is removed. One invoke on a
    blank frame: a reshape whose target is computed at run time (a PACK) sizes its output only when it runs."""
    import copy

    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    probe = copy.deepcopy(model)
    sg = probe.subgraphs[0]
    sg.tensors[g.input_tensor].shape = np.array([1, size, size, 3], dtype=np.int32)
    sg.tensors[g.input_tensor].shapeSignature = None
    for r in g.fixed_reshapes:
        _set_reshape(probe, r, [d if d is not None else 1 for d in (r.dims[0], -1, *r.dims[2:])])
    op = sg.operators.pop(g.postprocess_op)
    sg.outputs = np.array(list(op.inputs[:2]), dtype=np.int32)
    # Reference kernels only: shape inference is all we need, and XNNPACK fixes shapes at delegation time.
    interp = Interpreter(
        model_content=_pack(probe),
        num_threads=1,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    try:
        interp.allocate_tensors()
        adapter.invoke_blank(interp)
    except (RuntimeError, ValueError) as exc:  # a grid-dependent shape this rewrite does not know about
        raise ModelError(f"cannot run the graph at {size}x{size}: {str(exc).splitlines()[0]}") from None
    return {i: [int(x) for x in t["shape"]] for i, t in adapter.tensors(interp).items()}


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
    for r in g.fixed_reshapes:
        _set_reshape(model, r, shapes[int(sg.operators[r.op].outputs[0])])
    if shapes[g.box_input][1] != len(anchors):
        raise ModelError(
            f"{source}: {shapes[g.box_input][1]} boxes at {size}x{size} but {len(anchors)} anchors"
        )
    for idx, shape in shapes.items():  # every computed tensor (constants keep theirs)
        if (
            idx < len(sg.tensors) and idx != g.anchors and not _has_data(model, idx)
        ) or idx == g.input_tensor:
            sg.tensors[idx].shape = np.array(shape, dtype=np.int32)
            sg.tensors[idx].shapeSignature = None
    out = _pack(model)
    manifest = {
        "version": DERIVE_VERSION,
        "source": source.name,
        "source_sha256": hashlib.sha256(buf).hexdigest(),
        "trained_size": g.trained_size,
        "size": size,
        "rho": size / g.trained_size,
        "feature_maps": grids,
        "anchors": len(anchors),
        "anchor_size_scale": g.trained_size / size,
        "anchors_regenerated": size != g.trained_size,
    }
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
