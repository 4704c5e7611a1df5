"""Weight transplant: a float Keras replica of a quantized TFLite MobileNet, op by op, with the real weights.

The replica is built from the classifier's own graph (``CONV_2D``, ``DEPTHWISE_CONV_2D``, ``HARD_SWISH``,
``AVERAGE_POOL_2D``, ``ADD``, ``MUL``, ``RESHAPE``, ``SOFTMAX``), so V1 and V3-Small need no hand-written layer
list: every weight is dequantized from the flatbuffer (``(q - zero_point) * scale``, per tensor or per channel)
and loaded into the matching Keras layer. Batch norm is already folded into the TFLite weights and biases.

Tensor contracts: TFLite conv weights are ``[out, kh, kw, in]`` (Keras ``[kh, kw, in, out]``), depthwise weights
``[1, kh, kw, in * multiplier]`` (Keras ``[kh, kw, in, multiplier]``), biases int32 with scale
``input_scale * weight_scale``. A quantized graph drops ReLU/ReLU6 and the hard-sigmoid clamp into the output
range of the op before it (zero point 0); the replica puts the activation back from that range.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgevision.errors import ModelError

_PADDING = {0: "same", 1: "valid"}


def _schema() -> Any:
    from ai_edge_litert import schema_py_generated as schema

    return schema


@dataclass
class TFLiteGraph:
    """A parsed TFLite model: ops in execution order with their tensors."""

    model: Any
    schema: Any

    @property
    def sg(self) -> Any:
        return self.model.subgraphs[0]

    def op_name(self, op: Any) -> str:
        oc = self.model.operatorCodes[op.opcodeIndex]
        if oc.customCode:
            return oc.customCode.decode() if isinstance(oc.customCode, bytes) else str(oc.customCode)
        code = max(oc.builtinCode, oc.deprecatedBuiltinCode)
        names = {v: k for k, v in vars(self.schema.BuiltinOperator).items() if not k.startswith("_")}
        return str(names.get(code, code))

    def tensor(self, index: int) -> Any:
        return self.sg.tensors[index]

    def shape(self, index: int) -> list[int]:
        return [int(d) for d in self.tensor(index).shape]

    def quant(self, index: int) -> tuple[np.ndarray, np.ndarray, int]:
        q = self.tensor(index).quantization
        if q is None or q.scale is None:
            return np.ones(1, np.float32), np.zeros(1, np.int64), 0
        return (
            np.asarray(q.scale, np.float32),
            np.asarray(q.zeroPoint, np.int64),
            int(q.quantizedDimension or 0),
        )

    def constant(self, index: int) -> np.ndarray | None:
        """The dequantized value of a constant tensor, or None for an activation."""
        t = self.tensor(index)
        buf = self.model.buffers[t.buffer]
        if buf.data is None or len(buf.data) == 0:
            return None
        dtype = {0: np.float32, 2: np.int32, 3: np.uint8, 9: np.int8, 4: np.int64}[int(t.type)]
        raw = np.frombuffer(np.asarray(buf.data, np.uint8).tobytes(), dtype=dtype).reshape(self.shape(index))
        if dtype == np.float32:
            return raw.copy()
        scale, zero, axis = self.quant(index)
        if dtype in (np.int32, np.int64) and (scale.size == 1 and scale[0] == 1.0 and zero[0] == 0):
            return raw.astype(np.float32)
        shape = [1] * raw.ndim
        if scale.size > 1:
            shape[axis] = scale.size
        return (raw.astype(np.float32) - zero.reshape(shape)) * scale.reshape(shape)

    def output_range(self, index: int) -> tuple[float, float] | None:
        t = self.tensor(index)
        scale, zero, _ = self.quant(index)
        if int(t.type) not in (3, 9) or scale.size != 1:
            return None
        qmin, qmax = (0, 255) if int(t.type) == 3 else (-128, 127)
        return float((qmin - zero[0]) * scale[0]), float((qmax - zero[0]) * scale[0])


def read_graph(path: Path | bytes) -> TFLiteGraph:
    schema = _schema()
    if isinstance(path, bytes):
        buf = path
    else:
        try:
            buf = path.read_bytes()
        except OSError as exc:
            raise ModelError(f"{path}: cannot read model: {exc}") from None
    return TFLiteGraph(schema.ModelT.InitFromObj(schema.Model.GetRootAs(buf, 0)), schema)


def _activation(g: TFLiteGraph, op: Any, out: int) -> str | None:
    """The activation the op had before quantization folded it into the output range."""
    opts = op.builtinOptions
    fused = int(getattr(opts, "fusedActivationFunction", 0) or 0) if opts is not None else 0
    if fused == 1:
        return "relu"
    if fused == 3:
        return "relu6"
    rng = g.output_range(out)
    if rng is None or abs(rng[0]) > 1e-9:
        return None
    hi = rng[1]
    if abs(hi - 6.0) < 0.25:
        return "relu6"
    if abs(hi - 1.0) < 0.05:
        return "clip1"
    return "relu"


def _act_layer(keras: Any, kind: str | None, name: str) -> Any:
    if kind is None:
        return None
    if kind == "relu":
        return keras.layers.ReLU(name=name)
    if kind == "relu6":
        return keras.layers.ReLU(max_value=6.0, name=name)
    return keras.layers.ReLU(max_value=1.0, name=name)


def hard_swish(keras: Any, x: Any, name: str) -> Any:
    """x * relu6(x + 3) / 6, written with layers the TFLite converter maps to HARD_SWISH or cheap ops."""
    return keras.layers.Activation("hard_swish", name=name)(x)


def build_replica(
    path: Path,
    input_size: int | None = None,
    stop_before_pool: bool = False,
    name: str = "backbone",
    ops_limit: int | None = None,
) -> tuple[Any, dict[int, Any], list[int]]:
    """Build the float replica of the TFLite classifier at ``path``.

    Returns ``(model, tensors, order)``: a Keras model from pixels (float 0..255, RGB) to the classifier's
    softmax (or, with ``stop_before_pool``, to the last feature map before global pooling), the Keras tensor
    of every TFLite tensor index that was built, and the built TFLite tensor indexes in execution order.
    ``input_size`` replaces the classifier's input side (the convolutions are size agnostic; squeeze-excite
    pools stay global). ``ops_limit`` builds only the first that many ops (a detector's backbone, before its heads).
    """
    import keras

    g = read_graph(path)
    sg = g.sg
    inp = int(sg.inputs[0])
    native = g.shape(inp)
    size = input_size or native[1]
    scale, zero, _ = g.quant(inp)
    x_in = keras.Input((size, size, 3), name=f"{name}_pixels")
    x = keras.layers.Rescaling(
        float(scale[0]), offset=-float(zero[0]) * float(scale[0]), name=f"{name}_norm"
    )(x_in)
    tensors: dict[int, Any] = {inp: x}
    order: list[int] = [inp]
    ops = list(sg.operators)
    last_pool = max(
        (
            i
            for i, op in enumerate(ops)
            if g.op_name(op) == "AVERAGE_POOL_2D" and g.shape(op.inputs[0])[1] > 1
        ),
        default=None,
    )
    for i, op in enumerate(ops):
        kind = g.op_name(op)
        if stop_before_pool and last_pool is not None and i >= last_pool:
            break
        if ops_limit is not None and i >= ops_limit:
            break
        out = int(op.outputs[0])
        lname = f"{name}_{i}_{kind.lower()}"
        if kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            src = tensors[int(op.inputs[0])]
            w = g.constant(int(op.inputs[1]))
            b = g.constant(int(op.inputs[2])) if len(op.inputs) > 2 and op.inputs[2] >= 0 else None
            if w is None:
                raise ModelError(f"{path}: op {i} has non-constant weights")
            opts = op.builtinOptions
            stride = int(opts.strideH)
            pad = _PADDING[int(opts.padding)]
            if kind == "CONV_2D":
                kernel = w.transpose(1, 2, 3, 0)
                layer = keras.layers.Conv2D(
                    kernel.shape[3],
                    kernel.shape[:2],
                    strides=stride,
                    padding=pad,
                    use_bias=b is not None,
                    name=lname,
                )
            else:
                mult = int(opts.depthMultiplier or 1)
                kh, kw = w.shape[1:3]
                kernel = w.reshape(kh, kw, -1, mult)
                layer = keras.layers.DepthwiseConv2D(
                    (kh, kw),
                    strides=stride,
                    padding=pad,
                    depth_multiplier=mult,
                    use_bias=b is not None,
                    name=lname,
                )
            y = layer(src)
            layer.set_weights([kernel, b] if b is not None else [kernel])
            act = _act_layer(keras, _activation(g, op, out), f"{lname}_act")
            tensors[out] = act(y) if act is not None else y
        elif kind == "HARD_SWISH":
            tensors[out] = hard_swish(keras, tensors[int(op.inputs[0])], lname)
        elif kind == "AVERAGE_POOL_2D":
            tensors[out] = keras.layers.GlobalAveragePooling2D(keepdims=True, name=lname)(
                tensors[int(op.inputs[0])]
            )
        elif kind in ("ADD", "MUL"):
            a, c = int(op.inputs[0]), int(op.inputs[1])
            const = g.constant(c)
            if const is not None:
                value = float(np.asarray(const).reshape(-1)[0]) if const.size == 1 else const
                fn = (lambda t, v=value: t + v) if kind == "ADD" else (lambda t, v=value: t * v)
                y = keras.layers.Lambda(fn, name=lname)(tensors[a])
            else:
                merge = keras.layers.Add if kind == "ADD" else keras.layers.Multiply
                y = merge(name=lname)([tensors[a], tensors[c]])
            act = _act_layer(keras, _activation(g, op, out), f"{lname}_act")
            tensors[out] = act(y) if act is not None else y
        elif kind == "RESHAPE":
            tensors[out] = keras.layers.Flatten(name=lname)(tensors[int(op.inputs[0])])
        elif kind == "SOFTMAX":
            tensors[out] = keras.layers.Softmax(name=lname)(tensors[int(op.inputs[0])])
        else:
            raise ModelError(f"{path}: op {i} ({kind}) is not supported by the weight transplant")
        order.append(out)
    model = keras.Model(x_in, tensors[order[-1]], name=name)
    return model, tensors, order


def last_at_stride(path: Path, stride: int) -> int:
    """TFLite tensor index of the last feature map at ``stride`` (where a frozen stem can end)."""
    g = read_graph(path)
    side = g.shape(int(g.sg.inputs[0]))[1]
    found = None
    for op in g.sg.operators:
        out = int(op.outputs[0])
        shape = g.shape(out)
        if len(shape) == 4 and shape[1] == -(-side // stride) and g.op_name(op) != "AVERAGE_POOL_2D":
            found = out
    if found is None:
        raise ModelError(f"{path}: no feature map at stride {stride}")
    return found


def stride_taps(path: Path) -> tuple[int, int]:
    """TFLite tensor indexes of the last stride-16 and the last stride-32 feature maps (SSD's first two layers)."""
    g = read_graph(path)
    sg = g.sg
    side = g.shape(int(sg.inputs[0]))[1]
    ops = list(sg.operators)
    last16 = last32 = None
    for op in ops:
        if g.op_name(op) == "AVERAGE_POOL_2D" and g.shape(op.inputs[0])[1] > 1:
            last32 = int(op.inputs[0])  # the input of the final global pool (SE pools come earlier)
    for op in ops:
        out = int(op.outputs[0])
        shape = g.shape(out)
        if len(shape) == 4 and shape[1] == -(-side // 16) and g.op_name(op) != "AVERAGE_POOL_2D":
            last16 = out
    if last16 is None or last32 is None:
        raise ModelError(f"{path}: cannot find the stride-16 and stride-32 feature maps")
    return last16, last32
