"""Class descriptions for generic segmentation with descriptions instead of names (FIND Table 3).

The paper prompts the generic task with a GPT-4 sentence describing each COCO class instead of the
class name. The make-data catalogue (``find3d.data.engine.catalog``) carries only names, a
supercategory and an optional colour, which cannot tell e.g. six "toy" classes apart, so the
descriptions below are written once by hand for the catalogue classes, in the paper's style (what
the object looks like and what it is for, without the name). Other datasets (e.g. COCO) supply a
JSON file ``{"class name": "description", ...}``; without descriptions for every class the
description run is skipped, since a partial vocabulary would not be the paper's protocol.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from find3d.errors import DataError
from find3d.fileio import read_json

CATALOG_DESCRIPTIONS: dict[str, str] = {
    "mug": "a cup with a handle for drinking hot coffee or tea",
    "duck": "a small yellow rubber bath toy shaped like a water bird",
    "teddy bear": "a soft stuffed toy animal with round ears that children cuddle",
    "soccer ball": "a round black and white ball kicked in football games",
    "lego brick": "a small plastic building block with round studs on top",
    "wooden block": "a long rectangular piece of wood stacked in a tower game",
    "domino": "a flat rectangular tile marked with dots, used in a game",
    "cube": "a small solid shape with six equal square faces",
    "ball": "a small plain round sphere",
    "tray": "a flat shallow container with raised edges for carrying things",
    "robot": "a small droid on wheels with a dome-shaped head",
    "robot arm": "an articulated industrial manipulator with several joints",
    "toy car": "a small model vehicle with four wheels",
    "bunny": "a small animal figure with long ears, like a rabbit",
    "ring": "a round donut-shaped loop",
    "stone": "a rough grey rock",
    "table": "a flat raised surface on which objects are placed",
    "floor": "the ground surface of a room",
    "wall": "the vertical surface behind a scene",
}


def class_descriptions(class_names: Sequence[str], path: str | os.PathLike | None = None) -> list[str] | None:
    """One description per class (from ``path`` or the catalogue table), or ``None`` when any is missing."""
    table = CATALOG_DESCRIPTIONS
    if path is not None:
        loaded = read_json(path)
        if not isinstance(loaded, dict) or not all(isinstance(v, str) for v in loaded.values()):
            raise DataError(f"{path}: class descriptions must be a JSON object {{\"class name\": \"description\"}}.")
        table = loaded
    if not all(name in table for name in class_names):
        return None
    return [table[name] for name in class_names]
