"""The latency scheduler: derived rungs, cadence carry, the person gate, and real CPU load.

The controller's synthetic traces are in test_scheduler_controller.py, the ladder in test_scheduler_ladder.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import EDGEVISION, IMAGES, WALKING, read_image, run_cli

from edgevision.catalog.resolve import ResolvedModel, resolve_model
from edgevision.config import DetectorConfig, load_config
from edgevision.detection.detector import Detector
from edgevision.errors import ModelError
from edgevision.inference.backends import RuntimeOptions, open_interpreter
from edgevision.results.detection import BBox, Detection
from edgevision.results.frame import Frame
from edgevision.scheduler.carry import BoxCarrier
from edgevision.scheduler.controller import ControllerSettings
from edgevision.scheduler.derive import derive, ensure_derived


def test_box_carrier_extrapolates_tracks() -> None:
    c = BoxCarrier()
    d0 = Detection("person", 0, 0.9, BBox(0.1, 0.1, 0.2, 0.4))
    d1 = Detection("person", 0, 0.9, BBox(0.12, 0.1, 0.22, 0.4))
    c.update(0.0, [d0])
    c.update(0.1, [d1])
    (p,) = c.predict(0.15)
    assert p.box.xmin == pytest.approx(0.13) and p.box.xmax == pytest.approx(0.23)
    assert c.predict(2.0) == []  # too old to carry


def test_box_carrier_never_carries_a_box_off_the_frame_or_inside_out() -> None:
    """A carried box is one a detector could have given: inside the frame, xmin <= xmax, ymin <= ymax. A person
    leaving at the right edge is not carried as a zero-width box pinned to it (still a "person" to the events),
    and a box that shrank between two detections is not extrapolated past zero into an inverted one."""
    c = BoxCarrier()
    c.update(0.0, [Detection("person", 0, 0.9, BBox(0.80, 0.1, 0.98, 0.5))])
    c.update(0.1, [Detection("person", 0, 0.9, BBox(0.86, 0.1, 1.0, 0.5))])  # walking out, cut by the edge
    assert c.predict(0.2) != []  # still partly in view
    assert c.predict(0.4) == []  # its left edge past the right one: nothing to carry
    c = BoxCarrier()
    c.update(0.0, [Detection("person", 0, 0.9, BBox(0.40, 0.2, 0.60, 0.6))])
    c.update(0.1, [Detection("person", 0, 0.9, BBox(0.45, 0.25, 0.55, 0.55))])  # shrank: IoU 0.375
    for ts in (0.15, 0.2, 0.3, 0.5):
        for d in c.predict(ts):
            b = d.box
            assert b.xmin <= b.xmax and b.ymin <= b.ymax and b.area > 0, (ts, b)


@pytest.fixture(scope="module")
def v1(models_dir: Path) -> ResolvedModel:
    return resolve_model("ssd_mobilenet_v1_coco_quant", models_dir)


def _image(name: str) -> np.ndarray:
    return read_image(IMAGES / name)


def _persons(path: Path, labels: dict[int, str], image: str) -> list[Detection]:
    det = Detector(
        open_interpreter(path, RuntimeOptions(runtime="litert")), labels, DetectorConfig(threshold=0.5)
    )
    dets, _ = det.detect(_image(image))
    return [d for d in dets if d.label == "person"]


def test_derived_at_native_size_equals_original(v1: ResolvedModel, tmp_path: Path) -> None:
    path = ensure_derived(v1.path, 300, tmp_path)
    for image in ["squat.bmp", "posenet_test_image.bmp", "grace_hopper.bmp", "kite_and_cold.jpg"]:
        assert _persons(path, v1.labels, image) == _persons(v1.path, v1.labels, image)


@pytest.mark.parametrize("size", [256, 224, 192, 160, 128])
def test_derived_rungs_still_find_the_persons(v1: ResolvedModel, tmp_path: Path, size: int) -> None:
    path = ensure_derived(v1.path, size, tmp_path)
    meta = json.loads(path.with_suffix(".json").read_text())
    assert (
        meta["size"] == size
        and meta["anchors_regenerated"]
        and meta["anchor_size_scale"] == pytest.approx(300 / size)
    )
    for image, count in [("squat.bmp", 1), ("posenet_test_image.bmp", 2)]:
        ref = _persons(v1.path, v1.labels, image)
        got = _persons(path, v1.labels, image)
        assert len(got) >= count
        for r in ref:  # every original person has a close box at the lower resolution
            assert max(r.box.iou(g.box) for g in got) > 0.45, (image, size)
    assert not _persons(path, v1.labels, "cat.bmp")


def test_derived_cache_is_reused_and_rederived_when_source_changes(v1: ResolvedModel, tmp_path: Path) -> None:
    src = tmp_path / "src.tflite"
    src.write_bytes(v1.path.read_bytes())
    cache = tmp_path / "cache"
    p = ensure_derived(src, 160, cache)
    mtime = p.stat().st_mtime_ns
    assert ensure_derived(src, 160, cache).stat().st_mtime_ns == mtime
    v2 = resolve_model("ssd_mobilenet_v2_coco_quant", v1.path.parent)
    src.write_bytes(v2.path.read_bytes())  # the source model was replaced
    p2 = ensure_derived(src, 160, cache)
    meta = json.loads(p2.with_suffix(".json").read_text())
    assert meta["source_sha256"] == hashlib.sha256(v2.path.read_bytes()).hexdigest()
    assert p2.stat().st_mtime_ns != mtime


def test_derived_rungs_of_v2(models_dir: Path, tmp_path: Path) -> None:
    v2 = resolve_model("ssd_mobilenet_v2_coco_quant", models_dir)
    data, meta = derive(v2.path, 192)
    assert meta["feature_maps"][0] == [12, 12] or meta["feature_maps"][0] == (12, 12)
    path = tmp_path / "v2_192.tflite"
    path.write_bytes(data)
    assert len(_persons(path, v2.labels, "posenet_test_image.bmp")) >= 2


def test_a_graph_that_cannot_run_at_another_side_is_a_model_error(v1: ResolvedModel, tmp_path: Path) -> None:
    # The squeeze reshape retargeted to a rank-2 [anchors * 4] shape: no longer recognised as grid-dependent,
    # so it cannot follow the grid; derivation must say so as a ModelError (the ladder then keeps the native
    # side only), never crash with the interpreter's RuntimeError.
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(v1.path.read_bytes(), 0))
    sg = model.subgraphs[0]
    for op in sg.operators:
        opts = op.builtinOptions
        if getattr(opts, "newShape", None) is not None and list(opts.newShape) == [1, 1917, 4]:
            opts.newShape = np.array([1917 * 4], np.int32)
            buf = schema.BufferT()
            buf.data = np.frombuffer(np.array([1917 * 4], np.int32).tobytes(), np.uint8)
            model.buffers.append(buf)
            sg.tensors[op.inputs[1]].buffer = len(model.buffers) - 1
            sg.tensors[op.inputs[1]].shape = np.array([1], np.int32)
    builder = flatbuffers.Builder(1 << 20)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    src = tmp_path / "odd.tflite"
    src.write_bytes(bytes(builder.Output()))
    with pytest.raises(ModelError, match="cannot run the graph at 192x192"):
        derive(src, 192)


@pytest.mark.tflite_runtime
@pytest.mark.skipif(not os.environ.get("EDGEVISION_TFLITE_PYTHON"), reason="needs EDGEVISION_TFLITE_PYTHON")
def test_derived_rung_runs_in_tflite_runtime(v1: ResolvedModel, env: dict[str, str], tmp_path: Path) -> None:
    path = ensure_derived(v1.path, 160, tmp_path)
    labels = tmp_path / "labels.txt"
    labels.write_text((v1.path.parent / "ssd_mobilenet_v1_labelmap.txt").read_text())
    r = subprocess.run(
        [
            os.environ["EDGEVISION_TFLITE_PYTHON"],
            "-m",
            "edgevision",
            "detect",
            "--json",
            "--runtime",
            "tflite-runtime",
            "--model",
            str(path),
            "--labels",
            str(labels),
            str(IMAGES / "squat.bmp"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert any(d["label"] == "person" for d in json.loads(r.stdout)["detections"])


def test_run_with_an_impossible_budget_starts_on_the_cheapest_rung(
    env: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "d.jsonl"
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "scheduler:\n  enabled: true\n  budget_ms: 0.5\n  cooldown_s: 0\n  sizes: [300, 160]\n  cadences: [2]\n"
        "  window: 10\n  down_after: 3\n"
        f"  derived_dir: {tmp_path / 'derived'}\n"
    )
    r = run_cli(
        [
            "run",
            "--config",
            str(cfg),
            "--video",
            str(WALKING),
            "--detections",
            str(out),
            "--max-frames",
            "80",
        ],
        env,
    )
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    rungs = [row["rung"] for row in rows]
    # Nothing fits 0.5 ms: the start-up profile puts it on the cheapest rung at once, and it stays there.
    assert set(rungs) == {"ssd_mobilenet_v1_coco_quant@160/k2"}
    assert not [row for row in rows if "switch" in row]
    assert any(row.get("carried") for row in rows) and any(not row.get("carried") for row in rows)
    assert all(row["model"] == row["rung"].split("/")[0] for row in rows)
    assert "scheduler:" in r.stderr and "switch(es)" in r.stderr


def test_bench_models_writes_a_profile_the_scheduler_uses(env: dict[str, str], tmp_path: Path) -> None:
    prof = tmp_path / "profile.json"
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"scheduler:\n  sizes: [300, 192]\n  cadences: [2]\n  derived_dir: {tmp_path / 'derived'}\n"
    )
    r = run_cli(
        [
            "bench",
            "models",
            "--config",
            str(cfg),
            "--video",
            str(WALKING),
            "--frames",
            "20",
            "--invokes",
            "5",
            "--out",
            str(prof),
        ],
        env,
    )
    assert r.returncode == 0, r.stderr
    data = json.loads(prof.read_text())
    names = [x["name"] for x in data["rungs"]]
    assert names[0] == "ssd_mobilenet_v1_coco_quant@300" and names[-1].endswith("/k2")
    assert all(x["agreement"] is not None for x in data["rungs"]) and data["rungs"][0]["agreement"] == 1.0
    # on the walking crowd every rung sees a person in every frame; the person boxes tell the rungs apart
    f1 = [x["box_f1"] for x in data["rungs"]]
    assert f1[0] == 1.0 and all(0.0 < v < 1.0 for v in f1[1:]), f1
    # Ordered by expected quality, whatever the (noisy) measured costs: 300 px, 192 px, then the cadence rung.
    assert names == [f"ssd_mobilenet_v1_coco_quant@{s}" for s in (300, 192)] + [
        "ssd_mobilenet_v1_coco_quant@192/k2"
    ]
    assert data["kernels"] == "int8" and data["threads"] == load_config(None).runtime.threads


@pytest.mark.parametrize(
    ("saved", "used"),
    [
        ({"threads": 2, "kernels": "int8"}, True),
        ({"threads": 2, "kernels": "as-shipped"}, False),  # other kernels, other timings
        ({"threads": 1, "kernels": "int8"}, False),
        ({"threads": 2}, True),  # saved before kernels were recorded: not held against it
        ({}, True),
        # the runtime `auto` resolves to here, or another one (tflite-runtime times quantized models several
        # times slower than LiteRT: `bench models` recorded it, and a run read the profile whatever it said)
        ({"threads": 2, "kernels": "int8", "runtime": "this"}, True),
        ({"threads": 2, "kernels": "int8", "runtime": "other"}, False),
    ],
)
def test_a_saved_profile_is_used_only_under_the_conditions_it_was_timed_in(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, saved: dict[str, object], used: bool
) -> None:
    from edgevision.inference.backends import BACKENDS, runtime_name
    from edgevision.scheduler.ladder import RungProfile, load_profile, profile_conditions, save_profile

    here = runtime_name("auto")
    if "runtime" in saved:
        other = next(name for name in BACKENDS if name != here)
        saved = {**saved, "runtime": here if saved["runtime"] == "this" else other}
    rung = RungProfile("m@300", 300, 1, 10.0, 12.0, 5.0)
    path = tmp_path / "profile.json"
    save_profile(path, [rung], saved)
    cfg = load_config(None, {"runtime.threads": 2, "runtime.kernels": "int8"})
    got = load_profile(path, profile_conditions(cfg))
    assert got == ({"m@300": rung} if used else {})
    assert ("ignored" in caplog.text) is not used


@pytest.mark.slow
def test_real_cpu_load_steps_down_then_up(env: dict[str, str], tmp_path: Path, models_dir: Path) -> None:
    """Realtime replay while CPU hogs run: the scheduler steps down under load and back up after it."""
    # The budget is 2x the full model's frame latency in this very pipeline on this machine now: a realtime
    # replay's median total (preprocessing, invoke, parsing), which is what the controller holds to the budget.
    # The invoke alone (1.4-2x before) left out what the pipeline adds: on a fast CPU that is a third of a frame,
    # so with one other busy process the run never climbed back, and a fixed floor of 20 ms was 5.5x the cost
    # of a 3.6 ms model, which the hogs never reached. At 2x, a rung above the cheapest fits again as soon as
    # the busy processes leave (even beside another one: the calibration ran beside it too).
    calib = tmp_path / "calib.jsonl"
    r = run_cli(
        ["run", "--video", str(WALKING), "--realtime", "--max-frames", "80", "--detections", str(calib)],
        {**env, "EDGEVISION_MODELS_DIR": str(models_dir)},
    )
    assert r.returncode == 0, r.stderr
    totals = [json.loads(line)["latency_ms"]["total"] for line in calib.read_text().splitlines()[20:]]
    budget = max(2.0 * float(np.median(totals)), 5.0)
    out = tmp_path / "d.jsonl"
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"scheduler:\n  enabled: true\n  budget_ms: {budget:.1f}\n  stable_s: 2\n  cooldown_s: 1\n"
        f"  cadences: []\n  derived_dir: {tmp_path / 'derived'}\n"
    )
    # Eight plays of the clip (about 109 s): the step down and the climb back after the load are each awaited
    # with a deadline, not hoped to fit in one 13.6-s play while other work on the machine may hold a core.
    video = _looped(WALKING, tmp_path / "walking8.mp4", 8)
    args = [
        *EDGEVISION,
        "run",
        "--config",
        str(cfg),
        "--video",
        str(video),
        "--realtime",
        "--detections",
        str(out),
    ]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def wait_for(done: Callable[[list[str]], bool], seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not done(_directions(out)[1] if out.exists() else []):
            time.sleep(0.1)
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""

    try:
        wait_for(lambda d: bool(d), 30)  # the first climb; the load arrives after it
        # six busy processes per core run until the step down is seen (or 30 s), then leave: the pipeline's
        # threads then get about a quarter of the cores, well past the budget's 2x
        hogs = [
            subprocess.Popen([sys.executable, "-c", "while True: pass"])
            for _ in range(6 * (os.cpu_count() or 2))
        ]
        try:
            wait_for(lambda d: "down" in d, 30)
        finally:
            for h in hogs:
                h.kill()
                h.wait(timeout=10)
        wait_for(lambda d: "down" in d and "up" in d[d.index("down") :], 45)
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    rows = [json.loads(line) for line in out.read_text().splitlines() if line.endswith("}")]
    switches = [row["switch"] for row in rows if "switch" in row]
    why = f"budget {budget:.1f} ms; " + "; ".join(  # the reasons in full, should it fail
        f"{s['from'].rsplit('@', 1)[-1]}->{s['to'].rsplit('@', 1)[-1]}: {s['reason']}" for s in switches
    )
    _, directions = _directions(out)
    assert directions[0] == "up", why  # the first climb
    assert "down" in directions, why
    first_down = directions.index("down")
    assert "up" in directions[first_down:], why


def _directions(path: Path) -> tuple[list[tuple[str, str]], list[str]]:
    """The switches of a ``--detections`` file so far, and each one's direction on the 300…128 px ladder."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]
    moves = [(row["switch"]["from"], row["switch"]["to"]) for row in rows if "switch" in row]
    sizes = {"ssd_mobilenet_v1_coco_quant@" + str(s): i for i, s in enumerate([300, 256, 224, 192, 160, 128])}
    return moves, ["down" if sizes[b] > sizes[a] else "up" for a, b in moves]


