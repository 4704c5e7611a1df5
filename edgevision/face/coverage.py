"""Whether face blurring can see the faces it must hide: people whose faces are too small for the face models.

``--blur-faces`` blurs the faces the face stage finds. On a wide scene (a street, a shop floor from the ceiling)
people are a few dozen pixels tall and their faces a few pixels: no face model here finds them, so nothing is
blurred — and a user who asked for privacy must be told, not left to discover it in a clip.

:class:`FaceCoverage` is pure bookkeeping over each frame's person boxes and faces. A person's face is estimated
at ``FACE_SHARE`` of its box height (a standing adult's face is about an eighth of their height). Measured with
the privacy configuration (both BlazeFace models, person crops) on grace_hopper.bmp, squat.bmp and
posenet_test_image.bmp scaled down on a 1280x720 frame: every face was found from 13 px tall; below that, found or
missed by chance (none of three at 8 px). Hence ``MIN_FACE_PX``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from edgevision.results.detection import Detection
from edgevision.results.face import Face

MIN_FACE_PX = 13  # the smallest face height (pixels of the frame) every face found in the measurement above
FACE_SHARE = 0.12  # a person's face height over the person box height
MIN_PERSON_PX = round(MIN_FACE_PX / FACE_SHARE)  # people shorter than this have faces under MIN_FACE_PX
MIN_PEOPLE = 30  # person boxes seen before judging
PERSON = "person"


@dataclass
class FaceCoverage:
    """Counts of person boxes, those with a face found in them, and those too small for a face to be found."""

    people: int = 0
    with_face: int = 0
    too_small: int = 0
    warned: bool = False

    def observe(
        self, detections: Sequence[Detection], faces: Sequence[Face], frame_height: int
    ) -> str | None:
        """Count one frame; the warning to give, once, when most people have no face found because they are small."""
        people = [d for d in detections if d.label == PERSON]
        # a face belongs to one person: the smallest box holding its centre (boxes of people side by side
        # overlap, and a face must not vouch for the neighbour whose own face was not found)
        owners = {
            min(holders, key=lambda i: people[i].box.area)
            for f in faces
            if (holders := [i for i, d in enumerate(people) if _inside(f, d)])
        }
        for i, d in enumerate(people):
            self.people += 1
            if i in owners:
                self.with_face += 1
            elif d.box.height * frame_height * FACE_SHARE < MIN_FACE_PX:
                self.too_small += 1
        if self.warned or self.people < MIN_PEOPLE or self.too_small * 2 <= self.people:
            return None
        self.warned = True
        return (
            f"privacy: faces too small to be found: {self.too_small} of {self.people} person box(es) so far are "
            f"people under {MIN_PERSON_PX} px tall (faces under ~{MIN_FACE_PX} px) with no face found: their faces "
            "are NOT blurred; cover where people walk with privacy.masks, or use a camera closer to them"
        )

    def summary(self) -> str:
        """One closing line: how many person boxes had a face found, and how many were too small."""
        return (
            f"privacy: a face found on {self.with_face} of {self.people} person box(es); "
            f"{self.too_small} too small for the face models (face under ~{MIN_FACE_PX} px, not blurred)"
        )


def _inside(face: Face, person: Detection) -> bool:
    cx = (face.box.xmin + face.box.xmax) / 2
    cy = (face.box.ymin + face.box.ymax) / 2
    b = person.box
    return b.xmin <= cx <= b.xmax and b.ymin <= cy <= b.ymax
