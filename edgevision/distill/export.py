"""Full-integer TFLite export of a student, with the teacher's ``TFLite_Detection_PostProcess`` grafted on.

The converter quantizes every op to int8 (per-channel weights) from representative frames, with uint8 input and
outputs like the catalog's quantized SSDs. The graft then appends to the flatbuffer: the teacher's anchors tensor
(uint8 constant, same layout), the custom op with the teacher's options but ``num_classes = 1`` (the student
predicts person only; class id 0 = person in the teacher's labels) and its four float outputs named like the TF1
export (``TFLite_Detection_PostProcess``, ``:1``, ``:2``, ``:3``), so the installed file runs through the same
detector, scheduler and resolution-rung derivation as a catalog SSD.

The distillation converts in a child process (:func:`quantize_in_subprocess`): the converter has aborted the whole
process with ``free(): double free`` after training, which must not lose the training or leave half a state.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from edgevision.distill import require_tf
from edgevision.errors import ModelError
from edgevision.inference.tflite_file import POSTPROCESS_CUSTOM_OP


def calibration_frames(frames: np.ndarray, count: int = 64, seed: int = 0) -> np.ndarray:
    """Representative frames plus one full-range ramp, so the uint8 input maps pixel p to p (scale 1, zero 0)."""
    rng = np.random.default_rng(seed)
    pick = frames[rng.choice(len(frames), size=min(count, len(frames)), replace=False)]
    size = frames.shape[1]
    ramp = np.tile(np.linspace(0, 255, size, dtype=np.float32)[None, :, None], (size, 1, 3))
    return np.concatenate([ramp[None].round().astype(np.uint8), pick])


def quantize(model: Any, frames: np.ndarray) -> bytes:
    """Convert the float student to a full-integer TFLite model (raw outputs: encodings and person scores)."""
    return _convert(model, calibration_frames(frames))


def _convert(model: Any, calibration: np.ndarray) -> bytes:
    tf = require_tf()
    import keras

    boxes, logits = model.outputs
    scores = keras.layers.Activation("sigmoid", name="person_scores")(logits)
    wrapped = keras.Model(model.inputs, [boxes, scores], name=f"{model.name}_export")

    def representative() -> Iterator[list[np.ndarray]]:
        for f in calibration:
            yield [f[np.newaxis].astype(np.float32)]

    conv = tf.lite.TFLiteConverter.from_keras_model(wrapped)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.uint8
    conv.inference_output_type = tf.uint8
    return bytes(conv.convert())


def quantize_in_subprocess(
    model: Any, student: str, backbone: Path, size: int, frames: np.ndarray, attempts: int = 3
) -> bytes:
    """:func:`quantize` in a fresh process (the student rebuilt there from its weights), retried if it aborts.

    The converter has aborted with ``free(): double free`` after writing its flatbuffer (V3-Small, TF 2.21), in a
    process that had trained the student and run LiteRT interpreters; the same weights converted in a fresh
    process. A crash there takes down only the child, so it is retried, and the training is never lost.
    """
    with tempfile.TemporaryDirectory(prefix="edgevision-convert-") as tmp:
        d = Path(tmp)
        model.save_weights(d / _WEIGHTS)
        np.save(d / _CALIBRATION, calibration_frames(frames))
        cmd = [sys.executable, "-m", "edgevision.distill.export", student, str(backbone), str(size), str(d)]
        err = ""
        for _ in range(attempts):
            failed = _run_child(cmd, CONVERT_TIMEOUT_S)
            out = d / _OUTPUT
            if failed is None and out.exists():
                return out.read_bytes()
            err = failed or "exit 0 without a model"
        raise ModelError(f"TFLite conversion of the student failed {attempts} times ({err})")


CONVERT_TIMEOUT_S = 3600  # one conversion takes about a minute on 2 cores


def _run_child(cmd: list[str], timeout: float) -> str | None:
    """Run a child process of this module: None when it succeeded, else how it failed (exit status or signal,
    or running past ``timeout``, when it is killed) with the last lines of its stderr."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        how = f"did not finish within {timeout:g} s (killed)"
    else:
        if proc.returncode == 0:
            return None
        err, code = proc.stderr, proc.returncode
        how = f"killed by signal {-code}" if code < 0 else f"exit {code}"
    return f"{how}: " + " | ".join(err.strip().splitlines()[-3:])


_WEIGHTS, _CALIBRATION, _OUTPUT = "student.weights.h5", "calibration.npy", "student.tflite"


def _convert_main(argv: list[str]) -> int:
    """Child of :func:`quantize_in_subprocess`: ``STUDENT BACKBONE SIZE DIR`` → ``DIR/student.tflite``."""
    from edgevision.distill.students import build_student, spec_for

    student, backbone, size, work = argv[0], Path(argv[1]), int(argv[2]), Path(argv[3])
    model = build_student(spec_for(student), backbone, size)
    model.load_weights(work / _WEIGHTS)
    data = _convert(model, np.load(work / _CALIBRATION))
    tmp = work / (_OUTPUT + ".part")
    tmp.write_bytes(data)
    tmp.replace(work / _OUTPUT)
    return 0


def _flex_options(teacher_options: dict[str, Any], num_classes: int) -> bytes:
    import flatbuffers.flexbuffers as flex

    opts = dict(teacher_options)
    opts["num_classes"] = num_classes
    return bytes(flex.Dumps(opts))