def _looped(src: Path, dst: Path, times: int) -> Path:
    """``src`` played ``times`` times in a row: its packets copied with their timestamps shifted, not re-encoded."""
    import av

    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        s_in = inp.streams.video[0]
        s_out = out.add_stream_from_template(s_in)
        packets = [
            (bytes(p), int(p.pts or 0), int(p.dts or 0), int(p.duration or 0), p.is_keyframe)
            for p in inp.demux(s_in)
            if p.size
        ]
        span = max(pts + dur for _, pts, _, dur, _ in packets) - min(pts for _, pts, _, _, _ in packets)
        for i in range(times):
            for data, pts, dts, dur, key in packets:
                pkt = av.Packet(data)
                pkt.pts, pkt.dts, pkt.duration, pkt.is_keyframe = pts + i * span, dts + i * span, dur, key
                pkt.stream = s_out
                if s_in.time_base is not None:
                    pkt.time_base = s_in.time_base
                out.mux(pkt)
    return dst


class _Decoded:
    """A decoded picture (``Frame.lazy``) over an image: scales on request and counts full-size conversions."""

    def __init__(self, bgr: np.ndarray) -> None:
        self._bgr, self.conversions = bgr, 0

    @property
    def size(self) -> tuple[int, int]:
        return int(self._bgr.shape[1]), int(self._bgr.shape[0])

    def model_input(self, width: int, height: int, pixel_format: str = "rgb24") -> np.ndarray:
        return cv2.resize(self._bgr[:, :, ::-1], (width, height), interpolation=cv2.INTER_AREA)

    def bgr(self) -> np.ndarray:
        self.conversions += 1
        return self._bgr


