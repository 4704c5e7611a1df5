"""A data directory this user may not enter (the service's: ``/var/lib/edgevision``, 0750 edgevision) is one line,
never a traceback: ``events`` exits 66 (input unreadable), ``doctor`` reports it in its disk check.

The commands run in a forked child that drops to ``nobody``, so the kernel really refuses (root reads
everything); the parent first runs each command on a readable directory, so every module the child needs is
already imported (a test venv under ``/root`` is not readable by ``nobody``).
"""

from __future__ import annotations

import contextlib
import gc
import io
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import IMAGES, SHARED_MODELS, WALKING

from edgevision.cli.doctor import probe
from edgevision.cli.main import main
from edgevision.recorder.index import EventIndex

NOBODY = 65534

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to another user")


def as_nobody(work: Callable[[], int]) -> tuple[int, str]:
    """Run ``work`` in a child process as uid/gid 65534: (its return value, what it wrote to stderr)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        # Objects the parent made before the fork (earlier tests' FFmpeg containers, whose codec threads do not
        # exist here) must not be collected here: their finalizers crashed the child with SIGSEGV.
        gc.freeze()
        code = 99
        try:
            os.close(read)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            sys.stderr = sys.stdout = io.TextIOWrapper(io.FileIO(write, "w"), write_through=True)
            code = work()
        except BaseException as exc:  # reported to the parent as its stderr and status 99
            print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read) as fh:
        out = fh.read()
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), out


@pytest.fixture()
def locked(tmp_path: Path) -> Path:
    """A data directory with an index, inside a directory only root may enter."""
    outer = tmp_path / "var-lib-edgevision"
    data = outer / "door"
    EventIndex(data).close()
    outer.chmod(0o700)
    return data


def _warm(args: list[str], data: Path, readable: Path) -> None:
    """Run the command once as root on a readable copy of the layout (imports every module it needs)."""
    EventIndex(readable).close()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        main([a.replace(str(data), str(readable)) for a in args])


@pytest.mark.parametrize(
    "command", [["list"], ["list", "--json"], ["show", "1"], ["prune", "--dry-run"], ["prune"]]
)
def test_events_on_a_data_directory_this_user_may_not_enter_is_exit_66(
    command: list[str], locked: Path, tmp_path: Path
) -> None:
    """``events list --data-dir /var/lib/edgevision`` without sudo was a PermissionError traceback (exit 1)."""
    args = ["events", *command, "--data-dir", str(locked)]
    _warm(args, locked, tmp_path / "readable")
    code, err = as_nobody(lambda: main(args))
    assert code == 66 and "Traceback" not in err, err
    assert err.startswith("edgevision: error: ") and "Permission denied" in err, err
    assert len(err.splitlines()) == 1, err


def test_doctor_disk_check_on_a_data_directory_this_user_may_not_enter(locked: Path) -> None:
    """doctor's disk probe raised PermissionError (a traceback instead of the report) on such a directory."""

    def work() -> int:
        free, error = probe.data_dir_facts(locked)
        print(f"{free} {error}", file=sys.stderr)
        return 0 if error is not None and "Permission denied" in error else 1

    code, err = as_nobody(work)
    assert code == 0, err


@pytest.mark.parametrize(
    "command",
    [
        ["list"],
        ["list", "--json"],
        ["verify"],
        ["info", "ssd_mobilenet_v1_coco_quant"],
        ["fetch", "ssd_mobilenet_v1_coco_quant", "--mirror", str(SHARED_MODELS)],
    ],
)
def test_models_in_a_directory_this_user_may_not_enter_is_one_line(
    command: list[str], tmp_path: Path
) -> None:
    """``models list --models-dir /var/lib/edgevision/models`` without sudo was a PermissionError traceback
    (exit 1); now a model error in one line (exit 78)."""
    outer = tmp_path / "var-lib-edgevision"
    models = outer / "models"
    models.mkdir(parents=True)
    outer.chmod(0o700)
    args = ["models", *command, "--models-dir", str(models)]
    readable = tmp_path / "readable"
    readable.mkdir()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        main([a.replace(str(models), str(readable)) for a in args])
    code, err = as_nobody(lambda: main(args))
    assert code == 78 and "Traceback" not in err, err
    assert err.startswith("edgevision: error: ") and "Permission denied" in err, err


def test_doctor_models_check_in_a_directory_this_user_may_not_enter(tmp_path: Path) -> None:
    """doctor crashed (PermissionError traceback) on a models directory it may not enter."""
    from edgevision.cli.doctor_cmd import _models
    from edgevision.config import load_config

    outer = tmp_path / "var-lib-edgevision"
    (outer / "models").mkdir(parents=True)
    outer.chmod(0o700)
    cfg = load_config(None, {"models.dir": str(outer / "models")})
    _models(load_config(None, {"models.dir": str(tmp_path)}))  # imports what it needs

    def work() -> int:
        check = _models(cfg)
        print(check.to_dict(), file=sys.stderr)
        return 0 if check.status.value == "fail" and "Permission denied" in check.detail else 1

    code, err = as_nobody(work)
    assert code == 0, err


@pytest.mark.parametrize(
    "command",
    [
        ["run", "--video", str(WALKING), "--max-frames", "1", "--no-progress"],
        ["detect", str(IMAGES / "grace_hopper.bmp")],
    ],
)
def test_run_and_detect_on_a_models_directory_this_user_may_not_enter_is_exit_78(
    command: list[str], models_dir: Path, tmp_path: Path
) -> None:
    """``run --models-dir /var/lib/edgevision/models`` (or ``models.dir``) without sudo was a PermissionError
    traceback through the config check and the detector, exit 1: under systemd a restart loop, not a stop."""
    outer = tmp_path / "var-lib-edgevision"
    models = outer / "models"
    shutil.copytree(models_dir, models)
    outer.chmod(0o700)
    args = [*command, "--models-dir", str(models)]
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert main([*command, "--models-dir", str(models_dir)]) == 0  # imports every module the child needs
    code, err = as_nobody(lambda: main(args))
    assert code == 78 and "Traceback" not in err, err
    assert err.startswith("edgevision: error: ") and "Permission denied" in err, err
    assert f"edgevision {command[0]}" in err, err
