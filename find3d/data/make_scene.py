"""``find3d make-scene``: one tabletop scene from a camera orbit, as a nerfstudio dataset with 3D ground truth.

Layout (nerfstudio ``nerfstudio-data`` reads transforms.json, images and depths as they are)::

    transforms.json            OPENCV intrinsics (zero distortion), frames with OpenGL camera-to-world
                               poses, train_filenames / val_filenames / test_filenames (held-out views)
    images/frame_00001.png     RGB (``--sensor rgb``: frame_00001.jpg)
    depths/frame_00001.png     uint16 z-depth in millimetres (nerfstudio's default depth_unit_scale_factor
                               1e-3); 0 where no surface was hit (or, ``--sensor rgbd``, no reading);
                               none with ``--sensor rgb`` (and no depth_file_path keys)
    instances/frame_00001.png  uint16 object id per pixel (ground_truth/objects.json), 0 = none
    ground_truth/objects.json  object id -> category, colour, thing/stuff, pybullet body; the conventions
    ground_truth/points.npz    xyz (N, 3) float32 world points on visible surfaces, object_id (N,) int32

``--sensor`` (``find3d.data.engine.sensor``) says what the camera delivers: ``ideal`` the exact render,
``rgbd`` a depth camera's noise, flying pixels and holes, ``rgb`` a phone's JPEGs without depth;
``--pose-noise`` makes the written poses drift as SLAM leaves them. Instance masks and
ground_truth/ always come from the exact render and poses.

Instance masks use their own ``instance_path`` key: nerfstudio's ``mask_path`` means "pixels to train
on", not object ids, so reusing it would silently mask out every background pixel.
"""

from __future__ import annotations

import argparse
import io
import math
import zipfile
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import Image
from tqdm import tqdm

# The engine modules import pybullet only inside the functions that use it.
from find3d import validate
from find3d.data.engine.catalog import TABLE_TOP_Z, category_by_name
from find3d.data.engine.clutter import compose_clutter
from find3d.data.engine.output import prepare_folder
from find3d.data.engine.scene import Camera, Rendered, SceneBuilder, SceneSpec, compose_scene, orbit_camera
from find3d.data.engine.sensor import SENSORS, Sensor
from find3d.errors import InputError
from find3d.fileio import atomic_open, atomic_write_json

VOXEL = 0.005  # metres; ground-truth points are deduplicated on this grid
FOV_DEG = 55.0
ORBIT_RADIUS = 1.1
OUTPUTS = ("transforms.json", "images", "depths", "instances", "ground_truth")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path, help="output folder (created; must be empty)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; same seed, same scene (default 0)")
    parser.add_argument("--views", type=int, default=40, help="training views (default 40)")
    parser.add_argument("--heldout", type=int, default=8, help="held-out views for val/test (default 8)")
    parser.add_argument("--size", type=int, default=256, help="image width and height in pixels (default 256)")
    parser.add_argument("--overwrite", action="store_true", help="replace a previous make-scene output in --out")
    parser.add_argument("--close", action="store_true",
                        help="aim every view at an object from 0.55-0.8 m, as make-data's training views are "
                             "(objects span ~25-80 px at 256 px), instead of one orbit around the table at 1.1 m")
    parser.add_argument("--repeat", action="store_true",
                        help="put a second instance (another colour) of some categories on the table, so queries "
                             "must tell instances apart ('the mug next to the duck')")
    parser.add_argument("--clutter", action="store_true",
                        help="put most objects in contact, as on a real desk: side by side, leaning on each other, "
                             "small ones resting on a support ('the duck on the block'); ground truth stays exact")
    parser.add_argument("--rooms", type=validate.cli(validate.integer, minimum=1), default=1,
                        help="a floor of this many rooms, each a table with its objects and two walls, that the "
                             "camera drives through: --views and --heldout are shared among the rooms, plus one "
                             "view between each two (find3d.data.floor; default 1: one table, orbited)")
    parser.add_argument("--sensor", choices=SENSORS, default="ideal",
                        help="what the camera delivers: ideal = the exact render; rgbd = a depth camera's axial and "
                             "lateral noise, flying pixels and holes (RealSense / Kinect models); rgb = a phone video: "
                             "JPEGs with auto-exposure drift and no depth at all (default: ideal)")
    parser.add_argument("--pose-noise", type=float, default=0.0, metavar="METRES",
                        help="let the written poses drift as SLAM leaves them: a random walk of this many metres (and "
                             "radians) per frame (default 0: exact poses)")


