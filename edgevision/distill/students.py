"""Student detectors on the teacher's anchor layout.

* ``mobilenet_v1_{0.75,0.5,0.25}``: SSD-MobileNet V1 with width α; the backbone is the transplanted ImageNet
  classifier of that width, tapped at ``Conv2d_11_pointwise`` (stride 16) and ``Conv2d_13_pointwise``
  (stride 32), extra layers thinned by α, 1x1 box / class predictors (as the TF SSD-MobileNet V1).
* ``mobilenet_v3_small``: SSDLite with the transplanted MobileNet V3-Small backbone (SE blocks, hard-swish),
  tapped at the expansion output of the first stride-32 block (stride 16) and the final 576-channel conv;
  depthwise separable extra layers and depthwise separable prediction heads.

At input side ``s`` the six predictor grids are ``ceil(s/16), ceil(s/32)`` and four stride-2 extras, which at
300 px are the teacher's 19, 10, 5, 3, 2, 1 with 3 anchors per cell on the first layer and 6 on the others.
Outputs: box encodings ``[1, A, 4]`` and person logits ``[1, A, 1]``, anchor ``((y * W) + x) * n + k``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgevision.distill import STUDENTS
from edgevision.errors import UsageError

ANCHORS_PER_CELL = (3, 6, 6, 6, 6, 6)


@dataclass(frozen=True)
class StudentSpec:
    """What a student is: family, width, backbone classifier and head style."""

    key: str
    family: str
    alpha: float
    backbone: str  # file name of the ImageNet classifier in the shared / models directory
    head: str  # "ssd" (1x1 predictors) or "ssdlite" (depthwise separable predictors)
    extras: tuple[int, int, int, int]


SPECS = {
    "mobilenet_v1_0.75": StudentSpec(
        "mobilenet_v1_0.75",
        "mobilenet_v1",
        0.75,
        "mobilenet_v1_0.75_192_quant.tflite",
        "ssd",
        (384, 192, 192, 96),
    ),
    "mobilenet_v1_0.5": StudentSpec(
        "mobilenet_v1_0.5",
        "mobilenet_v1",
        0.5,
        "mobilenet_v1_0.5_160_quant.tflite",
        "ssd",
        (256, 128, 128, 64),
    ),
    "mobilenet_v1_0.25": StudentSpec(
        "mobilenet_v1_0.25",
        "mobilenet_v1",
        0.25,
        "mobilenet_v1_0.25_128_quant.tflite",
        "ssd",
        (128, 64, 64, 32),
    ),
    "mobilenet_v3_small": StudentSpec(
        "mobilenet_v3_small",
        "mobilenet_v3_small",
        1.0,
        "mobilenet_v3_small_1.0_224_quant.tflite",
        "ssdlite",
        (256, 128, 128, 64),
    ),
}
assert set(SPECS) == set(STUDENTS)


def spec_for(key: str) -> StudentSpec:
    try:
        return SPECS[key]
    except KeyError:
        raise UsageError(f"unknown student '{key}' (known: {', '.join(STUDENTS)})") from None


def grids(size: int) -> list[tuple[int, int]]:
    """Predictor grids of a student at input side ``size`` (SAME padding, strides 16, 32, 64, ...)."""
    out = [math.ceil(size / 16), math.ceil(size / 32)]
    while len(out) < 6:
        out.append(math.ceil(out[-1] / 2))
    return [(g, g) for g in out]


def build_student(spec: StudentSpec, backbone_path: Path, size: int) -> Any:
    """The float Keras student: pixels ``[1, s, s, 3]`` (0..255) → (box encodings, person logits)."""
    import keras

    from edgevision.distill.replica import build_replica, last_at_stride, stride_taps

    backbone, tensors, _ = build_replica(backbone_path, size, stop_before_pool=True, name="backbone")
    t16, t32 = stride_taps(backbone_path)
    feats = [tensors[t16], tensors[t32]]
    x = feats[-1]
    relu6 = {"max_value": 6.0}
    for i, depth in enumerate(spec.extras):
        x = keras.layers.Conv2D(depth // 2, 1, padding="same", name=f"extra{i}_reduce")(x)
        x = keras.layers.ReLU(**relu6, name=f"extra{i}_reduce_relu")(x)
        x = keras.layers.DepthwiseConv2D(3, strides=2, padding="same", name=f"extra{i}_dw")(x)
        x = keras.layers.ReLU(**relu6, name=f"extra{i}_dw_relu")(x)
        x = keras.layers.Conv2D(depth, 1, padding="same", name=f"extra{i}_expand")(x)
        x = keras.layers.ReLU(**relu6, name=f"extra{i}_expand_relu")(x)
        feats.append(x)
    prior = keras.initializers.Constant(math.log(0.01 / 0.99))
    boxes, logits = [], []
    for i, (f, n) in enumerate(zip(feats, ANCHORS_PER_CELL, strict=True)):
        if spec.head == "ssdlite":
            f = keras.layers.DepthwiseConv2D(3, padding="same", name=f"head{i}_dw")(f)
            f = keras.layers.ReLU(**relu6, name=f"head{i}_dw_relu")(f)
        b = keras.layers.Conv2D(n * 4, 1, padding="same", name=f"head{i}_box")(f)
        c = keras.layers.Conv2D(n, 1, padding="same", bias_initializer=prior, name=f"head{i}_cls")(f)
        boxes.append(keras.layers.Reshape((-1, 4), name=f"head{i}_box_flat")(b))
        logits.append(keras.layers.Reshape((-1, 1), name=f"head{i}_cls_flat")(c))
    box_out = keras.layers.Concatenate(axis=1, name="box_encodings")(boxes)
    cls_out = keras.layers.Concatenate(axis=1, name="person_logits")(logits)
    model = keras.Model(backbone.input, [box_out, cls_out], name=f"ssd_{spec.key}")
    # The stride-8 feature map: the layers before it keep their ImageNet weights and are computed once per frame
    # in training; from there on (the stride-16 blocks that feed the first predictor) everything trains.
    model.stem_output = tensors[last_at_stride(backbone_path, 8)]
    return model


def split_at_stem(model: Any) -> tuple[Any, Any]:
    """(stem, rest): pixels → stride-16 features, and features → outputs, sharing the model's layers."""
    import keras

    stem = keras.Model(model.input, model.stem_output, name=f"{model.name}_stem")
    rest = keras.Model(model.stem_output, model.outputs, name=f"{model.name}_rest")
    return stem, rest
