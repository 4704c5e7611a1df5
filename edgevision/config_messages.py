"""From a config's raw data and pydantic's errors to what a user reads: ``file:line key: message`` lines.

Kept apart from the schema (:mod:`edgevision.config`): this is about messages, not about what is valid.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any


def set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``a.b.c`` in nested dicts, making the levels that are missing (a flag's dotted key)."""
    cur = data
    parts = dotted.split(".")
    for p in parts[:-1]:
        nxt = cur.get(p)
        if not isinstance(nxt, dict):
            nxt = {}
            cur[p] = nxt
        cur = nxt
    cur[parts[-1]] = value


_TYPE_TAGS = {"int", "float", "str", "bool", "none"}


def _is_union_tag(part: object) -> bool:
    """Whether a ``loc`` element names a member of a union (``literal['auto']``, ``constrained-int``, ``int``),
    not a key."""
    return isinstance(part, str) and (
        part in _TYPE_TAGS or re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", part) is None
    )


def _merge_union_errors(errors: list[Any]) -> list[Any]:
    """One error per value: a value matching no member of a union fails once per member (their ``loc`` ends in
    the member's tag); say it once, the members' messages joined by "or"."""
    groups: dict[tuple[object, ...], list[Any]] = {}
    for err in errors:
        loc = tuple(err["loc"])
        key = loc[:-1] if loc and _is_union_tag(loc[-1]) else loc
        groups.setdefault(key, []).append(err)
    out = []
    for key, errs in groups.items():
        if len(errs) > 1 and all(len(e["loc"]) == len(key) + 1 for e in errs):
            msg = " or ".join(str(e["msg"]).removeprefix("Input should be ") for e in errs)
            out.append({**errs[0], "loc": key, "msg": f"Input should be {msg}"})
        else:
            out.extend(errs)
    return out


def validation_messages(
    errors: list[Any], origin: str, lines: Mapping[tuple[str, ...], int], flagged: set[tuple[str, ...]]
) -> tuple[list[str], bool]:
    """One ``where key: message`` line per bad value (``where``: ``file:line`` of the key, or of its nearest
    parent in the file, or ``command line`` for a flag); and whether every one came from a flag."""
    msgs = []
    from_flags = 0
    for err in _merge_union_errors(errors):
        loc = tuple(err["loc"])
        text = str(err["msg"]).removeprefix("Value error, ")
        first = text.split(" ", 1)[0]
        named = tuple(first.split(".")) if "." in first else (*loc, first)
        if named[: len(loc)] == loc and (named in lines or named in flagged or (not loc and len(named) > 1)):
            loc = named  # a check across keys names its key first (section.key, or key in its section)
        key = ".".join(str(p) for p in loc) or "(top level)"
        if loc in flagged or any(loc[: len(f)] == f for f in flagged):
            where = "command line"
            from_flags += 1
        else:
            probe = loc
            while probe and probe not in lines:
                probe = probe[:-1]
            where = f"{origin}:{lines.get(probe, 1)}"
        if err["type"] == "extra_forbidden":
            text = "unknown key"
        msgs.append(f"{where} {key}: {text}")
    return msgs, from_flags == len(msgs)
