"""Flags shared by several commands and their mapping onto configuration keys."""

from __future__ import annotations

import argparse
import contextlib
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgevision.errors import ModelError

if TYPE_CHECKING:
    from edgevision.config import EdgeVisionConfig


def add_model_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="YAML config file (see configs/default.yaml)")
    p.add_argument("--model", help="catalog model name or path to a .tflite file")
    p.add_argument("--labels", type=Path, help="label file for a model given by path")
    p.add_argument("--threshold", type=float, help="minimum score (0..1)")
    p.add_argument("--runtime", choices=["auto", "litert", "tflite-runtime"], help="TFLite runtime")
    p.add_argument("--device", choices=["cpu", "edgetpu"], help="run on the CPU or the Coral Edge TPU")
    p.add_argument("--threads", type=int, help="CPU threads for the interpreter")
    p.add_argument(
        "--kernels",
        choices=["int8", "as-shipped"],
        help="run a uint8 model through its checked int8 per-channel copy (default, faster) or as shipped",
    )
    p.add_argument("--models-dir", type=Path, help="installed models directory")


def model_overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "detector.model": args.model,
        "detector.labels_file": str(args.labels) if args.labels else None,
        "detector.threshold": args.threshold,
        "runtime.runtime": args.runtime,
        "runtime.device": args.device,
        "runtime.threads": args.threads,
        "runtime.kernels": args.kernels,
        "models.dir": str(args.models_dir) if args.models_dir else None,
    }


def config_from_args(args: argparse.Namespace, extra: dict[str, Any] | None = None) -> EdgeVisionConfig:
    from edgevision.config import load_config

    overrides = model_overrides(args)
    overrides.update(extra or {})
    cfg = load_config(args.config, overrides)
    if not (getattr(args, "verbose", False) or getattr(args, "quiet", False)):
        logging.getLogger().setLevel(cfg.log_level.upper())
    return cfg


@contextlib.contextmanager
def models_reachable(command: str, within: Sequence[Path] = ()) -> Iterator[None]:
    """A models directory this user may not enter or read (the service's, 0750 edgevision) reported in one line as
    a model error (exit 78) naming the path and the service user, not a PermissionError traceback. With
    ``within``, only a refused path inside one of those directories is; any other PermissionError passes."""
    try:
        yield
    except PermissionError as exc:
        name = exc.filename
        if within and not (name and any(Path(name).is_relative_to(d) for d in within)):
            raise
        raise ModelError(
            f"{name or 'models directory'}: {exc.strerror or exc} (the service's models: run as its user, "
            f"e.g. sudo -u edgevision edgevision {command} ...)"
        ) from None
