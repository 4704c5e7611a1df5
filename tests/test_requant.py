"""The int8 per-channel copy of a uint8 model: what the rewrite changes, that the copy computes what the original
does (head tensors on probes, persons on real frames), and how the copy is cached, refused and fallen back from."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from conftest import SHARED_MODELS, WALKING

from edgevision.config import load_config
from edgevision.detection.factory import runtime_options
from edgevision.inference import requant_cache
from edgevision.inference.backends import RuntimeOptions, open_interpreter
from edgevision.inference.requant import Converted, NotConvertible, schema, to_int8
from edgevision.inference.requant_cache import agreement, int8_copy

SSD_V1 = SHARED_MODELS / "ssd_mobilenet_v1_1.0_coco_quant_detect.tflite"
SSD_V2 = SHARED_MODELS / "ssd_mobilenet_v2_coco_quant_postprocess.tflite"
CONVERTIBLE = [
    SSD_V1,
    SSD_V2,
    SHARED_MODELS / "mobilenet_v1_0.25_128_quant.tflite",
    SHARED_MODELS / "mobilenet_v3_small_1.0_224_quant.tflite",  # hard-swish, squeeze-excitation MUL, ADD
]
S = schema()


def _graph(model: bytes) -> tuple[Any, Any]:
    m = S.ModelT.InitFromObj(S.Model.GetRootAsModel(model, 0))
    return m, m.subgraphs[0]


def _op(m: Any, op: Any) -> str:
    oc = m.operatorCodes[op.opcodeIndex]
    code = max(oc.builtinCode, oc.deprecatedBuiltinCode)
    return {v: k for k, v in vars(S.BuiltinOperator).items() if not k.startswith("_")}[code]


@pytest.fixture(scope="module")
def converted() -> dict[Path, Converted]:
    return {p: to_int8(p.read_bytes()) for p in CONVERTIBLE}


@pytest.mark.parametrize("path", CONVERTIBLE, ids=lambda p: p.stem)
def test_the_copy_keeps_the_interface_and_runs_int8_per_channel_inside(
    path: Path, converted: dict[Path, Converted]
) -> None:
    _, g0 = _graph(path.read_bytes())
    m1, g1 = _graph(converted[path].model)
    for a, b in [(g0.inputs, g1.inputs), (g0.outputs, g1.outputs)]:
        assert list(a) == list(b)
        for i in a:
            t0, t1 = g0.tensors[i], g1.tensors[i]
            assert (t0.type, list(t0.shape)) == (t1.type, list(t1.shape))
            if t0.quantization is not None and t0.quantization.scale is not None:
                assert list(t0.quantization.scale) == list(t1.quantization.scale)
                assert list(t0.quantization.zeroPoint) == list(t1.quantization.zeroPoint)
    convs = [op for op in g1.operators if _op(m1, op) in ("CONV_2D", "DEPTHWISE_CONV_2D")]
    assert convs
    for op in convs:
        w = g1.tensors[op.inputs[1]]
        assert w.type == S.TensorType.INT8
        channels = w.shape[0 if _op(m1, op) == "CONV_2D" else 3]
        assert len(w.quantization.scale) == channels and set(w.quantization.zeroPoint) == {0}
        raw = np.frombuffer(bytes(m1.buffers[w.buffer].data), np.int8)
        assert raw.min() >= -127  # int8 weights are symmetric

    def computed(t: Any) -> bool:
        data = m1.buffers[t.buffer].data if t.buffer else None
        return data is None or len(data) == 0

    uint8 = [i for i, t in enumerate(g1.tensors) if t.type == S.TensorType.UINT8 and computed(t)]
    # uint8 computed tensors only at the boundary: the input, uint8 outputs, what feeds the postprocess
    feeds = [i for op in g1.operators if _op(m1, op) == "CUSTOM" for i in op.inputs]
    assert set(uint8) <= {*g1.inputs, *g1.outputs, *feeds}
    c = converted[path]
    assert c.exact_channels / (c.exact_channels + c.requantized_channels) > 0.98


def test_exact_channels_keep_their_real_weights(converted: dict[Path, Converted]) -> None:
    """A channel whose centred uint8 weights fit int8 keeps the same real values, bit for bit."""
    m0, g0 = _graph(SSD_V1.read_bytes())
    m1, g1 = _graph(converted[SSD_V1].model)
    op0, op1 = g0.operators[0], next(op for op in g1.operators if _op(m1, op) == "CONV_2D")
    w0, w1 = g0.tensors[op0.inputs[1]], g1.tensors[op1.inputs[1]]
    q0 = np.frombuffer(bytes(m0.buffers[w0.buffer].data), np.uint8).reshape(w0.shape).astype(np.int32)
    q1 = np.frombuffer(bytes(m1.buffers[w1.buffer].data), np.int8).reshape(w1.shape).astype(np.int32)
    real0 = (q0 - w0.quantization.zeroPoint[0]) * w0.quantization.scale[0]
    real1 = q1 * np.asarray(w1.quantization.scale).reshape(-1, 1, 1, 1)
    exact = [c for c in range(q0.shape[0]) if np.abs(q0[c] - w0.quantization.zeroPoint[0]).max() <= 127]
    assert exact
    np.testing.assert_array_equal(real1[exact], real0[exact])
    others = [c for c in range(q0.shape[0]) if c not in exact]
    if others:  # requantized to their own range: within half a step of their new scale
        step = np.asarray(w1.quantization.scale)[others].reshape(-1, 1, 1, 1)
        assert np.all(np.abs(real1[others] - real0[others]) <= step / 2 + 1e-9)


@pytest.mark.parametrize("path", CONVERTIBLE, ids=lambda p: p.stem)
def test_the_copy_agrees_with_the_original_as_closely_as_the_original_with_itself(
    path: Path, converted: dict[Path, Converted]
) -> None:
    a = agreement(path.read_bytes(), converted[path].model)
    assert a.ok, a
    assert a.own_mean_steps > 0  # the bound is real: LiteRT's two kernel paths differ on the shipped file


def _broken(model: bytes) -> bytes:
    """``model``'s copy with one convolution's weights negated: it runs, and computes something else."""
    c = to_int8(model)
    m, g = _graph(c.model)
    op = [op for op in g.operators if _op(m, op) == "CONV_2D"][3]
    buf = m.buffers[g.tensors[op.inputs[1]].buffer]
    buf.data = (-np.frombuffer(bytes(buf.data), np.int8)).astype(np.int8).view(np.uint8)
    import flatbuffers

    b = flatbuffers.Builder(1 << 20)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def test_a_copy_computing_something_else_fails_the_check() -> None:
    a = agreement(SSD_V1.read_bytes(), _broken(SSD_V1.read_bytes()))
    assert not a.ok and a.mean_steps > 1, a


def _frames(n: int) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(WALKING))
    out = []
    for k in range(241 + n):
        ok, bgr = cap.read()
        assert ok
        if k >= 241:
            out.append(
                cv2.resize(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), (300, 300), interpolation=cv2.INTER_AREA)
            )
    return out


@pytest.mark.parametrize("path", [SSD_V1, SSD_V2], ids=lambda p: p.stem)
def test_the_copy_finds_the_same_persons_on_real_frames(path: Path, converted: dict[Path, Converted]) -> None:
    """Tie-aware person-box F1 of the copy against the original on the walking crowd (measured 0.98 for V1 and
    0.97 for V2; the original against itself with ±1 pixel noise scores 0.97 / 0.96)."""
    from edgevision.distill.gate import compare
    from edgevision.distill.teacher import Teacher

    frames = _frames(30)
    ours, theirs = Teacher(path), Teacher(converted[path].model)
    a = compare(
        [ours.detections(ours.run(x)) for x in frames],
        [theirs.detections(theirs.run(x)) for x in frames],
        0.5,
        0.5,
        tolerance=0,
    )
    assert a.teacher_boxes > 300
    assert a.f1 >= 0.95 and a.iou_median >= 0.95, a


def _local(tmp_path: Path, src: Path = SSD_V1) -> Path:
    dst = tmp_path / "models" / src.name
    dst.parent.mkdir(exist_ok=True)
    dst.write_bytes(src.read_bytes())
    return dst


def test_the_copy_is_made_once_named_by_the_source_and_remade_when_tampered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, cache = _local(tmp_path), tmp_path / "derived"
    copy = int8_copy(model, cache)
    assert copy is not None and copy.parent == cache and copy.is_file()
    meta = json.loads(copy.with_suffix(".json").read_text())
    assert meta["verified"] and meta["source_sha256"] in {meta["source_sha256"]}
    assert copy.name.startswith(model.stem + "." + meta["source_sha256"][:16])

    def no_rewrite(model: bytes) -> Converted:
        raise AssertionError("rewritten again")

    monkeypatch.setattr(requant_cache, "to_int8", no_rewrite)
    assert int8_copy(model, cache) == copy  # cached: no rewrite
    monkeypatch.undo()
    data = bytearray(copy.read_bytes())
    data[-100] ^= 0xFF
    copy.write_bytes(bytes(data))
    assert int8_copy(model, cache) == copy  # tampered: remade
    assert requant_cache.sha256_file(copy) == json.loads(copy.with_suffix(".json").read_text())["sha256"]
    model.write_bytes(SSD_V2.read_bytes())  # another model under the same name meets no stale copy
    other = int8_copy(model, cache)
    assert other is not None and other != copy


def test_a_copy_that_disagrees_is_not_used_and_not_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    model, cache = _local(tmp_path), tmp_path / "derived"
    monkeypatch.setattr(requant_cache, "to_int8", lambda m: Converted(_broken(m), 1, 0))
    with caplog.at_level(logging.WARNING):
        assert int8_copy(model, cache) is None
    assert "runs as shipped" in caplog.text and "differ" in caplog.text
    assert not list(cache.glob("*.tflite"))
    (meta,) = cache.glob("*.json")
    assert json.loads(meta.read_text())["verified"] is False

    def no_rewrite(model: bytes) -> Converted:
        raise AssertionError("retried")

    monkeypatch.setattr(requant_cache, "to_int8", no_rewrite)
    assert int8_copy(model, cache) is None


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("vww_mobilenet_v1_0.25_96_int8.tflite", "int8 already"),
        ("face_detection_short_range.tflite", "input is not uint8"),
        ("face_landmark.tflite", "input is not uint8"),
    ],
)
def test_models_the_rewrite_does_not_know_run_as_shipped(name: str, reason: str, tmp_path: Path) -> None:
    with pytest.raises(NotConvertible, match=reason):
        to_int8((SHARED_MODELS / name).read_bytes())
    assert int8_copy(_local(tmp_path, SHARED_MODELS / name), tmp_path / "derived") is None
    assert not (tmp_path / "derived").exists()


def test_a_rewrite_that_crashes_leaves_the_model_as_shipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(model: bytes) -> Converted:
        raise IndexError("malformed flatbuffer")

    monkeypatch.setattr(requant_cache, "to_int8", crash)
    assert int8_copy(_local(tmp_path), tmp_path / "derived") is None


def test_the_runtime_loads_the_copy_unless_told_to_run_files_as_shipped(tmp_path: Path) -> None:
    model = _local(tmp_path)
    cfg = load_config(None, {"models.dir": str(tmp_path / "models")})
    handle = open_interpreter(model, runtime_options(cfg))
    assert handle.model_path == model
    assert handle.kernel_path is not None and handle.kernel_path.parent == tmp_path / "models" / "derived"
    as_shipped = load_config(None, {"models.dir": str(tmp_path / "models"), "runtime.kernels": "as-shipped"})
    assert open_interpreter(model, runtime_options(as_shipped)).kernel_path is None
    assert open_interpreter(model, RuntimeOptions()).kernel_path is None  # no cache given: as shipped


def test_a_copy_the_runtime_cannot_load_falls_back_to_the_file_as_shipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from edgevision.inference import backends

    garbage = tmp_path / "garbage.int8.tflite"
    garbage.write_bytes(b"TFL3" * 100)
    monkeypatch.setattr(backends, "int8_copy", lambda model, cache: garbage)
    with caplog.at_level(logging.WARNING):
        handle = open_interpreter(SSD_V1, RuntimeOptions(int8_cache=tmp_path))
    assert handle.kernel_path is None and "cannot load its int8 copy" in caplog.text
    handle.run(np.zeros(handle.input_shape, np.uint8))


def _pack(m: Any) -> bytes:
    import flatbuffers

    b = flatbuffers.Builder(1 << 20)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def test_a_copy_that_moves_one_class_fails_the_check(converted: dict[Path, Converted]) -> None:
    """Every person logit lowered by 0.3 (a person at 0.55 scored 0.48): invisible in the saturated scores the
    probe pictures give, so the check compares each class column of the logits too."""
    m, g = _graph(converted[SSD_V1].model)
    for op in g.operators:
        if _op(m, op) != "CONV_2D" or b"ClassPredictor" not in (g.tensors[op.inputs[1]].name or b""):
            continue
        bt = g.tensors[op.inputs[2]]
        bias = np.frombuffer(bytes(np.asarray(m.buffers[bt.buffer].data, np.uint8)), np.int32).copy()
        person = np.arange(1, len(bias), 91)  # 91 columns per anchor, person is column 1
        bias[person] -= np.rint(0.3 / np.asarray(bt.quantization.scale)[person]).astype(np.int32)
        m.buffers[bt.buffer].data = np.frombuffer(bias.tobytes(), np.uint8)
    a = agreement(SSD_V1.read_bytes(), _pack(m))
    assert not a.ok and a.bias_steps > 1, a
    assert agreement(SSD_V1.read_bytes(), converted[SSD_V1].model).ok


def _shared(what: str) -> bytes:
    """The MobileNet V1 0.25 classifier with two 1x1 convolutions of the same shape sharing their weight buffer,
    their weight tensor, or their bias buffer (what a converter's deduplication or weight tying makes)."""
    m, g = _graph((SHARED_MODELS / "mobilenet_v1_0.25_128_quant.tflite").read_bytes())
    pw = [
        op
        for op in g.operators
        if _op(m, op) == "CONV_2D" and list(g.tensors[op.inputs[1]].shape)[1:3] == [1, 1]
    ]
    a, b = next(
        (a, b)
        for a in pw
        for b in pw
        if a is not b and list(g.tensors[a.inputs[1]].shape) == list(g.tensors[b.inputs[1]].shape)
    )
    if what == "weight buffer":
        g.tensors[b.inputs[1]].buffer = g.tensors[a.inputs[1]].buffer
        g.tensors[b.inputs[1]].quantization = g.tensors[a.inputs[1]].quantization
    elif what == "weight tensor":
        b.inputs = [int(b.inputs[0]), int(a.inputs[1]), int(b.inputs[2])]
    else:
        g.tensors[b.inputs[2]].buffer = g.tensors[a.inputs[2]].buffer
    return _pack(m)


@pytest.mark.parametrize("what", ["weight buffer", "weight tensor", "bias buffer"])
def test_shared_constants_are_rewritten_once_each(what: str) -> None:
    model = _shared(what)
    c = to_int8(model)
    a = agreement(model, c.model)
    assert a.ok, a
    m0, g0 = _graph(model)
    m1, g1 = _graph(c.model)

    def biases(m: Any, g: Any) -> list[np.ndarray]:
        """The real bias each convolution adds: the int32 values at input scale x weight scale (what the kernel
        uses, whatever scale the bias tensor itself records)."""
        out = []
        for op in g.operators:
            if _op(m, op) in ("CONV_2D", "DEPTHWISE_CONV_2D"):
                t, w, x = (g.tensors[i] for i in op.inputs[:3][::-1])
                q = np.frombuffer(bytes(np.asarray(m.buffers[t.buffer].data, np.uint8)), np.int32)
                out.append(q * x.quantization.scale[0] * np.asarray(w.quantization.scale))
        return out

    for b0, b1 in zip(
        biases(m0, g0), biases(m1, g1), strict=True
    ):  # every conv adds the bias it added before
        np.testing.assert_allclose(b1, b0, rtol=0, atol=1e-3 * np.abs(b0).max() + 1e-12)


def test_a_cache_dir_that_cannot_be_written_still_gives_the_copy_once_per_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    model = _local(tmp_path)
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("a file where the cache dir should be")
    with caplog.at_level(logging.WARNING):
        copy = int8_copy(model, blocked / "derived")
    assert copy is not None and copy.is_file() and "cannot write its int8 copy" in caplog.text

    def no_rewrite(model: bytes) -> Converted:
        raise AssertionError("rewritten again in the same process")

    monkeypatch.setattr(requant_cache, "to_int8", no_rewrite)
    assert int8_copy(model, blocked / "derived") == copy


def test_a_check_that_did_not_run_is_retried_once_then_remembered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, cache = _local(tmp_path), tmp_path / "derived"
    calls = []

    def failing(original: bytes, copy: bytes) -> Any:
        calls.append(1)
        raise RuntimeError("out of memory")

    monkeypatch.setattr(requant_cache, "agreement", failing)
    assert int8_copy(model, cache) is None
    assert int8_copy(model, cache) is None  # retried once: it may have been the machine
    assert int8_copy(model, cache) is None  # not again
    assert len(calls) == 2
    (meta,) = cache.glob("*.json")
    record = json.loads(meta.read_text())
    assert record["kind"] == "did not run" and record["attempts"] == 2 and record["runtime"]


def test_nothing_the_copy_raises_stops_the_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(original: bytes, copy: bytes) -> Any:
        raise ImportError("a schema without its interpreter")

    monkeypatch.setattr(requant_cache, "agreement", broken)
    assert int8_copy(_local(tmp_path), tmp_path / "derived") is None


def test_a_copy_that_loads_but_cannot_run_falls_back_to_the_file_as_shipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from edgevision.inference import backends

    real = backends.probe_invoke
    calls = []

    def first_fails(interp: Any) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("Node number 3 (CONV_2D) failed to invoke")
        real(interp)

    monkeypatch.setattr(backends, "probe_invoke", first_fails)
    with caplog.at_level(logging.WARNING):
        handle = open_interpreter(_local(tmp_path), RuntimeOptions(int8_cache=tmp_path / "derived"))
    assert handle.kernel_path is None and "cannot run its int8 copy" in caplog.text and len(calls) == 2
