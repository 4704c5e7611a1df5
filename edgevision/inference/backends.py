"""One small interface over the TFLite Interpreter, with an explicit registry of runtimes.

Runtimes are imported lazily so that a Pi with only ``tflite-runtime`` (or only LiteRT) installed works, and a
missing one is reported with the pip package that provides it. The Edge TPU is a delegate
(``libedgetpu.so.1`` loaded through the runtime's ``load_delegate``), not a runtime of its own.
"""

from __future__ import annotations

import ctypes
import gc
import importlib
import logging
import platform
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from edgevision.errors import BackendUnavailable, EdgeTPUUnavailable, ModelError
from edgevision.inference import adapter
from edgevision.inference.quant import dequantize
from edgevision.inference.requant_cache import int8_copy
from edgevision.inference.runtime_log import quiet_runtime_info
from edgevision.inference.tflite_file import TFLiteInfo, inspect_tflite

log = logging.getLogger(__name__)

RuntimeName = Literal["auto", "litert", "tflite-runtime"]
DeviceName = Literal["cpu", "edgetpu"]


@dataclass(frozen=True)
class Backend:
    """A registry entry: where a runtime's ``Interpreter`` and ``load_delegate`` live, and who provides them."""

    name: str
    module: str
    pip_package: str

    def load(self) -> Any:
        """Import the runtime's interpreter module or raise :class:`BackendUnavailable` naming the package."""
        try:
            return importlib.import_module(self.module)
        except ImportError as exc:
            raise BackendUnavailable(
                f"runtime '{self.name}' is not installed ({exc}); install it with: pip install {self.pip_package}"
            ) from None


#: The explicit registry, in ``auto`` preference order.
BACKENDS: dict[str, Backend] = {
    "litert": Backend("litert", "ai_edge_litert.interpreter", "ai-edge-litert"),
    "tflite-runtime": Backend(
        "tflite-runtime", "tflite_runtime.interpreter", "'.[tflite]' (in the edgevision checkout)"
    ),
}


def available_runtimes() -> list[str]:
    """Names of the registered runtimes that import here."""
    names = []
    for name, backend in BACKENDS.items():
        try:
            backend.load()
        except BackendUnavailable:
            continue
        names.append(name)
    return names


def edgetpu_library() -> str:
    """The platform's name of the Edge TPU runtime library (as pycoral names it)."""
    return {"Linux": "libedgetpu.so.1", "Darwin": "libedgetpu.1.dylib", "Windows": "edgetpu.dll"}.get(
        platform.system(), "libedgetpu.so.1"
    )


@dataclass(frozen=True)
class RuntimeOptions:
    """How to run a model: which runtime, which device, how many CPU threads."""

    runtime: RuntimeName = "auto"
    device: DeviceName = "cpu"
    threads: int = 2
    edgetpu_device: str | None = None  # e.g. "usb", "usb:0", "pci:0"; None = first found
    # where a uint8 model's checked int8 per-channel copy lives (runtime.kernels: int8); None runs files as shipped
    int8_cache: Path | None = None


@dataclass
class InterpreterHandle:
    """A loaded, allocated interpreter and the facts callers need about it.

    Tensor contract: ``output(i)`` returns a *copy*; the interpreter's own output buffers are overwritten by
    the next ``invoke()``, so nothing that outlives the call may keep a view into them.
    """

    interpreter: Any
    runtime: str
    device: str
    model_path: Path
    info: TFLiteInfo
    kernel_path: Path | None = (
        None  # the int8 per-channel copy actually loaded, when one is (runtime.kernels)
    )
    input_details: list[dict[str, Any]] = field(default_factory=list)
    output_details: list[dict[str, Any]] = field(default_factory=list)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(x) for x in self.input_details[0]["shape"])

    @property
    def input_dtype(self) -> np.dtype[Any]:
        return np.dtype(self.input_details[0]["dtype"])

    def set_input(self, tensor: np.ndarray, index: int = 0) -> None:
        adapter.set_tensor(self.interpreter, self.input_details[index], tensor)

    def invoke(self) -> None:
        adapter.invoke(self.interpreter)

    def output(self, i: int) -> np.ndarray:
        return adapter.get(self.interpreter, self.output_details[i])

    def output_float(self, i: int) -> np.ndarray:
        """Output ``i`` as float32, dequantized by its own scale and zero point (a copy, like :meth:`output`)."""
        return dequantize(self.output(i), self.output_details[i])

    def outputs(self) -> list[np.ndarray]:
        return [self.output(i) for i in range(len(self.output_details))]

    def invoke_on(self, tensor: np.ndarray) -> None:
        """Set the single input and invoke; read what you need with :meth:`output` / :meth:`output_float`."""
        self.set_input(tensor)
        self.invoke()

    def run(self, tensor: np.ndarray) -> list[np.ndarray]:
        """Set the single input, invoke, and return copies of every output."""
        self.invoke_on(tensor)
        return self.outputs()


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _resolve_backend(runtime: RuntimeName) -> tuple[str, Any]:
    if runtime != "auto":
        if runtime not in BACKENDS:
            raise BackendUnavailable(
                f"unknown runtime '{runtime}' (choose from: auto, {', '.join(BACKENDS)})"
            )
        return runtime, BACKENDS[runtime].load()
    errors = []
    for name, backend in BACKENDS.items():
        try:
            return name, backend.load()
        except BackendUnavailable as exc:
            errors.append(str(exc))
    raise BackendUnavailable(
        "no TFLite runtime is installed; install one with: pip install ai-edge-litert "
        "(or pip install '.[tflite]' in the edgevision checkout, for tflite-runtime)"
    )


