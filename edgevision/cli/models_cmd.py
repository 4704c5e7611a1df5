"""``edgevision models list | fetch NAME... | verify [NAME...] | info NAME``."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from edgevision.catalog.entries import LabelEntry, ModelEntry, load_catalog
from edgevision.catalog.fetch import fetch_entry, verify_installed
from edgevision.catalog.local import LocalModel, list_local_models, verify_local_model
from edgevision.cli import distill_cmd
from edgevision.errors import BackendUnavailable, ModelError
from edgevision.inference.backends import RuntimeOptions, open_interpreter
from edgevision.settings import default_models_dir


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list, fetch, verify and describe models")
    msub = p.add_subparsers(dest="models_command", required=True)

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("--models-dir", type=Path, help="installed models directory (default: per-user cache)")

    q = msub.add_parser("list", help="the catalog and what is installed")
    common(q)
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_list)

    q = msub.add_parser("fetch", help="download, verify and install models (and their labels)")
    common(q)
    q.add_argument("names", nargs="*", metavar="NAME")
    q.add_argument("--all", action="store_true", help="every pinned catalog entry")
    q.add_argument("--mirror", help="directory or http(s) URL tried first (env EDGEVISION_MODEL_MIRROR)")
    q.add_argument("--allow-unpinned", action="store_true", help="fetch entries without a published sha256")
    q.add_argument("--force", action="store_true", help="re-install even when a verified copy is present")
    q.add_argument("--timeout", type=float, default=60.0, help="network timeout per request (s)")
    q.set_defaults(func=cmd_fetch)

    q = msub.add_parser("verify", help="check installed files against the catalog")
    common(q)
    q.add_argument("names", nargs="*", metavar="NAME")
    q.set_defaults(func=cmd_verify)

    q = msub.add_parser("info", help="everything known about one model")
    common(q)
    q.add_argument("name", metavar="NAME")
    q.set_defaults(func=cmd_info)

    distill_cmd.register(msub)


def _dir(args: argparse.Namespace) -> Path:
    return args.models_dir or default_models_dir()


def cmd_list(args: argparse.Namespace) -> int:
    cat = load_catalog()
    dest = _dir(args)
    rows = []
    for name, m in cat.models.items():
        a = m.architecture
        rows.append({
            "name": name, "task": m.task, "family": a.family, "alpha": a.alpha,
            "input": f"{a.input[0]}x{a.input[1]}", "quantization": a.quantization, "device": m.device,
            "installed": (dest / m.file).exists(), "pinned": m.sha256 is not None,
        })  # fmt: skip
    for name, lm in list_local_models(dest).items():  # students made by `models distill`
        a = lm.architecture
        rows.append({
            "name": name, "task": lm.task, "family": a.family, "alpha": a.alpha,
            "input": f"{a.input[0]}x{a.input[1]}", "quantization": a.quantization, "device": "cpu",
            "installed": True, "pinned": True, "local": True, "teacher": lm.teacher.name,
            "threshold": lm.threshold,
        })  # fmt: skip
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"models directory: {dest}")
    print(
        f"{'name':<38} {'task':<9} {'family':<19} {'alpha':>5} {'input':>8} {'quant':<8} {'device':<8} installed"
    )
    for r in rows:
        mark = "yes" if r["installed"] else "-"
        pin = "" if r["pinned"] else " (unpinned)"
        pin += f" (local, from {r['teacher']})" if r.get("local") else ""
        print(
            f"{r['name']:<38} {r['task']:<9} {r['family']:<19} {r['alpha']:>5} {r['input']:>8} "
            f"{r['quantization']:<8} {r['device']:<8} {mark}{pin}"
        )
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
    cat = load_catalog()
    names = list(args.names)
    if args.all:
        names = [n for n, m in cat.models.items() if m.sha256 or args.allow_unpinned]
    if not names:
        raise ModelError("name at least one model to fetch (see `edgevision models list`), or use --all")
    mirror = args.mirror or os.environ.get("EDGEVISION_MODEL_MIRROR") or None
    dest = _dir(args)
    entries = []
    for n in names:
        for e in cat.files_for(n):
            if e not in entries:
                entries.append(e)
    errors = []
    for e in entries:
        try:
            rep = fetch_entry(e, dest, mirror, args.allow_unpinned, args.timeout, args.force)
        except ModelError as exc:
            errors.append(str(exc))
            continue
        verb = "installed" if rep.action == "installed" else "already installed"
        print(
            f"{rep.name}: {verb} {rep.path}" + (f" (from {rep.source})" if rep.action == "installed" else "")
        )
    if errors:
        raise ModelError("\n".join(errors))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    cat = load_catalog()
    dest = _dir(args)
    entries: list[ModelEntry | LabelEntry]
    if args.names:
        entries = [e for n in args.names for e in cat.files_for(n)]
    else:
        every: list[ModelEntry | LabelEntry] = [*cat.models.values(), *cat.labels.values()]
        entries = [e for e in every if (dest / e.file).exists()]
    bad = []
    for e in entries:
        ok, msg = verify_installed(e, dest)
        print(f"{e.name:<38} {msg}")
        if not ok:
            bad.append(e.name)
    if bad:
        raise ModelError(f"{len(bad)} file(s) failed verification: {', '.join(bad)}")
    if not entries:
        print(f"no catalog files installed in {dest}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    cat = load_catalog()
    dest = _dir(args)
    if args.name not in cat.models:
        local = list_local_models(dest).get(args.name)
        if local is not None:
            return _info_local(local, dest)
    m: ModelEntry = cat.model(args.name)
    a = m.architecture
    print(f"name:         {m.name}")
    print(f"description:  {m.description}")
    print(
        f"task:         {m.task}   device: {m.device}" + (f"   cpu twin: {m.cpu_twin}" if m.cpu_twin else "")
    )
    print(
        f"architecture: {a.family} alpha={a.alpha} input={a.input[0]}x{a.input[1]} {a.quantization} head={a.head}"
        f" postprocess={'yes' if a.postprocess else 'no'}"
    )
    print(
        f"file:         {m.file}  size={m.size}  sha256={m.sha256 or '(unpinned: ' + str(m.unpinned) + ')'}"
    )
    print(f"labels:       {m.labels or '-'}")
    print(f"license:      {m.license}")
    for s in m.sources:
        print(f"source:       {s.describe()}")
    ok, msg = verify_installed(m, dest)
    print(f"installed:    {dest / m.file}: {msg}")
    if ok and m.device == "cpu":
        try:
            h = open_interpreter(dest / m.file, RuntimeOptions(threads=1))
        except (BackendUnavailable, ModelError) as exc:
            print(f"tensors:      (cannot load: {exc})")
            return 0
        for d in h.input_details:
            print(
                f"input:        {d['name']} {[int(x) for x in d['shape']]} {d['dtype'].__name__} q={tuple(d['quantization'])}"
            )
        for d in h.output_details:
            print(f"output:       {d['name']} {[int(x) for x in d['shape']]} {d['dtype'].__name__}")
    return 0


def _info_local(m: LocalModel, dest: Path) -> int:
    """``models info`` for a distilled student: teacher + sha, architecture, data, validation, latency."""
    a = m.architecture
    try:
        path = verify_local_model(dest, m)
        state = "ok (sha256 verified)"
    except ModelError as exc:
        path, state = dest / "local" / m.file, str(exc)
    print(f"name:         {m.name}   (local, made by `edgevision models distill` {m.created})")
    print(f"task:         {m.task}   threshold: {m.threshold:.2f} (calibrated to the teacher)")
    print(
        f"architecture: {a.family} alpha={a.alpha} input={a.input[0]}x{a.input[1]} {a.quantization} head={a.head}"
        f" postprocess={'yes' if a.postprocess else 'no'}"
    )
    print(f"teacher:      {m.teacher.name} sha256={m.teacher.sha256}")
    print(f"file:         {path}  size={m.size}  sha256={m.sha256}: {state}")
    print(f"labels:       {m.labels or '-'}")
    for key in ("data", "validation", "latency", "training"):
        print(f"{key + ':':<13} {json.dumps(getattr(m, key), sort_keys=True)}")
    return 0
