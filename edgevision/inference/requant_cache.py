"""The int8 per-channel copy of a uint8 model: made once, checked against the original, cached beside the rungs.

:func:`int8_copy` returns the path of a copy that computes what the original does (see :func:`agreement`), or
None when the model runs as shipped: not a uint8 per-tensor graph, no schema to rewrite it with (a Pi with only
tflite-runtime and no cache made elsewhere), or a copy that disagreed. The copy is named by the original's
sha256, so a changed model never meets a stale copy; a manifest beside it records the check's figures, and a
failed check is remembered there so that it is not repeated at every start.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgevision.fsutil import install_atomically, sha256_file, unlink_quietly
from edgevision.inference import adapter
from edgevision.inference.requant import POSTPROCESS, REQUANT_VERSION, NotConvertible, schema, to_int8
from edgevision.inference.runtime_log import quiet_runtime_info

log = logging.getLogger(__name__)

PROBES = 4


@dataclass(frozen=True)
class Agreement:
    """How far the copy's head outputs are from the original's on the probe inputs, in steps of the original's
    output scale, beside how far the original is from itself between LiteRT's two CPU kernel paths (XNNPACK and
    the builtin kernels) on the same inputs: the spread the model as shipped already has."""

    max_steps: float
    mean_steps: float
    own_max_steps: float
    own_mean_steps: float
    # the largest mean *signed* difference of any class column of the logits (what LOGISTIC / SOFTMAX read): a
    # copy that moves one class's scores (person) is invisible in the saturated heads on probe pictures, whose
    # scores sit at 0, and diluted in an all-element mean; a per-column bias in the linear logits is neither
    bias_steps: float = 0.0
    own_bias_steps: float = 0.0
    bias_rows: int = 1  # rows each column's mean is over (a classifier's logits: one per probe)

    @property
    def ok(self) -> bool:
        """Within twice the original's own spread (and a step of slack: a model with none still rounds), and no
        class column of the logits moved on average (a bias the saturated scores on probe pictures hide)."""
        # floors: a runtime whose two kernel paths agree exactly (no XNNPACK) still sees the copy's own rounding
        return (
            self.max_steps <= max(2 * self.own_max_steps + 2, 16)
            and self.mean_steps <= max(2 * self.own_mean_steps + 0.01, 0.1)
            and self.bias_steps <= 2 * self.own_bias_steps + max(0.25, 2 / self.bias_rows**0.5)
        )


def probes(shape: tuple[int, ...], n: int = PROBES, seed: int = 0) -> list[np.ndarray]:
    """``n`` deterministic uint8 pictures: smooth random fields with edges and noise (any content exercises the
    arithmetic; these reach every layer with varied activations)."""
    rng = np.random.default_rng(seed)
    h, w, c = (int(x) for x in shape[1:4])
    out = []
    for k in range(n):
        cells = 2 + 3 * k
        coarse = rng.uniform(0, 255, (cells, cells, c))
        field = np.kron(coarse, np.ones((h // cells + 1, w // cells + 1, 1)))[:h, :w]
        field += rng.normal(0, 12, (h, w, c))
        out.append(np.clip(field, 0, 255).astype(np.uint8)[np.newaxis])
    return out


def _heads(model: bytes) -> list[int]:
    """The tensors compared: what feeds the SSD postprocess op (box encodings, class scores), or the outputs."""
    s = schema()
    g = s.Model.GetRootAsModel(model, 0)
    sg = g.Subgraphs(0)
    for k in range(sg.OperatorsLength()):
        op = sg.Operators(k)
        code = g.OperatorCodes(op.OpcodeIndex())
        custom = code.CustomCode()
        if custom is not None and custom.decode() == POSTPROCESS:
            return [int(op.Inputs(0)), int(op.Inputs(1))]
    return [int(sg.Outputs(k)) for k in range(sg.OutputsLength())]


def _logits(model: bytes) -> list[int]:
    """The tensors LOGISTIC and SOFTMAX read (class logits, linear): the same index in the copy (to_int8 keeps
    every tensor's index)."""
    s = schema()
    g = s.Model.GetRootAsModel(model, 0)
    sg = g.Subgraphs(0)
    wanted = {s.BuiltinOperator.LOGISTIC, s.BuiltinOperator.SOFTMAX}
    out = []
    for k in range(sg.OperatorsLength()):
        op = sg.Operators(k)
        code = g.OperatorCodes(op.OpcodeIndex())
        if max(code.BuiltinCode(), code.DeprecatedBuiltinCode()) in wanted:
            out.append(int(op.Inputs(0)))
    return out


def _column_bias(a: Any, b: Any, tensors: list[int], inputs: list[np.ndarray]) -> tuple[float, int]:
    """Largest |mean signed difference| of any last-axis column of ``tensors`` between ``a`` and ``b``, in
    ``a``'s steps."""
    ta, tb = adapter.tensors(a), adapter.tensors(b)
    sums: dict[int, np.ndarray] = {}
    rows: dict[int, int] = {}
    for x in inputs:
        adapter.invoke_on(a, x)
        adapter.invoke_on(b, x)
        for i in tensors:
            da, db = ta[i], tb[i]
            (sa, za), (sb, zb) = da["quantization"], db["quantization"]
            sa = float(sa) or 1.0
            d = (adapter.get(b, db).astype(np.float64) - zb) * (float(sb) or 1.0) - (
                adapter.get(a, da).astype(np.float64) - za
            ) * sa
            d = (d / sa).reshape(-1, d.shape[-1])
            sums[i] = sums.get(i, 0) + d.sum(0)
            rows[i] = rows.get(i, 0) + d.shape[0]
    worst = max((float(np.abs(sums[i] / rows[i]).max()) for i in sums), default=0.0)
    return round(worst, 3), min(rows.values(), default=1)


def _spread(a: Any, b: Any, heads: list[tuple[int, int]], inputs: list[np.ndarray]) -> tuple[float, float]:
    """Largest and mean difference of the head tensors of interpreters ``a`` and ``b``, in ``a``'s steps."""
    ta, tb = adapter.tensors(a), adapter.tensors(b)
    worst, total, count = 0.0, 0.0, 0
    for x in inputs:
        adapter.invoke_on(a, x)
        adapter.invoke_on(b, x)
        for ia, ib in heads:
            da, db = ta[ia], tb[ib]
            (sa, za), (sb, zb) = da["quantization"], db["quantization"]
            sa = float(sa) or 1.0
            real_a = (adapter.get(a, da).astype(np.float64) - za) * sa
            real_b = (adapter.get(b, db).astype(np.float64) - zb) * (float(sb) or 1.0)
            steps = np.abs(real_a - real_b) / sa
            worst, total, count = (
                max(worst, float(steps.max())),
                total + float(steps.sum()),
                count + steps.size,
            )
    return round(worst, 3), round(total / max(count, 1), 4)


def agreement(original: bytes, copy: bytes, n: int = PROBES) -> Agreement:
    """Run both models on the same probe inputs and compare their head tensors in the original's steps."""
    with quiet_runtime_info(), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # LiteRT's note that preserved tensors are for debugging
        a = adapter.load(original, 1, preserve_all_tensors=True)
        own = adapter.load(original, 1, preserve_all_tensors=True, builtin_kernels=True)
        b = adapter.load(copy, 1, preserve_all_tensors=True)
    inputs = probes(tuple(adapter.inputs(a)[0]["shape"]), n)
    heads = _heads(original)
    theirs = _spread(a, b, list(zip(heads, _heads(copy), strict=True)), inputs)
    ours = _spread(a, own, [(h, h) for h in heads], inputs)
    logits = _logits(original)
    bias, rows = _column_bias(a, b, logits, inputs)
    own_bias, _ = _column_bias(a, own, logits, inputs)
    return Agreement(*theirs, *ours, bias, own_bias, rows)


def _runtime_version() -> str:
    """The LiteRT that checked a copy: a verdict is about the kernels it ran, not the file alone."""
    try:
        import ai_edge_litert

        return str(getattr(ai_edge_litert, "__version__", "?"))
    except ImportError:
        return "none"


# copies verified in this process that could not be written to the cache (read-only models dir, a derived
# dir owned by someone else): made and checked once per process, not once per open
_UNCACHED: dict[tuple[str, str], Path] = {}


def _manifest(copy: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(copy.with_suffix(".json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("version") == REQUANT_VERSION else None


def int8_copy(model: Path, cache_dir: Path) -> Path | None:
    """The checked int8 per-channel copy of ``model`` in ``cache_dir`` (made now if needed), or None: run the
    model as shipped. Never raises for a model that cannot be rewritten; the reason is logged once per start."""
    try:
        return _int8_copy(model, cache_dir)
    except Exception as exc:  # whatever happens here, the model runs as shipped
        log.info("%s runs as shipped: its int8 copy failed (%s: %s)", model.name, type(exc).__name__, exc)
        return None


def _int8_copy(model: Path, cache_dir: Path) -> Path | None:
    digest = sha256_file(model)
    memo = (digest, str(cache_dir))
    if memo in _UNCACHED and _UNCACHED[memo].is_file():
        return _UNCACHED[memo]
    # the rewrite's version in the name: two edgevision versions sharing a models dir keep their own copies
    copy = cache_dir / f"{model.stem}.{digest[:16]}.int8v{REQUANT_VERSION}.tflite"
    runtime = _runtime_version()
    meta = _manifest(copy)
    if meta is not None and meta.get("source_sha256") == digest:
        if not meta.get("verified"):
            # a verdict of this runtime's kernels; a copy that did not run is retried once (it may have been
            # the machine: memory, a signal), a copy that disagreed is not
            final = meta.get("kind") == "disagreed" or int(meta.get("attempts", 1)) >= 2
            if meta.get("runtime") == runtime and final:
                log.info(
                    "%s runs as shipped: its int8 copy disagreed before (%s)", model.name, meta.get("reason")
                )
                return None
        else:
            try:
                if copy.is_file() and sha256_file(copy) == meta.get("sha256"):
                    return copy
            except OSError as exc:
                log.info("%s: cannot read its int8 copy %s (%s); making it again", model.name, copy, exc)
    try:
        converted = to_int8(model.read_bytes())
    except NotConvertible as exc:
        log.debug("%s runs as shipped: %s", model.name, exc)
        return None
    except Exception as exc:  # a rewrite that fails for any reason must leave the model running as shipped
        log.info("%s runs as shipped: its int8 rewrite failed (%s: %s)", model.name, type(exc).__name__, exc)
        return None
    agree: Agreement | None = None
    kind = "disagreed"
    try:
        agree = agreement(model.read_bytes(), converted.model)
    except (RuntimeError, ValueError) as exc:
        kind = "did not run"
        reason = f"the copy does not run: {(str(exc).splitlines() or [type(exc).__name__])[0]}"
    else:
        reason = (
            ""
            if agree.ok
            else (
                f"outputs differ by up to {agree.max_steps} steps, mean {agree.mean_steps}, against "
                f"{agree.own_max_steps} / {agree.own_mean_steps} between the original's own kernel paths"
            )
        )
    record: dict[str, Any] = {
        "version": REQUANT_VERSION,
        "source": str(model),
        "source_sha256": digest,
        "runtime": runtime,
        "verified": agree is not None and agree.ok,
        "kind": "" if agree is not None and agree.ok else kind,
        "attempts": (
            int(meta.get("attempts", 1)) + 1
            if meta is not None and meta.get("source_sha256") == digest and not meta.get("verified")
            else 1
        ),
        "reason": reason,
        "agreement": asdict(agree) if agree else None,
        "probes": PROBES,
        "exact_channels": converted.exact_channels,
        "requantized_channels": converted.requantized_channels,
    }
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        if record["verified"]:
            tmp = copy.with_name(copy.name + f".{os.getpid()}.tmp")
            tmp.write_bytes(converted.model)
            record["sha256"] = sha256_file(tmp)
            install_atomically(tmp, copy)
        tmp_meta = copy.with_suffix(f".json.{os.getpid()}.tmp")
        tmp_meta.write_text(json.dumps(record, indent=2) + "\n")
        install_atomically(tmp_meta, copy.with_suffix(".json"))
    except OSError as exc:
        for tmp in (
            copy.with_name(copy.name + f".{os.getpid()}.tmp"),
            copy.with_suffix(f".json.{os.getpid()}.tmp"),
        ):
            with contextlib.suppress(OSError):  # the directory itself may be what is missing
                unlink_quietly(tmp)
        if not record["verified"]:
            return None
        # verified but not cacheable: use it for this process, from a private directory, and say so once
        private = Path(tempfile.mkdtemp(prefix="edgevision-int8-"))
        atexit.register(shutil.rmtree, private, ignore_errors=True)
        session = private / copy.name
        session.write_bytes(converted.model)
        _UNCACHED[memo] = session
        log.warning(
            "%s: cannot write its int8 copy to %s (%s); using it from %s for this run only (it is made and "
            "checked again at every start until the directory is writable)",
            model.name,
            cache_dir,
            exc,
            session.parent,
        )
        return session
    if not record["verified"]:
        log.warning("%s runs as shipped: its int8 per-channel copy was not used (%s)", model.name, reason)
        return None
    assert agree is not None
    log.info(
        "%s: made an int8 per-channel copy (%d of %d channels exact; outputs within %.0f steps, mean %.2f): %s",
        model.name,
        converted.exact_channels,
        converted.exact_channels + converted.requantized_channels,
        agree.max_steps,
        agree.mean_steps,
        copy,
    )
    return copy
