"""``edgevision detect IMAGE...``: run the detector on still images."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from edgevision.cli.common import add_model_flags, config_from_args
from edgevision.errors import EXIT_NOINPUT, InputError, UsageError
from edgevision.writable import check_output_dir, check_output_file

if TYPE_CHECKING:  # heavy modules are imported when the command runs, not for --help
    import numpy as np

    from edgevision.results.detection import Detection
    from edgevision.results.face import Face

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("detect", help="detect objects (and faces) in images")
    p.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    add_model_flags(p)
    p.add_argument("--json", action="store_true", help="one JSON object per image on stdout")
    p.add_argument("--annotate", type=Path, metavar="OUT", help="annotated image(s): a file or a directory")
    p.add_argument("--faces", action="store_true", help="also find faces, their keypoints and 468 landmarks")
    p.set_defaults(func=run)


def read_image(path: Path) -> np.ndarray:
    """Read an image as BGR; a missing or undecodable file is an :class:`InputError`."""
    import cv2

    if not path.exists():
        raise InputError(f"{path}: no such file")
    if not path.is_file():
        raise InputError(f"{path}: not a file")
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise InputError(f"{path}: cannot decode image (unsupported or corrupt file)")
    return image


def check_annotate_target(out: Path, count: int) -> None:
    """Refuse, before any image is processed, an ``--annotate`` target that cannot hold ``count`` images or
    cannot be written (exit 2)."""
    if count > 1 and out.suffix.lower() in IMAGE_SUFFIXES and not out.is_dir():
        raise UsageError(
            f"--annotate {out}: one image file cannot hold {count} annotated images; give a directory "
            f"(e.g. --annotate {out.parent / out.stem}/)"
        )
    if out.exists() and not out.is_dir() and (count > 1 or out.suffix.lower() not in IMAGE_SUFFIXES):
        raise UsageError(f"--annotate {out}: exists and is not a directory")
    if _one_file(out, count > 1):
        check_output_file("--annotate", out)
    else:
        check_output_dir("--annotate", out)


def _one_file(out: Path, many: bool) -> bool:
    """Whether ``--annotate OUT`` names the one annotated image (else the directory they are written into)."""
    return not many and out.suffix.lower() in IMAGE_SUFFIXES and not out.is_dir()


def _annotate_target(out: Path, image: Path, many: bool) -> Path:
    if _one_file(out, many):
        out.parent.mkdir(parents=True, exist_ok=True)
        return out
    out.mkdir(parents=True, exist_ok=True)
    return out / image.name


def _print_text(
    path: Path, image: np.ndarray, dets: list[Detection], faces: list[Face] | None, total: float, model: str
) -> None:
    print(f"{path}: {len(dets)} detection(s) in {total:.1f} ms ({model})")
    h, w = image.shape[:2]
    for d in dets:
        px = d.box.to_pixels(w, h)
        print(f"  {d.label:<14} {d.score:.3f}  box={d.box.as_list(3)}  px=({px.x1},{px.y1},{px.x2},{px.y2})")
    if faces is None:
        return
    print(f"  {len(faces)} face(s)")
    for f in faces:
        kp = " ".join(f"{k}=({x:.3f},{y:.3f})" for k, (x, y) in f.keypoints.items())
        print(f"  face           {f.score:.3f}  box={f.box.as_list(3)}  {kp}")
        if f.landmarks is not None and f.pose is not None:
            print(
                f"    {len(f.landmarks)} landmarks, presence {f.presence:.3f}, "
                f"pose yaw {f.pose.yaw:.1f} pitch {f.pose.pitch:.1f} roll {f.pose.roll:.1f}"
            )


def run(args: argparse.Namespace) -> int:
    if args.annotate:
        check_annotate_target(args.annotate, len(args.images))
    import cv2

    from edgevision.detection.factory import build_detector
    from edgevision.face.accept import AcceptMode
    from edgevision.face.factory import face_detector, face_rule, landmark_model
    from edgevision.face.stage import confirm
    from edgevision.render import draw_detections, draw_faces

    cfg = config_from_args(args)
    detector = build_detector(cfg)
    faces_det = face_detector(cfg) if args.faces else None
    mesh = landmark_model(cfg) if args.faces else None
    rule = face_rule(cfg, AcceptMode.STRICT)
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
        faces: list[Face] | None = None
        if faces_det is not None:
            t0 = time.perf_counter()
            faces = confirm(image, faces_det.detect(image), mesh, rule)
            lat.faces = (time.perf_counter() - t0) * 1e3
        total = lat.stages_ms()
        if args.json:
            obj: dict[str, object] = {
                "image": str(path),
                "model": detector.name,
                "latency_ms": round(total, 3),
                "detections": [d.to_dict() for d in dets],
            }
            if faces is not None:
                obj["faces"] = [f.to_dict() for f in faces]
            print(json.dumps(obj), flush=True)
        else:
            _print_text(path, image, dets, faces, total, detector.name)
        if args.annotate:
            target = _annotate_target(args.annotate, path, many)
            if not cv2.imwrite(str(target), draw_faces(draw_detections(image.copy(), dets), faces or [])):
                raise InputError(f"{target}: cannot write annotated image")
    return EXIT_NOINPUT if failed else 0