def graft_postprocess(
    student: bytes, anchors_q: np.ndarray, anchors_quant: tuple[float, int], teacher_options: dict[str, Any]
) -> bytes:
    """Append the postprocess op to a converted student (see the module docstring for the contract)."""
    from ai_edge_litert import schema_py_generated as schema

    from edgevision.scheduler.derive import _pack

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(student, 0))
    sg = model.subgraphs[0]
    n_anchors = int(anchors_q.shape[0])
    box = cls = None
    for t in sg.outputs:
        shape = [int(d) for d in sg.tensors[t].shape]
        if shape == [1, n_anchors, 4]:
            box = int(t)
        elif shape == [1, n_anchors, 1]:
            cls = int(t)
    if box is None or cls is None:
        raise ModelError(f"student outputs do not match {n_anchors} anchors: cannot graft the postprocess op")
    for t in (box, cls):
        if int(sg.tensors[t].type) != schema.TensorType.UINT8:
            raise ModelError("student outputs are not uint8: cannot graft the postprocess op")

    def add_buffer(data: bytes | None) -> int:
        buf = schema.BufferT()
        if data is not None:
            buf.data = np.frombuffer(data, dtype=np.uint8)
        model.buffers.append(buf)
        return len(model.buffers) - 1

    def add_tensor(name: str, shape: list[int], ttype: int, data: bytes | None = None) -> int:
        t = schema.TensorT()
        t.name = name.encode()
        t.shape = np.array(shape, dtype=np.int32)
        t.type = ttype
        t.buffer = add_buffer(data)
        sg.tensors.append(t)
        return len(sg.tensors) - 1

    anchors = add_tensor(
        "anchors", [n_anchors, 4], schema.TensorType.UINT8, anchors_q.astype(np.uint8).tobytes()
    )
    q = schema.QuantizationParametersT()
    q.scale = np.array([anchors_quant[0]], dtype=np.float32)
    q.zeroPoint = np.array([anchors_quant[1]], dtype=np.int64)
    sg.tensors[anchors].quantization = q
    k = int(teacher_options.get("max_detections", 10))
    name = POSTPROCESS_CUSTOM_OP
    outs = [
        add_tensor(name, [1, k, 4], schema.TensorType.FLOAT32),
        add_tensor(f"{name}:1", [1, k], schema.TensorType.FLOAT32),
        add_tensor(f"{name}:2", [1, k], schema.TensorType.FLOAT32),
        add_tensor(f"{name}:3", [1], schema.TensorType.FLOAT32),
    ]
    code = schema.OperatorCodeT()
    code.builtinCode = schema.BuiltinOperator.CUSTOM
    code.deprecatedBuiltinCode = schema.BuiltinOperator.CUSTOM
    code.customCode = name.encode()
    code.version = 1
    model.operatorCodes.append(code)
    op = schema.OperatorT()
    op.opcodeIndex = len(model.operatorCodes) - 1
    op.inputs = np.array([box, cls, anchors], dtype=np.int32)
    op.outputs = np.array(outs, dtype=np.int32)
    op.customOptions = np.frombuffer(_flex_options(teacher_options, 1), dtype=np.uint8)
    op.customOptionsFormat = schema.CustomOptionsFormat.FLEXBUFFERS
    sg.operators.append(op)
    sg.outputs = np.array(outs, dtype=np.int32)
    return _pack(model)


def input_is_pixels(model_bytes: bytes) -> bool:
    """True when the uint8 input takes raw pixels (scale 1, zero point 0), as the detector feeds them."""
    from edgevision.inference import adapter

    d = adapter.inputs(adapter.load(model_bytes, threads=1))[0]
    scale, zero = d["quantization"]
    return bool(d["dtype"] == np.uint8 and abs(scale - 1.0) < 1e-3 and zero == 0)


def check_runs_in_subprocess(model_bytes: bytes) -> None:
    """Load the exported student (XNNPACK, then LiteRT's own kernels) and invoke it once, in a fresh process.

    A model LiteRT cannot run is then a :class:`ModelError` (exit 78, nothing installed, the file kept for a bug
    report) instead of a crash of the distillation. (LiteRT once aborted a distillation with ``free(): double
    free`` in ``allocate_tensors`` loading a V3-Small student in the process that trained it; the same settings
    then ran clean, so that abort came from the process's state, which this check does not prevent.)
    """
    with tempfile.TemporaryDirectory(prefix="edgevision-check-") as tmp:
        path = Path(tmp) / "student.tflite"
        path.write_bytes(model_bytes)
        cmd = [sys.executable, "-m", "edgevision.distill.export", "--check", str(path)]
        failed = _run_child(cmd, CHECK_TIMEOUT_S)
        if failed is None:
            return
        kept = Path(tempfile.mkdtemp(prefix="edgevision-student-")) / "student.tflite"
        shutil.copyfile(path, kept)
    raise ModelError(
        f"the converted student does not run in LiteRT ({failed}); nothing is installed; "
        f"the file is kept at {kept} for a bug report"
    )


CHECK_TIMEOUT_S = 300


def _check_main(path: Path) -> int:
    """Child of :func:`check_runs_in_subprocess`: load, allocate and invoke ``path`` under both kernel sets."""
    from edgevision.inference import adapter

    for builtin in (False, True):
        interp = adapter.load(str(path), threads=1, builtin_kernels=builtin)
        d = adapter.inputs(interp)[0]
        interp.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
        interp.invoke()
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--check"]:
        raise SystemExit(_check_main(Path(sys.argv[2])))
    raise SystemExit(_convert_main(sys.argv[1:]))
