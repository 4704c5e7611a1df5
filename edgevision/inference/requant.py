"""A uint8 per-tensor model rewritten as int8 per-channel, on the device (a flatbuffer rewrite, no TensorFlow).

The catalog's quantized models (SSD-MobileNet V1/V2, the MobileNet classifiers) were converted by TF 1.x into
uint8 with one scale per tensor. LiteRT's XNNPACK runs the int8 per-channel form of the same graph much faster
(x86: SSD-MobileNet V1 at 300 px 32 ms -> 22 ms on one thread), so :func:`to_int8` rewrites the graph:

* every uint8 activation becomes int8 with its zero point moved by -128 (the same real values, exactly);
* each convolution's weights get one symmetric scale per output channel. A channel whose ``q - zero_point``
  values already fit ``[-127, 127]`` keeps the tensor's scale and its exact values (nearly all channels of the
  catalog SSDs); the others are requantized to their own range, and the bias follows its channel's scale;
* the interface stays as shipped: a ``QUANTIZE`` op turns the uint8 input into int8, and uint8 copies feed the
  graph's uint8 outputs and the ``TFLite_Detection_PostProcess`` op (whose anchors stay uint8);
* an int8 ``CONCATENATION`` needs every input at the output's scale, so a ``QUANTIZE`` requantizes the others
  (the uint8 kernel did the same inside the op).

A graph with an op this rewrite does not know, more than one subgraph, or int8 tensors already (a student
converted by TF 2.x) raises :class:`NotConvertible`. Whether the copy computes what the original does is checked
by :mod:`edgevision.inference.requant_cache` before it is ever used.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np

POSTPROCESS = "TFLite_Detection_PostProcess"
REQUANT_VERSION = 1


class NotConvertible(Exception):
    """The model is not a uint8 per-tensor graph this rewrite knows; it runs as shipped."""


@dataclass(frozen=True)
class Converted:
    """The rewritten flatbuffer and how many output channels kept their exact weights."""

    model: bytes
    exact_channels: int
    requantized_channels: int


def schema() -> Any:
    """The TFLite flatbuffer schema module (shipped inside ai-edge-litert)."""
    try:
        from ai_edge_litert import schema_py_generated
    except ImportError:
        raise NotConvertible(
            "rewriting needs ai-edge-litert's TFLite schema (pip install ai-edge-litert)"
        ) from None
    return schema_py_generated


def _op_names(s: Any) -> dict[int, str]:
    return {v: k for k, v in vars(s.BuiltinOperator).items() if not k.startswith("_")}


# Builtin ops whose int8 kernels take uint8's tensors shifted by -128, and the op version that declares int8
# (per-channel for the convolutions). Anything else touching a uint8 tensor makes the model NotConvertible.
_INT8_VERSION = {
    "CONV_2D": 3,
    "DEPTHWISE_CONV_2D": 3,
    "ADD": 2,
    "MUL": 2,
    "CONCATENATION": 2,
    "LOGISTIC": 2,
    "SOFTMAX": 2,
    "AVERAGE_POOL_2D": 2,
    "MAX_POOL_2D": 2,
    "RESHAPE": 1,
    "SQUEEZE": 1,
    "HARD_SWISH": 1,
    "QUANTIZE": 2,
}


class _Graph:
    """The model being rewritten, with the few lookups the rewrite needs."""

    def __init__(self, model: bytes) -> None:
        s = self.s = schema()
        self.m = s.ModelT.InitFromObj(s.Model.GetRootAsModel(model, 0))
        if len(self.m.subgraphs) != 1:
            raise NotConvertible(f"{len(self.m.subgraphs)} subgraphs; only single-graph models are rewritten")
        self.g = self.m.subgraphs[0]
        self.names = _op_names(s)

    def op_name(self, op: Any) -> str:
        oc = self.m.operatorCodes[op.opcodeIndex]
        code = max(oc.builtinCode, oc.deprecatedBuiltinCode)
        if code == self.s.BuiltinOperator.CUSTOM:
            custom = oc.customCode
            return custom.decode() if isinstance(custom, bytes) else str(custom)
        return self.names.get(code, str(code))

    def tensor(self, i: int) -> Any:
        return self.g.tensors[i]

    def data(self, i: int) -> np.ndarray | None:
        """A constant tensor's raw bytes, or None for a computed one."""
        t = self.tensor(i)
        buf = self.m.buffers[t.buffer].data if t.buffer > 0 else None
        return None if buf is None or len(buf) == 0 else np.asarray(buf, np.uint8)

    def set_data(self, i: int, raw: np.ndarray) -> None:
        self.m.buffers[self.tensor(i).buffer].data = np.frombuffer(raw.tobytes(), np.uint8)

    def is_uint8(self, i: int) -> bool:
        return i >= 0 and self.tensor(i).type == self.s.TensorType.UINT8

    def new_tensor(self, like: int, uint8: bool, zero_points: list[int] | None = None) -> int:
        """A computed tensor shaped and scaled like ``like``, of the given type, with its own empty buffer."""
        t = copy.deepcopy(self.tensor(like))
        t.type = self.s.TensorType.UINT8 if uint8 else self.s.TensorType.INT8
        t.name = (t.name or b"") + (b"/uint8" if uint8 else b"/int8")
        if zero_points is not None:
            t.quantization.zeroPoint = zero_points
        self.m.buffers.append(self.s.BufferT())
        t.buffer = len(self.m.buffers) - 1
        self.g.tensors.append(t)
        return len(self.g.tensors) - 1

    def quantize_op(self, src: int, dst: int) -> Any:
        """A ``QUANTIZE`` op from ``src`` to ``dst`` (uint8 <-> int8, or int8 to another int8 scale)."""
        code = self.s.BuiltinOperator.QUANTIZE
        index = next(
            (
                k
                for k, oc in enumerate(self.m.operatorCodes)
                if max(oc.builtinCode, oc.deprecatedBuiltinCode) == code
            ),
            None,
        )
        if index is None:
            oc = self.s.OperatorCodeT()
            oc.builtinCode = oc.deprecatedBuiltinCode = code
            oc.version = 1
            self.m.operatorCodes.append(oc)
            index = len(self.m.operatorCodes) - 1
        op = self.s.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = index, [src], [dst]
        op.builtinOptionsType = self.s.BuiltinOptions.QuantizeOptions
        op.builtinOptions = self.s.QuantizeOptionsT()
        return op

    def pack(self) -> bytes:
        import flatbuffers

        builder = flatbuffers.Builder(1 << 20)
        builder.Finish(self.m.Pack(builder), file_identifier=b"TFL3")
        return bytes(builder.Output())


