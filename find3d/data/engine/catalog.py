"""The object catalogue: which pybullet_data assets stand for which categories, at what size and colour.

Categories are the vocabulary shared by every generated file (COCO categories, captions, referring
expressions, FIND-Bench phrases, 3D ground truth), so their ids are fixed here once: things first,
then the stuff classes. Sizes are chosen so that everything is a plausible tabletop object (5-25 cm).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Category:
    """One thing category and the asset that renders it."""

    id: int
    name: str
    supercategory: str
    asset: str  # path relative to pybullet_data.getDataPath(): a .urdf, or an .obj loaded as a visual mesh
    scale: float
    radius: float  # footprint radius in metres after scaling, used to keep objects apart on the table
    colour: str | None  # fixed colour word of a textured asset; None: painted with a random palette colour
    upright: tuple[float, float, float] = (0.0, 0.0, 0.0)  # Euler angles that stand the asset up (z up)


@dataclass(frozen=True)
class Stuff:
    """One stuff class (amorphous background region)."""

    id: int
    name: str
    supercategory: str


THINGS: tuple[Category, ...] = (
    Category(1, "mug", "kitchenware", "objects/mug.urdf", 1.0, 0.08, None),
    Category(2, "duck", "toy", "duck_vhacd.urdf", 1.2, 0.07, "yellow", (1.5708, 0.0, 0.0)),
    Category(3, "teddy bear", "toy", "teddy_vhacd.urdf", 1.6, 0.09, None, (1.5708, 0.0, 0.0)),
    Category(4, "soccer ball", "sports", "soccerball.urdf", 0.11, 0.07, "white"),
    Category(5, "lego brick", "toy", "lego/lego.urdf", 2.5, 0.06, None),
    Category(6, "wooden block", "toy", "jenga/jenga.urdf", 0.9, 0.08, "brown"),
    Category(7, "domino", "toy", "domino/domino.urdf", 3.0, 0.06, "white"),
    Category(8, "cube", "shape", "cube_small.urdf", 1.3, 0.06, None),
    Category(9, "ball", "shape", "sphere_small.urdf", 1.2, 0.05, None),
    Category(10, "tray", "kitchenware", "tray/traybox.urdf", 0.3, 0.13, None),
    Category(11, "robot", "robot", "r2d2.urdf", 0.22, 0.1, "white"),
    Category(12, "robot arm", "robot", "kuka_iiwa/model.urdf", 0.2, 0.06, None),
    Category(13, "toy car", "toy", "racecar/racecar.urdf", 0.4, 0.1, None),
    Category(14, "bunny", "animal", "bunny.obj", 0.06, 0.07, None, (1.5708, 0.0, 0.0)),
    Category(15, "ring", "shape", "torus/torus_textured.obj", 0.07, 0.07, None, (1.5708, 0.0, 0.0)),
    Category(16, "stone", "shape", "stone.obj", 0.3, 0.09, None),
)

STUFF: tuple[Stuff, ...] = (
    Stuff(17, "table", "furniture"),
    Stuff(18, "floor", "floor"),
    Stuff(19, "wall", "wall"),
)

# Colour words and the RGB used to paint untextured assets; names are what captions say.
PALETTE: dict[str, tuple[float, float, float]] = {
    "red": (0.85, 0.12, 0.1),
    "green": (0.15, 0.65, 0.2),
    "blue": (0.12, 0.3, 0.85),
    "yellow": (0.95, 0.85, 0.1),
    "orange": (0.95, 0.5, 0.08),
    "purple": (0.55, 0.2, 0.7),
    "pink": (0.95, 0.5, 0.7),
    "white": (0.95, 0.95, 0.95),
    "black": (0.08, 0.08, 0.08),
    "gray": (0.5, 0.5, 0.5),
    "cyan": (0.1, 0.75, 0.8),
    "brown": (0.5, 0.3, 0.12),
}

# Textures (pybullet_data files) per stuff surface, each tinted with a random colour; None = plain paint.
TEXTURES: dict[str, tuple[str | None, ...]] = {
    "table": ("table/table.png", None),
    "floor": ("checker_blue.png", "table/table.png", None),
    "wall": (None,),
}
TABLE_TOP_Z = 0.625  # height of table/table.urdf's top surface (metres)
TABLE_HALF_EXTENT = (0.7, 0.45)  # usable half-size of that top along x and y


def category_by_name(name: str) -> Category | Stuff:
    for item in (*THINGS, *STUFF):
        if item.name == name:
            return item
    raise KeyError(name)


def coco_categories() -> list[dict]:
    """COCO panoptic ``categories`` (things and stuff) with a stable display colour per category."""
    rng = np.random.default_rng(0)  # fixed: colours identify categories across datasets
    colours = rng.integers(40, 256, size=(len(THINGS) + len(STUFF), 3)).tolist()
    rows = [{"id": c.id, "name": c.name, "supercategory": c.supercategory, "isthing": 1} for c in THINGS]
    rows += [{"id": s.id, "name": s.name, "supercategory": s.supercategory, "isthing": 0} for s in STUFF]
    for row, colour in zip(rows, colours):
        row["color"] = colour
    return rows


@functools.cache
def obj_bounds(path: str) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned bounds of an OBJ file's vertices (visual-only meshes have no pybullet AABB)."""
    vertices = [line.split()[1:4] for line in Path(path).read_text().splitlines() if line.startswith("v ")]
    array = np.asarray(vertices, dtype=np.float64)
    return array.min(axis=0), array.max(axis=0)


def category_by_id(category_id: int) -> Category | Stuff:
    for item in (*THINGS, *STUFF):
        if item.id == category_id:
            return item
    raise KeyError(category_id)
