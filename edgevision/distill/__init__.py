"""``edgevision models distill``: narrow and V3 SSD students made from the catalog's SSD on the user's footage.

The pipeline reads as the package: :mod:`~edgevision.distill.data` (frames, split by time) →
:mod:`~edgevision.distill.teacher` (the teacher's raw per-anchor logits and boxes, its anchors and postprocess
options) → :mod:`~edgevision.distill.replica` (ImageNet backbones transplanted from the TFLite classifiers) →
:mod:`~edgevision.distill.students` (SSD / SSDLite heads on the teacher's anchor layout) →
:mod:`~edgevision.distill.train` (dense distillation) → :mod:`~edgevision.distill.export` (full-integer TFLite with
the teacher's postprocess op grafted on) → :mod:`~edgevision.distill.gate` (box agreement, negatives, latency) →
:mod:`~edgevision.catalog.local` (atomic install).

TensorFlow is an optional extra (``pip install -e '.[train]'`` in the checkout) and is imported only here,
lazily, through :func:`require_tf`; ``edgevision run`` never imports this package.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from edgevision.errors import EdgeVisionError

#: Exit code when the training extra is missing (EX_UNAVAILABLE: a service is unavailable).
EXIT_TRAIN_UNAVAILABLE = 69
#: Exit code when distillation ran but the student failed the gate (EX_CANTCREAT: no model was created).
EXIT_GATE_FAILED = 73

STUDENTS = ("mobilenet_v1_0.75", "mobilenet_v1_0.5", "mobilenet_v1_0.25", "mobilenet_v3_small")


class TrainingUnavailable(EdgeVisionError):
    """TensorFlow (the ``train`` extra) is not installed."""

    exit_code = EXIT_TRAIN_UNAVAILABLE


class GateFailed(EdgeVisionError):
    """The student does not agree with the teacher well enough to be installed."""

    exit_code = EXIT_GATE_FAILED
    result: Any = None  # the DistillResult with the gate's figures, when distillation got that far


#: What a missing TensorFlow is reported as: the extra, installed the way README installs (from the checkout).
MISSING_TF = (
    "distillation needs TensorFlow, the optional train extra: "
    "pip install -e '.[train]' in the edgevision checkout"
)


def check_tf_installed() -> None:
    """Fail with the extra to install when TensorFlow is not installed, without importing it (it takes seconds):
    called before any other work, so a missing extra is said at once."""
    try:
        found = importlib.util.find_spec("tensorflow") is not None
    except ValueError:  # in sys.modules without a spec: imported already
        found = True
    if not found:
        raise TrainingUnavailable(MISSING_TF)


def require_tf() -> Any:
    """Import TensorFlow, or fail with the extra to install."""
    try:
        import tensorflow as tf
    except ImportError:
        raise TrainingUnavailable(MISSING_TF) from None
    return tf
