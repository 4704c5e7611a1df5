"""``edgevision`` entry point: argument parsing, logging, and mapping errors to exit codes.

Building the parser imports no heavy module (cv2, numpy, PyAV, the TFLite runtimes): each command module
registers its flags with argparse only and imports what it runs inside its command function, so
``edgevision --help`` and ``edgevision run --help`` answer at once (``tests/test_cli.py`` checks this).
"""

from __future__ import annotations

import argparse
import difflib
import logging
import os
import sys
import traceback
from collections.abc import Sequence
from typing import Any, NoReturn

from edgevision import __version__
from edgevision.cli import (
    bench_cmd,
    detect_cmd,
    doctor_cmd,
    events_cmd,
    models_cmd,
    progress,
    run_cmd,
    service_cmd,
)
from edgevision.errors import EXIT_UNEXPECTED, EdgeVisionError
from edgevision.redact import install_log_redaction, redact

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def add_global_flags(p: argparse.ArgumentParser, default: Any) -> None:
    """Flags every command accepts, before or after the subcommand.

    On subcommands the default is ``argparse.SUPPRESS`` so a subparser does not overwrite a value given
    before the subcommand (``edgevision -v run`` and ``edgevision run -v`` mean the same).
    """
    g = p.add_argument_group("global options")
    g.add_argument("-v", "--verbose", action="store_true", default=default, help="debug logging")
    g.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=default,
        help="warnings and errors only; no progress bars",
    )
    g.add_argument(
        "--no-progress",
        action="store_true",
        default=default,
        help="no progress bars (also off when not a tty)",
    )


def _suggest(value: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(value, choices, n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


class _Parser(argparse.ArgumentParser):
    """Usage errors exit 2 with one line; an unknown choice (command) gets a "did you mean"."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"edgevision: error: {message}\n")

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        choices = action.choices
        if choices is not None and value not in choices:
            names = [str(c) for c in choices]
            raise argparse.ArgumentError(
                action,
                f"invalid choice: '{value}' (choose from {', '.join(names)}){_suggest(str(value), names)}",
            )


class _SubParser(_Parser):
    """Every subcommand (and its own subcommands, which inherit this class) takes the global flags."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        add_global_flags(self, argparse.SUPPRESS)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="edgevision", description="Pi-first person detection and recording.")
    parser.add_argument("--version", action="version", version=f"edgevision {__version__}")
    add_global_flags(parser, False)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_SubParser, metavar="COMMAND")
    detect_cmd.register(sub)
    run_cmd.register(sub)
    models_cmd.register(sub)
    run_cmd.register_config(sub)
    events_cmd.register(sub)
    bench_cmd.register(sub)
    service_cmd.register(sub)
    doctor_cmd.register(sub)
    return parser


def _log_level(args: argparse.Namespace) -> int:
    if args.verbose:
        return logging.DEBUG
    if args.quiet:
        return logging.WARNING
    return getattr(logging, os.environ.get("EDGEVISION_LOG", "INFO").upper(), logging.INFO)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code (see :mod:`edgevision.errors`)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = progress.LogHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logging.basicConfig(level=_log_level(args), handlers=[handler])
    progress.configure(not (args.quiet or args.no_progress or getattr(args, "json", False)))
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
        _quiet_broken_stdout()
        return 0
    except Exception:
        traceback.print_exc()
        return EXIT_UNEXPECTED


def _quiet_broken_stdout() -> None:
    """``edgevision ... | head``: the reader left; do not let the interpreter's final flush complain."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


if __name__ == "__main__":
    sys.exit(main())
