"""Spatial relations of an interleaved 3D query: "the mug next to <image:keys.png>", "the duck behind the tray".

FIND's interleave entry has a head entity (what the sentence is about) and further entities that
qualify it. ``split_relation`` finds the first relation phrase of the make-data grammar (and a few
synonyms users type) and splits the query around it: the head's text before it, the other
entity's after it, each still in the ``<image:...>`` syntax so ``Interface.encode_entities`` reads
it with the same ``images`` / ``masks``. ``pick`` then chooses, among the head's 3D objects, the
one that satisfies the relation relative to the other entity's best object.

Left / right / in front / behind are the viewer's, as the grammar writes them from the image they
describe: here the viewer is a camera (the frame that best shows both objects), and "in front of"
means nearer to it. "on" is the world's up (z, as make-scene and REP-103 map frames have it).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from find3d.query.objects import Object3D

#: phrase (lower case) -> relation; longer phrases first so "to the left of" wins over "left of"
RELATIONS: dict[str, str] = {
    "to the left of": "left", "on the left of": "left", "left of": "left",
    "to the right of": "right", "on the right of": "right", "right of": "right",
    "in front of": "front", "behind": "behind", "in back of": "behind",
    "next to": "near", "beside": "near", "near": "near", "close to": "near",
    "on top of": "on", "on": "on",
}
MIN_MASS_SHARE = 0.25  # least share of the largest candidate's relevancy mass a candidate instance needs
_PATTERN = re.compile(r"(?<![\w<:])(" + "|".join(re.escape(p) for p in sorted(RELATIONS, key=len, reverse=True))
                      + r")(?![\w>])", re.IGNORECASE)


@dataclass(frozen=True)
class Relation:
    """A query split around its relation phrase."""

    head: str  # the target's words / reference, e.g. "the mug"
    relation: str  # one of RELATIONS' values
    phrase: str  # the words as written, e.g. "next to"
    other: str  # the reference entity, e.g. "<image:keys.png>" or "the duck"


def split_relation(query: str) -> Relation | None:
    """The first relation phrase outside ``<image:...>`` references with words on both sides, else None."""
    masked = re.sub(r"<[^>]*>", lambda m: "\0" * len(m.group(0)), query)  # never match inside a reference path
    for match in _PATTERN.finditer(masked):
        head, other = query[:match.start()].strip(" ,."), query[match.end():].strip(" ,.")
        if head and other:
            return Relation(head, RELATIONS[match.group(1).lower()], match.group(1), other)
    return None


def pick(candidates: Sequence[Object3D], anchor: Object3D, relation: str, points: np.ndarray,
         camera_to_world: np.ndarray | None = None) -> Object3D | None:
    """The candidate that best satisfies ``relation`` relative to ``anchor`` (None without candidates).

    Candidates that are the anchor itself (most of their points shared) are skipped. "near": the
    closest centre. "on": above the anchor's top and overlapping it in xy, closest. Viewer relations
    ("left", "right", "front", "behind") score the offset along the camera's axis (OpenGL
    camera-to-world: x right, z backwards); without a camera, the world's x / y stand in.
    """
    anchor_set = set(anchor.indices.tolist())
    pool = [c for c in candidates
            if len(anchor_set.intersection(c.indices.tolist())) < 0.5 * min(len(c.indices), len(anchor.indices))]
    if not pool:
        return None
    # speckle the head's mask spilled next to the anchor must not beat a real instance: only candidates
    # carrying a fair share of the best one's relevancy mass take part
    mass = np.array([c.score * len(c.indices) for c in pool])
    pool = [c for c, m in zip(pool, mass) if m >= MIN_MASS_SHARE * mass.max()]
    centres = np.stack([_centre(c, points) for c in pool])
    offset = centres - _centre(anchor, points)
    distance = np.linalg.norm(offset, axis=1)
    if relation == "near":
        return pool[int(np.argmin(distance))]
    if relation == "on":
        lower = np.array([c.lower[2] for c in pool])
        overlap = np.array([_xy_overlap(c, anchor) for c in pool])
        score = np.where((lower >= anchor.upper[2] - 0.02) & overlap, -distance, -np.inf)
        return pool[int(np.argmax(score))] if np.isfinite(score).any() else pool[int(np.argmin(distance))]
    right, back = (np.eye(3)[0], np.eye(3)[1] * -1) if camera_to_world is None else (
        np.asarray(camera_to_world)[:3, 0], np.asarray(camera_to_world)[:3, 2])
    axis = {"left": -right, "right": right, "front": back, "behind": -back}[relation]
    along = offset @ axis
    # the relation must hold (positive offset along its axis); among those that satisfy it, the nearest
    score = np.where(along > 0, -distance, -np.inf)
    return pool[int(np.argmax(score))] if np.isfinite(score).any() else pool[int(np.argmax(along))]


def _centre(obj: Object3D, points: np.ndarray) -> np.ndarray:
    """Mean of the object's points: steadier than its box centre when a few points stray."""
    return np.asarray(points[obj.indices], dtype=np.float64).mean(axis=0)


def _xy_overlap(a: Object3D, b: Object3D) -> bool:
    return bool(np.all(a.lower[:2] <= b.upper[:2]) and np.all(b.lower[:2] <= a.upper[:2]))
