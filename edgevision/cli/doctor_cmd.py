"""``edgevision doctor``: check what a Pi user otherwise debugs by hand, one ok / warn / fail line each.

Exit code: 0 when nothing failed (warnings allowed), 78 (EX_CONFIG: "found in a misconfigured state") when
any check failed. ``--json`` prints ``{"status", "checks": [{"check", "status", "detail", "fix"}]}``.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from edgevision.cli.doctor import probe
from edgevision.cli.doctor.checks import (
    Check,
    Status,
    check_access,
    check_cameras,
    check_clock,
    check_config,
    check_coral,
    check_disk,
    check_models,
    check_pi_health,
    check_python,
    check_runtime,
    check_service,
    overall,
)
from edgevision.errors import EXIT_CONFIG, EXIT_OK, EdgeVisionError

if TYPE_CHECKING:
    from edgevision.config import EdgeVisionConfig

SERVICE_UNIT = "edgevision"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "doctor",
        help="check Python, runtime, cameras, groups, Coral, power, disk, models, config, service, clock",
    )
    p.add_argument("--config", type=Path, help="config file to check (and to take the model and paths from)")
    p.add_argument("--models-dir", type=Path, help="installed models directory")
    p.add_argument("--data-dir", type=Path, help="recordings directory")
    p.add_argument("--unit", default=SERVICE_UNIT, help="systemd unit to ask about (default: edgevision)")
    p.add_argument("--no-speed", action="store_true", help="skip the timed invoke of the detector")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.set_defaults(func=cmd_doctor)


def _config(args: argparse.Namespace) -> tuple[EdgeVisionConfig, Check]:
    from edgevision.config import load_config

    overrides = {
        "models.dir": str(args.models_dir) if args.models_dir else None,
        "recorder.data_dir": str(args.data_dir) if args.data_dir else None,
    }
    try:
        cfg = load_config(args.config, overrides)
    except EdgeVisionError as exc:
        # The other checks still run, on the defaults: a bad config is one line, not the whole report.
        return load_config(None, overrides), check_config(str(args.config), str(exc))
    return cfg, check_config(str(args.config) if args.config else None, None)


def _models(cfg: EdgeVisionConfig) -> Check:
    from edgevision.catalog.entries import load_catalog
    from edgevision.catalog.fetch import verify_installed
    from edgevision.config_check import models_loaded
    from edgevision.paths import models_dir

    cat, mdir = load_catalog(), models_dir(cfg)
    results: list[tuple[str, bool, str]] = []
    for name in models_loaded(cfg):
        try:
            entries = cat.files_for(name)
        except EdgeVisionError as exc:
            results.append((name, False, str(exc)))
            continue
        try:
            checked = [verify_installed(e, mdir) for e in entries]
        except OSError as exc:  # a models directory this user may not enter (the service's is 0750)
            results.append((name, False, f"{exc.filename}: {exc.strerror or exc}"))
            continue
        bad = [m for good, m in checked if not good]
        results.append((name, not bad, bad[0] if bad else "ok"))
    return check_models(results, str(mdir))


def _runtime(cfg: EdgeVisionConfig, timed: bool) -> Check:
    from edgevision.catalog.entries import load_catalog
    from edgevision.catalog.resolve import resolve_model
    from edgevision.detection.factory import runtime_options
    from edgevision.inference.backends import available_runtimes, open_interpreter
    from edgevision.paths import models_dir

    runtimes = available_runtimes()
    model = cfg.detector.model
    if not runtimes or not timed:
        return check_runtime(runtimes, model, None, None)
    try:
        import numpy as np

        res = resolve_model(model, models_dir(cfg))
        if res.entry is not None and res.entry.device == "edgetpu" and res.entry.cpu_twin:
            model = (
                res.entry.cpu_twin
            )  # the speed of the CPU path; the Coral line says whether a TPU is there
            res = resolve_model(model, models_dir(cfg), load_catalog())
        # the CPU options run uses, so the timing is of what it runs: the int8 copy under runtime.kernels: int8
        handle = open_interpreter(res.path, replace(runtime_options(cfg), device="cpu"))
        if handle.kernel_path is not None:
            model = f"{model} (its int8 copy)"
        tensor = np.zeros(handle.input_shape, handle.input_dtype)
        handle.run(tensor)  # warm-up: the first invoke prepares the delegate
        samples = []
        for _ in range(3):
            t0 = time.perf_counter()
            handle.run(tensor)
            samples.append((time.perf_counter() - t0) * 1e3)
    except EdgeVisionError as exc:
        return check_runtime(runtimes, model, None, str(exc).splitlines()[0])
    return check_runtime([f"{runtimes[0]} (in use)", *runtimes[1:]], model, sorted(samples)[1], None)


def run_checks(args: argparse.Namespace) -> list[Check]:
    """Every check, in the order a user would fix things."""
    from edgevision.paths import data_dir
    from edgevision.service.health import read_health

    cfg, config_check = _config(args)
    checks = [check_python(*probe.python_facts())]
    checks.append(_runtime(cfg, not args.no_speed))
    checks.append(
        check_cameras(
            cfg.source.kind,
            cfg.source.camera,
            probe.v4l2_devices(),
            probe.picamera2_error(),
            probe.libcamera_present(),
        )
    )
    nodes = [d for d, _ in probe.v4l2_devices()] + probe.render_nodes() + probe.apex_nodes()
    nodes += probe.coral_usb_nodes()
    user, is_root, groups = probe.user_facts()
    checks.append(check_access(user, is_root, groups, probe.device_access(nodes)))
    checks.append(
        check_coral(
            cfg.runtime.device,
            cfg.runtime.cpu_fallback,
            probe.usb_ids(),
            probe.apex_nodes(),
            probe.libedgetpu_present(),
        )
    )
    health = read_health()
    checks.append(check_pi_health(health.throttled_bits, health.temperature_c))
    ddir = data_dir(cfg)
    free, not_writable = probe.data_dir_facts(ddir)
    checks.append(check_disk(str(ddir), free, not_writable, cfg.retention.min_free_gb))
    checks.append(_models(cfg))
    checks.append(config_check)
    checks.append(check_service(*probe.service_facts(args.unit), args.unit))
    checks.append(check_clock(*probe.clock_facts()))
    return checks


def cmd_doctor(args: argparse.Namespace) -> int:
    checks = run_checks(args)
    status = overall(checks)
    if args.json:
        print(json.dumps({"status": status.value, "checks": [c.to_dict() for c in checks]}, indent=2))
    else:
        width = max(len(c.name) for c in checks)
        for c in checks:
            print(f"{c.status.value:<4}  {c.name:<{width}}  {c.detail}")
            if c.fix:
                print(f"{'':<4}  {'':<{width}}  fix: {c.fix}")
        failed = sum(c.status is Status.FAIL for c in checks)
        warned = sum(c.status is Status.WARN for c in checks)
        print(f"doctor: {failed} failed, {warned} warning(s), {len(checks) - failed - warned} ok")
    return EXIT_CONFIG if status is Status.FAIL else EXIT_OK
