"""``models fetch`` without a network: one clear line naming the mirror, exit 69; progress while downloading."""

from __future__ import annotations

import os
import pty
import shutil
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import SHARED_MODELS, run_cli, serve_directory

from edgevision.catalog import ModelEntry, fetch_entry, load_catalog
from edgevision.errors import EXIT_UNAVAILABLE, NetworkError
from edgevision.errors import ModelError as _ModelError

V1 = "ssd_mobilenet_v1_coco_quant"
V1_FILE = "ssd_mobilenet_v1_1.0_coco_quant_detect.tflite"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again when the block ends: connecting is refused


@pytest.fixture()
def silent_server() -> Iterator[str]:
    """Accepts connections and never answers: a request times out."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    yield f"http://127.0.0.1:{srv.getsockname()[1]}/models/{V1_FILE}"
    srv.close()


@pytest.fixture()
def http_root(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    root = tmp_path / "www"
    root.mkdir()
    with serve_directory(root) as base:
        yield f"{base}", root


def _entry_from(url: str) -> ModelEntry:
    entry = load_catalog().model(V1)
    return entry.model_copy(
        update={"sources": [entry.sources[0].model_copy(update={"url": url, "member": None})]}
    )


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("dns", "cannot resolve host"),
        ("refused", "connection refused"),
        ("timeout", "timed out"),
    ],
)
def test_unreachable_source_is_a_network_error_naming_the_mirror(
    tmp_path: Path, silent_server: str, kind: str, reason: str
) -> None:
    url = {
        "dns": f"http://models.edgevision.invalid/{V1_FILE}",  # .invalid never resolves (RFC 2606)
        "refused": f"http://127.0.0.1:{_closed_port()}/{V1_FILE}",
        "timeout": silent_server,
    }[kind]
    with pytest.raises(NetworkError) as err:
        fetch_entry(_entry_from(url), tmp_path / "m", timeout=0.5)
    msg = str(err.value)
    assert "\n" not in msg and reason in msg
    assert "--mirror DIR|URL" in msg and "EDGEVISION_MODEL_MIRROR" in msg
    assert err.value.exit_code == EXIT_UNAVAILABLE == 69
    assert [p.name for p in (tmp_path / "m").iterdir() if not p.name.startswith(".fetch-")] == []


def test_http_404_is_not_called_offline(tmp_path: Path, http_root: tuple[str, Path]) -> None:
    base, _root = http_root
    with pytest.raises(_ModelError) as err:
        fetch_entry(_entry_from(f"{base}/missing/{V1_FILE}"), tmp_path / "m", timeout=5)
    assert not isinstance(err.value, NetworkError)
    assert "HTTP 404" in str(err.value)


def _offline() -> bool:
    try:
        urllib.request.urlopen("http://download.tensorflow.org/", timeout=3)
    except OSError as exc:
        from edgevision.catalog.fetch import network_failure

        return network_failure(exc) is not None
    return False


def test_cli_fetch_offline_says_mirror(env: dict[str, str], tmp_path: Path) -> None:
    if not _offline():
        pytest.skip("this machine reaches download.tensorflow.org")
    r = run_cli(["models", "fetch", V1, "--models-dir", str(tmp_path / "m")], env)
    assert r.returncode == 69, r.stderr
    first = r.stderr.strip().splitlines()[0]
    assert first.startswith(f"edgevision: error: {V1}: cannot download, no network")
    assert "--mirror DIR|URL" in first and "Traceback" not in r.stderr


def _pty_run(args: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run the CLI with stderr on a pseudo-terminal (as in a shell); returns (exit code, terminal output)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgevision", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=slave,
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return proc.wait(timeout=120), b"".join(chunks).decode(errors="replace")


def test_fetch_draws_a_progress_bar_on_a_terminal_only(
    env: dict[str, str], tmp_path: Path, http_root: tuple[str, Path]
) -> None:
    base, root = http_root
    (root / "m").mkdir()
    shutil.copy(SHARED_MODELS / V1_FILE, root / "m" / V1_FILE)
    shutil.copy(SHARED_MODELS / "ssd_mobilenet_v1_labelmap.txt", root / "m")
    args = ["models", "fetch", V1, "--mirror", f"{base}/m"]
    code, tty = _pty_run([*args, "--models-dir", str(tmp_path / "a")], env)
    assert code == 0, tty
    assert "\r\x1b[K" + V1 in tty and "100%" in tty and "MiB" in tty
    piped = run_cli([*args, "--models-dir", str(tmp_path / "b")], env)
    assert piped.returncode == 0 and "\r" not in piped.stderr + piped.stdout
    code, quiet = _pty_run([*args, "--models-dir", str(tmp_path / "c"), "--no-progress"], env)
    assert code == 0 and "\x1b[K" not in quiet


def test_a_trickling_download_is_refused_as_stalled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A server that sends a few bytes at a time never trips a read's timeout; the download averages under the
    minimum rate over a window and is refused, so the next source is tried (it used to go on for as long as the
    server trickled)."""
    import http.server
    import threading
    import time

    from edgevision.catalog import fetch as fetch_mod

    monkeypatch.setattr(fetch_mod, "STALL_WINDOW_S", 0.5)
    monkeypatch.setattr(fetch_mod, "STALL_MIN_BYTES_PER_S", 10_000.0)

    class Trickle(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(1 << 20))
            self.end_headers()
            end = time.monotonic() + 8
            try:
                while time.monotonic() < end:
                    self.wfile.write(b"x" * 100)
                    self.wfile.flush()
                    time.sleep(0.05)
            except OSError:
                pass

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Trickle)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        t0 = time.monotonic()
        with pytest.raises(fetch_mod._Refused, match="stalled"):
            fetch_mod._download(
                f"http://127.0.0.1:{server.server_address[1]}/m", tmp_path / "m", 1 << 20, 5.0
            )
        assert time.monotonic() - t0 < 4
    finally:
        server.shutdown()
        server.server_close()