def _frame(name: str) -> Frame:
    return Frame(_image(name), 0.0, 0, "test")


def test_person_gate_with_the_visual_wake_words_model(models_dir: Path) -> None:
    from edgevision.catalog.resolve import open_model
    from edgevision.scheduler.runtime import PersonGate, Scheduler

    handle, _ = open_model("vww_mobilenet_v1_0.25_96", models_dir, RuntimeOptions())
    gate = PersonGate(handle, min_person_prob=0.1)
    squat = gate.person_prob(_frame("squat.bmp"))
    cat = gate.person_prob(_frame("cat.bmp"))
    assert squat > 0.9 and cat < 0.1  # the manifest: 0.957 and 0.035
    # a packet source's frame: scaled straight to 96x96, its full-resolution image never made
    decoded = _Decoded(_image("squat.bmp"))
    lazy = Frame.lazy(decoded, 0.0, 0, "test")
    assert gate.person_prob(lazy) == pytest.approx(squat, abs=0.05)
    assert decoded.conversions == 0 and not lazy.materialized
    ladder = [type("R", (), {"profile": type("P", (), {"cadence": 1})(), "expected_ms": 5.0, "name": "r"})()]
    active = {"event": False}
    sched = Scheduler(
        ladder,
        ControllerSettings(budget_ms=50),
        event_active=lambda: active["event"],
        gate=gate,
    )
    empty = _frame("cat.bmp")
    assert sched.gate_says_empty(empty) and sched.gated == 1
    sched.detected(0.0, [Detection("person", 0, 0.9, BBox(0, 0, 0.5, 0.5))])
    assert not sched.gate_says_empty(empty)  # never right after a person was seen ...
    sched.detected(0.1, [])
    active["event"] = True
    assert not sched.gate_says_empty(empty)  # ... nor during an event
    active["event"] = False
    assert not sched.gate_says_empty(_frame("squat.bmp"))


@pytest.mark.parametrize(
    "model", ["mobilenet_v1_0.25_128_quant.tflite", "ssd_mobilenet_v1_1.0_coco_quant_detect.tflite"]
)
def test_a_person_gate_model_that_is_no_person_classifier_is_a_model_error(
    models_dir: Path, model: str
) -> None:
    """scheduler.person_gate.model naming another classifier (1001 ImageNet classes) read its class 1 as the
    person probability: near 0 on every frame, so the gate skipped the detector on nearly every frame and a
    run saw nobody, silently. The gate takes a two-class (no person, person) model only."""
    from edgevision.errors import ModelError
    from edgevision.scheduler.runtime import PersonGate

    handle = open_interpreter(models_dir / model, RuntimeOptions())
    with pytest.raises(ModelError, match="person gate"):
        PersonGate(handle, min_person_prob=0.05)
