"""``edgevision events list | show ID | export ID DEST | prune``."""

from __future__ import annotations

import argparse
import functools
import json
import re
import shutil
import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from edgevision.errors import InputError, UsageError
from edgevision.writable import check_output_dir

if TYPE_CHECKING:  # the recorder's modules load when a command runs, not for --help
    from edgevision.recorder.index import EventIndex, EventRow

_REL = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _readable_index(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """``func`` with an events.db SQLite cannot read (damaged, locked too long) or a data directory this user may
    not enter (the service's, 0750 edgevision) reported in one line, exit 66."""

    @functools.wraps(func)
    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except PermissionError as exc:
            raise InputError(
                f"{exc.filename or args.data_dir}: {exc.strerror or exc} (the service's recordings: "
                "run as its user, e.g. sudo -u edgevision edgevision events ...)"
            ) from None
        except sqlite3.DatabaseError as exc:
            from edgevision.config import load_config
            from edgevision.paths import data_dir, events_index

            root = args.data_dir or data_dir(load_config(args.config))
            raise InputError(f"{events_index(root)}: cannot read the event index: {exc}") from None

    return run


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("events", help="list, show, export and prune recorded events")
    esub = p.add_subparsers(dest="events_command", required=True)

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("--config", type=Path, help="config file (for recorder.data_dir and retention)")
        q.add_argument("--data-dir", type=Path, help="recordings directory")

    q = esub.add_parser("list", help="recorded events, oldest first")
    common(q)
    q.add_argument("--since", help="e.g. 2h, 3d, or an ISO date/time")
    q.add_argument("--json", action="store_true", help="one JSON list on stdout")
    q.set_defaults(func=_readable_index(cmd_list))
    q = esub.add_parser("show", help="one event in full")
    common(q)
    q.add_argument("id", type=int)
    q.add_argument("--json", action="store_true", help="the index row as one JSON object on stdout")
    q.set_defaults(func=_readable_index(cmd_show))
    q = esub.add_parser("export", help="copy an event's clip, snapshot and metadata into DEST")
    common(q)
    q.add_argument("id", type=int)
    q.add_argument("dest", type=Path)
    q.add_argument("--force", action="store_true", help="overwrite files of an earlier export of this event")
    q.set_defaults(func=_readable_index(cmd_export))
    q = esub.add_parser("prune", help="apply retention now (and recover anything a crash left open)")
    common(q)
    q.add_argument("--dry-run", action="store_true")
    q.set_defaults(func=_readable_index(cmd_prune))


def parse_since(text: str, now: float | None = None) -> float:
    """``2h`` / ``3d`` relative to now, or an ISO 8601 date/time (local time when no zone is given)."""
    now = time.time() if now is None else now
    m = _REL.match(text.strip())
    if m:
        return now - float(m.group(1)) * _UNIT[m.group(2)]
    iso = text.strip()
    if iso.endswith(("Z", "z")):  # UTC as RFC 3339 writes it; Python 3.10's fromisoformat knows only "+00:00"
        iso = iso[:-1] + "+00:00"
    try:
        # timestamp() of a local time near year 1 or 9999 has no epoch value: ValueError / OverflowError
        return datetime.fromisoformat(iso).timestamp()
    except (ValueError, OverflowError, OSError):
        raise UsageError(f"--since {text}: use e.g. 30m, 2h, 3d or 2026-11-22T08:00") from None


def _open(args: argparse.Namespace) -> tuple[EventIndex, Path]:
    from edgevision.config import load_config
    from edgevision.paths import data_dir, events_index
    from edgevision.recorder.index import EventIndex

    cfg = load_config(args.config)
    root = args.data_dir or data_dir(cfg)
    if not events_index(root).exists():
        raise InputError(f"{root}: no event index here (nothing recorded yet?)")
    return EventIndex(root), root


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts, UTC).astimezone().strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


def _get(index: EventIndex, event_id: int) -> EventRow:
    # an id SQLite cannot hold (beyond 64 bits) is no event either, not an OverflowError
    row = index.get(event_id) if -(2**63) <= event_id < 2**63 else None
    if row is None:
        raise InputError(f"no event {event_id}")
    return row


