"""The ladder: ordered by expected quality known in advance; width rungs from students made on the device.

Width rungs are tested without a trained student: a LocalModel manifest in a temporary models directory points
at a real SSD file (a derived V1 rung, or the V1 SSD itself) labelled as a narrower MobileNet. The ladder
mechanics are what is tested, not the student's accuracy.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import random
import shutil
import time
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
from conftest import WALKING, run_cli

from edgevision.capture.sources import read_frames
from edgevision.catalog.entries import load_catalog
from edgevision.config import EdgeVisionConfig, load_config
from edgevision.detection.detector import Detector
from edgevision.detection.factory import build_detector
from edgevision.errors import ModelError
from edgevision.scheduler import ladder as ladder_mod
from edgevision.scheduler.controller import ControllerSettings, ControllerState, Sample, Switch
from edgevision.scheduler.derive import ensure_derived
from edgevision.scheduler.ladder import (
    Rung,
    RungProfile,
    RungSpec,
    build_ladder,
    cadence_rungs,
    order_ladder,
    smooth_costs,
    switch_kind,
)
from edgevision.scheduler.quality import expected_quality, ladder_key
from edgevision.scheduler.runtime import Scheduler

V1 = "ssd_mobilenet_v1_coco_quant"
SIZES = [300, 256, 224, 192, 160, 128]


def test_catalog_states_the_measured_v1_depth() -> None:
    a = load_catalog().models[V1].architecture
    assert (a.family, a.alpha) == ("mobilenet_v1", 0.75)


@pytest.mark.parametrize(
    ("better", "worse"),
    [
        *[(("mobilenet_v1", 0.75, a), ("mobilenet_v1", 0.75, b)) for a, b in itertools.pairwise(SIZES)],
        *[(("mobilenet_v1", 0.75, s), ("mobilenet_v1", 0.5, s)) for s in SIZES],  # student below its teacher
        *[(("mobilenet_v1", 0.5, s), ("mobilenet_v1", 0.25, s)) for s in SIZES],
        (
            ("mobilenet_v1", 0.75, 192),
            ("mobilenet_v1", 0.5, 300),
        ),  # the prior interleaves width and resolution
        (("mobilenet_v1", 0.5, 300), ("mobilenet_v1", 0.75, 160)),
        (("mobilenet_v2", 1.0, 300), ("mobilenet_v1", 0.75, 300)),
    ],
)
def test_expected_quality_orders_family_width_and_resolution(
    better: tuple[str, float, int], worse: tuple[str, float, int]
) -> None:
    assert expected_quality(*better) > expected_quality(*worse)


def test_any_cadence_rung_ranks_below_every_cadence_1_rung() -> None:
    worst_k1 = ladder_key("mobilenet_v1", 0.25, 96, 1)
    best_k2 = ladder_key("mobilenet_v2", 1.0, 320, 2)
    assert worst_k1 < best_k2 < ladder_key("mobilenet_v2", 1.0, 320, 3)


@pytest.mark.parametrize("student", ["a_student", "zz_student"])
def test_a_student_at_the_teachers_width_ranks_just_below_the_teacher(student: str) -> None:
    # `models distill --init teacher` at alpha 0.75: the teacher's family, width and side; whatever its name, it
    # imitates the teacher at best, and still beats the teacher one resolution step down
    teacher = [RungSpec(V1, "mobilenet_v1", 0.75, s) for s in (300, 256)]
    same = RungSpec(student, "mobilenet_v1", 0.75, 300, kind="local")
    ranked = sorted([same, *teacher], key=RungSpec.sort_key)
    assert [r.name for r in ranked] == [f"{V1}@300", f"{student}@300", f"{V1}@256"]


def _rung(spec: RungSpec, p50: float) -> Rung:
    prof = RungProfile(spec.name, spec.size, spec.cadence, p50, p50 * 1.2, 0.0)
    return Rung(detector=cast(Detector, None), profile=prof, spec=spec)  # ladder logic: profiles only


def _specs() -> list[RungSpec]:
    teacher = [RungSpec(V1, "mobilenet_v1", 0.75, s) for s in SIZES]
    student = [RungSpec("student_v1_0.5", "mobilenet_v1", 0.5, s, kind="local") for s in (300, 256)]
    return [
        *teacher,
        *student,
        RungSpec(V1, "mobilenet_v1", 0.75, 128, 2),
        RungSpec(V1, "mobilenet_v1", 0.75, 128, 3),
    ]


@pytest.mark.parametrize("seed", range(10))
def test_a_noisy_profile_never_reorders_the_ladder(seed: int) -> None:
    rng = random.Random(seed)
    # Profiled costs with heavy noise: 256 px is often "measured" slower than 300 px.
    cost = {300: 15.1, 256: 10.6, 224: 8.3, 192: 5.9, 160: 4.3, 128: 2.8}
    rungs = [
        _rung(s, cost[s.size] * rng.uniform(0.5, 2.0) * (0.35 if s.alpha < 0.75 else 1.0)) for s in _specs()
    ]
    rng.shuffle(rungs)
    names = [r.name for r in order_ladder(rungs)]
    teacher = [f"{V1}@{s}" for s in SIZES]
    assert names == [
        *teacher[:4],
        "student_v1_0.5@300",
        "student_v1_0.5@256",
        *teacher[4:],
        f"{V1}@128/k2",
        f"{V1}@128/k3",
    ]


def test_costs_are_fitted_per_model_so_one_burst_during_profiling_does_not_mislead() -> None:
    measured = {300: 15.1, 256: 4 * 10.6, 224: 8.3, 192: 5.9 / 3, 160: 4.3, 128: 2.8}  # two noisy rungs
    rungs = [_rung(RungSpec(V1, "mobilenet_v1", 0.75, s), ms) for s, ms in measured.items()]
    rungs.append(_rung(RungSpec("student", "mobilenet_v1", 0.5, 300, kind="local"), 5.0))
    smooth_costs(rungs)
    fitted = [r.expected_ms for r in rungs[:6]]
    assert fitted == sorted(fitted, reverse=True)  # dearer with the input side, whatever the noise
    true = [15.1, 10.6, 8.3, 5.9, 4.3, 2.8]
    assert all(abs(f - t) / t < 0.1 for f, t in zip(fitted, true, strict=True))
    assert rungs[6].expected_ms == pytest.approx(5.0)  # another model: its own fit


@pytest.mark.parametrize(
    ("measured", "base"),
    [
        ({300: 15.1, 192: 5.9, 160: 4.3, 128: 2.8}, 128),  # as profiled idle
        ({300: 15.1, 192: 5.9, 160: 4.3, 128: 4.5}, 128),  # 128 px timed during a burst of other work
        ({300: 15.1, 192: 5.9, 160: 2.0, 128: 2.8}, 128),  # 160 px timed in a lull
    ],
)
def test_cadence_rungs_repeat_the_rung_cheapest_by_its_fitted_cost_not_by_one_timing(
    measured: dict[int, float], base: int
) -> None:
    """The cadence rungs are the cheapest rung detecting every k-th frame, the cheapest of all the ladder has.
    They were built on the rung with the lowest raw p50: one slow timing of 128 px made them 160 px rungs
    (@160/k3 at 1.4 ms a frame where @128/k3 costs 0.9), so under load the scheduler had no rung as cheap as
    it could have. The fitted costs (c x side², as the ladder predicts with) pick the rung."""
    rungs = [_rung(RungSpec(V1, "mobilenet_v1", 0.75, s), ms) for s, ms in measured.items()]
    made = cadence_rungs(rungs, [2, 3], {})
    assert [r.name for r in made] == [f"{V1}@{base}/k2", f"{V1}@{base}/k3"]
    fitted = {r.spec.size: r.expected_ms for r in rungs}
    assert [r.expected_ms for r in made] == [pytest.approx(fitted[base])] * 2


@pytest.mark.parametrize(
    ("a", "b", "kind"),
    [
        (RungSpec(V1, "mobilenet_v1", 0.75, 300), RungSpec(V1, "mobilenet_v1", 0.75, 256), "resolution"),
        (
            RungSpec(V1, "mobilenet_v1", 0.75, 256),
            RungSpec("s", "mobilenet_v1", 0.5, 300, kind="local"),
            "width",
        ),
        (RungSpec(V1, "mobilenet_v1", 0.75, 128), RungSpec(V1, "mobilenet_v1", 0.75, 128, 2), "cadence"),
        (RungSpec("s", "mobilenet_v1", 0.5, 300), RungSpec("s", "mobilenet_v1", 0.5, 192), "resolution"),
        # a student at its teacher's width is another model, not a narrower one
        (
            RungSpec(V1, "mobilenet_v1", 0.75, 300),
            RungSpec("s", "mobilenet_v1", 0.75, 300, kind="local"),
            "model",
        ),
        (
            RungSpec(V1, "mobilenet_v1", 0.75, 300),
            RungSpec("s", "mobilenet_v3_small", 1.0, 300, kind="local"),
            "model",
        ),
        (RungSpec(V1, "mobilenet_v1", 0.75, 300), RungSpec("s", "mobilenet_v1", 0.25, 192), "width"),
    ],
)
def test_switch_kind(a: RungSpec, b: RungSpec, kind: str) -> None:
    assert switch_kind(a, b) == kind


def test_a_width_switch_is_named_in_the_log_and_the_switch_record(caplog: pytest.LogCaptureFixture) -> None:
    teacher = _rung(RungSpec(V1, "mobilenet_v1", 0.75, 256), 10.0)
    student = _rung(RungSpec("student_v1_0.5", "mobilenet_v1", 0.5, 300, kind="local"), 4.0)
    clock = iter(i / 25 for i in range(1000))
    sched = Scheduler([teacher, student], ControllerSettings(budget_ms=14.0), clock=lambda: next(clock))
    sched.state = ControllerState(0, 0.0)  # mid-run, on the teacher (a run starts on the cheapest rung)
    assert sched.rung is teacher
    sw = None
    for _ in range(10):
        sw = sched.observe(Sample(total_ms=21.0, invoke_ms=20.0)) or sw  # the load doubled
        if sw:
            break
    assert sw is not None and sched.rung is student
    rec = sched.switch_record(sw).as_dict()
    assert rec["from"] == f"{V1}@256" and rec["to"] == "student_v1_0.5@300"
    assert rec["kind"] == "width" and rec["direction"] == "down"
    assert f"width step down: {V1}@256 -> student_v1_0.5@300" in caplog.text


STUDENT = "student_v1_0.5"


# (rungs by quality with their profiled invoke ms, start rung, load): the load that arrives makes the controller
# step from the start rung to the last rung of the list (down), or the load that leaves lets it step up to it.
@pytest.mark.parametrize(
    ("rungs", "start", "load", "kind", "direction", "names"),
    [
        (
            [(V1, 0.75, 300, 1, 10.0), (V1, 0.75, 192, 1, 4.0)],
            0,
            2.0,
            "resolution",
            "down",
            (f"{V1}@300", f"{V1}@192"),
        ),
        (
            [(V1, 0.75, 256, 1, 10.0), (STUDENT, 0.5, 300, 1, 4.0)],
            0,
            2.0,
            "width",
            "down",
            (f"{V1}@256", f"{STUDENT}@300"),
        ),
        (
            [(STUDENT, 0.5, 300, 1, 10.0), (STUDENT, 0.5, 192, 1, 4.0)],
            0,
            2.0,
            "resolution",
            "down",
            (f"{STUDENT}@300", f"{STUDENT}@192"),
        ),
        (
            [(V1, 0.75, 128, 1, 10.0), (V1, 0.75, 128, 3, 10.0)],
            0,
            2.0,
            "cadence",
            "down",
            (f"{V1}@128", f"{V1}@128/k3"),
        ),
        (
            [(V1, 0.75, 300, 1, 6.0), (STUDENT, 0.5, 300, 1, 2.0)],
            1,
            1.0,
            "width",
            "up",
            (f"{STUDENT}@300", f"{V1}@300"),
        ),
        (
            [(V1, 0.75, 300, 1, 6.0), (V1, 0.75, 160, 1, 2.0)],
            1,
            1.0,
            "resolution",
            "up",
            (f"{V1}@160", f"{V1}@300"),
        ),
    ],
)
def test_every_switch_names_its_rungs_and_kind_in_the_log_and_the_json_line(
    caplog: pytest.LogCaptureFixture,
    rungs: list[tuple[str, float, int, int, float]],
    start: int,
    load: float,
    kind: str,
    direction: str,
    names: tuple[str, str],
) -> None:
    from edgevision.pipeline.sinks import result_record
    from edgevision.results import FrameResult, Latency
    from edgevision.results.frame import Frame

    ladder = [
        _rung(RungSpec(m, "mobilenet_v1", a, size, k, "local" if m == STUDENT else "catalog"), ms)
        for m, a, size, k, ms in rungs
    ]
    caplog.set_level(logging.INFO, logger="edgevision.scheduler.runtime")  # a step up is logged at INFO
    t = [0.0]
    settings = ControllerSettings(budget_ms=12.0, stable_s=1.0, cooldown_s=0.0)
    sched = Scheduler(ladder, settings, clock=lambda: t[0])
    sched.state = ControllerState(start, 0.0)  # mid-run on the start rung
    sw = None
    for i in range(200):
        t[0] = i / 25
        invoke = ladder[sched.state.rung].profile.p50_ms * load
        sw = sched.observe(Sample(total_ms=invoke + 1.0, invoke_ms=invoke))
        if sw:
            break
    assert sw is not None and sw.direction == direction
    a, b = names
    assert f"scheduler: {kind} step {direction}: {a} -> {b}: " in caplog.text
    level = {
        r.getMessage().split(":")[1].strip(): r.levelno for r in caplog.records if "step" in r.getMessage()
    }
    assert level[f"{kind} step {direction}"] == (logging.WARNING if direction == "down" else logging.INFO)
    result = FrameResult(Frame(np.zeros((4, 4, 3), np.uint8), 0.0, 7, "test"), [], Latency(), a, rung=a)
    result.switch = sched.switch_record(sw)
    line = json.loads(json.dumps(result_record(result)))  # what the detections log writes
    assert line["rung"] == a
    assert {k: line["switch"][k] for k in ("from", "to", "kind", "direction")} == {
        "from": a,
        "to": b,
        "kind": kind,
        "direction": direction,
    }
    assert line["switch"]["reason"]


# -- width rungs in a real ladder -------------------------------------------------------------------------


def install_student(
    mdir: Path, name: str, model_file: Path, alpha: float = 0.5, threshold: float = 0.45
) -> Path:
    """A LocalModel manifest (the contract of catalog/local.py) for ``model_file``, labelled as a narrower V1."""
    cat = load_catalog()
    teacher = cat.models[V1]
    local = mdir / "local"
    local.mkdir(parents=True, exist_ok=True)
    dest = local / f"{name}.tflite"
    shutil.copyfile(model_file, dest)
    data = dest.read_bytes()
    from ai_edge_litert.interpreter import Interpreter

    side = int(Interpreter(model_path=str(dest)).get_input_details()[0]["shape"][1])
    manifest: dict[str, Any] = {
        "schema": 1,
        "name": name,
        "file": dest.name,
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "task": "detect",
        "architecture": {
            "family": "mobilenet_v1",
            "alpha": alpha,
            "input": [side, side],
            "quantization": "uint8",
            "head": "ssd",
            "postprocess": True,
        },
        "labels": teacher.labels,
        "threshold": threshold,
        "teacher": {"name": V1, "sha256": teacher.sha256},
    }
    (local / f"{name}.json").write_text(json.dumps(manifest))
    return dest


@pytest.fixture()
def mdir(models_dir: Path, tmp_path: Path) -> Path:
    """A private models directory with the catalog's V1 SSD and its labels (students are added per test)."""
    d = tmp_path / "models"
    d.mkdir()
    for e in load_catalog().files_for(V1):
        (d / e.file).symlink_to(models_dir / e.file)
    return d