def run(args: argparse.Namespace) -> int:
    summary = make_scene(args.out, seed=args.seed, views=args.views, heldout=args.heldout, size=args.size,
                         overwrite=args.overwrite, repeat=args.repeat, close=args.close, clutter=args.clutter,
                         rooms=args.rooms, sensor=args.sensor, pose_noise=args.pose_noise)
    print(f"wrote {summary['frames']} views and {summary['points']} ground-truth points to {args.out}")
    return 0


def make_scene(out: str | Path, seed: int = 0, views: int = 40, heldout: int = 8, size: int = 256,
               overwrite: bool = False, repeat: bool = False, close: bool = False, clutter: bool = False,
               rooms: int = 1, sensor: str = "ideal", pose_noise: float = 0.0) -> dict[str, Any]:
    """Render the scene for ``seed`` from ``views + heldout`` orbit cameras into ``out``; ``repeat``: see
    ``repeat_categories``; ``close``: see ``_close_views``; ``clutter``: objects in contact
    (``find3d.data.engine.clutter``; with ``repeat``, twins touch half of the time); ``rooms`` > 1: a floor
    of that many rooms (``find3d.data.floor``); ``sensor``, ``pose_noise``: see ``find3d.data.engine.sensor``."""
    validate.integer(seed, "seed", minimum=0)  # numpy refuses negative seeds, after the folders exist
    if views < 1 or heldout < 0:
        raise InputError(f"--views {views} --heldout {heldout}: need views >= 1 and heldout >= 0.")
    if size < 32:
        raise InputError(f"--size {size}: images must be at least 32 px; pass e.g. --size 256.")
    if sensor not in SENSORS:
        raise InputError(f"--sensor {sensor}: unknown; pass one of {', '.join(SENSORS)}.")
    if not (math.isfinite(pose_noise) and 0.0 <= pose_noise <= 0.1):
        raise InputError(f"--pose-noise {pose_noise}: pass metres per frame in [0, 0.1], e.g. 0.002.")
    out = Path(out)
    validate.integer(rooms, "rooms", minimum=1)
    camera_model = Sensor(sensor, seed, views + heldout, pose_noise)
    folders = ("images", "depths", "instances", "ground_truth") if camera_model.has_depth else (
        "images", "instances", "ground_truth")
    prepare_folder(out, overwrite, OUTPUTS, folders)
    if rooms > 1:
        from find3d.data.floor import make_floor

        return make_floor(out, seed, rooms, views, heldout, size, repeat, clutter, sensor, pose_noise)
    if clutter:
        spec = compose_clutter(np.random.default_rng([seed, 2]), min_objects=5, max_objects=7, repeat=repeat)
    else:
        spec = compose_scene(np.random.default_rng([seed, 0]), min_objects=5, max_objects=7)
        if repeat:
            spec = repeat_categories(spec, np.random.default_rng([seed, 1]))
    cameras, is_heldout = _close_views(spec, views, heldout) if close else _orbit(views, heldout)
    builder = SceneBuilder()
    try:
        bodies = builder.build(spec)
        object_ids, objects = _object_table(spec, bodies)
        frames, xyz, object_id = render_views(out, builder, spec.light, cameras, size, object_ids, objects,
                                              camera_model, "make-scene")
    finally:
        builder.close()
    write_transforms(out, frames, is_heldout, cameras[0].focal_px(size), size)
    _write_ground_truth(out, seed, objects, xyz, object_id)
    return {"frames": len(frames), "points": len(xyz)}


def render_views(out: Path, builder: Any, light: Any, cameras: list[Camera], size: int, object_ids: dict[int, int],
                 objects: dict[str, dict], sensor: Sensor, desc: str) -> tuple[list[dict[str, Any]], np.ndarray,
                                                                            np.ndarray]:
    """Render and write every view (``_write_frame``); returns (transforms.json frames, the ground-truth points
    (voxel-deduplicated) and their object ids) of the things and the table the views saw."""
    # Things and the table only: floor and wall would swamp the point set with ~1M background points.
    surveyed = [int(i) for i, o in objects.items() if o["isthing"] or o["category"] == "table"]
    frames, points, labels = [], [], []
    for index, camera in enumerate(tqdm(cameras, desc=desc, unit="view", disable=None)):
        rendered = builder.render(camera, light, size, size)
        frame, instance = _write_frame(out, index, rendered, object_ids, camera, sensor)
        frames.append(frame)
        xyz = backproject(rendered.depth, camera.focal_px(size), size, camera.camera_to_world())
        keep = np.isin(instance, surveyed)
        points.append(xyz[keep])
        labels.append(instance[keep].astype(np.int32))
    xyz, object_id = voxel_dedup(np.concatenate(points), np.concatenate(labels))
    return frames, xyz, object_id


