"""Label files in the three formats SSD models ship with.

* ``k  name`` pairs (Coral's ``coco_labels.txt`` style), ids taken from the file;
* one name per line, line k is class k (``n/a`` marks unused ids);
* the TFLite example ``labelmap.txt``, whose first line is ``???`` (the background class): class k is line k+1.
"""

from __future__ import annotations

import re
from pathlib import Path

from edgevision.errors import ModelError

_PAIR = re.compile(r"^\s*(\d+)[\s:]+(.+?)\s*$")


def parse_labels(text: str) -> dict[int, str]:
    """Parse label text into ``{class_id: name}`` (0-based ids, as the SSD postprocess op emits them)."""
    lines = [ln.rstrip("\r") for ln in text.splitlines()]
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        return {}
    pairs = [_PAIR.match(ln) for ln in lines if ln.strip()]
    if all(pairs):
        return {int(m.group(1)): m.group(2) for m in pairs if m}
    offset = 1 if lines[0].strip() == "???" else 0
    return {i - offset: name.strip() for i, name in enumerate(lines) if i >= offset and name.strip()}


def load_labels(path: Path) -> dict[int, str]:
    """Read a label file; a missing or unreadable one is a :class:`ModelError`."""
    try:
        return parse_labels(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ModelError(f"{path}: cannot read labels: {exc.strerror or exc}") from None
