"""Fetch catalog files the way a Pi would: mirror first, then the official sources; verify, then install.

Nothing reaches the models directory unless its size and sha256 match the catalog and, for ``.tflite``
files, it passes the structural TFLite check. Installation is a rename of an fsync'd temporary file in the
same directory, so a crash leaves either no file or the complete one.
"""

from __future__ import annotations

import contextlib
import enum
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edgevision.catalog.entries import LabelEntry, ModelEntry, Source
from edgevision.errors import InputError, ModelError, NetworkError
from edgevision.fsutil import fsync_dir, install_atomically, sha256_file, unlink_quietly
from edgevision.inference.tflite_file import inspect_tflite
from edgevision.redact import redact

log = logging.getLogger(__name__)

Entry = ModelEntry | LabelEntry
PINS_FILE = "pins.json"
MAX_ARCHIVE_BYTES = 1 << 30
USER_AGENT = "edgevision-model-fetch/1"
# A download slower than this over a whole window is stalled (a trickling server or link): refused, so the next
# source is tried. Each read's own timeout cannot see it, since every read brings a little.
STALL_WINDOW_S = 120.0
STALL_MIN_BYTES_PER_S = 1024.0

#: ``progress(done_bytes, total_bytes_or_None)``, called as a download advances (from the fetching thread).
ProgressCallback = Callable[[int, int | None], None]

# What pip prints when it cannot reach the index (it retries, then gives up with a generic line).
_PIP_OFFLINE = (
    "NewConnectionError",
    "Name or service not known",
    "Temporary failure in name resolution",
    "Network is unreachable",
    "Connection refused",
    "ConnectTimeout",
    "Read timed out",
)


class _Refused(Exception):
    """One candidate source failed; the reason is collected and the next source is tried."""

    def __init__(self, message: str, network: bool = False) -> None:
        super().__init__(message)
        self.network = network  # the host could not be reached at all (DNS, refused, timeout, no route)


def network_failure(exc: BaseException) -> str | None:
    """A short reason when ``exc`` means "could not reach the host" (offline), else None (e.g. HTTP 404)."""
    reason: object = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(reason, socket.gaierror):
        return f"cannot resolve host ({reason.strerror or reason})"
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return "timed out"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, (ConnectionError, OSError)) and getattr(reason, "errno", None) in (101, 113):
        return f"no route to host ({reason.strerror})"  # ENETUNREACH, EHOSTUNREACH
    return None


class FetchAction(str, enum.Enum):
    """What ``fetch_entry`` did with a file."""

    INSTALLED = "installed"  # downloaded (or copied from a mirror), verified and installed
    PRESENT = "present"  # a verified copy was there already

    def __str__(self) -> str:
        return str(self.value)


@dataclass(frozen=True)
class FetchReport:
    """What ``fetch_entry`` did for one file."""

    name: str
    path: Path
    action: FetchAction
    source: str


def _pins(dest: Path) -> dict[str, str]:
    """The checksums pinned on first use here; none when the file is missing or not a JSON object of pins (an
    unpinned file then fails verification until ``fetch --allow-unpinned`` pins it again)."""
    path = dest / PINS_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except ValueError:
        data = None
    if not isinstance(data, dict):
        log.warning("%s is not a JSON object of checksums: ignored", path)
        return {}
    return {str(k): str(v) for k, v in data.items()}


def _save_pin(dest: Path, file: str, digest: str) -> None:
    pins = _pins(dest)
    pins[file] = digest
    tmp = dest / f".{PINS_FILE}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(pins, indent=2, sort_keys=True) + "\n")
    install_atomically(tmp, dest / PINS_FILE)


# What a fetch leaves in the models directory while it runs, each named with the fetching process's id.
_LEFTOVER = re.compile(r"^\.(?:.+\.(\d+)\.partial|fetch-(\d+)-.*|" + re.escape(PINS_FILE) + r"\.(\d+)\.tmp)$")


def _process_gone(pid: int) -> bool:
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # EPERM: another user's process, alive
        return False
    return False


# A leftover is removed only once untouched this long as well: a fetch in another PID namespace (a container
# sharing the models directory) has a process id that means nothing here, but it writes at least every --timeout.
LEFTOVER_QUIET_S = 600.0


def _last_touched(path: Path) -> float:
    """The newest mtime of ``path`` and, for a work directory, of what is in it."""
    times = [path.lstat().st_mtime]
    if path.is_dir() and not path.is_symlink():
        times += [p.lstat().st_mtime for p in path.iterdir()]
    return max(times)


