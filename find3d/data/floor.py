"""``find3d make-scene --rooms N``: a floor of N furnished rooms that a camera drives through, with exact 3D
ground truth, in make-scene's layout (so eval-3d, the fusion baseline and every benchmark read it as they
read one table).

Layout: rooms are ``ROOM`` m square cells, ``COLUMNS`` to a row, visited in serpentine order (a robot
driving down one row and back along the next). Each room holds make-scene's tabletop, drawn with the
room's own seed (``compose_scene``; ``compose_clutter`` with ``--clutter``; ``--repeat``'s twins): a
table with 5-7 objects, and two walls, one behind the table and one on its left, so a view into a room
shows its neighbours only past the walls' ends. One floor plane, one light.

The camera drives as a robot's would: in each room, ``views / rooms`` views from the table's open sides,
aimed at its objects in turn from 0.55-0.9 m (make-scene ``--close``'s scale, which the interface was
trained at), then one view on the way to the next room, from halfway between the two tables and looking
at the next one, 2 m off: the views where rooms meet. Held-out views are interleaved as make-scene's.

Ground truth as make-scene's (things and tables, one point per 5 mm voxel, object ids over the whole
floor); ``ground_truth/objects.json`` adds each object's ``room`` and a ``rooms`` list (``centre``,
``bounds`` [x0, y0, x1, y1] in metres); each ``transforms.json`` frame adds the ``room`` it looks at.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from find3d.data.engine.catalog import TABLE_TOP_Z
from find3d.data.engine.clutter import compose_clutter
from find3d.data.engine.scene import Camera, SceneBuilder, SceneSpec, compose_scene, orbit_camera
from find3d.fileio import atomic_write_json, read_json

ROOM = 4.0  # metres: edge of a room's cell
COLUMNS = 4  # rooms to a row: a 16-room floor is 16 m square, inside pybullet's 30 m floor plane
WALL_HEIGHT = 2.0
WALL_THICKNESS = 0.05
CLOSE = (0.55, 0.9)  # metres from a view's target
TRANSIT_DISTANCE = 2.0  # metres from the next table, for the view between two rooms


def room_centres(rooms: int) -> list[tuple[float, float]]:
    """Cell centres in visiting order: left to right along row 0, back along row 1, ..."""
    out = []
    for index in range(rooms):
        row, column = divmod(index, COLUMNS)
        column = column if row % 2 == 0 else COLUMNS - 1 - column
        out.append((column * ROOM, row * ROOM))
    return out


def compose_floor(seed: int, rooms: int, repeat: bool = False, clutter: bool = False) -> list[SceneSpec]:
    """Each room's tabletop (room-local coordinates), drawn from the room's own generator."""
    from find3d.data.make_scene import repeat_categories

    specs = []
    for room in range(rooms):
        if clutter:
            spec = compose_clutter(np.random.default_rng([seed, 2, room]), min_objects=5, max_objects=7, repeat=repeat)
        else:
            spec = compose_scene(np.random.default_rng([seed, 0, room]), min_objects=5, max_objects=7)
            if repeat:
                spec = repeat_categories(spec, np.random.default_rng([seed, 1, room]))
        specs.append(spec)
    return specs


def combined(specs: list[SceneSpec], centres: list[tuple[float, float]]) -> tuple[SceneSpec, list[int]]:
    """One spec with every room's objects moved to its centre (contacts re-indexed), and each object's room."""
    objects, rooms = [], []
    for room, (spec, (cx, cy)) in enumerate(zip(specs, centres)):
        offset = len(objects)
        for obj in spec.objects:
            contact = obj.contact if obj.contact is None else replace(obj.contact, partner=obj.contact.partner + offset)
            objects.append(replace(obj, xy=(obj.xy[0] + cx, obj.xy[1] + cy), contact=contact))
            rooms.append(room)
    return replace(specs[0], objects=tuple(objects)), rooms


class FloorBuilder(SceneBuilder):
    """``SceneBuilder`` for a floor: a table and walls per room, one floor plane."""

    def build_floor(self, specs: list[SceneSpec], centres: list[tuple[float, float]]
                    ) -> tuple[dict[int, int | str], dict[int, int]]:
        """(body -> object index into ``combined``'s spec or stuff name, body -> room) of the built floor."""
        p, cid = self._p, self.client
        p.resetSimulation(physicsClientId=cid)
        p.setAdditionalSearchPath(self._data, physicsClientId=cid)
        extent = max(max(abs(c) for centre in centres for c in centre) + ROOM, 15.0)
        floor = p.loadURDF("plane.urdf", globalScaling=extent / 15.0, physicsClientId=cid)
        self._dress(floor, specs[0].floor)
        bodies: dict[int, int | str] = {floor: "floor"}
        room_of = {floor: -1}
        spec, object_rooms = combined(specs, centres)
        for room, (room_spec, (cx, cy)) in enumerate(zip(specs, centres)):
            table = p.loadURDF("table/table.urdf", basePosition=(cx, cy, 0.0), useFixedBase=True,
                               physicsClientId=cid)
            self._dress(table, room_spec.table)
            bodies[table], room_of[table] = "table", room
            for wall in self._walls(cx, cy):
                self._dress(wall, room_spec.wall)
                bodies[wall], room_of[wall] = "wall", room
        for index, body in enumerate(self._place_objects(spec.objects)):
            bodies[body], room_of[body] = index, object_rooms[index]
        return bodies, room_of

    def _walls(self, cx: float, cy: float) -> list[int]:
        """Behind the table (+y) and on its left (-x), each a room long."""
        p, cid = self._p, self.client
        half = ROOM / 2
        walls = []
        for centre, extents in (((cx, cy + half, WALL_HEIGHT / 2), (half, WALL_THICKNESS, WALL_HEIGHT / 2)),
                                ((cx - half, cy, WALL_HEIGHT / 2), (WALL_THICKNESS, half, WALL_HEIGHT / 2))):
            shape = p.createVisualShape(p.GEOM_BOX, halfExtents=extents, physicsClientId=cid)
            walls.append(p.createMultiBody(baseVisualShapeIndex=shape, basePosition=centre, physicsClientId=cid))
        return walls


def drive(specs: list[SceneSpec], centres: list[tuple[float, float]], views: int, heldout: int
          ) -> tuple[list[Camera], list[int], list[bool]]:
    """(cameras, the room each looks at, held out?) of the drive (module docstring)."""
    rooms = len(specs)
    per_room = [views // rooms + (room < views % rooms) for room in range(rooms)]
    held_per_room = [heldout // rooms + (room < heldout % rooms) for room in range(rooms)]
    cameras, looks_at, held = [], [], []
    for room, (spec, (cx, cy)) in enumerate(zip(specs, centres)):
        total = per_room[room] + held_per_room[room]
        step = total / held_per_room[room] if held_per_room[room] else 0.0
        held_out = {int(step * k + step / 2) for k in range(held_per_room[room])}
        targets = [(x + cx, y + cy) for x, y in (o.xy for o in spec.objects)] or [(cx, cy)]
        for k in range(total):
            # the open sides of the table: front (-y) and right (+x), away from the two walls
            azimuth = math.radians(-135 + 180 * ((k + 0.5) / total))
            elevation = math.radians(25 + 30 * ((k * 0.6180339887) % 1.0))
            distance = CLOSE[0] + (CLOSE[1] - CLOSE[0]) * ((k * 0.4142135624) % 1.0)
            x, y = targets[k % len(targets)]
            cameras.append(orbit_camera((x, y, TABLE_TOP_Z), azimuth, elevation, distance, 55.0))
            looks_at.append(room)
            held.append(k in held_out)
        if room + 1 < rooms:  # on the way: from between the tables, towards the next one
            nx, ny = centres[room + 1]
            azimuth = math.atan2(cy - ny, cx - nx) - math.radians(20)
            cameras.append(orbit_camera((nx, ny, TABLE_TOP_Z), azimuth, math.radians(20), TRANSIT_DISTANCE, 60.0))
            looks_at.append(room + 1)
            held.append(False)
    return cameras, looks_at, held


def make_floor(out: Path, seed: int, rooms: int, views: int, heldout: int, size: int, repeat: bool = False,
               clutter: bool = False, sensor: str = "ideal", pose_noise: float = 0.0) -> dict[str, Any]:
    """Render the floor into ``out`` (prepared by ``make_scene``) as ``sensor`` delivers it (``make_scene``'s
    arguments); same returns as ``make_scene``."""
    from find3d.data.engine.sensor import Sensor
    from find3d.data.make_scene import _object_table, _write_ground_truth, render_views, write_transforms

    specs = compose_floor(seed, rooms, repeat, clutter)
    centres = room_centres(rooms)
    spec, _ = combined(specs, centres)
    cameras, looks_at, is_heldout = drive(specs, centres, views, heldout)
    camera_model = Sensor(sensor, seed, len(cameras), pose_noise)
    builder = FloorBuilder()
    try:
        bodies, room_of = builder.build_floor(specs, centres)
        object_ids, objects = _object_table(spec, bodies)
        for body, object_id in object_ids.items():
            objects[str(object_id)]["room"] = room_of[body]
        frames, xyz, object_id = render_views(out, builder, spec.light, cameras, size, object_ids, objects,
                                              camera_model, "make-scene --rooms")
    finally:
        builder.close()
    frames = [{**frame, "room": room} for frame, room in zip(frames, looks_at)]
    write_transforms(out, frames, is_heldout, cameras[0].focal_px(size), size)
    _write_ground_truth(out, seed, objects, xyz, object_id)
    truth = read_json(out / "ground_truth" / "objects.json")
    truth["rooms"] = [{"centre": list(centre), "bounds": [centre[0] - ROOM / 2, centre[1] - ROOM / 2,
                                                         centre[0] + ROOM / 2, centre[1] + ROOM / 2]}
                      for centre in centres]
    truth["conventions"]["rooms"] = ("objects[id].room: the room (index into rooms) an object stands in, -1 for "
                                     "the floor; transforms.json frames[i].room: the room a view looks at")
    atomic_write_json(out / "ground_truth" / "objects.json", truth)
    return {"frames": len(frames), "points": len(xyz)}


def room_of_points(scene_root: Path, xyz: np.ndarray) -> np.ndarray:
    """(N,) int: the room whose cell holds each point (by x, y), -1 outside every room; for per-room
    evaluation of a floor scene."""
    rooms = read_json(scene_root / "ground_truth" / "objects.json").get("rooms", [])
    out = np.full(len(xyz), -1, np.int64)
    for index, room in enumerate(rooms):
        x0, y0, x1, y1 = room["bounds"]
        inside = (xyz[:, 0] >= x0) & (xyz[:, 0] < x1) & (xyz[:, 1] >= y0) & (xyz[:, 1] < y1)
        out[inside] = index
    return out