def _cfg(mdir: Path, tmp_path: Path, **sched: Any) -> EdgeVisionConfig:
    over = {
        "models.dir": str(mdir),
        "scheduler.enabled": True,
        "scheduler.budget_ms": 20.0,
        "scheduler.derived_dir": str(tmp_path / "derived"),
        "scheduler.cadences": [],
    }
    over.update({f"scheduler.{k}": v for k, v in sched.items()})
    return load_config(None, over)


FRAMES = [np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)]


def test_students_join_the_ladder_with_resolution_rungs_of_their_own(mdir: Path, tmp_path: Path) -> None:
    install_student(mdir, "student_v1_0.5", mdir / load_catalog().models[V1].file)  # a real SSD graph
    rungs = build_ladder(_cfg(mdir, tmp_path, sizes=[300, 192]), FRAMES, invokes=3)
    names = [r.name for r in rungs]
    assert names == [f"{V1}@300", f"{V1}@192", "student_v1_0.5@300", "student_v1_0.5@192"]
    student = rungs[2]
    assert student.spec.kind == "local" and student.spec.alpha == 0.5
    assert student.detector.config.threshold == 0.45  # the calibrated threshold is its detector threshold
    assert student.detector.labels[0] == "person"
    assert rungs[3].detector.input_size == (192, 192)  # derived like the teacher's