def _quant(t: Any) -> tuple[list[float], list[int]]:
    q = t.quantization
    if q is None or q.scale is None or len(q.scale) == 0:
        return [], []
    return [float(x) for x in q.scale], [int(z) for z in q.zeroPoint]


def _per_channel(gr: _Graph, op: Any, axis: int, done: set[int], counts: list[int]) -> None:
    """Rewrite one convolution's uint8 per-tensor weights (and int32 bias) as int8 per-channel along ``axis``."""
    w_i, b_i = int(op.inputs[1]), int(op.inputs[2]) if len(op.inputs) > 2 else -1
    if w_i in done:
        return
    w_t, raw = gr.tensor(w_i), gr.data(w_i)
    scales, zeros = _quant(w_t)
    if raw is None or not gr.is_uint8(w_i) or len(scales) != 1:
        raise NotConvertible(f"{gr.op_name(op)} weights '{w_t.name!r}' are not constant uint8 per-tensor")
    shape = [int(d) for d in w_t.shape]
    centred = np.moveaxis(raw.reshape(shape).astype(np.int32) - zeros[0], axis, 0).reshape(shape[axis], -1)
    scale = scales[0]
    out = np.empty_like(centred)
    channel_scales = []
    for c, row in enumerate(centred):
        lo, hi = int(row.min()), int(row.max())
        if lo >= -127 and hi <= 127:  # representable as it is: the exact same weights
            out[c], sc = row, scale
            counts[0] += 1
        else:
            sc = max(-lo, hi) * scale / 127
            out[c] = np.clip(np.rint(row * (scale / sc)), -127, 127)
            counts[1] += 1
        channel_scales.append(sc)
    rest = [d for k, d in enumerate(shape) if k != axis]
    weights = np.moveaxis(out.reshape([shape[axis], *rest]), 0, axis).astype(np.int8)
    gr.set_data(w_i, weights)
    w_t.type = gr.s.TensorType.INT8
    w_t.quantization.scale = channel_scales
    w_t.quantization.zeroPoint = [0] * len(channel_scales)
    w_t.quantization.quantizedDimension = axis
    done.add(w_i)
    if b_i < 0:
        return
    # the bias is int32 at input_scale * weight_scale: each channel follows its weight scale
    in_scale = _quant(gr.tensor(int(op.inputs[0])))[0][0]
    b_raw = gr.data(b_i)
    if b_raw is None:
        raise NotConvertible(f"{gr.op_name(op)} bias is not constant")
    bias = np.frombuffer(b_raw.tobytes(), np.int32).astype(np.float64)
    ratio = scale / np.asarray(channel_scales)
    gr.set_data(b_i, np.rint(bias * ratio).astype(np.int32))
    b_t = gr.tensor(b_i)
    b_t.quantization.scale = [in_scale * s for s in channel_scales]
    b_t.quantization.zeroPoint = [0] * len(channel_scales)
    b_t.quantization.quantizedDimension = 0
    done.add(b_i)