def write_transforms(out: Path, frames: list[dict[str, Any]], is_heldout: list[bool], focal: float, size: int) -> None:
    """``transforms.json`` of the written ``frames`` (square OPENCV images, no distortion)."""
    names = [f["file_path"] for f in frames]
    train = [n for n, held in zip(names, is_heldout) if not held]
    held = [n for n, h in zip(names, is_heldout) if h] or train  # nerfstudio needs a non-empty eval split
    transforms = {
        "camera_model": "OPENCV", "fl_x": focal, "fl_y": focal, "cx": size / 2, "cy": size / 2, "w": size, "h": size,
        "k1": 0.0, "k2": 0.0, "p1": 0.0, "p2": 0.0,
        "frames": frames, "train_filenames": train, "val_filenames": held, "test_filenames": held,
    }
    atomic_write_json(out / "transforms.json", transforms)


def repeat_categories(spec: SceneSpec, rng: np.random.Generator, count: int = 2) -> SceneSpec:
    """``spec`` with a second instance of up to ``count`` of its categories (another palette colour where
    the asset is painted), placed without overlap: layouts where "the mug" is ambiguous and a relation
    to another object ("the mug next to the duck") picks one."""
    from dataclasses import replace

    from find3d.data.engine.catalog import PALETTE
    from find3d.data.engine.scene import PlacedObject, _free_spot

    objects = list(spec.objects)
    for original in list(objects)[:count]:
        xy = _free_spot(rng, original.category.radius, objects)
        if xy is None:
            continue
        colours = [c for c in PALETTE if c != original.colour]
        colour = original.category.colour or str(rng.choice(colours))
        objects.append(PlacedObject(original.category, colour, xy, float(rng.uniform(-math.pi, math.pi))))
    return replace(spec, objects=tuple(objects))


def _write_frame(out: Path, index: int, rendered: Rendered, object_ids: dict[int, int], camera: Camera,
                 sensor: Sensor) -> tuple[dict[str, Any], np.ndarray]:
    """Write one view's RGB, depth (as ``sensor`` delivers them) and exact instance masks; returns its
    transforms.json frame (with the pose the sensor reports) and instance map."""
    name = f"frame_{index + 1:05d}.png"
    instance = np.zeros(rendered.body.shape, dtype=np.uint16)
    for body, object_id in object_ids.items():
        instance[rendered.body == body] = object_id
    seen = sensor.observe(index, rendered.rgb, rendered.depth, rendered.body >= 0, camera.focal_px(len(instance)))
    image = Path(name).with_suffix(sensor.image_suffix).name
    (out / "images" / image).write_bytes(sensor.encode_image(seen.rgb))
    Image.fromarray(instance).save(out / "instances" / name)
    c2w = sensor.reported_pose(index, camera.camera_to_world())
    frame = {"file_path": f"images/{image}", "transform_matrix": c2w.round(8).tolist()}
    if seen.depth is not None:
        depth_mm = np.clip(np.round(seen.depth * 1000.0), 0, np.iinfo(np.uint16).max).astype(np.uint16)
        Image.fromarray(depth_mm).save(out / "depths" / name)
        frame["depth_file_path"] = f"depths/{name}"
    frame["instance_path"] = f"instances/{name}"
    return frame, instance


def _write_ground_truth(out: Path, seed: int, objects: dict[str, dict], xyz: np.ndarray, object_id: np.ndarray) -> None:
    with atomic_open(out / "ground_truth" / "points.npz", "wb") as handle:
        _savez_deterministic(handle, xyz=xyz, object_id=object_id)
    atomic_write_json(out / "ground_truth" / "objects.json", {
        "seed": seed,
        "conventions": {
            "world": f"pybullet world frame, metres, z up; table top at z = {TABLE_TOP_Z}",
            "transform_matrix": "camera-to-world, OpenGL camera (x right, y up, looking along -z)",
            "depth": "depths/*.png uint16 z-depth (along the optical axis) in millimetres; 0 = no surface",
            "instances": "instances/*.png uint16 object id (keys of objects); 0 = nothing / background",
            "points": f"points.npz xyz float32 world points on things and the table, object_id int32; "
                      f"one point per {VOXEL} m voxel",
            "contact": "objects[id].contact (--clutter): kind 'beside' / 'lean' / 'on' and the partner object id "
                       "it touches ('on': rests on the partner)",
        },
        "objects": objects,
    })


