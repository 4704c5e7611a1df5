"""The one rule that decides "this is a face", as pure functions over a :class:`Face`.

Every path that reports or acts on faces (the face stage, ``detect --faces``, the privacy blur) asks this
module; nothing else compares a presence score or a pose with a limit.

A detector's score and Face Mesh's presence are both appearance: a bare chest with two nipples and a navel is
a face to both (``squat.bmp``: BlazeFace 0.68, presence 0.999). Geometry is what such a texture lacks. Face-
like textures come at any orientation, while the faces of people in front of an upright camera cluster near
upright, with the nose and mouth below the eyes and the two models agreeing on where the eyes are. The checks,
each skipped when its input is absent (an SSD face model has no keypoints; landmarks need the mesh model):

- ``presence``: the landmark model's face-presence probability is at least ``min_presence``.
- ``layout``: in the frame of the eye line (x along it, y down, lengths in face sizes), the nose is below the
  eyes, the mouth below the nose, the eye distance is at most a face size, and eyes, nose and mouth lie in the
  (slightly grown) box.
- ``upright``: the face's axis (the mean of its eye lines and midlines, :func:`axis_estimates`) leans less than
  ``max_roll`` degrees from the image's vertical, and those estimates agree on an up direction: texture comes
  at any angle, a standing person's face does not.
- ``agreement``: the mesh's eye centres are within ``max_eye_offset`` face sizes of the detector's eye
  keypoints, and their eye lines within ``max_roll_disagreement`` degrees.

Modes (:class:`AcceptMode`): ``strict`` applies every check (faces that are reported, counted or cropped);
``privacy`` is the looser mode the privacy blur uses: it accepts every candidate a detector reports, because
missing a real face there is a leak while blurring a chest costs nothing. The verdict's reasons are still
computed in both modes, so a caller can tell what strict mode would have said.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum

from edgevision.face.landmarks import (
    CHIN,
    FOREHEAD,
    LEFT_EYE_INNER,
    LEFT_EYE_OUTER,
    RIGHT_EYE_INNER,
    RIGHT_EYE_OUTER,
)
from edgevision.results.detection import BBox
from edgevision.results.face import Face

Point = tuple[float, float]


class AcceptMode(str, Enum):
    """How strictly candidates are judged: ``strict`` for reporting, ``privacy`` for blurring."""

    STRICT = "strict"
    PRIVACY = "privacy"


class Reason(str, Enum):
    """Why a candidate is not a face (strict mode)."""

    NOT_PRESENT = "presence"
    LAYOUT = "layout"
    TILTED = "upright"
    DISAGREE = "agreement"


@dataclass(frozen=True)
class FaceLimits:
    """The limits of strict mode. Lengths are in face sizes (the box's longer side, :func:`face_size`)."""

    min_presence: float = 0.5
    max_roll: float = 35.0  # degrees; real faces here: within 20; the chest in squat.bmp: 46-50
    min_axis_coherence: float = 0.5  # the tilt estimates spread less than about ±60 degrees
    max_roll_disagreement: float = 20.0  # degrees between the keypoint and landmark eye lines
    max_eye_offset: float = 0.35  # landmark eye centre to keypoint eye, in face sizes
    box_margin: float = 0.25  # eyes, nose and mouth may lie this far outside the box
    max_eye_distance: float = 0.8  # eye to eye, in face sizes
    mouth_below_eyes: tuple[float, float] = (0.1, 1.0)  # the mouth's depth below the eye line


@dataclass(frozen=True)
class Verdict:
    """Whether a candidate is accepted in the mode asked, and every strict-mode check it fails."""

    accepted: bool
    reasons: tuple[Reason, ...]


def to_pixels(p: Sequence[float], frame_w: int, frame_h: int) -> Point:
    """A frame-normalized point in pixels (the geometry needs equal units on both axes)."""
    return (p[0] * frame_w, p[1] * frame_h)


def angle_deg(a: Point, b: Point) -> float:
    """The direction from ``a`` to ``b`` in degrees, y down (0 = to the right, 90 = down)."""
    return math.degrees(math.atan2(b[1] - a[1], b[0] - a[0]))


def in_eye_frame(p: Point, right_eye: Point, left_eye: Point, unit: float) -> Point:
    """``p`` in the eye line's frame: origin between the eyes, x towards the left eye, y down, in ``unit``s.

    The subject's right eye is on the image's left for an upright face, so x runs to the image's right.
    """
    ox, oy = (right_eye[0] + left_eye[0]) / 2, (right_eye[1] + left_eye[1]) / 2
    a = math.atan2(left_eye[1] - right_eye[1], left_eye[0] - right_eye[0])
    c, s = math.cos(a), math.sin(a)
    dx, dy = p[0] - ox, p[1] - oy
    return ((dx * c + dy * s) / unit, (-dx * s + dy * c) / unit)


def face_size(face: Face, frame_w: int, frame_h: int) -> float:
    """The box's size in pixels: its longer side (a face cut by the frame's edge keeps the other one whole)."""
    return max(face.box.width * frame_w, face.box.height * frame_h, 1e-6)


def _mean(points: Iterable[Point]) -> Point:
    pts = list(points)
    return (sum(p[0] for p in pts) / len(pts), sum(p[1] for p in pts) / len(pts))


def landmark_eyes(face: Face, frame_w: int, frame_h: int) -> tuple[Point, Point] | None:
    """The mesh's right and left eye centres (mean of each eye's corners) in pixels, or None."""
    if face.landmarks is None:
        return None
    lm = face.landmarks
    right = _mean(to_pixels(lm[i], frame_w, frame_h) for i in (RIGHT_EYE_OUTER, RIGHT_EYE_INNER))
    left = _mean(to_pixels(lm[i], frame_w, frame_h) for i in (LEFT_EYE_OUTER, LEFT_EYE_INNER))
    return right, left


def keypoint_eyes(face: Face, frame_w: int, frame_h: int) -> tuple[Point, Point] | None:
    """The detector's right and left eye keypoints in pixels, or None (a model without keypoints)."""
    kp = face.keypoints
    if "right_eye" not in kp or "left_eye" not in kp:
        return None
    return to_pixels(kp["right_eye"], frame_w, frame_h), to_pixels(kp["left_eye"], frame_w, frame_h)


def tilt_deg(bottom: Point, top: Point) -> float:
    """How far the axis from ``bottom`` to ``top`` leans from straight up, in degrees (+ = top to the right)."""
    return math.degrees(math.atan2(top[0] - bottom[0], bottom[1] - top[1]))


def axis_estimates(face: Face, frame_w: int, frame_h: int) -> list[float]:
    """Every estimate of the face's tilt in degrees (0 = upright, + = clockwise in the image) its data allow.

    The eye line (keypoints, landmarks) is sharp on a frontal face and vague on a profile, where the eyes
    nearly coincide; the midline (mouth to between the eyes, chin to forehead) holds on both.
    """
    out = [
        angle_deg(*eyes)
        for eyes in (keypoint_eyes(face, frame_w, frame_h), landmark_eyes(face, frame_w, frame_h))
        if eyes
    ]
    kp_eyes = keypoint_eyes(face, frame_w, frame_h)
    if kp_eyes is not None and "mouth_center" in face.keypoints:
        between = _mean(kp_eyes)
        out.append(tilt_deg(to_pixels(face.keypoints["mouth_center"], frame_w, frame_h), between))
    if face.landmarks is not None:
        lm = face.landmarks
        out.append(tilt_deg(to_pixels(lm[CHIN], frame_w, frame_h), to_pixels(lm[FOREHEAD], frame_w, frame_h)))
    return out


def axis(face: Face, frame_w: int, frame_h: int) -> tuple[float, float] | None:
    """The circular mean of :func:`axis_estimates` and its coherence (1 = all agree, 0 = they cancel), or None.

    An upright face is near 0; an upside-down one near ±180; a mirrored one (eye line at 180, midline at 0)
    has no up direction at all (coherence near 0).
    """
    est = axis_estimates(face, frame_w, frame_h)
    if not est:
        return None
    s = sum(math.sin(math.radians(a)) for a in est) / len(est)
    c = sum(math.cos(math.radians(a)) for a in est) / len(est)
    return math.degrees(math.atan2(s, c)), math.hypot(s, c)


def roll_deg(face: Face, frame_w: int, frame_h: int) -> float | None:
    """The face's tilt in degrees (0 = upright, + = clockwise), or None without eyes or landmarks."""
    a = axis(face, frame_w, frame_h)
    return None if a is None else a[0]


def _in_box(p: Point, box: BBox, margin: float) -> bool:
    """``p`` within ``box`` grown by ``margin`` of its sides; a side on the frame's edge (a box clipped by the
    frame) does not bound it."""
    mx, my = box.width * margin, box.height * margin
    x_ok = (box.xmin <= 0.0 or box.xmin - mx <= p[0]) and (box.xmax >= 1.0 or p[0] <= box.xmax + mx)
    y_ok = (box.ymin <= 0.0 or box.ymin - my <= p[1]) and (box.ymax >= 1.0 or p[1] <= box.ymax + my)
    return x_ok and y_ok


def check_presence(face: Face, limits: FaceLimits) -> Reason | None:
    """The mesh model's presence is high enough (no verdict without the mesh)."""
    if face.presence is None or face.presence >= limits.min_presence:
        return None
    return Reason.NOT_PRESENT


def check_layout(face: Face, frame_w: int, frame_h: int, limits: FaceLimits) -> Reason | None:
    """Eyes, nose and mouth keypoints in the box, nose below the eyes, mouth below the nose."""
    eyes = keypoint_eyes(face, frame_w, frame_h)
    kp = face.keypoints
    if eyes is None or "nose_tip" not in kp or "mouth_center" not in kp:
        return None
    unit = face_size(face, frame_w, frame_h)
    for name in ("right_eye", "left_eye", "nose_tip", "mouth_center"):
        if not _in_box(kp[name], face.box, limits.box_margin):
            return Reason.LAYOUT
    right, left = eyes
    if math.dist(right, left) / unit > limits.max_eye_distance:
        return Reason.LAYOUT
    _, nose_y = in_eye_frame(to_pixels(kp["nose_tip"], frame_w, frame_h), right, left, unit)
    _, mouth_y = in_eye_frame(to_pixels(kp["mouth_center"], frame_w, frame_h), right, left, unit)
    low, high = limits.mouth_below_eyes
    if not (0.0 < nose_y < mouth_y and low <= mouth_y <= high):
        return Reason.LAYOUT
    return None


def check_upright(face: Face, frame_w: int, frame_h: int, limits: FaceLimits) -> Reason | None:
    """The face has an up direction (coherent estimates) leaning less than ``max_roll`` from the vertical
    (no verdict without eyes or landmarks)."""
    a = axis(face, frame_w, frame_h)
    if a is None or (abs(a[0]) <= limits.max_roll and a[1] >= limits.min_axis_coherence):
        return None
    return Reason.TILTED


def check_agreement(face: Face, frame_w: int, frame_h: int, limits: FaceLimits) -> Reason | None:
    """The mesh and the detector agree on where the eyes are (needs both landmarks and eye keypoints)."""
    mesh, det = landmark_eyes(face, frame_w, frame_h), keypoint_eyes(face, frame_w, frame_h)
    if mesh is None or det is None:
        return None
    unit = face_size(face, frame_w, frame_h)
    if any(math.dist(a, b) / unit > limits.max_eye_offset for a, b in zip(mesh, det, strict=True)):
        return Reason.DISAGREE
    turn = (angle_deg(*mesh) - angle_deg(*det) + 180.0) % 360.0 - 180.0
    return Reason.DISAGREE if abs(turn) > limits.max_roll_disagreement else None


def strict_reasons(face: Face, frame_w: int, frame_h: int, limits: FaceLimits) -> tuple[Reason, ...]:
    """Every strict-mode check ``face`` fails, in a fixed order; empty for a face."""
    found = (
        check_presence(face, limits),
        check_layout(face, frame_w, frame_h, limits),
        check_upright(face, frame_w, frame_h, limits),
        check_agreement(face, frame_w, frame_h, limits),
    )
    return tuple(r for r in found if r is not None)


def judge(face: Face, frame_w: int, frame_h: int, mode: AcceptMode, limits: FaceLimits) -> Verdict:
    """The verdict on one candidate in ``mode`` for a ``frame_w`` x ``frame_h`` frame."""
    reasons = strict_reasons(face, frame_w, frame_h, limits)
    return Verdict(mode is AcceptMode.PRIVACY or not reasons, reasons)


@dataclass(frozen=True)
class FaceRule:
    """The acceptance rule bound to its mode and limits: what a stage or a command holds."""

    mode: AcceptMode = AcceptMode.STRICT
    limits: FaceLimits = FaceLimits()

    def judge(self, face: Face, frame_w: int, frame_h: int) -> Verdict:
        return judge(face, frame_w, frame_h, self.mode, self.limits)

    def accept(self, faces: Iterable[Face], frame_w: int, frame_h: int) -> list[Face]:
        """The candidates that are faces in this mode, in their order."""
        return [f for f in faces if self.judge(f, frame_w, frame_h).accepted]