def _unshare(gr: _Graph) -> None:
    """Give every constant tensor its own buffer and every convolution its own weight and bias tensors.

    The rewrite changes data in place, per tensor: a buffer shared by two tensors (converters deduplicate equal
    constants) would be rewritten once per tensor (weights requantized twice, a bias rescaled by two ops'
    ratios, a uint8 constant shifted by -128 twice), and a weight tensor shared by two convolutions would leave
    the second one's bias unconverted."""
    s, g, m = gr.s, gr.g, gr.m
    users: dict[int, int] = {}
    for op in g.operators:
        if gr.op_name(op) in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            for k in (1, 2):
                if len(op.inputs) > k and int(op.inputs[k]) >= 0:
                    i = int(op.inputs[k])
                    if i in users:  # a second convolution reads this tensor: give it its own
                        t = copy.deepcopy(g.tensors[i])
                        g.tensors.append(t)
                        op.inputs = [
                            len(g.tensors) - 1 if j == k else int(x) for j, x in enumerate(op.inputs)
                        ]
                    else:
                        users[i] = 1
    seen: set[int] = set()
    for t in g.tensors:
        b = int(t.buffer)
        if b <= 0 or m.buffers[b].data is None or len(m.buffers[b].data) == 0:
            continue
        if b in seen:
            m.buffers.append(s.BufferT())
            m.buffers[-1].data = np.array(m.buffers[b].data, np.uint8, copy=True)
            t.buffer = len(m.buffers) - 1
        else:
            seen.add(b)


def to_int8(model: bytes) -> Converted:
    """``model`` (uint8 per-tensor) rewritten to run int8 per-channel kernels behind the same uint8 interface."""
    gr = _Graph(model)
    s, g = gr.s, gr.g
    _unshare(gr)
    if any(t.type == s.TensorType.INT8 for t in g.tensors):
        raise NotConvertible("the model is int8 already")
    if not any(gr.is_uint8(int(i)) for i in g.inputs):
        raise NotConvertible("the model's input is not uint8")
    postprocess = [op for op in g.operators if gr.op_name(op) == POSTPROCESS]
    for op in g.operators:
        name = gr.op_name(op)
        known = name == POSTPROCESS or name in _INT8_VERSION
        if not known and any(gr.is_uint8(int(i)) for i in [*op.inputs, *op.outputs]):
            raise NotConvertible(f"op {name} has no int8 rewrite here")
    counts = [0, 0]
    weights: set[int] = set()
    for op in g.operators:
        name = gr.op_name(op)
        if name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            _per_channel(gr, op, 0 if name == "CONV_2D" else 3, weights, counts)
    kept = {int(i) for op in postprocess for i in op.inputs if gr.data(int(i)) is not None}  # the anchors
    boundary = {int(i) for i in [*g.inputs, *g.outputs]} | {int(i) for op in postprocess for i in op.inputs}
    boundary -= kept
    for i, t in enumerate(g.tensors):
        if i in weights or i in kept or not gr.is_uint8(i):
            continue
        t.type = s.TensorType.INT8
        t.quantization.zeroPoint = [z - 128 for z in _quant(t)[1]]
        raw = gr.data(i)
        if raw is not None:
            gr.set_data(i, (raw.astype(np.int16) - 128).astype(np.int8))
    ops = list(g.operators)
    # uint8 at the boundary: graph inputs and outputs and what feeds the postprocess keep their uint8 tensors
    for i in sorted(boundary):
        if g.tensors[i].type != s.TensorType.INT8:
            continue
        zp = [z + 128 for z in _quant(g.tensors[i])[1]]
        g.tensors[i].type = s.TensorType.UINT8
        g.tensors[i].quantization.zeroPoint = zp
        inner = gr.new_tensor(i, uint8=False, zero_points=[z - 128 for z in zp])
        if i in {int(x) for x in g.inputs}:
            for op in ops:
                op.inputs = [inner if int(x) == i else int(x) for x in op.inputs]
            ops.insert(0, gr.quantize_op(i, inner))
            continue
        producer = next(op for op in ops if i in [int(x) for x in op.outputs])
        producer.outputs = [inner if int(x) == i else int(x) for x in producer.outputs]
        for op in ops:
            if op is not producer and gr.op_name(op) != POSTPROCESS:
                op.inputs = [inner if int(x) == i else int(x) for x in op.inputs]
        ops.insert(ops.index(producer) + 1, gr.quantize_op(inner, i))
    for op in list(ops):
        if gr.op_name(op) != "CONCATENATION":
            continue
        want = _quant(g.tensors[int(op.outputs[0])])
        new_inputs = []
        for x in (int(v) for v in op.inputs):
            if _quant(g.tensors[x]) == want:
                new_inputs.append(x)
                continue
            moved = gr.new_tensor(x, uint8=False, zero_points=list(want[1]))
            g.tensors[moved].quantization.scale = list(want[0])
            ops.insert(ops.index(op), gr.quantize_op(x, moved))
            new_inputs.append(moved)
        op.inputs = new_inputs
    g.operators = ops
    for oc in gr.m.operatorCodes:
        name = gr.names.get(max(oc.builtinCode, oc.deprecatedBuiltinCode), "")
        if name in _INT8_VERSION:
            oc.version = max(int(oc.version), _INT8_VERSION[name])
    return Converted(gr.pack(), counts[0], counts[1])
