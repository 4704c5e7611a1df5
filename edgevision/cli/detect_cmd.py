"""``edgevision detect IMAGE...``: run the detector on still images."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2

from edgevision.cli.common import add_model_flags, config_from_args
from edgevision.detection.factory import build_detector
from edgevision.errors import EXIT_NOINPUT, InputError
from edgevision.render import draw_detections

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("detect", help="detect objects in images")
    p.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    add_model_flags(p)
    p.add_argument("--json", action="store_true", help="one JSON object per image on stdout")
    p.add_argument(
        "--annotate", type=Path, metavar="OUT", help="write annotated image(s): a file or a directory"
    )
    p.set_defaults(func=run)


def read_image(path: Path):  # type: ignore[no-untyped-def]
    """Read an image as BGR; a missing or undecodable file is an :class:`InputError`."""
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if not path.is_file():
        raise InputError(f"{path}: not a file")
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise InputError(f"{path}: cannot decode image (unsupported or corrupt file)")
    return image


def _annotate_target(out: Path, image: Path, many: bool) -> Path:
    if not many and out.suffix.lower() in IMAGE_SUFFIXES:
        out.parent.mkdir(parents=True, exist_ok=True)
        return out
    out.mkdir(parents=True, exist_ok=True)
    return out / image.name


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    detector = build_detector(cfg)
    failed = 0
    many = len(args.images) > 1
    for path in args.images:
        try:
            image = read_image(path)
        except InputError as exc:
            print(f"edgevision: error: {exc}", file=sys.stderr)
            failed += 1
            continue
        dets, lat = detector.detect(image)
        total = sum(lat.values())
        if args.json:
            obj = {
                "image": str(path),
                "model": detector.name,
                "latency_ms": round(total, 3),
                "detections": [d.to_dict() for d in dets],
            }
            print(json.dumps(obj), flush=True)
        else:
            print(f"{path}: {len(dets)} detection(s) in {total:.1f} ms ({detector.name})")
            h, w = image.shape[:2]
            for d in dets:
                px = d.box.to_pixels(w, h)
                print(
                    f"  {d.label:<14} {d.score:.3f}  box={d.box.as_list(3)}  px=({px.x1},{px.y1},{px.x2},{px.y2})"
                )
        if args.annotate:
            target = _annotate_target(args.annotate, path, many)
            if not cv2.imwrite(str(target), draw_detections(image.copy(), dets)):
                raise InputError(f"{target}: cannot write annotated image")
    return EXIT_NOINPUT if failed else 0
