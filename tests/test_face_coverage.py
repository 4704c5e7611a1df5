"""--blur-faces says so when the people in view are too small for their faces to be found."""

from __future__ import annotations

import pytest
from conftest import WALKING, run_cli

from edgevision.face.coverage import MIN_FACE_PX, MIN_PEOPLE, MIN_PERSON_PX, FaceCoverage
from edgevision.results.detection import BBox, Detection
from edgevision.results.face import Face

H = 720


def person(height_px: float, x: float = 0.4) -> Detection:
    return Detection("person", 0, 0.7, BBox(x, 0.1, x + 0.05, 0.1 + height_px / H))


def face_in(p: Detection) -> Face:
    b = p.box
    return Face(0.8, BBox(b.xmin, b.ymin, b.xmax, b.ymin + 0.1 * b.height), {})


# per frame: (person heights in px, how many of those persons get a face found) -> warned after 10 frames
@pytest.mark.parametrize(
    ("heights", "with_face", "warned"),
    [
        ([80, 90, 70, 60], 0, True),  # a street from above: faces of ~10 px, none found
        ([80, 90, 70, 60], 1, True),  # one found now and then does not make the rest safe
        ([80, 90, 70, 60], 2, False),  # half found: not "too small to be found"
        ([300, 250, 400], 0, False),  # large people, faces not found (turned away): not a size problem
        ([MIN_PERSON_PX - 2] * 3, 0, True),  # just under the limit
        ([MIN_PERSON_PX + 2] * 3, 0, False),  # just over it
        ([80, 300], 0, False),  # only half too small
        ([80], 0, False),  # 10 person boxes: too few to judge
    ],
)
def test_warning_when_most_people_are_too_small(heights: list[int], with_face: int, warned: bool) -> None:
    cov = FaceCoverage()
    messages = []
    for _ in range(10):
        persons = [person(h, 0.05 + 0.15 * i) for i, h in enumerate(heights)]
        faces = [face_in(p) for p in persons[:with_face]]
        other = Detection("car", 2, 0.9, BBox(0.0, 0.0, 0.1, 0.1))  # not a person: not counted
        msg = cov.observe([*persons, other], faces, H)
        if msg:
            messages.append(msg)
    assert len(messages) == int(warned)  # said once, never repeated
    assert cov.people == 10 * len(heights) and cov.with_face == 10 * with_face
    if warned:
        assert "NOT blurred" in messages[0] and f"~{MIN_FACE_PX} px" in messages[0]
    assert f"on {cov.with_face} of {cov.people} person box(es)" in cov.summary()


def test_not_judged_before_enough_people() -> None:
    cov = FaceCoverage()
    for _ in range(MIN_PEOPLE - 1):
        assert cov.observe([person(50)], [], H) is None
    assert cov.observe([person(50)], [], H) is not None


def test_blur_faces_on_a_street_clip_says_faces_are_too_small(env: dict[str, str]) -> None:
    r = run_cli(["run", "--video", str(WALKING), "--blur-faces", "--max-frames", "8"], env)
    assert r.returncode == 0, r.stderr
    assert "faces too small to be found" in r.stderr and "NOT blurred" in r.stderr
    assert "privacy: a face found on" in r.stderr  # the closing line


def test_a_face_counts_for_one_person_only() -> None:
    # two small people walking side by side, boxes overlapping: the one face found (its centre inside both
    # boxes) belongs to one of them; the other is a person too small for a face to be found
    cov = FaceCoverage()
    left = Detection("person", 0, 0.7, BBox(0.40, 0.1, 0.46, 0.1 + 80 / H))
    right = Detection("person", 0, 0.7, BBox(0.43, 0.1, 0.49, 0.1 + 80 / H))
    face = Face(0.8, BBox(0.44, 0.1, 0.45, 0.11), {})  # centre at x 0.445: inside both boxes
    for _ in range(MIN_PEOPLE):
        cov.observe([left, right], [face], H)
    assert cov.with_face == MIN_PEOPLE and cov.too_small == MIN_PEOPLE


@pytest.mark.parametrize(
    ("frame_height", "too_small"), [(360, True), (720, True), (1080, False), (2160, False)]
)
def test_too_small_is_judged_in_pixels_of_the_frame(frame_height: int, too_small: bool) -> None:
    # the same person box, 12 % of the frame's height: 43 px on a 360p frame, 259 px on 4K
    cov = FaceCoverage()
    box = Detection("person", 0, 0.7, BBox(0.4, 0.1, 0.45, 0.22))
    for _ in range(MIN_PEOPLE):
        cov.observe([box], [], frame_height)
    assert (cov.too_small == MIN_PEOPLE) is too_small


def test_a_face_outside_the_person_box_does_not_count_for_it() -> None:
    cov = FaceCoverage()
    p = person(80)
    above = Face(0.8, BBox(p.box.xmin, 0.0, p.box.xmax, 0.05), {})  # same column, above the box: someone else
    below = Face(0.8, BBox(p.box.xmin, 0.9, p.box.xmax, 0.95), {})
    cov.observe([p], [above, below], H)
    assert cov.with_face == 0 and cov.too_small == 1
