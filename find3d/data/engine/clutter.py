"""Cluttered tabletops: objects in contact, as on any real desk (``find3d make-scene --clutter``).

``compose_scene`` keeps every object a footprint apart, so a 3D method could separate them by the
gaps alone. Here most objects touch another one, in three ways drawn per object (``Contact``):

- *beside*: pushed against an earlier object until their collision shapes touch or overlap by up to
  ``MAX_OVERLAP`` (two teddies side by side, a cube against a lego brick);
- *lean*: tilted by ``TILT`` degrees towards an earlier object and slid until it rests on it (a duck
  leaning on a block);
- *on*: a small object resting on top of (or inside) a support (``SUPPORTS``: the ball in the tray,
  the duck on the block), which gives the ``on`` relation real cases.

With ``repeat``, a second instance of a category is put beside its twin half of the time: the
hardest case, where only instance masks or shape tell two objects of one class apart.

This module only draws the arrangement (pure numpy, seeded); ``SceneBuilder`` resolves each contact
against the real collision shapes by bisection on their signed distance.
"""

from __future__ import annotations

import math

import numpy as np

from find3d.data.engine.catalog import PALETTE, TABLE_HALF_EXTENT, THINGS, Category
from find3d.data.engine.scene import Contact, PlacedObject, SceneSpec, _free_spot, compose_scene

SUPPORTS = ("tray", "wooden block", "cube", "stone", "lego brick", "domino")  # things with a top to rest on
SMALL = 0.07  # footprint radius (m) of what may rest on a support
NEW_GROUP = 0.2  # chance that an object starts a new group instead of touching an earlier one
ON, LEAN = 0.35, 0.3  # chances of "on" (when possible) and "lean"; the rest is "beside"
TILT = (10.0, 25.0)  # degrees a leaning object tips
MAX_OVERLAP = 0.01  # metres two shapes may interpenetrate ("slightly overlapping" footprints)
CENTRE = (0.35, 0.2)  # half-extent (m) of the table area a group starts in, so that groups stay on it


def compose_clutter(rng: np.random.Generator, min_objects: int = 5, max_objects: int = 7,
                    repeat: bool = False) -> SceneSpec:
    """A tabletop whose objects mostly touch (module docstring); surfaces and light as ``compose_scene``."""
    base = compose_scene(rng, min_objects=1, max_objects=1)  # draws the surfaces and light
    count = int(rng.integers(min_objects, max_objects + 1))
    categories = [THINGS[int(rng.integers(len(THINGS)))] for _ in range(count)]
    if repeat:  # twins of the first two categories, drawn after the others so the rest stays the same
        categories += categories[:2]
    objects: list[PlacedObject] = []
    for index, category in enumerate(categories):
        twin = repeat and index >= count
        colour = category.colour or str(rng.choice([c for c in PALETTE if not twin or
                                                    c != objects[index - count].colour]))
        yaw = float(rng.uniform(-math.pi, math.pi))
        if not objects or (rng.random() < NEW_GROUP and not twin):
            xy = _free_spot(rng, category.radius, objects, CENTRE)
            if xy is not None:
                objects.append(PlacedObject(category, colour, xy, yaw))
                continue
        partner = index - count if twin and rng.random() < 0.5 else _partner(rng, objects)
        contact = _contact(rng, category, objects, partner)
        guess = objects[partner].xy  # SceneBuilder moves it into contact
        objects.append(PlacedObject(category, colour, guess, yaw, contact))
    return SceneSpec(tuple(objects), base.table, base.floor, base.wall, base.wall_angle, base.light)


def _partner(rng: np.random.Generator, objects: list[PlacedObject]) -> int:
    """An earlier object that does not itself rest on another (no towers)."""
    standing = [i for i, o in enumerate(objects) if o.contact is None or o.contact.kind != "on"]
    return int(rng.choice(standing))


def _contact(rng: np.random.Generator, category: Category, objects: list[PlacedObject], partner: int) -> Contact:
    other = objects[partner]
    supported = any(o.contact is not None and o.contact.kind == "on" and o.contact.partner == partner
                    for o in objects)
    if (category.radius <= SMALL and other.category.name in SUPPORTS and not supported
            and rng.random() < ON):
        return Contact("on", partner, float(rng.uniform(-math.pi, math.pi)))
    kind = "lean" if rng.random() < LEAN else "beside"
    tilt = math.radians(float(rng.uniform(*TILT))) if kind == "lean" else 0.0
    return Contact(kind, partner, _direction(rng, other, category, objects), -float(rng.uniform(0, MAX_OVERLAP)),
                   tilt)


def _direction(rng: np.random.Generator, other: PlacedObject, category: Category,
               objects: list[PlacedObject]) -> float:
    """A direction from ``other`` whose contact spot stays on the table and clear of third objects."""
    half_x, half_y = TABLE_HALF_EXTENT
    best, best_clearance = 0.0, -np.inf
    for _ in range(30):
        angle = float(rng.uniform(-math.pi, math.pi))
        reach = other.category.radius + category.radius
        x, y = other.xy[0] + reach * math.cos(angle), other.xy[1] + reach * math.sin(angle)
        if abs(x) > half_x - category.radius or abs(y) > half_y - category.radius:
            continue
        clearance = min((math.dist((x, y), o.xy) - o.category.radius - category.radius
                         for o in objects if o is not other), default=np.inf)
        if clearance >= 0:
            return angle
        if clearance > best_clearance:
            best, best_clearance = angle, clearance
    return best