def test_a_student_whose_graph_cannot_be_derived_runs_at_its_native_size(
    mdir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_student(mdir, "student_v1_0.5", mdir / load_catalog().models[V1].file)
    real = ensure_derived

    def no_student_rho(source: Path, size: int, cache: Path) -> Path:
        if source.parent.name == "local":
            raise ModelError("not an SSD with one TFLite_Detection_PostProcess op")
        return real(source, size, cache)

    monkeypatch.setattr(ladder_mod, "ensure_derived", no_student_rho)
    names = [r.name for r in build_ladder(_cfg(mdir, tmp_path, sizes=[300, 192]), FRAMES, invokes=3)]
    assert names == [f"{V1}@300", f"{V1}@192", "student_v1_0.5@300"]


def test_the_configured_teacher_is_never_a_width_rung(mdir: Path, tmp_path: Path, models_dir: Path) -> None:
    cat = load_catalog()
    v2 = "ssd_mobilenet_v2_coco_quant"
    for e in cat.files_for(v2):
        (mdir / e.file).symlink_to(models_dir / e.file)
    assert (
        ladder_mod._width_models(_cfg(mdir, tmp_path).scheduler, mdir, cat) == []
    )  # V1 (alpha 0.75) configured
    assert (
        ladder_mod._width_models(_cfg(mdir, tmp_path, models=[v2]).scheduler, mdir, cat) == []
    )  # V1 is another family
    v3 = cat.models["ssdlite_mobilenet_v3_small_coco"]
    (mdir / v3.file).write_bytes(b"")  # installed (unpinned entries are not in the fixture)
    assert ladder_mod._width_models(_cfg(mdir, tmp_path).scheduler, mdir, cat) == [
        "ssdlite_mobilenet_v3_small_coco"
    ]


def test_run_below_the_teachers_cost_uses_a_width_rung(
    mdir: Path, tmp_path: Path, env: dict[str, str]
) -> None:
    teacher = mdir / load_catalog().models[V1].file
    install_student(mdir, "student_v1_0.5", ensure_derived(teacher, 128, tmp_path / "d0"))
    # A saved profile (as `edgevision bench models` writes) gives the rungs' relative costs: the teacher 15 ms,
    # the student 3 ms. The controller scales them by the load it measures, so the budget must lie below what
    # the teacher really costs here: 0.8x its measured detect time (a fixed 10 ms was above it on a CPU where the
    # teacher takes 3.6 ms, and the run climbed to the teacher).
    det = build_detector(load_config(None, {"models.dir": str(mdir)}))
    image = read_frames(str(WALKING), 1)[0]
    det.detect(image)
    times = []
    for _ in range(15):
        t0 = time.perf_counter()
        det.detect(image)
        times.append((time.perf_counter() - t0) * 1e3)
    budget = 0.8 * min(times)
    profile = tmp_path / "profile.json"
    rows = [(f"{V1}@300", 300, 15.0), ("student_v1_0.5@128", 128, 3.0)]
    ladder_mod.save_profile(profile, [RungProfile(n, s, 1, ms, ms * 1.2, 1.0) for n, s, ms in rows], {})
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"scheduler:\n  sizes: [300]\n  cadences: []\n  profile: {profile}\n  derived_dir: {tmp_path / 'd'}\n"
    )
    out = tmp_path / "d.jsonl"
    run_env = {**env, "EDGEVISION_MODELS_DIR": str(mdir)}
    r = run_cli(
        [
            "run",
            "--config",
            str(cfg),
            "--budget-ms",
            f"{budget:.2f}",
            "--video",
            str(WALKING),
            "--detections",
            str(out),
            "--max-frames",
            "30",
        ],
        run_env,
    )
    assert r.returncode == 0, r.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 30
    assert {row["rung"] for row in lines} == {"student_v1_0.5@128"}
    assert {row["model"] for row in lines} == {"student_v1_0.5@128"}
    assert any(d["label"] == "person" for row in lines for d in row["detections"])
    assert "final rung student_v1_0.5@128" in r.stderr


