"""Shared fixtures: the real models and media in ``../shared`` (or ``$EDGEVISION_SHARED``)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("EDGEVISION_SHARED", REPO.parent / "shared")).resolve()
IMAGES = SHARED / "media" / "images"
VIDEOS = SHARED / "media" / "video"
SHARED_MODELS = SHARED / "models"

if not (SHARED_MODELS / "manifest.json").exists():
    raise pytest.UsageError(
        f"real models and media not found at {SHARED}; set EDGEVISION_SHARED to the shared/ directory"
    )

WALKING = VIDEOS / "supervision_walking.mp4"
HALLWAY_1 = VIDEOS / "frigate_test_motion_video-1.mp4"
HALLWAY_3 = VIDEOS / "frigate_test_motion_video-3.mp4"


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models directory populated the way a user would: `models fetch` from a (directory) mirror."""
    from edgevision.catalog import fetch_entry, load_catalog

    dest = tmp_path_factory.mktemp("models")
    cat = load_catalog()
    for name, entry in cat.models.items():
        if entry.sha256 is None:
            continue
        for e in cat.files_for(name):
            fetch_entry(e, dest, mirror=str(SHARED_MODELS))
    return dest


@pytest.fixture()
def env(models_dir: Path, tmp_path: Path) -> dict[str, str]:
    """Environment for CLI subprocesses: the fixture models, a private data dir, no mirror, quiet TF logs."""
    e = dict(os.environ)
    e.update(
        EDGEVISION_MODELS_DIR=str(models_dir),
        EDGEVISION_DATA_DIR=str(tmp_path / "data"),
        TF_CPP_MIN_LOG_LEVEL="2",
        PYTHONUNBUFFERED="1",
    )
    e.pop("EDGEVISION_MODEL_MIRROR", None)
    return e


EDGEVISION = [sys.executable, "-m", "edgevision"]  # the command line of the CLI under test


def run_cli(
    args: list[str], env: dict[str, str], timeout: float = 120, **kw: Any
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m edgevision ARGS`` and return the completed process (text mode)."""
    return subprocess.run(
        [*EDGEVISION, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        **kw,
    )


def read_image(path: Path | str) -> np.ndarray:
    """``cv2.imread`` that fails loudly: a test image OpenCV cannot read is an error, not ``None``."""
    import cv2

    image = cv2.imread(str(path))
    if image is None:
        raise FileNotFoundError(f"{path}: OpenCV cannot read this image")
    return image


def count_frames(path: Path) -> int:
    """Frames OpenCV can decode from a video file (what a user's player would show)."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


@contextlib.contextmanager
def mjpeg_source(env: dict[str, str], tmp_path: Path) -> Iterator[int]:
    """Another edgevision replaying the walking clip in real time with its web view on; yields the port once
    ``/snapshot.jpg`` answers (a real HTTP MJPEG stream to read from), and stops it afterwards."""
    from browser import free_port

    port = free_port()
    cfg = tmp_path / "mjpeg-source.yaml"
    cfg.write_text(f"web:\n  enabled: true\n  port: {port}\n")
    server = subprocess.Popen(
        [
            *EDGEVISION,
            "run",
            "--config",
            str(cfg),
            "--video",
            str(WALKING),
            "--realtime",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/snapshot.jpg", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.3)
        yield port
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(60)


@contextlib.contextmanager
def serve_directory(root: Path) -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 serving ``root`` (quietly); yields its base URL."""
    import functools
    import http.server
    import threading

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