def _savez_deterministic(handle: BinaryIO, **arrays: np.ndarray) -> None:
    """Like ``np.savez_compressed`` but with fixed zip timestamps, so the same seed gives the same bytes."""
    with zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for key, array in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.ascontiguousarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, buffer.getvalue())


def _orbit(views: int, heldout: int) -> tuple[list[Camera], list[bool]]:
    """Cameras evenly around the table; elevations spread by the golden ratio over the upper hemisphere.

    Held-out views are interleaved with the training views (not one arc), so evaluation sees every side.
    """
    total = views + heldout
    step = total / heldout if heldout else 0.0
    held = {int(step * k + step / 2) for k in range(heldout)}
    cameras = []
    for k in range(total):
        azimuth = 2 * math.pi * k / total
        elevation = math.radians(20 + 50 * ((k * 0.6180339887) % 1.0))
        cameras.append(orbit_camera((0.0, 0.0, TABLE_TOP_Z), azimuth, elevation, ORBIT_RADIUS, FOV_DEG))
    return cameras, [k in held for k in range(total)]


def _close_views(spec: SceneSpec, views: int, heldout: int) -> tuple[list[Camera], list[bool]]:
    """Cameras aimed at the objects in turn, all around the table, 0.55-0.8 m away: the scale of
    make-data's views, which the interface was trained on (the 1.1 m orbit shows objects at about
    half that size). Held-out views are interleaved as in ``_orbit``."""
    _, is_heldout = _orbit(views, heldout)
    total = views + heldout
    targets = [o.xy for o in spec.objects] or [(0.0, 0.0)]
    cameras = []
    for k in range(total):
        azimuth = 2 * math.pi * k / total
        elevation = math.radians(25 + 30 * ((k * 0.6180339887) % 1.0))
        distance = 0.55 + 0.25 * ((k * 0.4142135624) % 1.0)
        x, y = targets[k % len(targets)]
        cameras.append(orbit_camera((x, y, TABLE_TOP_Z), azimuth, elevation, distance, FOV_DEG))
    return cameras, is_heldout


def _object_table(spec: SceneSpec, bodies: dict[int, int | str]) -> tuple[dict[int, int], dict[str, dict]]:
    """Object ids: things 1..K in scene order, then table, floor, wall."""
    things = sorted((b for b, w in bodies.items() if not isinstance(w, str)), key=lambda b: bodies[b])
    stuff = sorted((b for b, w in bodies.items() if isinstance(w, str)),
                   key=lambda b: ("table", "floor", "wall").index(str(bodies[b])))
    object_ids: dict[int, int] = {}
    objects: dict[str, dict] = {}
    for object_id, body in enumerate([*things, *stuff], start=1):
        what = bodies[body]
        object_ids[body] = object_id
        if isinstance(what, str):
            category = category_by_name(what)
            objects[str(object_id)] = {"category": what, "category_id": category.id, "isthing": False,
                                       "colour": None, "body": body}
        else:
            placed = spec.objects[int(what)]
            objects[str(object_id)] = {"category": placed.category.name, "category_id": placed.category.id,
                                       "isthing": True, "colour": placed.colour, "body": body,
                                       "asset": placed.category.asset}
            if placed.contact is not None:  # things are numbered in scene order from 1
                objects[str(object_id)]["contact"] = {"kind": placed.contact.kind,
                                                      "partner": placed.contact.partner + 1}
    return object_ids, objects


def backproject(depth: np.ndarray, focal: float, size: int, c2w: np.ndarray) -> np.ndarray:
    """(H, W) z-depth -> (H, W, 3) world points, pixel centres at +0.5 (nerfstudio / OpenGL convention)."""
    v, u = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    camera = np.stack([(u - size / 2) / focal * depth, -(v - size / 2) / focal * depth, -depth], axis=-1)
    return camera @ c2w[:3, :3].T + c2w[:3, 3]


def voxel_dedup(xyz: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Keep the first point of every occupied voxel (first in view order, so the result is deterministic)."""
    keys = np.floor(xyz / VOXEL).astype(np.int64)
    _, first = np.unique(keys, axis=0, return_index=True)
    first.sort()
    return xyz[first].astype(np.float32), labels[first].astype(np.int32)
