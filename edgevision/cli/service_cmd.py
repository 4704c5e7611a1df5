"""``edgevision service install | uninstall``."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("service", help="install or remove the systemd service")
    ssub = p.add_subparsers(dest="service_command", required=True)
    q = ssub.add_parser("install", help="user, directories, config, models, unit; enable and start")
    q.add_argument(
        "--config",
        type=Path,
        help="config to install as /etc/edgevision/config.yaml (or NAME.yaml; only if none exists)",
    )
    q.add_argument(
        "--name",
        help="one camera of several: edgevision@NAME.service with /etc/edgevision/NAME.yaml and "
        "/var/lib/edgevision/NAME",
    )
    q.add_argument("--dry-run", action="store_true", help="print every action, change nothing")
    q.add_argument(
        "--root", type=Path, default=Path("/"), help="install into this directory tree instead of /"
    )
    q.add_argument(
        "--exec",
        dest="exec_cmd",
        metavar="PATH",
        help="the edgevision command ExecStart runs (default: this installation's), e.g. for an image "
        "built with --root: /opt/edgevision/venv/bin/edgevision",
    )
    q.add_argument("--mirror", help="model mirror (directory or URL) for fetching")
    q.set_defaults(func=cmd_install)
    q = ssub.add_parser("uninstall", help="stop, disable and remove the unit (recordings are kept)")
    q.add_argument("--name", help="the camera instance to remove (edgevision@NAME.service)")
    q.add_argument("--dry-run", action="store_true")
    q.add_argument("--root", type=Path, default=Path("/"))
    q.add_argument("--purge", action="store_true", help="also delete recordings, models, config and the user")
    q.set_defaults(func=cmd_uninstall)


def cmd_install(args: argparse.Namespace) -> int:
    from edgevision.service.install import install

    plan = install(
        args.config,
        args.root.resolve(),
        args.dry_run,
        args.mirror,  # then EDGEVISION_MODEL_MIRROR, then models.mirror (edgevision.paths.model_mirror)
        name=args.name,
        exec_cmd=args.exec_cmd,
    )
    print(f"{plan.changed} change(s)" + (" planned" if args.dry_run else ""))
    return 0


def cmd_uninstall(args: argparse.Namespace) -> int:
    from edgevision.service.install import uninstall

    plan = uninstall(args.root.resolve(), args.dry_run, args.purge, name=args.name)
    print(f"{plan.changed} change(s)" + (" planned" if args.dry_run else ""))
    return 0
