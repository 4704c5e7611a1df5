"""``edgevision models list | fetch NAME... | verify [NAME...] | info NAME``."""

from __future__ import annotations

import argparse
import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgevision.cli import distill_cmd
from edgevision.cli.common import models_reachable
from edgevision.cli.progress import Progress
from edgevision.errors import BackendUnavailable, ModelError, NetworkError, UsageError

if TYPE_CHECKING:  # the catalog (pydantic, the TFLite checks) loads when a command runs, not for --help
    from edgevision.catalog.entries import LabelEntry, ModelEntry
    from edgevision.catalog.local import LocalModel
    from edgevision.config import EdgeVisionConfig


def _reachable_models(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """``func`` with a models directory this user may not enter or read (the service's, 0750 edgevision)
    reported in one line as a model error (exit 78), not a PermissionError traceback."""

    @functools.wraps(func)
    def run(args: argparse.Namespace) -> int:
        with models_reachable("models"):
            return func(args)

    return run


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list, fetch, verify and describe models")
    msub = p.add_subparsers(dest="models_command", required=True)

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("--config", type=Path, help="config file (for models.dir and models.mirror)")
        q.add_argument(
            "--models-dir",
            type=Path,
            help="installed models directory (default: models.dir, else per-user cache)",
        )

    q = msub.add_parser("list", help="the catalog and what is installed")
    common(q)
    q.add_argument("--json", action="store_true", help="one JSON list on stdout")
    q.set_defaults(func=_reachable_models(cmd_list))

    q = msub.add_parser("fetch", help="download, verify and install models (and their labels)")
    common(q)
    q.add_argument("names", nargs="*", metavar="NAME")
    q.add_argument("--all", action="store_true", help="every pinned catalog entry")
    q.add_argument(
        "--mirror",
        help="directory or http(s) URL tried first (env EDGEVISION_MODEL_MIRROR, config models.mirror)",
    )
    q.add_argument("--allow-unpinned", action="store_true", help="fetch entries without a published sha256")
    q.add_argument("--force", action="store_true", help="re-install even when a verified copy is present")
    q.add_argument("--timeout", type=float, default=60.0, help="network timeout per request (s)")
    q.set_defaults(func=_reachable_models(cmd_fetch))

    q = msub.add_parser("verify", help="check installed files against the catalog")
    common(q)
    q.add_argument("names", nargs="*", metavar="NAME")
    q.add_argument("--json", action="store_true", help="one JSON list on stdout")
    q.set_defaults(func=_reachable_models(cmd_verify))

    q = msub.add_parser("info", help="everything known about one model")
    common(q)
    q.add_argument("name", metavar="NAME")
    q.add_argument("--json", action="store_true", help="one JSON object on stdout")
    q.set_defaults(func=_reachable_models(cmd_info))

    distill_cmd.register(msub)


def _config(args: argparse.Namespace) -> EdgeVisionConfig:
    """The config file's ``models:`` section (defaults without ``--config``), ``--models-dir`` applied."""
    from edgevision.config import load_config

    return load_config(args.config, {"models.dir": str(args.models_dir) if args.models_dir else None})


def _dir(args: argparse.Namespace) -> Path:
    from edgevision.paths import models_dir

    return models_dir(_config(args))


def cmd_list(args: argparse.Namespace) -> int:
    from edgevision.catalog.entries import load_catalog

    cat = load_catalog()
    dest = _dir(args)
    rows = []
    for name, m in cat.models.items():
        a = m.architecture
        rows.append(
            {
                "name": name,
                "task": m.task,
                "family": a.family,
                "alpha": a.alpha,
                "input": f"{a.input[0]}x{a.input[1]}",
                "quantization": a.quantization,
                "device": m.device,
                "installed": (dest / m.file).exists(),
                "pinned": m.sha256 is not None,
            }
        )
    from edgevision.catalog.local import list_local_models

    for name, lm in list_local_models(dest).items():  # students made by `models distill`
        la = lm.architecture
        rows.append(
            {
                "name": name,
                "task": lm.task,
                "family": la.family,
                "alpha": la.alpha,
                "input": f"{la.input[0]}x{la.input[1]}",
                "quantization": la.quantization,
                "device": "cpu",
                "installed": True,
                "pinned": True,
                "local": True,
                "teacher": lm.teacher.name,
                "threshold": lm.threshold,
            }
        )
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
    from edgevision.catalog.entries import load_catalog
    from edgevision.catalog.fetch import FetchAction, fetch_entry

    cat = load_catalog()
    names = list(args.names)
    if args.all:
        names = [n for n, m in cat.models.items() if m.sha256 or args.allow_unpinned]
    if not names:
        raise UsageError("name at least one model to fetch (see `edgevision models list`), or use --all")
    from edgevision.paths import model_mirror, models_dir

    cfg = _config(args)
    mirror = model_mirror(cfg, args.mirror)
    dest = models_dir(cfg)
    tried: list[ModelEntry | LabelEntry] = []
    errors: list[ModelError] = []
    for n in names:
        for e in cat.files_for(n):  # the model, then its label file
            if e in tried:
                continue
            tried.append(e)
            try:
                with Progress(e.name, e.size, unit="B") as bar:
                    rep = fetch_entry(e, dest, mirror, args.allow_unpinned, args.timeout, args.force, bar.set)
            except ModelError as exc:
                errors.append(exc)
                break  # a model that failed gets no label file either: nothing of it is installed
            new = rep.action is FetchAction.INSTALLED
            verb = "installed" if new else "already installed"
            print(f"{rep.name}: {verb} {rep.path}" + (f" (from {rep.source})" if new else ""))
    if errors:
        joined = "\n".join(map(str, errors))
        # exit 69 only when the network was the one cause; any other failure is a model error (78)
        raise NetworkError(joined) if all(isinstance(x, NetworkError) for x in errors) else ModelError(joined)
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from edgevision.catalog.entries import load_catalog
    from edgevision.catalog.fetch import verify_installed

    cat = load_catalog()
    dest = _dir(args)
    entries: list[ModelEntry | LabelEntry]
    if args.names:
        entries = [e for n in args.names for e in cat.files_for(n)]
    else:
        every: list[ModelEntry | LabelEntry] = [*cat.models.values(), *cat.labels.values()]
        entries = [e for e in every if (dest / e.file).exists()]
    bad = []
    rows = []
    for e in entries:
        ok, msg = verify_installed(e, dest)
        rows.append({"name": e.name, "file": str(dest / e.file), "ok": ok, "message": msg})
        if not args.json:
            print(f"{e.name:<38} {msg}")
        if not ok:
            bad.append(e.name)
    if args.json:
        print(json.dumps(rows, indent=2))
    if bad:
        raise ModelError(f"{len(bad)} file(s) failed verification: {', '.join(bad)}")
    if not entries and not args.json:
        print(f"no catalog files installed in {dest}")
    return 0


def model_info(name: str, dest: Path) -> dict[str, Any]:
    """Everything known about one catalog model, and its installed file's state and tensors."""
    from edgevision.catalog.entries import load_catalog
    from edgevision.catalog.fetch import verify_installed

    m: ModelEntry = load_catalog().model(name)
    a = m.architecture
    ok, msg = verify_installed(m, dest)
    info: dict[str, Any] = {
        "name": m.name,
        "description": m.description,
        "task": m.task,
        "device": m.device,
        "cpu_twin": m.cpu_twin,
        "architecture": {
            "family": a.family,
            "alpha": a.alpha,
            "input": list(a.input),
            "quantization": a.quantization,
            "head": a.head,
            "postprocess": a.postprocess,
        },
        "file": m.file,
        "size": m.size,
        "sha256": m.sha256,
        "unpinned": m.unpinned,
        "labels": m.labels,
        "license": m.license,
        "sources": [s.describe() for s in m.sources],
        "installed": {"path": str(dest / m.file), "ok": ok, "message": msg},
        "inputs": None,
        "outputs": None,
        "load_error": None,
    }
    if ok and m.device == "cpu":
        from edgevision.inference.backends import RuntimeOptions, open_interpreter

        try:
            h = open_interpreter(dest / m.file, RuntimeOptions(threads=1))
        except (BackendUnavailable, ModelError) as exc:
            info["load_error"] = str(exc)
            return info
        info["inputs"] = [
            {
                "name": d["name"],
                "shape": [int(x) for x in d["shape"]],
                "dtype": d["dtype"].__name__,
                "quantization": [float(d["quantization"][0]), int(d["quantization"][1])],
            }
            for d in h.input_details
        ]
        info["outputs"] = [
            {"name": d["name"], "shape": [int(x) for x in d["shape"]], "dtype": d["dtype"].__name__}
            for d in h.output_details
        ]
    return info


def cmd_info(args: argparse.Namespace) -> int:
    from edgevision.catalog.entries import load_catalog
    from edgevision.catalog.local import list_local_models

    dest = _dir(args)
    if args.name not in load_catalog().models:
        local = list_local_models(dest).get(args.name)
        if local is not None:
            return _info_local(local, dest, args.json)
    info = model_info(args.name, dest)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    a = info["architecture"]
    twin = f"   cpu twin: {info['cpu_twin']}" if info["cpu_twin"] else ""
    print(f"name:         {info['name']}")
    print(f"description:  {info['description']}")
    print(f"task:         {info['task']}   device: {info['device']}{twin}")
    print(
        f"architecture: {a['family']} alpha={a['alpha']} input={a['input'][0]}x{a['input'][1]} "
        f"{a['quantization']} head={a['head']} postprocess={'yes' if a['postprocess'] else 'no'}"
    )
    pin = info["sha256"] or f"(unpinned: {info['unpinned']})"
    print(f"file:         {info['file']}  size={info['size']}  sha256={pin}")
    print(f"labels:       {info['labels'] or '-'}")
    print(f"license:      {info['license']}")
    for s in info["sources"]:
        print(f"source:       {s}")
    print(f"installed:    {info['installed']['path']}: {info['installed']['message']}")
    if info["load_error"]:
        print(f"tensors:      (cannot load: {info['load_error']})")
    for d in info["inputs"] or []:
        print(f"input:        {d['name']} {d['shape']} {d['dtype']} q={tuple(d['quantization'])}")
    for d in info["outputs"] or []:
        print(f"output:       {d['name']} {d['shape']} {d['dtype']}")
    return 0


def _info_local(m: LocalModel, dest: Path, as_json: bool = False) -> int:
    """``models info`` for a distilled student: teacher + sha, architecture, data, validation, latency."""
    from edgevision.catalog.local import verify_local_model

    a = m.architecture
    try:
        path = verify_local_model(dest, m)
        state = "ok (sha256 verified)"
    except ModelError as exc:
        path, state = dest / "local" / m.file, str(exc)
    if as_json:
        print(
            json.dumps(
                {**m.model_dump(mode="json", by_alias=True), "path": str(path), "state": state}, indent=2
            )
        )
        return 0
    print(f"name:         {m.name}   (local, made by `edgevision models distill` {m.created})")
    print(f"task:         {m.task}   threshold: {m.threshold:.2f} (calibrated to the teacher)")
    print(
        f"architecture: {a.family} alpha={a.alpha} input={a.input[0]}x{a.input[1]} {a.quantization} head={a.head}"
        f" postprocess={'yes' if a.postprocess else 'no'}"
    )
    print(f"teacher:      {m.teacher.name} sha256={m.teacher.sha256}")
    print(f"file:         {path}  size={m.size}  sha256={m.sha256}: {state}")
    print(f"labels:       {m.labels or '-'}")
    bar = m.validation.get("f1_min", 0.9)
    if isinstance(bar, int | float) and bar < 0.9:
        f1 = m.validation.get("box_f1")
        print(
            f"gate:         LOWERED: box F1 bar {bar} (--min-f1; the default is 0.9); this student scored {f1}"
        )
    for key in ("data", "validation", "latency", "training"):
        print(f"{key + ':':<13} {json.dumps(getattr(m, key), sort_keys=True)}")
    return 0
