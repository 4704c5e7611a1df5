"""``events list --since``: relative spans and ISO 8601 times, the same on every supported Python."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from edgevision.cli.events_cmd import parse_since
from edgevision.errors import UsageError

NOW = 1_800_000_000.0
UTC_8AM = datetime(2026, 11, 22, 8, 0, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30m", NOW - 1800),
        ("2h", NOW - 7200),
        ("1.5d", NOW - 1.5 * 86400),
        ("2026-11-22T08:00+00:00", UTC_8AM),
        ("2026-11-22T09:00+01:00", UTC_8AM),
        ("2026-11-22T08:00Z", UTC_8AM),  # Python 3.10's fromisoformat rejects "Z"
        ("2026-11-22T08:00:00z", UTC_8AM),  # and every version rejects "z"
        (" 2026-11-22T08:00Z ", UTC_8AM),
        ("2026-11-22T08:00", datetime(2026, 11, 22, 8, 0).timestamp()),  # no zone: local time
    ],
)
def test_since(text: str, expected: float) -> None:
    assert parse_since(text, now=NOW) == pytest.approx(expected)


@pytest.mark.parametrize(
    "text", ["yesterday", "", "Z", "2h ago", "2026-13-01", "0001-01-01", "0001-01-01T00:00"]
)
def test_since_rejects_what_it_cannot_read(text: str) -> None:
    with pytest.raises(UsageError, match="--since"):
        parse_since(text, now=NOW)
