"""Output paths and the data directory: writable or not is found by trying, and a check leaves nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgevision.errors import UsageError
from edgevision.writable import check_output_dir, check_output_file, dir_problem, file_problem


def test_writable_places_pass_and_nothing_is_left_behind(tmp_path: Path) -> None:
    assert dir_problem(tmp_path) is None
    assert dir_problem(tmp_path / "new" / "deeper") is None
    assert file_problem(tmp_path / "new" / "x.jsonl") is None
    (tmp_path / "old.jsonl").write_text("x")
    assert file_problem(tmp_path / "old.jsonl") is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.jsonl"]


def test_a_file_where_a_directory_must_be_is_named(tmp_path: Path) -> None:
    f = tmp_path / "d.jsonl"
    f.write_text("x")
    assert file_problem(f / "x.jpg") == f"{f} is a file, not a directory"
    assert dir_problem(f / "a" / "b") == f"{f / 'a' / 'b'} cannot be created: {f} is a file, not a directory"
    assert file_problem(tmp_path) == f"{tmp_path} is a directory"
    with pytest.raises(UsageError, match=r"^--save-video .*d.jsonl is a file, not a directory$") as info:
        check_output_file("--save-video", f / "a.mp4")
    assert info.value.exit_code == 2
    with pytest.raises(UsageError, match="cannot be created"):
        check_output_dir("--annotate", f / "out")


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_a_directory_that_cannot_be_created_is_found_even_by_root() -> None:
    """``/proc`` looks writable to root (permission bits say so) but refuses every new entry."""
    problem = dir_problem(Path("/proc/forbidden"))
    assert problem is not None and "/proc/forbidden cannot be created in /proc" in problem
    assert file_problem(Path("/proc/forbidden/x.jsonl")) is not None
