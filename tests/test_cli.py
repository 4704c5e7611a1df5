"""The command line as a user meets it: fast help, global flags, suggestions, JSON, stdout, output paths, logs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import IMAGES, REPO, SHARED_MODELS, WALKING, run_cli

from edgevision.cli.main import build_parser
from edgevision.recorder.index import EventIndex

HEAVY = ("cv2", "numpy", "av", "ai_edge_litert", "tflite_runtime")
V1 = "ssd_mobilenet_v1_coco_quant"


# -- fast --help: no heavy import -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--help"],
        ["run", "--help"],
        ["detect", "--help"],
        ["models", "fetch", "--help"],
        ["doctor", "--help"],
    ],
)
def test_help_imports_no_heavy_module(argv: list[str]) -> None:
    code = (
        "import sys\n"
        "from edgevision.cli.main import build_parser, main\n"
        "build_parser()\n"
        f"argv = {argv!r}\n"
        "if argv:\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "[]"


# -- global flags before or after the subcommand ---------------------------------------------------------
@pytest.mark.parametrize(
    ("argv", "verbose", "quiet", "no_progress"),
    [
        (["run", "--video", "x.mp4"], False, False, False),
        (["-v", "run", "--video", "x.mp4"], True, False, False),
        (["run", "-v", "--video", "x.mp4"], True, False, False),
        (["run", "--video", "x.mp4", "--verbose"], True, False, False),
        (["models", "list", "-q"], False, True, False),
        (["-q", "models", "list"], False, True, False),
        (["models", "fetch", V1, "--no-progress"], False, False, True),
        (["events", "list", "-v", "-q"], True, True, False),
        (["doctor", "-q"], False, True, False),
    ],
)
def test_global_flags_anywhere(argv: list[str], verbose: bool, quiet: bool, no_progress: bool) -> None:
    args = build_parser().parse_args(argv)
    assert (args.verbose, args.quiet, args.no_progress) == (verbose, quiet, no_progress)


# -- did you mean -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "code", "hint"),
    [
        (["rn", "--video", "x"], 2, "did you mean 'run'?"),
        (["modles", "list"], 2, "did you mean 'models'?"),
        (["models", "fecth", V1], 2, "did you mean 'fetch'?"),
        (["models", "info", "ssd_mobilenet_v1_coco_qant"], 78, f"did you mean '{V1}'?"),
        (["models", "fetch", "ssd_mobilenet_v2_coco"], 78, "did you mean 'ssd_mobilenet_v2_coco_quant'?"),
        (
            ["detect", "--model", "ssd_mobilenet_v1_coco", str(IMAGES / "cat.bmp")],
            78,
            f"did you mean '{V1}'?",
        ),
        (["run", "--video", str(WALKING), "--model", f"{V1}t"], 78, f"did you mean '{V1}'?"),
    ],
)
def test_suggestions(env: dict[str, str], args: list[str], code: int, hint: str) -> None:
    r = run_cli(args, env)
    assert r.returncode == code, r.stderr
    assert hint in r.stderr


def test_config_check_suggests_a_model_name(env: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(f"detector:\n  model: {V1}t\n")
    r = run_cli(["config", "check", str(path)], env)
    assert r.returncode == 78
    assert f"{path}:2 detector.model: unknown model '{V1}t'; did you mean '{V1}'?" in r.stderr


def test_no_suggestion_for_nonsense(env: dict[str, str]) -> None:
    r = run_cli(["zzzzqqq"], env)
    assert r.returncode == 2 and "invalid choice" in r.stderr and "did you mean" not in r.stderr


# -- --json on every read command -------------------------------------------------------------------------
def test_models_json(env: dict[str, str]) -> None:
    rows = json.loads(run_cli(["models", "list", "--json"], env).stdout)
    assert any(r["name"] == V1 and r["installed"] for r in rows)
    r = run_cli(["models", "verify", V1, "--json"], env)
    assert r.returncode == 0, r.stderr
    assert [(x["name"], x["ok"]) for x in json.loads(r.stdout)] == [(V1, True), ("coco_labelmap", True)]
    info = json.loads(run_cli(["models", "info", V1, "--json"], env).stdout)
    assert info["name"] == V1 and info["installed"]["ok"] is True
    assert info["inputs"][0]["shape"] == [1, 300, 300, 3] and info["inputs"][0]["dtype"] == "uint8"
    assert len(info["outputs"]) == 4


def test_models_verify_json_reports_a_bad_file(env: dict[str, str], tmp_path: Path) -> None:
    bad = tmp_path / "models"
    bad.mkdir()
    (bad / "ssd_mobilenet_v1_1.0_coco_quant_detect.tflite").write_bytes(b"not a model")
    r = run_cli(["models", "verify", "--models-dir", str(bad), "--json"], env)
    assert r.returncode == 78
    rows = json.loads(r.stdout)
    assert rows[0]["name"] == V1 and rows[0]["ok"] is False and "FAILED" in rows[0]["message"]


def test_config_check_json(env: dict[str, str], tmp_path: Path) -> None:
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text("detector:\n  threshold: 0.4\n")
    bad.write_text("detector:\n  threshold: 4\n")
    r = run_cli(["config", "check", str(good), str(bad), "--json"], env)
    assert r.returncode == 78
    rows = json.loads(r.stdout)
    assert [(x["file"], x["ok"]) for x in rows] == [(str(good), True), (str(bad), False)]
    assert "bad.yaml:2 detector.threshold" in rows[1]["errors"][0]


@pytest.fixture()
def recorded(tmp_path: Path) -> Path:
    data = tmp_path / "rec"
    index = EventIndex(data)
    eid = index.create("cam", "person", 1.0, 10, status="recording")
    (data / "clips").mkdir()
    (data / "clips" / "1.mp4").write_bytes(b"\0" * 100)
    index.update(eid, clip_path="clips/1.mp4", status="finalized", end_ts=4.0)
    index.close()
    return data


def test_events_show_json(env: dict[str, str], recorded: Path) -> None:
    r = run_cli(["events", "show", "1", "--data-dir", str(recorded), "--json"], env)
    assert r.returncode == 0, r.stderr
    row = json.loads(r.stdout)
    assert (
        row["id"] == 1 and row["status"] == "finalized" and row["clip_file"] == str(recorded / "clips/1.mp4")
    )


def test_bench_models_json(env: dict[str, str], tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("scheduler:\n  sizes: [300, 128]\n  cadences: [2]\n")
    out = tmp_path / "profile.json"
    r = run_cli(["bench", "models", "--config", str(cfg), "--invokes", "3", "--out", str(out), "--json"], env)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert [x["rung"] for x in doc["rungs"]] == [f"{V1}@300", f"{V1}@128", f"{V1}@128/k2"]
    assert doc["profile"] == str(out) and out.exists()
    assert all(x["p50_ms"] > 0 for x in doc["rungs"])


# -- --detections to stdout, a pipe, /dev/stdout ----------------------------------------------------------
@pytest.mark.parametrize("target", ["-", "/dev/stdout"])
def test_detections_to_stdout(env: dict[str, str], target: str) -> None:
    r = run_cli(
        ["run", "--video", str(WALKING), "--max-frames", "4", "--detections", target, "--no-timing"], env
    )
    assert r.returncode == 0, r.stderr
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert [x["frame"] for x in lines] == [0, 1, 2, 3]
    assert all(x["detections"] for x in lines)
    assert not Path("-").exists()


# -- output paths refused before anything runs ------------------------------------------------------------
def test_annotate_one_image_file_for_several_images(env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "out.jpg"
    r = run_cli(["detect", str(IMAGES / "squat.bmp"), str(IMAGES / "cat.bmp"), "--annotate", str(out)], env)
    assert r.returncode == 2
    assert "one image file cannot hold 2 annotated images" in r.stderr
    assert not out.exists() and r.stdout == ""


def test_annotate_name_opencv_cannot_write_is_refused(env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "out.jgp"  # a typo: this used to become a directory holding out.jgp/squat.bmp
    r = run_cli(["detect", str(IMAGES / "squat.bmp"), "--annotate", str(out)], env)
    assert r.returncode == 2, r.stderr
    assert "OpenCV cannot write '.jgp' images" in r.stderr and "end it with /" in r.stderr
    assert not out.exists() and r.stdout == ""


@pytest.mark.parametrize(
    ("given", "written"),
    [("one.png", "one.png"), ("run.v2/", "run.v2/squat.bmp"), ("plain", "plain/squat.bmp")],
    ids=["image-file", "dir-with-slash", "dir-no-suffix"],
)
def test_annotate_file_or_directory(env: dict[str, str], tmp_path: Path, given: str, written: str) -> None:
    r = run_cli(["detect", str(IMAGES / "squat.bmp"), "--annotate", f"{tmp_path}/{given}"], env)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / written).is_file()


@pytest.mark.parametrize(
    "args",
    [
        ["detect", str(IMAGES / "squat.bmp"), "--annotate", "{f}/x.jpg"],
        ["detect", str(IMAGES / "squat.bmp"), str(IMAGES / "cat.bmp"), "--annotate", "{f}/out"],
        ["run", "--video", str(WALKING), "--save-video", "{f}/a.mp4"],
        ["run", "--video", str(WALKING), "--detections", "{f}/x.jsonl"],
    ],
    ids=["annotate-file", "annotate-dir", "save-video", "detections"],
)
def test_output_under_a_file_is_a_usage_error_before_anything_runs(
    env: dict[str, str], tmp_path: Path, args: list[str]
) -> None:
    f = tmp_path / "d.jsonl"
    f.write_text("a file, not a directory\n")
    r = run_cli([a.format(f=f) for a in args], env)
    assert r.returncode == 2, r.stderr
    assert f"{f} is a file, not a directory" in r.stderr and "Traceback" not in r.stderr
    assert r.stdout == ""  # nothing was detected first


@pytest.mark.parametrize(
    ("name", "message"), [("clip.xyz", "cannot write video with extension '.xyz'"), ("clip", "'(none)'")]
)
def test_save_video_extension_refused_before_the_run(
    env: dict[str, str], tmp_path: Path, name: str, message: str
) -> None:
    out = tmp_path / name
    r = run_cli(
        ["run", "--video", str(WALKING), "--save-video", str(out), "--detections", str(tmp_path / "d")], env
    )
    assert r.returncode == 2 and message in r.stderr
    assert not out.exists() and not (tmp_path / "d").exists()
    assert list(tmp_path.iterdir()) == []  # the writer probe is gone too


def test_events_export_refuses_to_overwrite(env: dict[str, str], recorded: Path, tmp_path: Path) -> None:
    dest = tmp_path / "export"
    first = run_cli(["events", "export", "1", str(dest), "--data-dir", str(recorded)], env)
    assert first.returncode == 0, first.stderr
    (dest / "event-000001.mp4").write_bytes(b"edited by the user")
    again = run_cli(["events", "export", "1", str(dest), "--data-dir", str(recorded)], env)
    assert again.returncode == 2 and "already exists" in again.stderr and "--force" in again.stderr
    assert (dest / "event-000001.mp4").read_bytes() == b"edited by the user"
    forced = run_cli(["events", "export", "1", str(dest), "--data-dir", str(recorded), "--force"], env)
    assert forced.returncode == 0 and (dest / "event-000001.mp4").read_bytes() == b"\0" * 100
    afile = tmp_path / "a-file"
    afile.write_text("x")
    r = run_cli(["events", "export", "1", str(afile), "--data-dir", str(recorded)], env)
    assert r.returncode == 2 and "not a directory" in r.stderr


# -- install hints -----------------------------------------------------------------------------------------
def test_install_hints_install_from_the_checkout_as_the_readme_does() -> None:
    """edgevision is installed from its checkout (README: ``pip install .``, ``pip install '.[tflite]'`` ...); a
    hint naming ``edgevision`` or ``'edgevision[extra]'`` would fetch an unrelated package from PyPI."""
    readme = (REPO / "README.md").read_text()
    extras = []
    for path in sorted((REPO / "edgevision").rglob("*.py")):
        text = path.read_text()
        assert not re.search(r"pip install (-e )?'?edgevision\b", text), path
        extras += re.findall(r"pip install (?:-e )?'\.\[\w+\]'", text)
    assert {"pip install -e '.[train]'", "pip install '.[tflite]'", "pip install '.[pi]'"} <= set(extras)
    assert [e for e in extras if e not in readme] == []


def test_default_config_comments_say_what_the_code_does() -> None:
    """configs/default.yaml lists exactly the --save-video extensions the writer takes; the pre-roll is packets."""
    from edgevision.pipeline.sinks import VIDEO_SUFFIXES

    comments = {}
    for line in (REPO / "configs" / "default.yaml").read_text().splitlines():
        key, _, rest = line.strip().partition(":")
        comments[key] = rest.partition("#")[2]
    assert re.findall(r"\.\w+", comments["save_video"]) == list(VIDEO_SUFFIXES)
    assert "packets" in comments["pre_roll_s"] and "JPEG" not in comments["pre_roll_s"]


# -- LiteRT's own INFO line ------------------------------------------------------------------------------
def test_runtime_info_line_is_silenced(env: dict[str, str]) -> None:
    e = dict(env)
    e.pop("TF_CPP_MIN_LOG_LEVEL", None)
    r = run_cli(["detect", str(IMAGES / "squat.bmp")], e)
    assert r.returncode == 0, r.stderr
    assert "person" in r.stdout
    assert "XNNPACK" not in r.stderr and "INFO: Created TensorFlow Lite" not in r.stderr


def test_silencing_keeps_every_other_stderr_line() -> None:
    code = (
        "import os, sys\n"
        "from edgevision.inference.runtime_log import quiet_runtime_info\n"
        "with quiet_runtime_info():\n"
        "    os.write(2, b'INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\\n')\n"
        "    os.write(2, b'ERROR: a real runtime error\\n')\n"
        "    print('python stderr line', file=sys.stderr)\n"
        "    os.write(2, b'INFO: Replacing 12 node(s) with delegate (TfLiteXNNPackDelegate) node\\n')\n"
        "print('after', file=sys.stderr)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0
    assert r.stderr == "ERROR: a real runtime error\npython stderr line\nafter\n"


def test_no_temporary_file_leaves_stderr_unfiltered_and_no_descriptor_open() -> None:
    """A service whose $TMPDIR is read-only or full still loads its model: the runtime's INFO line is then
    simply shown (it used to raise from the block and leak a duplicate of fd 2)."""
    code = (
        "import os, sys, tempfile\n"
        "def no_tmp(*a, **k):\n"
        "    raise OSError(30, 'Read-only file system')\n"
        "tempfile.TemporaryFile = no_tmp\n"
        "from edgevision.inference.runtime_log import quiet_runtime_info\n"
        "before = sorted(os.listdir('/proc/self/fd'))\n"
        "with quiet_runtime_info():\n"
        "    os.write(2, b'INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\\n')\n"
        "assert sorted(os.listdir('/proc/self/fd')) == before, (before, os.listdir('/proc/self/fd'))\n"
        "print('after', file=sys.stderr)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stderr == "INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\nafter\n"


def test_console_script_runs_from_any_directory(env: dict[str, str], tmp_path: Path) -> None:
    """``python -m edgevision`` does not depend on the working directory (no stray relative paths)."""
    r = run_cli(["models", "verify", V1], env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert os.listdir(tmp_path) == []
    assert SHARED_MODELS.exists()


def test_replay_progress_on_a_terminal_only(env: dict[str, str]) -> None:
    from test_fetch_network import _pty_run

    args = ["run", "--video", str(WALKING), "--max-frames", "6"]
    code, tty = _pty_run(args, env)
    assert code == 0, tty
    assert "replay supervision_walking.mp4" in tty and "6/6 frames" in tty
    piped = run_cli(args, env)
    assert (
        piped.returncode == 0
        and "replay supervision_walking.mp4" not in piped.stderr
        and "\r" not in piped.stderr
    )


@pytest.mark.parametrize("flags", [["--invokes", "0"], ["--invokes", "-3"], ["--frames", "0"]])
def test_bench_models_refuses_counts_below_one_before_timing(
    flags: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--invokes 0`` used to load every rung's model and then die in np.percentile([]) (IndexError, exit 1);
    ``--frames 0`` said the video could not be opened. Both are usage errors, before anything is timed."""
    import numpy as np

    from edgevision.cli.main import main
    from edgevision.scheduler import ladder

    def build_ladder(
        cfg: object, frames: list[np.ndarray], invokes: int, on_rung: object = None
    ) -> list[object]:
        handle = type("H", (), {"invoke_on": lambda self, t: None})()
        ladder.measure(type("D", (), {"handle": handle})(), [np.zeros(1)], invokes)  # what a real rung does
        raise AssertionError("timed a rung")

    monkeypatch.setattr(ladder, "build_ladder", build_ladder)
    video = ["--video", str(WALKING)] if flags[0] == "--frames" else []
    code = main(["bench", "models", *flags, *video, "--out", str(tmp_path / "p.json")])
    err = capsys.readouterr().err
    assert code == 2 and f"{flags[0]} must be at least 1" in err, err
