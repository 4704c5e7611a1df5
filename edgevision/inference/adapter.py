"""Every touch of a TFLite interpreter, as one-to-three-line functions (the shape of pycoral's adapters/common.py).

``interp`` is a LiteRT / tflite-runtime ``Interpreter`` (the same API); ``detail`` one of its tensor-detail dicts
(``get_input_details()``, ``get_output_details()`` or ``get_tensor_details()``). :class:`InterpreterHandle`
caches the details and calls these; the distillation tools, which load students from memory and read a teacher's
intermediate tensors, call them directly.

Tensor contract: :func:`get` returns a *copy*. The interpreter's buffers are overwritten by the next ``invoke()``,
so nothing that outlives the call may keep a view into them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

Detail = dict[str, Any]


def load(
    model: bytes | str, threads: int, preserve_all_tensors: bool = False, builtin_kernels: bool = False
) -> Any:
    """A LiteRT interpreter for a model file or flatbuffer bytes, its tensors allocated (``preserve_all_tensors``
    keeps intermediate tensors readable after ``invoke``: slower, for reading a teacher's raw head outputs;
    ``builtin_kernels`` runs LiteRT's own kernels instead of its default XNNPACK delegate)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    source = {"model_content": model} if isinstance(model, bytes) else {"model_path": model}
    resolver = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES if builtin_kernels else OpResolverType.AUTO
    interp = Interpreter(
        **source,
        num_threads=threads,
        experimental_preserve_all_tensors=preserve_all_tensors,
        experimental_op_resolver_type=resolver,
    )
    interp.allocate_tensors()
    return interp


def inputs(interp: Any) -> list[Detail]:
    return list(interp.get_input_details())


def outputs(interp: Any) -> list[Detail]:
    return list(interp.get_output_details())


def tensors(interp: Any) -> dict[int, Detail]:
    """Every tensor's detail by tensor index (inputs, outputs and intermediates)."""
    return {int(d["index"]): d for d in interp.get_tensor_details()}


def set_tensor(interp: Any, detail: Detail, value: np.ndarray) -> None:
    interp.set_tensor(detail["index"], value)


def get(interp: Any, detail: Detail) -> np.ndarray:
    """A copy of the tensor ``detail`` names."""
    return np.array(interp.get_tensor(detail["index"]))


def invoke(interp: Any) -> None:
    interp.invoke()


def invoke_on(interp: Any, value: np.ndarray) -> None:
    """Set the single input to ``value`` and invoke."""
    set_tensor(interp, inputs(interp)[0], value)
    interp.invoke()


def invoke_blank(interp: Any, fill: int = 0) -> None:
    """Invoke once with every input filled with ``fill`` (a load-time probe, warm-up, or sizing run)."""
    for d in inputs(interp):
        set_tensor(interp, d, np.full(tuple(int(x) for x in d["shape"]), fill, dtype=d["dtype"]))
    interp.invoke()
