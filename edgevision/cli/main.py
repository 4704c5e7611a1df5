"""``edgevision`` entry point: argument parsing, logging, and mapping errors to exit codes."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Sequence

from edgevision import __version__
from edgevision.cli import bench_cmd, detect_cmd, events_cmd, models_cmd, run_cmd, service_cmd
from edgevision.errors import EXIT_UNEXPECTED, EdgeVisionError
from edgevision.redact import install_log_redaction, redact


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(2, f"edgevision: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="edgevision", description="Pi-first person detection and recording.")
    parser.add_argument("--version", action="version", version=f"edgevision {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    detect_cmd.register(sub)
    run_cmd.register(sub)
    models_cmd.register(sub)
    run_cmd.register_config(sub)
    events_cmd.register(sub)
    bench_cmd.register(sub)
    service_cmd.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code (see :mod:`edgevision.errors`)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = (
        logging.DEBUG
        if args.verbose
        else getattr(logging, os.environ.get("EDGEVISION_LOG", "INFO").upper(), 20)
    )
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    install_log_redaction()  # stream URL credentials and tokens never reach the log
    try:
        return int(args.func(args) or 0)
    except EdgeVisionError as exc:
        for line in str(exc).splitlines() or [type(exc).__name__]:
            print(f"edgevision: error: {redact(line)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except Exception:
        traceback.print_exc()
        return EXIT_UNEXPECTED


if __name__ == "__main__":
    sys.exit(main())