def remove_leftovers(dest: Path, now: float | None = None) -> None:
    """Remove the partial files, work directories and pin files of fetches whose process is gone (killed, or a
    power cut) and that nothing has written for :data:`LEFTOVER_QUIET_S`: hidden, they would fill the models
    directory unnoticed. Best effort: what cannot be removed stays."""
    now = time.time() if now is None else now
    for path in dest.iterdir():
        m = _LEFTOVER.match(path.name)
        if m is None or not _process_gone(int(next(g for g in m.groups() if g is not None))):
            continue
        try:
            if now - _last_touched(path) < LEFTOVER_QUIET_S:
                continue
        except OSError:  # gone meanwhile, or unreadable: left as it is
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                path.unlink()


def expected_sha256(entry: Entry, dest: Path) -> str | None:
    """The catalog's sha256, or the locally pinned one for an unpinned entry."""
    return entry.sha256 or _pins(dest).get(entry.file)


def check_file(path: Path, entry: Entry, expected: str | None) -> str:
    """Verify size, sha256 and (for models) TFLite structure; return the sha256 or raise ``_Refused``."""
    size = path.stat().st_size
    if entry.size is not None and size != entry.size:
        raise _Refused(f"size {size} bytes, expected {entry.size}")
    digest = sha256_file(path)
    if expected is not None and digest != expected:
        raise _Refused(f"sha256 {digest[:16]}… does not match the catalog's {expected[:16]}…")
    if entry.file.endswith(".tflite"):
        try:
            inspect_tflite(path)
        except ModelError as exc:
            raise _Refused(str(exc).split(": ", 1)[-1]) from None
    return digest


def verify_installed(entry: Entry, dest: Path) -> tuple[bool, str]:
    """Check an installed file against the catalog: ``(ok, message)``."""
    path = dest / entry.file
    if not path.exists():
        return False, "not installed"
    expected = expected_sha256(entry, dest)
    if expected is None:  # unpinned, and no checksum was pinned here (pins.json lost, or never written)
        return False, f"FAILED: no checksum pinned in {dest / PINS_FILE}; fetch it with --allow-unpinned"
    try:
        digest = check_file(path, entry, expected)
    except _Refused as exc:
        return False, f"FAILED: {exc}"
    pin = "" if entry.sha256 else " (locally pinned)"
    return True, f"ok sha256 {digest[:16]}…{pin}"