def test_the_pipeline_feeds_stage_times_and_writes_the_named_switch(models_dir: Path) -> None:
    import time

    from edgevision.detection.factory import build_detector
    from edgevision.pipeline.loop import Pipeline
    from edgevision.pipeline.sinks import result_record
    from edgevision.results.frame import Frame

    det = build_detector(load_config(None, {"models.dir": str(models_dir)}))
    teacher = Rung(
        det, RungProfile(f"{V1}@300", 300, 1, 1.0, 1.0, 0.0), RungSpec(V1, "mobilenet_v1", 0.75, 300)
    )
    spec = RungSpec("student_v1_0.5", "mobilenet_v1", 0.5, 300, kind="local")
    student = Rung(det, RungProfile(spec.name, 300, 1, 0.5, 0.5, 0.0), spec)
    # The profile claims 1 ms; the real invoke takes far longer, so the load estimate steps down within 3 frames.
    samples: list[Sample] = []

    class Recording(Scheduler):
        def observe(self, sample: Sample) -> Switch | None:
            samples.append(sample)
            return super().observe(sample)

    sched = Recording([teacher, student], ControllerSettings(budget_ms=1.4))
    sched.state = ControllerState(0, 0.0)  # mid-run, on the teacher
    pipe = Pipeline(runner=None, step=sched)  # type: ignore[arg-type]
    image = np.zeros((240, 320, 3), np.uint8)
    results = []
    for i in range(3):
        frame = Frame(image, i / 25, i, "test", captured_at=time.monotonic() - 0.005)  # captured 5 ms ago
        results.append(pipe.process(frame))
    assert all(s.invoke_ms and s.invoke_ms > 0 and s.preprocess_ms > 0 for s in samples)
    assert all(s.wait_ms >= 5.0 and s.total_ms >= s.wait_ms + s.invoke_ms for s in samples if s.invoke_ms)
    assert results[1].switch is None
    rec = result_record(results[2])
    assert rec["rung"] == f"{V1}@300"  # the frame that ran on the teacher, and switched away from it
    sw = rec["switch"]
    assert isinstance(sw, dict)
    assert (sw["from"], sw["to"], sw["kind"], sw["direction"]) == (f"{V1}@300", spec.name, "width", "down")


