"""``events list`` as a table: what a row says about an event still being recorded."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import run_cli

from edgevision.recorder.index import EventIndex


def test_an_event_still_recording_has_no_length_yet(env: dict[str, str], tmp_path: Path) -> None:
    data = tmp_path / "data"
    index = EventIndex(data)
    done = index.create("cam", "person", 10.0, 250)
    index.update(done, end_ts=14.5, status="finalized")
    index.create("cam", "person", 20.0, 500)  # open: no end yet
    index.close()
    r = run_cli(["events", "list", "--data-dir", str(data)], env)
    assert r.returncode == 0, r.stderr
    rows = {line.split()[-2]: line for line in r.stdout.splitlines()[1:]}
    assert "   4.5s" in rows["finalized"]
    assert "0.0s" not in rows["recording"] and "      -" in rows["recording"]


def test_an_id_beyond_what_the_index_can_hold_is_no_such_event(env: dict[str, str], tmp_path: Path) -> None:
    """SQLite integers end at 2**63 - 1: a bigger id used to raise OverflowError (a traceback, exit 1)."""
    data = tmp_path / "data"
    EventIndex(data).close()
    for command in (["show"], ["export"]):
        args = ["events", *command, str(2**64), *(["out"] if command == ["export"] else [])]
        r = run_cli([*args, "--data-dir", str(data)], env, cwd=tmp_path)
        assert r.returncode == 66 and "Traceback" not in r.stderr, r.stderr
        assert r.stderr.strip() == f"edgevision: error: no event {2**64}"


def test_prune_dry_run_writes_nothing_where_nothing_was_recorded(env: dict[str, str], tmp_path: Path) -> None:
    """``prune --dry-run`` only reads (README): on a mistyped --data-dir it used to create the directory and an
    empty events.db and report 0 events, as if all were well."""
    typo = tmp_path / "recordings-typo"
    r = run_cli(["events", "prune", "--dry-run", "--data-dir", str(typo)], env)
    assert r.returncode == 66 and "no event index here" in r.stderr, r.stderr
    assert not typo.exists()


def test_a_damaged_index_is_one_line_and_exit_66(env: dict[str, str], tmp_path: Path) -> None:
    """An events.db SQLite cannot read used to crash every events command with a DatabaseError traceback. The
    commands that only read say so; ``events prune`` repairs it as the recorder does (test_index_rebuild.py)."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "events.db").write_bytes(b"not a database" * 400)
    for command in (["list"], ["show", "1"], ["prune", "--dry-run"]):
        r = run_cli(["events", *command, "--data-dir", str(data)], env)
        assert r.returncode == 66 and "Traceback" not in r.stderr, (command, r.stderr)
        assert r.stderr.strip().endswith("events.db: cannot read the event index: file is not a database")


def test_export_into_a_destination_that_cannot_be_written_is_exit_2(
    env: dict[str, str], tmp_path: Path
) -> None:
    """README: an output path that cannot be written is refused with exit 2; events export crashed with a
    NotADirectoryError traceback (exit 1) instead."""
    data = tmp_path / "data"
    index = EventIndex(data)
    index.create("cam", "person", 1.0, 10, status="finalized")
    index.close()
    (tmp_path / "afile").write_text("x")
    r = run_cli(["events", "export", "1", str(tmp_path / "afile" / "out"), "--data-dir", str(data)], env)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "afile is a file, not a directory" in r.stderr and len(r.stderr.splitlines()) == 1


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (sudo) and another user's directory")
@pytest.mark.parametrize("indexed", [False, True])
def test_prune_as_root_on_the_service_users_directory_writes_nothing_of_roots(
    env: dict[str, str], tmp_path: Path, indexed: bool
) -> None:
    """``sudo edgevision events prune --data-dir /var/lib/edgevision`` created a root-owned 0644 events.db (and its
    journal, the lock, recovered clips) in the service user's directory, which the service then could not write;
    it is refused with the ``sudo -u`` advice, before anything is written."""
    data = tmp_path / "var-lib-edgevision"
    data.mkdir()
    if indexed:
        EventIndex(data).close()
        os.chown(data / "events.db", 65534, 65534)
    os.chown(data, 65534, 65534)  # nobody stands in for the edgevision user
    before = sorted(p.name for p in data.iterdir())
    r = run_cli(["events", "prune", "--data-dir", str(data)], env)
    roots = [p.name for p in data.iterdir() if p.stat().st_uid == 0]
    assert r.returncode == 2 and not roots, (r.returncode, roots, r.stderr)
    assert "sudo -u nobody edgevision events prune" in r.stderr and len(r.stderr.splitlines()) == 1, r.stderr
    assert sorted(p.name for p in data.iterdir()) == before


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (sudo) and another user's directory")
def test_run_record_as_root_on_the_service_users_directory_is_refused(
    env: dict[str, str], tmp_path: Path
) -> None:
    """``sudo edgevision run --record --data-dir /var/lib/edgevision`` made root-owned clips, snapshots, index and
    lock in the service user's directory (the service could then not write them); like ``events prune`` it is
    refused with the ``sudo -u`` advice before anything is written."""
    from conftest import HALLWAY_3

    data = tmp_path / "var-lib-edgevision"
    data.mkdir()
    os.chown(data, 65534, 65534)  # nobody stands in for the edgevision user
    r = run_cli(["run", "--video", str(HALLWAY_3), "--record", "--data-dir", str(data)], env)
    assert r.returncode == 2, r.stderr
    assert "sudo -u nobody edgevision run --record" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert list(data.iterdir()) == []