def _download(
    url: str, out: Path, limit: int, timeout: float, progress: ProgressCallback | None = None
) -> None:
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp, open(out, "wb") as fh:
            length = resp.headers.get("Content-Length")
            expected = int(length) if length and length.isdigit() else None
            total = 0
            window_start, window_bytes = time.monotonic(), 0
            while True:
                block = resp.read1(1 << 16)  # what has come, not a full 64 KiB: a trickle is seen below
                if not block:
                    break
                total += len(block)
                window_bytes += len(block)
                now = time.monotonic()
                if now - window_start >= STALL_WINDOW_S:
                    if window_bytes < STALL_MIN_BYTES_PER_S * (now - window_start):
                        raise _Refused(
                            f"download stalled: {window_bytes} bytes in the last {now - window_start:.0f} s"
                        )
                    window_start, window_bytes = now, 0
                if total > limit:
                    raise _Refused(f"download exceeds the expected {limit} bytes")
                fh.write(block)
                if progress is not None:
                    progress(total, expected)
    except urllib.error.HTTPError as exc:
        raise _Refused(f"HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        offline = network_failure(exc)
        reason = getattr(exc, "reason", exc)
        raise _Refused(f"download failed: {offline or reason}", network=offline is not None) from None


def _extract(archive: Path, member: str, out: Path, limit: int) -> None:
    name = archive.name.lower()
    try:
        if name.endswith((".zip", ".whl")):
            with zipfile.ZipFile(archive) as zf:
                info = zf.getinfo(member)
                if info.file_size > limit:
                    raise _Refused(f"archive member {member} is {info.file_size} bytes, expected {limit}")
                with zf.open(info) as src, open(out, "wb") as dst:
                    shutil.copyfileobj(src, dst)
        elif name.endswith((".tar.gz", ".tgz", ".tar")):
            with tarfile.open(archive) as tf:
                ti = tf.getmember(member)
                member_fh = tf.extractfile(ti)
                if member_fh is None or ti.size > limit:
                    raise _Refused(f"archive member {member} is not a regular file of the expected size")
                with member_fh, open(out, "wb") as dst:
                    shutil.copyfileobj(member_fh, dst)
        else:
            raise _Refused(f"unsupported archive type: {archive.name}")
    except KeyError:
        raise _Refused(f"archive has no member {member}") from None
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as exc:
        raise _Refused(f"cannot read archive {archive.name}: {exc}") from None


def _wheel_tags(wheel: str) -> tuple[str, str]:
    """(python version, platform) of a wheel file name such as ``x-1-cp311-cp311-manylinux_…_x86_64.whl``."""
    parts = wheel[: -len(".whl")].split("-")
    py, plat = parts[-3], parts[-1].split(".")[-1]
    version = f"{py[2]}.{py[3:]}" if py.startswith("cp") and len(py) > 3 else "3"
    return version, plat


def _pip_download(source: Source, workdir: Path, timeout: float) -> Path:
    assert source.pypi and source.wheel
    version, plat = _wheel_tags(source.wheel)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--python-version",
        version,
        "--platform",
        plat,
        "--implementation",
        "cp",
        "--disable-pip-version-check",
        "-q",
        "-d",
        str(workdir),
        source.pypi,
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise _Refused(f"pip download {source.pypi} timed out", network=True) from None
    except OSError as exc:
        raise _Refused(f"pip download failed: {exc}") from None
    wheel = workdir / source.wheel
    if proc.returncode != 0 or not wheel.exists():
        text = proc.stderr or proc.stdout
        tail = text.strip().splitlines()[-1:] or ["no wheel"]
        offline = any(marker in text for marker in _PIP_OFFLINE)
        raise _Refused(f"pip download {source.pypi} failed: {tail[0]}", network=offline)
    return wheel


def _official(
    src: Source,
    limit: int,
    timeout: float,
    from_member: Callable[[Source, Callable[[Path], Path]], Callable[[Path, Path], None]],
    progress: ProgressCallback | None = None,
) -> Callable[[Path, Path], None]:
    """The producer for one official source: pinned wheel, archive member or direct file."""
    url = src.url or ""

    def wheel(work: Path) -> Path:
        return _pip_download(src, work, timeout * 5)

    def archive(work: Path) -> Path:
        target = work / url.rstrip("/").rsplit("/", 1)[-1]
        _download(url, target, MAX_ARCHIVE_BYTES, timeout, progress)
        return target

    def direct(out_path: Path, work: Path) -> None:
        _download(url, out_path, limit, timeout, progress)

    if src.pypi is not None:
        return from_member(src, wheel)
    if src.member is not None:
        return from_member(src, archive)
    return direct


def _candidates(
    entry: Entry, mirror: str | None, timeout: float, progress: ProgressCallback | None = None
) -> list[tuple[str, Callable[[Path, Path], None]]]:
    """Ordered (description, producer) pairs; a producer writes the candidate file to ``out``."""
    limit = entry.size or MAX_ARCHIVE_BYTES
    out: list[tuple[str, Callable[[Path, Path], None]]] = []

    def from_member(src: Source, archive_loc: Callable[[Path], Path]) -> Callable[[Path, Path], None]:
        def produce(out_path: Path, work: Path) -> None:
            archive = archive_loc(work)
            if src.wheel_sha256 is not None and sha256_file(archive) != src.wheel_sha256:
                raise _Refused(f"{archive.name}: sha256 does not match the pinned {src.wheel_sha256[:16]}…")
            assert src.member is not None
            _extract(archive, src.member, out_path, limit)

        return produce

    if mirror:
        parsed = urllib.parse.urlparse(mirror)
        is_http = parsed.scheme in ("http", "https")
        base = mirror.rstrip("/")

        def where(name: str) -> str:  # for messages: a URL's secrets masked
            return redact(_mirror_url(mirror, name)) if is_http else f"{base}/{name}"

        def mirror_file(name: str) -> Callable[[Path], Path]:
            def locate(work: Path) -> Path:
                if is_http:
                    target = work / name
                    _download(_mirror_url(mirror, name), target, MAX_ARCHIVE_BYTES, timeout, progress)
                    return target
                path = Path(mirror) / name
                if not path.is_file():
                    raise _Refused(f"not in mirror ({path})")
                return path

            return locate

        def copy_direct(out_path: Path, work: Path) -> None:
            if is_http:
                _download(_mirror_url(mirror, entry.file), out_path, limit, timeout, progress)
            else:
                src = Path(mirror) / entry.file
                if not src.is_file():
                    raise _Refused(f"not in mirror ({src})")
                shutil.copyfile(src, out_path)

        out.append((f"mirror {where(entry.file)}", copy_direct))
        for src in entry.sources:
            if src.archive_name:
                out.append(
                    (
                        f"mirror {where(src.archive_name)} :: {src.member}",
                        from_member(src, mirror_file(src.archive_name)),
                    )
                )

    for src in entry.sources:
        out.append((src.describe(), _official(src, limit, timeout, from_member, progress)))
    return out


def _mirror_url(mirror: str, name: str) -> str:
    """``name`` joined onto the path of an HTTP mirror URL, before any query (``…/models/NAME?token=…``)."""
    parts = urllib.parse.urlsplit(mirror)
    path = parts.path.rstrip("/") + "/" + urllib.parse.quote(name)
    return urllib.parse.urlunsplit(parts._replace(path=path))


def check_mirror(mirror: str | None) -> None:
    """Refuse (exit 66) a mirror naming a local directory that is not there: a mistyped ``--mirror`` is said to
    be one, not reported as every model file missing from it."""
    if not mirror or urllib.parse.urlparse(mirror).scheme in ("http", "https"):
        return
    path = Path(mirror)
    if not path.is_dir():
        what = "no such directory" if not path.exists() else "not a directory"
        raise InputError(
            f"model mirror {mirror}: {what} (a mirror, from --mirror, EDGEVISION_MODEL_MIRROR or models.mirror, "
            "is a directory or an http(s) URL holding the model files)"
        )


def fetch_entry(
    entry: Entry,
    dest: Path,
    mirror: str | None = None,
    allow_unpinned: bool = False,
    timeout: float = 60.0,
    force: bool = False,
    progress: ProgressCallback | None = None,
) -> FetchReport:
    """Install ``entry`` into ``dest`` (verified, atomically); a no-op when a verified copy is there.

    ``progress(done, total)`` follows each download. When every source failed because no host could be
    reached, the error is a :class:`NetworkError` (one line, naming the ``--mirror`` way out); a directory
    mirror that does not exist is an :class:`InputError` (:func:`check_mirror`), before any source is tried.
    """
    dest.mkdir(parents=True, exist_ok=True)
    final = dest / entry.file
    expected = expected_sha256(entry, dest)
    if expected is None and not allow_unpinned:
        raise ModelError(
            f"{entry.name}: no checksum is published ({entry.unpinned}); "
            "fetch it with --allow-unpinned to pin the checksum seen now"
        )
    if final.exists() and not force:
        ok, _ = verify_installed(entry, dest)
        if ok:
            return FetchReport(entry.name, final, FetchAction.PRESENT, str(final))
    check_mirror(mirror)
    remove_leftovers(dest)
    reasons: list[str] = []
    offline: list[bool] = []
    last_network = ""
    for desc, produce in _candidates(entry, mirror, timeout, progress):
        tmp = dest / f".{entry.file}.{os.getpid()}.partial"
        with tempfile.TemporaryDirectory(prefix=f".fetch-{os.getpid()}-", dir=dest) as work:
            try:
                produce(tmp, Path(work))
                digest = check_file(tmp, entry, expected)
            except _Refused as exc:
                unlink_quietly(tmp)
                reasons.append(f"{desc}: {exc}")
                offline.append(exc.network)
                last_network = str(exc).removeprefix("download failed: ") if exc.network else last_network
                continue
            except OSError as exc:  # a mirror file that cannot be read, a full disk: this source failed
                unlink_quietly(tmp)
                reasons.append(f"{desc}: {exc}")
                offline.append(False)
                continue
            except BaseException:
                unlink_quietly(tmp)
                raise
        try:
            # pinned before it is installed: a kill in between never leaves a file no checksum guards
            if expected is None:
                _save_pin(dest, entry.file, digest)
            install_atomically(tmp, final)
        finally:
            unlink_quietly(tmp)  # gone already once installed
        fsync_dir(dest)
        return FetchReport(entry.name, final, FetchAction.INSTALLED, desc)
    detail = "\n  ".join(reasons)
    if offline and all(offline):
        raise NetworkError(
            f"{entry.name}: cannot download, no network ({last_network}); nothing installed. Offline, install "
            "from a copy of the model files: --mirror DIR|URL or EDGEVISION_MODEL_MIRROR"
        )
    raise ModelError(f"{entry.name}: could not fetch a verified copy; nothing installed. Tried:\n  {detail}")
