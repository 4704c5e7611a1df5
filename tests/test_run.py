"""``edgevision run``: replay of real clips, determinism, realtime drops, live capture, signals, bad inputs."""

from __future__ import annotations

import hashlib
import json
import logging
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import NoReturn

import pytest
from conftest import EDGEVISION, HALLWAY_1, HALLWAY_3, IMAGES, WALKING, count_frames, run_cli
from fakes import CameraScript, FakePicamera2, fake_picamera2_module, frames_from

from edgevision.capture.replay import ReplayRunner
from edgevision.capture.runner import LiveRunner, backoff_delays, is_stalled
from edgevision.capture.slot import LatestSlot
from edgevision.capture.sources import OpenCVSource, Picamera2Source
from edgevision.config import load_config
from edgevision.detection.detector import Detector, FixedDetect
from edgevision.detection.factory import build_detector
from edgevision.errors import ConfigError, InputError
from edgevision.pipeline.loop import Pipeline
from edgevision.pipeline.sinks import DetectionsLog
from edgevision.results import FrameResult


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_replay_walking_people_in_every_frame(env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "d.jsonl"
    r = run_cli(["run", "--video", str(WALKING), "--detections", str(out), "--status-interval", "1"], env)
    assert r.returncode == 0, r.stderr
    rows = read_jsonl(out)
    assert [row["frame"] for row in rows] == list(range(341))
    assert all(any(d["label"] == "person" for d in row["detections"]) for row in rows)
    ts = [row["ts"] for row in rows]
    assert ts == sorted(ts) and ts[1] == pytest.approx(0.04, abs=1e-3)  # media clock, 25 fps
    assert set(rows[0]["latency_ms"]) == {"preprocess", "invoke", "postprocess", "total"}
    assert rows[0]["model"] == "ssd_mobilenet_v1_coco_quant"
    assert "processed 341 frames" in r.stderr and "frames with a person: 341" in r.stderr
    assert "status: fps" in r.stderr and "dropped 0" in r.stderr


def test_an_image_given_as_a_video_is_replayed_and_recorded_as_one_frame(
    env: dict[str, str], tmp_path: Path
) -> None:
    """A BMP (which MP4 cannot carry) replays as its one frame, like a JPEG, recording included."""
    out = tmp_path / "d.jsonl"
    r = run_cli(["run", "--video", str(IMAGES / "squat.bmp"), "--record", "--detections", str(out)], env)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    (row,) = read_jsonl(out)
    assert any(d["label"] == "person" for d in row["detections"])


@pytest.mark.parametrize("clip", [HALLWAY_1, HALLWAY_3], ids=["hallway-1", "hallway-3"])
def test_replay_empty_hallways_no_person(env: dict[str, str], tmp_path: Path, clip: Path) -> None:
    out = tmp_path / "d.jsonl"
    r = run_cli(["run", "--video", str(clip), "--detections", str(out)], env)
    assert r.returncode == 0, r.stderr
    rows = read_jsonl(out)
    assert len(rows) == {HALLWAY_1: 813, HALLWAY_3: 107}[clip]
    assert not [row["frame"] for row in rows if any(d["label"] == "person" for d in row["detections"])]


def test_replay_is_deterministic(env: dict[str, str], tmp_path: Path) -> None:
    hashes = []
    for i in range(2):
        det, vid = tmp_path / f"d{i}.jsonl", tmp_path / f"v{i}.mp4"
        args = [
            "run",
            "--video",
            str(HALLWAY_3),
            "--detections",
            str(det),
            "--save-video",
            str(vid),
            "--no-timing",
        ]
        r = run_cli(args, env)
        assert r.returncode == 0, r.stderr
        hashes.append((sha(det), sha(vid)))
    assert hashes[0] == hashes[1]
    assert count_frames(tmp_path / "v0.mp4") == 107
    # With timing on, only latency_ms differs between runs.
    timed = []
    for i in range(2):
        det = tmp_path / f"t{i}.jsonl"
        assert run_cli(["run", "--video", str(HALLWAY_3), "--detections", str(det)], env).returncode == 0
        timed.append([{k: v for k, v in row.items() if k != "latency_ms"} for row in read_jsonl(det)])
    assert timed[0] == timed[1] == read_jsonl(tmp_path / "d0.jsonl")


class SlowDevice:
    """A stage that makes every frame take ``delay`` seconds, like inference on a much slower board."""

    def __init__(self, delay: float) -> None:
        self.delay = delay

    def process(self, result: FrameResult) -> None:
        time.sleep(self.delay)


def test_realtime_replay_drops_frames_when_inference_is_slower(models_dir: Path, tmp_path: Path) -> None:
    cfg = load_config(None, {"models.dir": str(models_dir)})
    detector = build_detector(cfg)
    runner = LiveRunner(lambda: OpenCVSource(str(HALLWAY_3)), detector.prepare, pace=True)
    log = DetectionsLog(tmp_path / "d.jsonl")
    # 6 fps clip (167 ms per frame) against ~300 ms per frame: about every other frame must be dropped.
    summary = Pipeline(runner, FixedDetect(detector), [log], [SlowDevice(0.3)]).run(
        threading.Event(), max_frames=12
    )
    rows = read_jsonl(tmp_path / "d.jsonl")
    assert summary.frames_processed == len(rows) == 12
    assert summary.dropped >= 6 and summary.frames_captured >= 18
    frames = [row["frame"] for row in rows]
    assert (
        frames == sorted(frames) and len(set(frames)) == 12 and frames[-1] >= 18
    )  # gaps: frames were skipped


def test_realtime_cli_without_drops_when_fast(env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "d.jsonl"
    t0 = time.monotonic()
    r = run_cli(
        ["run", "--video", str(HALLWAY_3), "--realtime", "--detections", str(out), "--max-frames", "24"], env
    )
    assert r.returncode == 0, r.stderr
    assert time.monotonic() - t0 > 3.8  # paced at 6 fps: 24 frames span 3.8 s of the clip
    rows = read_jsonl(out)
    assert [row["frame"] for row in rows] == list(range(24))  # fast enough: nothing dropped


def _camera_pipeline(
    script: CameraScript, models_dir: Path, stall: float = 0.5
) -> tuple[LiveRunner, Detector]:
    cfg = load_config(None, {"models.dir": str(models_dir)})
    detector = build_detector(cfg)

    def factory() -> OpenCVSource:
        return OpenCVSource(0, capture_factory=script.factory)

    runner = LiveRunner(factory, detector.prepare, stall_timeout=stall, backoff_initial=0.05, backoff_max=0.2)
    return runner, detector


def test_camera_unplug_and_replug(models_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    frames = frames_from(str(WALKING), 5)
    script = CameraScript(
        frames, connections=[(20, "unplug"), (20, "unplug"), (1000, "unplug")], refuse_opens=3
    )
    runner, detector = _camera_pipeline(script, models_dir)
    caplog.set_level(logging.INFO)
    summary = Pipeline(runner, FixedDetect(detector)).run(threading.Event(), max_frames=60)
    assert summary.frames_processed == 60
    assert runner.stats.reconnects == 2 and script.opens == 3
    assert script.attempts >= 6  # three refused opens in between, retried with backoff
    messages = caplog.text
    assert "disconnected" in messages and "reconnected" in messages and "retrying in" in messages


def test_camera_stall_is_detected_and_capture_restarted(
    models_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    frames = frames_from(str(WALKING), 3)
    script = CameraScript(frames, connections=[(10, "stall"), (1000, "unplug")])
    runner, detector = _camera_pipeline(script, models_dir, stall=0.4)
    caplog.set_level(logging.INFO)
    try:
        summary = Pipeline(runner, FixedDetect(detector)).run(threading.Event(), max_frames=30)
    finally:
        script.stall_release.set()
    assert summary.frames_processed == 30
    assert runner.stats.stalls >= 1 and runner.stats.reconnects >= 1
    assert "stalled" in caplog.text


def test_camera_that_never_opens_fails_fast(models_dir: Path) -> None:
    script = CameraScript([], connections=[])
    script.opens = 1
    script.refuse_opens = 10**6
    runner, detector = _camera_pipeline(script, models_dir)
    with pytest.raises(InputError, match="cannot open camera"):
        Pipeline(runner, FixedDetect(detector)).run(threading.Event())


def test_capture_thread_failure_is_raised_not_hung(models_dir: Path) -> None:
    class Boom(OpenCVSource):
        def read(self) -> NoReturn:
            raise RuntimeError("driver exploded")

    cfg = load_config(None, {"models.dir": str(models_dir)})
    detector = build_detector(cfg)
    runner = ReplayRunner(Boom(str(HALLWAY_3)))
    with pytest.raises(RuntimeError, match="driver exploded"):
        Pipeline(runner, FixedDetect(detector)).run(threading.Event())
    live = LiveRunner(
        lambda: Boom(0, capture_factory=CameraScript(frames_from(str(WALKING), 1), [(5, "unplug")]).factory)
    )
    with pytest.raises(RuntimeError, match="driver exploded"):
        Pipeline(live, FixedDetect(detector)).run(threading.Event())


def test_picamera2_source_uses_lores_for_inference_and_keeps_main() -> None:
    FakePicamera2.instances.clear()
    src = Picamera2Source(
        0, main_size=(1280, 720), lores_size=(320, 240), module_loader=fake_picamera2_module
    )
    src.open()
    item = src.read()
    src.close()
    assert item is not None
    image, ts, full = item
    cam = FakePicamera2.instances[0]
    assert cam.calls == [
        "create_video_configuration",
        "configure",
        "start",
        "capture_arrays",
        "stop",
        "close",
    ]
    assert cam.config is not None and cam.config["lores"]["format"] == "YUV420"
    assert image.shape == (240, 320, 3) and full is not None and full.shape == (720, 1280, 3)
    assert ts > 0


def test_picamera2_missing_is_a_clear_error(env: dict[str, str]) -> None:
    pytest.importorskip("edgevision")
    try:
        __import__("picamera2")
        pytest.skip("picamera2 is installed here")
    except ImportError:
        pass
    r = run_cli(["run", "--picamera"], env)
    assert r.returncode == 78 and "picamera2 is not installed" in r.stderr and "Traceback" not in r.stderr


def test_slot_keeps_latest_and_counts_drops() -> None:
    slot: LatestSlot[int] = LatestSlot()
    assert slot.put(1) and not slot.put(2) and not slot.put(3)
    assert slot.dropped == 2 and slot.get(0.01) == 3 and slot.get(0.01) is None
    slot.close()
    assert slot.get(1.0) is None


def test_backoff_and_stall_policy() -> None:
    gen = backoff_delays(0.5, 4.0)
    assert [next(gen) for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert is_stalled(10.0, 15.1, 5.0) and not is_stalled(10.0, 15.0, 5.0)


@pytest.mark.parametrize(
    "sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=["SIGINT", "SIGTERM", "SIGHUP"]
)
def test_signal_leaves_complete_outputs(env: dict[str, str], tmp_path: Path, sig: signal.Signals) -> None:
    """SIGHUP (the ssh session of a ``run`` closing) killed the process at once: the annotated video had no
    index (unplayable), the detections' last lines were lost and an open event's clip was left to recovery."""
    det, vid = tmp_path / "d.jsonl", tmp_path / "v.mp4"
    args = [
        *EDGEVISION,
        "run",
        "--video",
        str(WALKING),
        "--realtime",
        "--detections",
        str(det),
        "--save-video",
        str(vid),
    ]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not det.exists() or len(det.read_text().splitlines()) < 20):
        time.sleep(0.1)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert f"received {sig.name}" in err and "stopped by signal" in err
    rows = read_jsonl(det)  # every line parses: nothing half-written
    assert 20 <= len(rows) < 341
    assert count_frames(vid) == len(rows)


def _bad_video_files(tmp: Path) -> None:
    (tmp / "garbage.mp4").write_bytes(bytes(range(256)) * 200)
    (tmp / "empty.mp4").write_bytes(b"")
    data = WALKING.read_bytes()
    (tmp / "truncated.mp4").write_bytes(data[:3000])  # the moov box is cut: nothing can be decoded
    (tmp / "headless.mp4").write_bytes(data[len(data) // 2 :])  # no ftyp/moov at all


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["run", "--video", "{tmp}/missing.mp4"], 66, "no such file"),
        (["run", "--video", "{tmp}/garbage.mp4"], 66, "cannot open video"),
        (["run", "--video", "{tmp}/empty.mp4"], 66, "cannot open video"),
        (["run", "--video", "{tmp}/truncated.mp4"], 66, "truncated or corrupt"),
        (["run", "--video", "{tmp}/headless.mp4"], 66, "truncated or corrupt"),
        (["run", "--video", "{tmp}"], 66, "not a file"),
        (["run", "--video", "ftp://example.invalid/cam"], 2, "unsupported URL scheme 'ftp'"),
        (["run", "--video", "rtsp://127.0.0.1:9/none"], 66, "cannot open stream"),
        (["run", "--camera", "57"], 66, "cannot open camera"),
        (["run", "--camera", "-1"], 2, "source.camera"),
        (["run", "--video", "{tmp}/garbage.mp4", "--max-frames", "0"], 2, "--max-frames"),
        (["run", "--camera", "0", "--video", "x.mp4"], 2, "not allowed with argument"),
        (["run", "--show", "--video", "{walking}"], 2, "needs an OpenCV build with a GUI"),
    ],
)
def test_bad_inputs(env: dict[str, str], tmp_path: Path, args: list[str], code: int, message: str) -> None:
    _bad_video_files(tmp_path)
    t0 = time.monotonic()
    r = run_cli([a.format(tmp=tmp_path, walking=WALKING) for a in args], env, timeout=60)
    assert r.returncode == code, (r.returncode, r.stderr)
    assert message in r.stderr and "Traceback" not in r.stderr
    assert time.monotonic() - t0 < 30


@pytest.mark.parametrize("earlier", [None, '{"frame":0}\n'], ids=["no-file", "earlier-log"])
def test_run_failing_before_its_first_frame_leaves_detections_as_they_were(
    env: dict[str, str], tmp_path: Path, earlier: str | None
) -> None:
    out = tmp_path / "d.jsonl"
    if earlier is not None:
        out.write_text(earlier)
    r = run_cli(["run", "--camera", "57", "--detections", str(out)], env, timeout=60)
    assert r.returncode == 66, r.stderr
    if earlier is None:
        assert not out.exists()  # it used to be left behind, empty
    else:
        assert out.read_text() == earlier  # it used to be truncated


BAD_CONFIGS = [
    ("detector:\n  treshold: 0.5\n", "2 detector.treshold: unknown key"),
    ("detector:\n  threshold: high\n", "2 detector.threshold: Input should be a valid number"),
    ("runtime:\n  threads: 0\n", "2 runtime.threads: Input should be greater than or equal to 1"),
    ("runtime:\n  device: tpu\n", "2 runtime.device: Input should be 'cpu' or 'edgetpu'"),
    ("source:\n  kind: video\n", "2 source.kind: source.kind 'video' needs source.path"),
    ("source:\n  kind: camera\n  fourcc: MJPEG\n", "3 source.fourcc: fourcc must be exactly 4 characters"),
    ("source:\n  url: ftp://x\n", "2 source.url: url must start with rtsp://"),
    ("cameras: []\n", "1 cameras: unknown key"),
    ("output:\n  status_interval_s: -1\n", "2 output.status_interval_s: Input should be greater than 0"),
    ("detector: [1, 2\n", "invalid YAML"),
    ("- just\n- a list\n", "must be a mapping"),
]


@pytest.mark.parametrize(("text", "message"), BAD_CONFIGS)
def test_bad_configs(tmp_path: Path, env: dict[str, str], text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert message in str(info.value)
    assert str(info.value).startswith(f"{path}:")
    r = run_cli(["config", "check", str(path)], env)
    assert r.returncode == 78 and message in r.stderr


def test_config_files_in_repo_validate(env: dict[str, str]) -> None:
    configs = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))
    assert configs
    r = run_cli(["config", "check", *map(str, configs)], env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count(": ok") == len(configs)


def test_flags_override_config(tmp_path: Path, env: dict[str, str]) -> None:
    """--threshold beats detector.threshold from the file: with the file's 0.9 nothing in this clip is
    found, with the flag's 0.65 the walkers (scores 0.6-0.72) above 0.65 are, and nothing below it."""
    path = tmp_path / "c.yaml"
    path.write_text("detector:\n  threshold: 0.9\n  labels: [person]\n")
    out = tmp_path / "d.jsonl"
    r = run_cli(
        [
            "run",
            "--config",
            str(path),
            "--threshold",
            "0.65",
            "--video",
            str(WALKING),
            "--detections",
            str(out),
            "--max-frames",
            "5",
        ],
        env,
    )
    assert r.returncode == 0, r.stderr
    lines = read_jsonl(out)
    assert len(lines) == 5 and "stopped by frame limit" in r.stderr
    scores = [d["score"] for line in lines for d in line["detections"]]
    assert all(line["detections"] for line in lines), "the flag's threshold finds the walkers in every frame"
    assert min(scores) >= 0.65 and max(scores) < 0.9


_HUNG_SHUTDOWN = """
import sys, threading
from edgevision.app.system import System

class Pipeline:
    def run(self, stop, max_frames):
        print("running", flush=True)
        stop.wait()
        print("stopping", flush=True)
        threading.Event().wait()  # a shutdown that never ends (a sink stuck in its driver)

class Monitor:
    def stopping(self):
        pass

class Sharing:
    def close(self):
        pass

System(Pipeline(), Monitor(), Sharing()).run()
"""


@pytest.mark.parametrize(
    ("first", "then"),
    [
        (signal.SIGINT, [signal.SIGINT]),
        (signal.SIGTERM, [signal.SIGTERM]),
        (signal.SIGHUP, [signal.SIGINT]),
        # a hangup comes twice (the kernel's to the foreground group, the shell's to its jobs): not a force-quit
        (signal.SIGHUP, [signal.SIGHUP, signal.SIGINT]),
    ],
    ids=["INT-INT", "TERM-TERM", "HUP-INT", "HUP-HUP-INT"],
)
def test_a_second_signal_ends_a_shutdown_that_hangs(
    env: dict[str, str], first: signal.Signals, then: list[signal.Signals]
) -> None:
    """A second Ctrl-C during a shutdown that hangs was swallowed by the handler (it only set the stop flag
    again): the user had to find the pid and kill -9 it. The second SIGINT or SIGTERM now ends the process at
    once; a second SIGHUP does not."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _HUNG_SHUTDOWN],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "running\n"
        proc.send_signal(first)
        assert proc.stdout.readline() == "stopping\n"
        for sig in then:
            proc.send_signal(sig)
        proc.wait(timeout=30)  # a hang is a failure, not a slow machine: the process ends at once or never
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode == -then[-1], proc.returncode


@pytest.mark.parametrize(
    ("environ", "hangup_stops"),
    [({}, True), ({"TERM": "xterm"}, True), ({"INVOCATION_ID": "0123abcd"}, False)],
)
def test_a_hangup_stops_a_run_cleanly_only_outside_systemd(
    environ: dict[str, str], hangup_stops: bool
) -> None:
    """A closing terminal's SIGHUP stops a run cleanly; under systemd a ``kill -HUP`` must not turn into a clean
    exit 0, which ``Restart=on-failure`` would not restart (the service stayed down)."""
    from edgevision.app.system import stop_signals

    handled = stop_signals(environ)
    assert (signal.SIGHUP in handled) is hangup_stops
    assert signal.SIGINT in handled and signal.SIGTERM in handled