def runtime_name(runtime: RuntimeName) -> str:
    """The registered runtime ``runtime`` loads models with here: itself, or for ``auto`` the first that imports
    (what a loaded model's :attr:`InterpreterHandle.runtime` says); :class:`BackendUnavailable` when none does."""
    return _resolve_backend(runtime)[0]


def _ignore_broken_delegate_del(unraisable: Any) -> None:
    """Swallow only the known AttributeError from a half-built ``Delegate.__del__`` (runtime bug)."""
    obj = getattr(unraisable, "object", None)
    if isinstance(unraisable.exc_value, AttributeError) and "Delegate.__del__" in repr(obj):
        return
    sys.__unraisablehook__(unraisable)


def _load_edgetpu_delegate(module: Any, device: str | None) -> Any:
    lib = edgetpu_library()
    options = {"device": device} if device else {}
    loader: Callable[..., Any] | None = getattr(module, "load_delegate", None)
    if loader is None:
        raise EdgeTPUUnavailable("this runtime has no load_delegate(); cannot use the Edge TPU")
    hint = "is the Coral plugged in and the libedgetpu1-std package installed?"
    try:
        ctypes.CDLL(lib)  # probe first: a failed load_delegate() leaves a Delegate whose __del__ raises
    except OSError as exc:
        raise EdgeTPUUnavailable(f"no Edge TPU available: cannot load {lib} ({exc}); {hint}") from None
    previous = sys.unraisablehook
    sys.unraisablehook = _ignore_broken_delegate_del
    try:
        return loader(lib, options)
    except (ValueError, OSError, RuntimeError) as exc:
        raise EdgeTPUUnavailable(
            f"no Edge TPU available: loading {lib} failed ({str(exc).strip() or type(exc).__name__}); {hint}"
        ) from None
    finally:
        gc.collect()
        sys.unraisablehook = previous


def probe_invoke(interp: Any) -> None:
    """One ``invoke()`` on blank (all-zero) inputs.

    Some broken models load and allocate fine and only fail when run (corrupt ``TFLite_Detection_PostProcess``
    options, an Edge TPU that stops answering): this makes them fail at load time, before a camera opens.
    """
    adapter.invoke_blank(interp)


def _load(module: Any, path: Path, threads: int, delegates: list[Any]) -> Any:
    with quiet_runtime_info():
        interp = module.Interpreter(
            model_path=str(path), num_threads=threads, experimental_delegates=delegates or None
        )
        interp.allocate_tensors()
    return interp


def open_interpreter(
    model_path: Path, options: RuntimeOptions | None = None, probe: bool = True
) -> InterpreterHandle:
    """Validate ``model_path``, load it in the chosen runtime/device, allocate its tensors and (with
    ``probe``) run it once on a blank input, so a model that cannot run is a :class:`ModelError` here."""
    options = options or RuntimeOptions()
    info = inspect_tflite(model_path)
    if info.needs_edgetpu and options.device != "edgetpu":
        raise EdgeTPUUnavailable(
            f"{model_path}: model is compiled for the Edge TPU (edgetpu-custom-op) but device is 'cpu'; "
            "set device: edgetpu, or use the model's CPU twin"
        )
    name, module = _resolve_backend(options.runtime)
    delegates = []
    if options.device == "edgetpu":
        delegates.append(_load_edgetpu_delegate(module, options.edgetpu_device))
    if options.threads < 1:
        raise ModelError(f"threads must be >= 1, got {options.threads}")
    load_path = model_path
    if options.device == "cpu" and options.int8_cache is not None:
        try:
            load_path = int8_copy(model_path, options.int8_cache) or model_path
        except Exception as exc:  # the copy is an optimisation: nothing about it may stop the model
            log.warning("%s: its int8 copy is not used (%s: %s)", model_path, type(exc).__name__, exc)
    try:
        interp = _load(module, load_path, options.threads, delegates)
    except (RuntimeError, ValueError) as exc:
        if load_path == model_path:
            raise ModelError(f"{model_path}: {name} cannot load this model: {_first_line(exc)}") from None
        log.warning(
            "%s: %s cannot load its int8 copy (%s); running it as shipped", model_path, name, _first_line(exc)
        )
        load_path = model_path
        try:
            interp = _load(module, load_path, options.threads, delegates)
        except (RuntimeError, ValueError) as exc2:
            raise ModelError(f"{model_path}: {name} cannot load this model: {_first_line(exc2)}") from None
    if load_path != model_path:
        log.debug("%s runs through its int8 per-channel copy %s", model_path.name, load_path)
    probed = False
    if probe and load_path != model_path:
        try:
            probe_invoke(interp)
            probed = True
        except (RuntimeError, ValueError) as exc:
            log.warning(
                "%s: %s cannot run its int8 copy (%s); running it as shipped",
                model_path,
                name,
                _first_line(exc),
            )
            load_path = model_path
            try:
                interp = _load(module, load_path, options.threads, delegates)
            except (RuntimeError, ValueError) as exc2:
                raise ModelError(
                    f"{model_path}: {name} cannot load this model: {_first_line(exc2)}"
                ) from None
    if probe and not probed:
        try:
            probe_invoke(interp)
        except (RuntimeError, ValueError) as exc:
            msg = f"{model_path}: {name} loads this model but cannot run it (one invoke on a blank input failed: {_first_line(exc)})"
            if options.device == "edgetpu":
                raise EdgeTPUUnavailable(msg) from None
            raise ModelError(msg) from None
    return InterpreterHandle(
        interpreter=interp,
        runtime=name,
        device=options.device,
        model_path=model_path,
        info=info,
        kernel_path=load_path if load_path != model_path else None,
        input_details=adapter.inputs(interp),
        output_details=adapter.outputs(interp),
    )