def cmd_list(args: argparse.Namespace) -> int:
    from edgevision.recorder.wallclock import shown_starts

    index, _root = _open(args)
    since = parse_since(args.since) if args.since else None
    rows = index.list()
    started = shown_starts([r.stamp for r in rows], index.boot_offsets())
    if since is not None:  # on the start shown, not the clock a row was recorded with (a Pi's clock steps)
        rows = [r for r in rows if started[r.id] >= since]
    if args.json:
        print(json.dumps([{**r.to_dict(), "start_time": started[r.id]} for r in rows], indent=2))
        return 0
    print(
        f"{'id':>5}  {'started':<19}  {'length':>7}  {'camera':<16} {'label':<7} {'max':>5} {'peak':>4}  status     clip"
    )
    for r in rows:
        # an event still recording has no length yet
        length = "-" if r.end_ts is None else f"{r.end_ts - r.start_ts:6.1f}s"
        print(
            f"{r.id:>5}  {_when(started[r.id]):<19}  {length:>7}  {r.camera[:16]:<16} {r.label:<7} "
            f"{r.max_score:5.2f} {r.peak_count:>4}  {r.status:<10} {r.clip_path or '-'}"
        )
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from edgevision.recorder.wallclock import shown_starts

    index, root = _open(args)
    row = _get(index, args.id)
    # when it really started (as events list shows it); start_wall stays as recorded
    record = {**row.to_dict(), "start_time": shown_starts([row.stamp], index.boot_offsets())[row.id]}
    if args.json:
        record["clip_file"] = str(root / row.clip_path) if row.clip_path else None
        print(json.dumps(record, indent=2))
        return 0
    for key, value in record.items():
        if key in ("start_wall", "end_wall", "start_time"):
            value = f"{_when(value)} ({value})"
        print(f"{key:<14} {value}")
    if row.clip_path:
        print(f"{'clip file':<14} {root / row.clip_path}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    index, root = _open(args)
    row = _get(index, args.id)
    dest: Path = args.dest
    if dest.exists() and not dest.is_dir():
        raise UsageError(f"{dest}: exists and is not a directory (export writes several files into DEST)")
    files = [
        (root / rel, dest / f"event-{row.id:06d}{suffix}")
        for rel, suffix in (
            (row.clip_path, ".mp4"),
            (row.snapshot_path, ".jpg"),
            (row.thumb_path, "-thumb.jpg"),
        )
        if rel and (root / rel).exists()
    ]
    meta = dest / f"event-{row.id:06d}.json"
    existing = [str(t) for t in [*(t for _, t in files), meta] if t.exists()]
    if existing and not args.force:
        raise UsageError(
            f"{existing[0]}: already exists (event {row.id} was exported here before); use --force"
        )
    check_output_dir("DEST", dest)  # its parent a file, not writable: exit 2 in one line, nothing copied
    dest.mkdir(parents=True, exist_ok=True)
    copied = []
    try:
        for source, target in files:
            shutil.copy2(source, target)
            copied.append(target)
        meta.write_text(json.dumps(row.to_dict(), indent=2) + "\n")
    except OSError as exc:  # e.g. the disk filled up on the way
        raise UsageError(f"DEST {dest}: cannot write: {exc.strerror or exc}") from None
    copied.append(meta)
    for path in copied:
        print(path)
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    """Recover and apply retention, owning the data directory: refused (exit 75, naming the pid) while
    ``edgevision run --record`` records into it, and (exit 2) when another user owns the directory (run as
    root, what it writes would be root's). ``--dry-run`` only reads and needs no lock."""
    from edgevision.config import load_config
    from edgevision.naming import camera_name
    from edgevision.paths import data_dir, events_index
    from edgevision.recorder.factory import retention_policy
    from edgevision.recorder.index import EventIndex
    from edgevision.recorder.index_rebuild import open_recorder_index
    from edgevision.recorder.lock import DataDirLock
    from edgevision.recorder.recovery import recover
    from edgevision.recorder.retention import apply_retention, free_space

    cfg = load_config(args.config)
    root = args.data_dir or data_dir(cfg)
    if args.dry_run:
        if not events_index(root).exists():  # only reads: EventIndex would create the directory and the db
            raise InputError(f"{root}: no event index here (nothing recorded yet?)")
        plan = apply_retention(
            EventIndex(root), root, time.time(), free_space(root), retention_policy(cfg), True
        )
    else:
        with DataDirLock(root, "events prune"):
            # as the recorder opens it: a set-aside a kill interrupted is finished, a damaged index kept aside and
            # rebuilt from the files (logged), never replaced by an empty one in silence
            index = open_recorder_index(root, camera_name(cfg), cfg.recorder.labels[0])
            print(recover(index, root).line())
            plan = apply_retention(index, root, time.time(), free_space(root), retention_policy(cfg))
    verb = "would delete" if args.dry_run else "deleted"
    for event_id, rule in plan:
        print(f"{verb} event {event_id} ({rule})")
    print(f"{len(plan)} event(s) {verb}")
    return 0