def test_a_long_run_keeps_a_bounded_switch_history_and_counts_every_switch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A service runs for months; a load that comes and goes switches rungs many times a day. The scheduler
    keeps only the recent switches (every one is in the log and the detections output), and counts them all."""
    from edgevision.scheduler import runtime

    ladder = [_rung(RungSpec(V1, "mobilenet_v1", 0.75, s), 10.0) for s in (300, 256)]
    sched = Scheduler(ladder, ControllerSettings(budget_ms=12.0), clock=lambda: 0.0)

    def flip(state: ControllerState, *args: Any, **kwargs: Any) -> tuple[ControllerState, Switch]:
        return state, Switch(state.rung, 1 - state.rung, "test")

    monkeypatch.setattr(runtime, "step", flip)
    for _ in range(5000):
        sched.observe(Sample(total_ms=5.0, invoke_ms=4.0))
    assert 0 < len(sched.switches) <= 1000  # the recent ones, not all 5000
    assert sched.switch_count == 5000
    assert len(sched.switches) == runtime.SWITCH_HISTORY and sched.switches[-1].reason == "test"


def test_rungs_a_saved_profile_times_are_not_timed_again_at_start_up(
    mdir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A profile saved by `bench models` under the run's conditions stands for the start-up timing (a service on
    a Pi would otherwise spend seconds per rung before its first frame); only rungs it lacks are timed."""
    profile = tmp_path / "profile.json"
    saved = [RungProfile(f"{V1}@300", 300, 1, 40.0, 48.0, 9.0)]
    cfg = _cfg(mdir, tmp_path, sizes=[300, 192], profile=str(profile))
    ladder_mod.save_profile(profile, saved, ladder_mod.profile_conditions(cfg))
    timed: list[tuple[int, int]] = []

    def measure(detector: Detector, tensors: Any, invokes: int) -> tuple[float, float]:
        timed.append(detector.input_size)
        return 10.0, 12.0

    warmed: list[tuple[int, int]] = []
    real_warm_up = ladder_mod.warm_up

    def warm_up(detector: Detector, frames: Any) -> None:
        warmed.append(detector.input_size)
        real_warm_up(detector, frames)

    monkeypatch.setattr(ladder_mod, "measure", measure)
    monkeypatch.setattr(ladder_mod, "warm_up", warm_up)
    rungs = {r.name: r for r in build_ladder(cfg, FRAMES, invokes=3)}
    assert timed == [(192, 192)]  # the rung the profile lacks, only
    assert warmed == [(300, 300)]  # the other is still invoked once (its buffers and packed weights made now)
    assert rungs[f"{V1}@300"].profile == saved[0]


def test_a_profile_save_that_fails_midway_leaves_the_saved_profile_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`bench models --out` on a full disk (a recorder's card) must not leave a truncated profile behind: every
    start of the service would then stop at 'cannot read scheduler profile'."""
    path = tmp_path / "profile.json"
    old = [RungProfile(f"{V1}@300", 300, 1, 40.0, 48.0, 9.0)]
    ladder_mod.save_profile(path, old, {"threads": 2})
    real = Path.write_text

    def disk_full(self: Path, data: str, *args: Any, **kwargs: Any) -> int:
        real(self, data[: len(data) // 2], *args, **kwargs)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", disk_full)
    with pytest.raises(OSError):
        ladder_mod.save_profile(
            path, [*old, RungProfile(f"{V1}@192", 192, 1, 20.0, 24.0, 5.0)], {"threads": 2}
        )
    monkeypatch.undo()
    assert ladder_mod.load_profile(path) == {old[0].name: old[0]}
    assert [p.name for p in tmp_path.iterdir()] == ["profile.json"]  # no temporary file left behind
