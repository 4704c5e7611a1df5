"""``edgevision detect IMAGE...``: run the detector on still images."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from edgevision.cli.common import add_model_flags, config_from_args, models_reachable
from edgevision.errors import EXIT_NOINPUT, InputError, UsageError
from edgevision.safe_read import read_image
from edgevision.writable import check_output_dir, check_output_file

if TYPE_CHECKING:  # heavy modules are imported when the command runs, not for --help
    import numpy as np

    from edgevision.results.detection import Detection
    from edgevision.results.face import Face


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("detect", help="detect objects (and faces) in images")
    p.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    add_model_flags(p)
    p.add_argument("--json", action="store_true", help="one JSON object per image on stdout")
    p.add_argument(
        "--annotate",
        metavar="OUT",
        help="annotated image(s): an image file (.jpg, .png, ...) or a directory (a name without a suffix, "
        "an existing directory, or one ending in /)",
    )
    p.add_argument("--faces", action="store_true", help="also find faces, their keypoints and 468 landmarks")
    p.set_defaults(func=run)


@dataclass(frozen=True)
class AnnotateTarget:
    """Where ``--annotate OUT`` writes: the one image file ``path``, or the directory ``path`` (one image each,
    under its own name)."""

    path: Path
    one_file: bool

    def for_image(self, image: Path) -> Path:
        """The file the annotated ``image`` goes to (its directory created)."""
        if self.one_file:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            return self.path
        self.path.mkdir(parents=True, exist_ok=True)
        return self.path / image.name


def annotate_target(raw: str, count: int, images: list[Path] | None = None) -> AnnotateTarget:
    """Read ``--annotate OUT`` for ``count`` images and refuse, before any image is processed, a target that
    cannot hold them or cannot be written (exit 2).

    ``OUT`` is a directory when it exists as one, ends in ``/`` or has no suffix; otherwise it names an image
    file, and its suffix must be one OpenCV can write (a typo such as ``out.jgp`` used to become a directory).
    """
    import cv2

    out = Path(raw)
    if out.is_dir() or raw.endswith(("/", os.sep)) or not out.suffix:
        if out.exists() and not out.is_dir():
            raise UsageError(f"--annotate {out}: exists and is not a directory")
        check_output_dir("--annotate", out)
        seen: dict[str, Path] = {}
        for image in images or []:  # each goes to OUT/<its name>: a second one would overwrite the first
            first = seen.setdefault(image.name, image)
            if first.resolve() != image.resolve():
                raise UsageError(
                    f"--annotate {out}: {first} and {image} would both be written to {out / image.name}; "
                    "annotate them in separate runs"
                )
        return AnnotateTarget(out, one_file=False)
    if not cv2.haveImageWriter(str(out)):
        raise UsageError(
            f"--annotate {out}: OpenCV cannot write '{out.suffix}' images; name an image file "
            f"(.jpg, .png, .bmp, .webp, ...) or a directory (end it with /)"
        )
    if count > 1:
        raise UsageError(
            f"--annotate {out}: one image file cannot hold {count} annotated images; give a directory "
            f"(e.g. --annotate {out.parent / out.stem}/)"
        )
    check_output_file("--annotate", out)
    return AnnotateTarget(out, one_file=True)


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
    target = annotate_target(args.annotate, len(args.images), args.images) if args.annotate else None
    import cv2

    from edgevision.detection.factory import build_detector
    from edgevision.face.accept import AcceptMode
    from edgevision.face.factory import face_detector, face_rule, landmark_model
    from edgevision.face.stage import confirm
    from edgevision.paths import models_dir
    from edgevision.render import draw_detections, draw_faces

    cfg = config_from_args(args)
    with models_reachable("detect", [models_dir(cfg)]):
        detector = build_detector(cfg)
        faces_det = face_detector(cfg) if args.faces else None
        mesh = landmark_model(cfg) if args.faces else None
    rule = face_rule(cfg, AcceptMode.STRICT)
    failed = 0
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
        if target is not None:
            file = target.for_image(path)
            if not cv2.imwrite(str(file), draw_faces(draw_detections(image.copy(), dets), faces or [])):
                raise InputError(f"{file}: cannot write annotated image")
    return EXIT_NOINPUT if failed else 0
