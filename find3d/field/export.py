"""``find3d export-field``: a trained find-field as a point cloud carrying FIND embeddings.

Output folder (read by ``find3d.query.Field.load``)::

    meta.json          {"format": "find3d-field-points", "version": 2, "dim": D, "count": N,
                        "code": {"dim": d, "file": "code.f32", "explained_variance": r} | null,
                        "geometry": "depth" | "render" (where the points come from, below),
                        "world": {...how points relate to nerfstudio's frame...},
                        "scene": scene folder, "config": config.yml,
                        "checkpoint": the interface checkpoint embed-frames used (query encoding) | null,
                        "model": its content hash (Interface.fingerprint) | null,
                        "segments": {"file": "segments.i32", "count": S} | null,
                        "frames": [{file_path, c2w (4x4, OpenGL, original world), fl_x, fl_y, cx, cy, w, h}]}
    points.ply         xyz (original world frame of transforms.json) + RGB, written by open3d
    features.f16       np.memmap float16 (N, D): unit-length embedding of the field per point
    code.f32           np.memmap float32 (d + 1, N), dimension-major: PCA code scaled by 1 / |decoded feature|,
                       last row that scale; with decoder.npz it gives exact cosines of the decoded features
                       from d + 1 numbers per point (fast queries: ~8x less memory traffic than D=256
                       float16; dimension-major because a (K, d+1) x (d+1, N) product runs ~3x faster
                       on CPU than the skinny (N, d+1) x (d+1, K) one)
    decoder.npz        mean (D,), components (d, D) of that code
    image_vectors.f16  np.memmap float16 (F, D): image-level vector of every frame (frame localisation)
    segments.i32       np.memmap int32 (N,): each point's 3D instance, -1 for none (meta.json "segments":
                       {"file", "count"}); cut from the training frames' panoptic masks
                       (``find3d.query.segments``) when the embeddings store holds them
    segment_vectors.f32  optional (meta.json "segments": {"vectors": file}): float32 (S, D) unit mean
                       embedding of each instance (a saved map writes it: its first query reads S
                       vectors instead of N embeddings)
    frame_instances.npz  with instances (meta.json "segments": {"frames": file}): how many points of each
                       instance each frame sees, a (F, S) CSR (indptr, indices, data) and each instance's
                       size (sizes): a whole-object answer's frames ranked without a z-buffer
                       (``find3d.query.field.write_frame_instances``)

Geometry (``geometry``; ``auto``, the default, is ``depth`` when the training frames have depth maps,
else ``render``):

- ``depth``: the training frames' own depth maps (transforms.json ``depth_file_path``, millimetre
  uint16 PNGs as make-scene and ingest-bag write them, read by the field's dataset), each first
  through an edge-preserving median (``median_depth``: a depth camera's noise). Why: after a
  CPU-length training the rendered expected depth is right for large surfaces but not for small
  objects (make-scene seed 0, 800 iterations, 50k points: 0-15 % of an object's GT points have a
  ``render`` point within 1 cm, 97-100 % a ``depth`` one; objects-mode 3D mIoU 0.06 against 0.51,
  fusion baseline 0.54), and objects are what queries ask for; a robot's RGB-D depth is better
  geometry.
- ``render``: the field's own surface: the median depth of its density (``FindFieldModel.surface``,
  density only: no colour or feature head per sample, so ~10x cheaper than rendering the views; rays
  whose accumulated opacity is below ``min_accumulation`` are dropped: they saw no surface in the
  scene box). For scenes without depth (phone / COLMAP captures).

Either way every training view gives a point every ``downscale`` pixels along nerfstudio's rays (so
with the frames' distortion; by default every pixel of a depth map, and for ``render`` the coarsest
step that still casts ``RAYS_PER_POINT`` rays per exported point, since rendering is the export's
cost and the voxel merge keeps only ``num_points`` anyway), kept inside the scene box and coloured
from the view's image; with ``consistency`` (default) points another view saw through are dropped
(``find3d.field.fuse``: flying pixels, floaters). Points are averaged per voxel with a voxel size chosen so that about
``num_points`` remain, and each point's feature is the field's feature head there
(``FindField.features_at``). The points are cut into 3D instances from the training frames' panoptic
masks (``export_segments``). The export is all-or-nothing: every file is written into a staging folder
beside ``--out`` (``.OUT.tmp-PID``, meta.json last), which then replaces ``--out`` in one rename
(``find3d.fileio.atomic_folder``): a killed export leaves the earlier field whole (and loadable), or no
folder, never a mix; its staging folder is removed by the next export there.
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from find3d import validate
from find3d.errors import DataError, InputError
from find3d.fileio import atomic_folder, atomic_open, atomic_write_json, read_json
from find3d.mapping.fusion import cell_centres
from find3d.query.field import FORMAT, INSTANCE_VIEWS, VERSION, write_frame_instances

GEOMETRIES = ("auto", "depth", "render")
FEATURE_CHUNK = 1 << 16  # points per feature-head call: bounds the MLP's activations memory
PCA_SAMPLE = 100_000  # points the PCA code is fitted on
#: what an export folder is made of (module doc); anything else in it is the user's and is kept on re-export
EXPORT_FILES = frozenset({"meta.json", "points.ply", "features.f16", "image_vectors.f16", "code.f32", "decoder.npz",
                          "segments.i32", "segment_vectors.f32", INSTANCE_VIEWS})


def export_field(config_yml: str | os.PathLike, out_dir: str | os.PathLike, num_points: int = 200_000,
                 min_accumulation: float = 0.5, downscale: int | None = None, code_dim: int = 32,
                 geometry: str = "auto", consistency: bool = True) -> dict[str, Any]:
    """Export the trained field of ``config_yml`` as points at ``out_dir`` (see module doc)."""
    import torch
    from nerfstudio.utils.eval_utils import eval_setup

    from find3d.field.data import FindDataManager, scene_dir_of

    config_yml = validate.path(config_yml, "config_yml")
    num_points = validate.integer(num_points, "num_points", minimum=1)
    downscale = None if downscale is None else validate.integer(downscale, "downscale", minimum=1)
    code_dim = validate.integer(code_dim, "code_dim", minimum=0)
    if not 0.0 <= validate.number(min_accumulation, "min_accumulation") < 1.0:
        raise InputError(f"min_accumulation: got {min_accumulation}; pass a number in [0, 1).")
    if geometry not in GEOMETRIES:
        raise InputError(f"geometry: got {geometry!r}; pass one of {', '.join(GEOMETRIES)}.")
    check_run_config(config_yml)
    out_dir = check_export_folder(out_dir)  # before the minutes of work, not after
    _, pipeline, _, _ = eval_setup(config_yml, test_mode="inference")
    datamanager = pipeline.datamanager
    if not isinstance(datamanager, FindDataManager):
        raise InputError(f"{config_yml}: not a find-field run; train with `ns-train find-field`.")
    outputs = datamanager.train_dataparser_outputs
    scene_dir = scene_dir_of(Path(datamanager.config.dataparser.data))
    # nerfstudio's dataparser lists depth files for every frame or for none.
    has_depth = bool(outputs.metadata.get("depth_filenames"))
    if geometry == "depth" and not has_depth:
        raise InputError(f"{config_yml}: --geometry depth, but the training frames of {scene_dir} have no depth "
                         "maps (no depth_file_path in its transforms.json); pass --geometry render, or give every "
                         "frame a depth_file_path (millimetre uint16 PNG, as make-scene and ingest-bag write).")
    if geometry == "auto":
        geometry = "depth" if has_depth else "render"
    if downscale is None:
        cameras = outputs.cameras
        downscale = default_downscale(geometry, int((cameras.width * cameras.height).sum()), num_points)
    transform = saved_transform(outputs.dataparser_transform.cpu().numpy(), read_json(scene_dir / "transforms.json"))
    scale = float(outputs.dataparser_scale)
    with torch.no_grad():
        xyz, rgb = surface_points(pipeline, geometry, downscale, min_accumulation, consistency)
        if len(xyz) == 0:
            fix = ("check that the depth maps are in millimetres, or pass --geometry render" if geometry == "depth"
                   else "train longer or lower --min-accumulation")
            raise DataError(f"{config_yml}: no training view has a surface point inside the scene box; {fix}.")
        xyz, rgb = voxel_downsample(to_original_world(xyz, transform, scale), num_points, rgb)
        # Geometry first: the feature head then runs once per exported point, not once per pixel.
        feature = _features_at(pipeline.model.field, to_nerfstudio(xyz, transform, scale))
    store = datamanager.train_dataset.store
    cameras = scene_cameras(scene_dir, store.meta.frames)
    segments = export_segments(xyz, rgb, feature, cameras, store, training_frames(outputs))
    world = {
        "frame": "original transforms.json world (points, frame poses; after its applied_transform, if any)",
        "dataparser_transform": transform.tolist(), "dataparser_scale": scale,
        "to_nerfstudio": "p_ns = dataparser_scale * (T[:, :3] @ p + T[:, 3])",
    }
    write_export(out_dir, xyz, rgb, feature, np.asarray(store.image_vectors), cameras, code_dim=code_dim,
                 segments=segments, extra={"geometry": geometry, "world": world, "scene": str(scene_dir.resolve()),
                        "config": str(config_yml.resolve()), "checkpoint": store.meta.checkpoint,
                        "model": store.meta.model})
    return {"points": len(xyz), "dim": int(feature.shape[1]), "geometry": geometry, "out": str(out_dir)}


RAYS_PER_POINT = 2  # rendered rays per exported point: enough for the voxel merge to fill every voxel


def default_downscale(geometry: str, pixels: int, num_points: int) -> int:
    """Every depth pixel (they cost nothing to read); for ``render``, the largest step that still casts
    ``RAYS_PER_POINT`` rays per point of ``num_points`` over the training views' ``pixels``. On 25
    256-px views and 200k points that is 2: a quarter of the rays, the export's main cost."""
    if geometry == "depth":
        return 1
    return max(1, int(math.sqrt(pixels / (RAYS_PER_POINT * num_points))))


def training_frames(outputs: Any) -> set[str]:
    """The image file names of a dataparser's training frames (by name: with a downscale factor nerfstudio
    reads ``images_2/x.png`` for transforms.json's ``images/x.png``)."""
    return {Path(name).name for name in outputs.image_filenames}


def export_segments(xyz: np.ndarray, rgb: np.ndarray, feature: np.ndarray, cameras: list[dict[str, Any]],
                    store: Any, train: set[str]) -> np.ndarray | None:
    """The points' 3D instances (``find3d.query.segments``) from the panoptic masks in the embeddings store of
    the frames named in ``train``; None for a store without masks (the field then cuts by geometry on first
    use)."""
    from find3d.query.segments import mask_observations, segment_points

    if store.segments is None:
        return None
    maps = [store.frame_segments(i) if Path(camera["file_path"]).name in train else None
            for i, camera in enumerate(cameras)]
    observations = mask_observations(xyz, cameras, maps.__getitem__)
    return segment_points(xyz, features=feature, observations=observations, colors=rgb)


def saved_transform(dataparser_transform: np.ndarray, transforms: dict[str, Any]) -> np.ndarray:
    """(3, 4) map from transforms.json's coordinates to nerfstudio's (before its scale).

    nerfstudio's ``dataparser_transform`` starts from the *original* data's coordinates: it includes
    transforms.json's ``applied_transform`` (ns-process-data's COLMAP axis swap), which its frames
    already carry. Points exported with it would not share the world of the frames' poses."""
    transform = np.asarray(dataparser_transform, dtype=np.float64)
    applied = transforms.get("applied_transform")
    if applied is None:
        return transform
    applied = np.vstack([np.asarray(applied, dtype=np.float64).reshape(3, 4), [0.0, 0.0, 0.0, 1.0]])
    return (np.vstack([transform, [0.0, 0.0, 0.0, 1.0]]) @ np.linalg.inv(applied))[:3]


def check_run_config(config_yml: Path) -> None:
    """Refuse, with the fix, what nerfstudio's ``eval_setup`` would only assert on: a missing file, broken
    YAML, a file that is not a nerfstudio run config (e.g. an interface ``config.yaml``), another method."""
    import yaml
    from nerfstudio.engine.trainer import TrainerConfig

    fix = "pass the config.yml that `ns-train find-field` wrote (outputs/<scene>/find-field/<time>/config.yml)"
    if not config_yml.is_file():
        raise InputError(f"{config_yml}: not found; {fix}.")
    try:
        # nerfstudio writes (and eval_setup reads) its run configs as python-tagged YAML
        config = yaml.load(config_yml.read_text(encoding="utf-8"), Loader=yaml.Loader)
    except (yaml.YAMLError, ImportError, AttributeError, TypeError) as err:
        raise InputError(f"{config_yml}: not a readable nerfstudio config ({type(err).__name__}: "
                         f"{str(err).splitlines()[0] if str(err) else ''}); {fix}.") from err
    if not isinstance(config, TrainerConfig):
        what = "a plain mapping (an interface or other find3d config?)" if isinstance(config, dict) else \
            type(config).__name__
        raise InputError(f"{config_yml}: is {what}, not a nerfstudio run config; {fix}.")
    if config.method_name != "find-field":
        raise InputError(f"{config_yml}: a {config.method_name!r} run, not find-field; {fix}.")


def write_export(out_dir: str | os.PathLike, xyz: np.ndarray, rgb: np.ndarray, feature: np.ndarray,
                 image_vectors: np.ndarray, frames: list[dict[str, Any]], code_dim: int = 32,
                 extra: dict[str, Any] | None = None, segments: np.ndarray | None = None) -> None:
    """Write an export folder (format in the module docstring) from arrays, all-or-nothing.
    ``segments``: the points' 3D instances (N,) int32, if cut already."""
    _check_arrays(xyz, rgb, feature, image_vectors, frames, segments)
    out_dir = check_export_folder(out_dir)
    # All-or-nothing: the files are only valid together (meta.json counts the points of points.ply, the
    # code belongs to its decoder), so they go into a staging folder that replaces the old export whole.
    with atomic_folder(out_dir, carry=lambda name: name not in EXPORT_FILES) as staging:
        write_export_files(staging, xyz, rgb, feature, image_vectors, frames, code_dim, extra, segments)


def write_export_files(folder: Path, xyz: np.ndarray, rgb: np.ndarray, feature: np.ndarray,
                       image_vectors: np.ndarray, frames: list[dict[str, Any]], code_dim: int = 32,
                       extra: dict[str, Any] | None = None, segments: np.ndarray | None = None) -> None:
    """The files of an export into ``folder``, meta.json last; for a caller that stages the folder itself
    (``write_export``, a saved live map: ``find3d.mapping.store``)."""
    _check_arrays(xyz, rgb, feature, image_vectors, frames, segments)
    # Unit features make the stored dot products cosines (what relevancy needs).
    feature = feature / np.maximum(np.linalg.norm(feature, axis=1, keepdims=True), 1e-8)
    code_meta = _write_arrays(folder, xyz, rgb, feature, image_vectors, code_dim)
    segment_meta = None
    if segments is not None:
        _atomic_array(folder / "segments.i32", np.asarray(segments, np.int32))
        segment_meta = {"file": "segments.i32", "count": int(np.max(segments, initial=-1)) + 1}
    atomic_write_json(folder / "meta.json", export_meta(int(feature.shape[1]), len(xyz), code_meta, segment_meta,
                                                        frames, extra))
    if segments is not None:
        write_frame_instances(folder)


def export_meta(dim: int, count: int, code: dict[str, Any] | None, segments: dict[str, Any] | None,
                frames: list[dict[str, Any]], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """An export's meta.json (module docstring)."""
    return {"format": FORMAT, "version": VERSION, "dim": dim, "count": count, "code": code, "segments": segments,
            **(extra or {}), "frames": frames}


def _check_arrays(xyz: np.ndarray, rgb: np.ndarray, feature: np.ndarray, image_vectors: np.ndarray,
                  frames: list[dict[str, Any]], segments: np.ndarray | None) -> None:
    if not (len(xyz) == len(rgb) == len(feature)) or len(image_vectors) != len(frames):
        raise InputError(f"export: {len(xyz)} points, {len(rgb)} colours, {len(feature)} features, "
                         f"{len(image_vectors)} image vectors for {len(frames)} frames; they must match.")
    if segments is not None and np.shape(segments) != (len(xyz),):
        raise InputError(f"export: {np.shape(segments)} segment labels for {len(xyz)} points; they must match.")


def check_export_folder(out_dir: str | os.PathLike) -> Path:
    """``out_dir`` if an export may be written there: a new or empty folder, or an earlier export (replaced
    whole; what else it holds, e.g. query results, is kept). Any other folder is refused: a mistyped
    ``--out`` (the scene, the home folder) must not have its files mixed with, or swapped for, an export."""
    out_dir = validate.path(out_dir, "out")
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"export folder {out_dir}: is a file; pass a folder (new, empty, or an earlier export "
                         "to replace).")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        meta = out_dir / "meta.json"
        try:
            is_export = meta.is_file() and read_json(meta).get("format") == FORMAT
        except (DataError, AttributeError):
            is_export = False
        if not is_export:
            raise InputError(f"export folder {out_dir}: holds files but no field export (no export meta.json); "
                             "pass a new or empty folder, or an earlier export to replace.")
    return out_dir


def surface_points(pipeline: Any, geometry: str, downscale: int, min_accumulation: float,
                   consistency: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(xyz (M, 3) in nerfstudio's frame, rgb (M, 3) in [0, 1]): every training view's surface points,
    one per ``downscale`` x ``downscale`` pixels, inside the scene box, coloured from the view's image;
    the surface is the view's depth map (``depth``) or the field's median depth (``render``). With
    ``consistency``, points that other views contradict (``find3d.field.fuse.consistent``: they saw
    through them) are dropped."""
    from tqdm import tqdm

    from find3d.field.fuse import consistent, splat

    datamanager = pipeline.datamanager
    dataset, cameras = datamanager.train_dataset, datamanager.train_dataparser_outputs.cameras
    aabb = datamanager.train_dataparser_outputs.scene_box.aabb.cpu().numpy()
    points, colours, views = [], [], []
    for index in tqdm(range(len(dataset)), desc="export-field: surfaces", unit="view", disable=None):
        item = dataset[index]
        image = item["image"][..., :3].numpy()
        height, width = image.shape[:2]
        rows, cols = cell_centres(height, max(height // downscale, 1)), cell_centres(width, max(width // downscale, 1))
        distance, origins, directions = _view_surface(pipeline, index, item, rows, cols, geometry, min_accumulation)
        xyz = origins + directions * distance[..., None]
        keep = np.isfinite(distance) & (distance > 0) & np.all((xyz >= aabb[0]) & (xyz <= aabb[1]), axis=-1)
        points.append(xyz[keep].astype(np.float64))
        colours.append(image[np.ix_(rows, cols)][keep])
        camera = cameras[index]
        # A pinhole depth map of the view's own points (distortion undone by the rays): what others check against.
        views.append(splat(points[-1], camera.camera_to_worlds.numpy(), float(camera.fx) * len(cols) / width,
                           float(camera.fy) * len(rows) / height, float(camera.cx) * len(cols) / width,
                           float(camera.cy) * len(rows) / height, (len(rows), len(cols))))
    if consistency and len(views) > 1:
        masks = consistent(points, views)
        points = [xyz[mask] for xyz, mask in zip(points, masks)]
        colours = [rgb[mask] for rgb, mask in zip(colours, masks)]
    return (np.concatenate(points).astype(np.float32) if points else np.zeros((0, 3), np.float32),
            np.concatenate(colours).astype(np.float32) if colours else np.zeros((0, 3), np.float32))


def median_depth(depth: np.ndarray, radius: int = 2) -> np.ndarray:
    """Each reading replaced by the median of the readings in its (2 radius + 1)^2 window (0 = none; a
    reading with fewer than half its window read stays 0): a depth camera's edge-preserving spatial
    filter. Axial noise and disparity steps of a few mm thicken the table beyond the 8 mm a support
    plane is cut at, and what is left of it joins the objects into one 3D segment (make-scene
    --sensor rgbd seed 101: 77 segments against 28 from exact depth, 3D mIoU 0.22 against 0.74); a
    median of 25 readings cuts that noise about four-fold, and at an edge it takes one side, so a
    mixed reading between fore- and background goes too. Exact depth of smooth surfaces is unchanged.
    export-field keeps the window's field of view: 5x5 at 256 px (the measurement above), 3x3 at 128 px,
    none below, where small objects are a few pixels wide and a median would erase them (64 px views:
    GT object points within 2 cm of an exported point fell from 0.97 to 0.73 with 5x5)."""
    if radius < 1:
        return depth
    height, width = depth.shape
    padded = np.pad(np.where(depth > 0, depth, np.nan), radius, constant_values=np.nan)
    size = 2 * radius + 1
    window = np.stack([padded[r:r + height, c:c + width] for r in range(size) for c in range(size)])
    count = np.isfinite(window).sum(axis=0)
    window.sort(axis=0)  # NaN (no reading) sorts last: the median is the middle of the first ``count``
    median = np.take_along_axis(window, np.maximum(count - 1, 0)[None] // 2, axis=0)[0]
    return np.where((depth > 0) & (count * 2 >= size * size), median, 0.0).astype(np.float32)


#: rays per density-only render call: 80k samples, whose activations stay in cache (25 256-px views on 2 cores:
#: 10 s against 18 s at 1 << 14, the same points; 1 << 8 to 1 << 11 within 15 % of it)
RENDER_CHUNK = 1 << 10


def _view_surface(pipeline: Any, index: int, item: dict[str, Any], rows: np.ndarray, cols: np.ndarray,
                  geometry: str, min_accumulation: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(distance along the unit ray (h, w; 0 = no surface), ray origins and directions (h, w, 3)) of one
    training view's sampled pixels, with nerfstudio's rays (so with the frames' distortion)."""
    import torch

    cameras = pipeline.datamanager.train_dataparser_outputs.cameras
    coords = np.stack(np.meshgrid(rows + 0.5, cols + 0.5, indexing="ij"), axis=-1)
    bundle = cameras.generate_rays(camera_indices=index, coords=torch.from_numpy(coords).float())
    origins, directions = bundle.origins.numpy(), bundle.directions.numpy()
    if geometry == "depth":  # depth_image: z-depth in nerfstudio units, at the dataparser cameras' size
        depth = item["depth_image"][..., 0].numpy()
        depth = median_depth(depth, radius=min(2, depth.shape[1] // 128))[np.ix_(rows, cols)]
        return depth * bundle.metadata["directions_norm"][..., 0].numpy(), origins, directions
    model = pipeline.model
    flat = bundle.flatten().to(model.device)
    parts = [model.surface(flat[start:start + RENDER_CHUNK]) for start in range(0, len(flat), RENDER_CHUNK)]
    distance = torch.cat([d for d, _ in parts]).cpu().numpy().reshape(len(rows), len(cols))
    accumulation = torch.cat([a for _, a in parts]).cpu().numpy().reshape(len(rows), len(cols))
    return np.where(accumulation >= min_accumulation, distance, 0.0), origins, directions


def _features_at(field: Any, xyz: np.ndarray) -> np.ndarray:
    """(N, D) float32: the feature head of ``field`` at ``xyz`` (nerfstudio's frame), in chunks."""
    import torch

    device = field.aabb.device
    return np.concatenate([
        field.features_at(torch.from_numpy(xyz[start:start + FEATURE_CHUNK]).float().to(device)).float().cpu().numpy()
        for start in range(0, len(xyz), FEATURE_CHUNK)])


def to_original_world(xyz: np.ndarray, transform: np.ndarray, scale: float) -> np.ndarray:
    """Undo nerfstudio's dataparser: p_ns = scale * (R p + t)  =>  p = R^T (p_ns / scale - t)."""
    rotation, translation = transform[:3, :3], transform[:3, 3]
    return ((xyz.astype(np.float64) / scale - translation) @ rotation).astype(np.float32)


def to_nerfstudio(xyz: np.ndarray, transform: np.ndarray, scale: float) -> np.ndarray:
    """nerfstudio's dataparser on original-world points: p_ns = scale * (R p + t)."""
    return (scale * (xyz.astype(np.float64) @ transform[:3, :3].T + transform[:3, 3])).astype(np.float32)


def voxel_downsample(xyz: np.ndarray, target: int, *values: np.ndarray) -> tuple[np.ndarray, ...]:
    """(xyz, *values) averaged per voxel, the voxel sized so that at most ``target`` (and not far fewer)
    points remain; ``values`` are per-point arrays (colours, features: unit ones are no longer unit after).

    Same result as open3d's voxel_down_sample for xyz/colour, but also averages D-dim features
    (open3d only carries colours and normals) with sorted segment sums, in memory linear in N.
    """
    if len(xyz) <= target:
        return (xyz, *values)
    extent = float(np.ptp(xyz, axis=0).max()) or 1.0
    # Surface samples: the voxel count falls roughly with voxel size squared.
    voxel = extent / np.sqrt(target)
    for _ in range(20):
        inverse, count = _voxelize(xyz, voxel)
        if count <= target:
            break
        voxel *= max(np.sqrt(count / target), 1.05)
    order = np.argsort(inverse, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(inverse[order]) != 0])
    sizes = np.diff(np.r_[starts, len(order)])[:, None].astype(np.float32)

    def mean(values: np.ndarray) -> np.ndarray:
        return (np.add.reduceat(values[order], starts, axis=0) / sizes).astype(np.float32)

    return tuple(mean(array) for array in (xyz, *values))


def _voxelize(xyz: np.ndarray, voxel: float) -> tuple[np.ndarray, int]:
    keys = np.floor((xyz - xyz.min(axis=0)) / voxel).astype(np.int64)
    dims = keys.max(axis=0) + 1
    flat = (keys[:, 0] * dims[1] + keys[:, 1]) * dims[2] + keys[:, 2]
    _, inverse = np.unique(flat, return_inverse=True)
    return inverse.reshape(-1), int(inverse.max()) + 1


def _write_arrays(out_dir: Path, xyz: np.ndarray, rgb: np.ndarray, feature: np.ndarray,
                  image_vectors: np.ndarray, code_dim: int) -> dict[str, Any] | None:
    from find3d.field.embeddings import fit_pca
    from find3d.query.field import write_ply

    write_ply(out_dir / "points.ply", xyz, rgb)
    _atomic_array(out_dir / "features.f16", feature.astype(np.float16))
    _atomic_array(out_dir / "image_vectors.f16", image_vectors.astype(np.float16))
    if code_dim <= 0 or code_dim >= feature.shape[1]:
        return None
    sample = feature[np.random.default_rng(0).permutation(len(feature))[:PCA_SAMPLE]]
    mean, components, ratio = fit_pca(sample, code_dim)
    _atomic_array(out_dir / "code.f32", pca_code(feature, mean, components))
    return write_decoder(out_dir, mean, components, ratio)


def pca_code(feature: np.ndarray, mean: np.ndarray, components: np.ndarray) -> np.ndarray:
    """(d + 1, n) float32: ``code.f32``'s columns for unit ``feature`` rows (module docstring)."""
    code = (feature - mean) @ components.T
    decoded_norm = np.linalg.norm(code @ components + mean, axis=1, keepdims=True)
    scale = 1.0 / np.maximum(decoded_norm, 1e-8)
    return np.vstack([(code * scale).T, scale.T]).astype(np.float32)


def write_decoder(folder: Path, mean: np.ndarray, components: np.ndarray, ratio: float) -> dict[str, Any]:
    """``decoder.npz`` of a PCA code; returns meta.json's ``code`` entry."""
    with atomic_open(folder / "decoder.npz") as handle:
        np.savez(handle, mean=mean, components=components)
    return {"dim": len(components), "file": "code.f32", "decoder": "decoder.npz", "explained_variance": ratio}


def _atomic_array(path: Path, array: np.ndarray) -> None:
    with atomic_open(path) as handle:
        array.tofile(handle)


def scene_cameras(scene_dir: Path, file_paths: tuple[str, ...]) -> list[dict[str, Any]]:
    """Pose (OpenGL c2w, original world) and pinhole intrinsics of each stored frame, from transforms.json."""
    data = read_json(scene_dir / "transforms.json")
    by_path = {frame["file_path"]: frame for frame in data["frames"]}
    cameras = []
    for path in file_paths:
        frame = by_path.get(path)
        if frame is None:
            raise DataError(f"{scene_dir / 'transforms.json'}: frame {path!r} of the embeddings store is gone; "
                            "re-run `find3d embed-frames` and retrain.")
        try:
            intrinsics = {key: float(frame.get(key, data.get(key))) for key in ("fl_x", "fl_y", "cx", "cy", "w", "h")}
        except TypeError as err:
            raise DataError(f"{scene_dir / 'transforms.json'}: frame {path!r} lacks pinhole intrinsics "
                            "(fl_x, fl_y, cx, cy, w, h); add them globally or per frame.") from err
        cameras.append({"file_path": path, "c2w": frame["transform_matrix"], **intrinsics})
    return cameras


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, required=True, help="config.yml of an `ns-train find-field` run")
    parser.add_argument("--out", type=Path, required=True, help="output folder (points.ply, features.f16, ...)")
    parser.add_argument("--num-points", type=validate.cli(validate.integer, minimum=1), default=200_000,
                        help="about this many points after voxel merge")
    parser.add_argument("--geometry", choices=GEOMETRIES, default="auto",
                        help="where the points come from: depth = the training frames' depth maps (a robot's RGB-D; "
                             "small objects land on their surfaces), render = the field's rendered expected depth "
                             "(scenes without depth), auto = depth when every training frame has a depth map "
                             "(default: auto)")
    parser.add_argument("--min-accumulation", type=validate.cli(validate.number, low=0.0, high=0.999), default=0.5,
                        help="render geometry: drop rays whose rendered opacity is below this (they hit no surface)")
    parser.add_argument("--downscale", type=validate.cli(validate.integer, minimum=1), default=None,
                        help="use the training views this much smaller (one rendered ray or depth pixel per "
                             "DOWNSCALE x DOWNSCALE pixels; default: 1 for depth geometry, for render the "
                             f"coarsest that casts {RAYS_PER_POINT} rays per exported point, which may give "
                             "fewer points than --num-points; 1 gives the most)")
    parser.add_argument("--consistency", action=argparse.BooleanOptionalAction, default=True,
                        help="drop surface points that another training view saw through (flying pixels of a depth "
                             "camera, floaters of a field trained without depth; default: on)")
    parser.add_argument("--code-dim", type=validate.cli(validate.integer, minimum=0), default=32,
                        help="PCA code size for fast queries (0: none, queries read the full features)")


def run(args: argparse.Namespace) -> int:
    summary = export_field(args.config, args.out, num_points=args.num_points,
                           min_accumulation=args.min_accumulation, downscale=args.downscale, code_dim=args.code_dim,
                           geometry=args.geometry, consistency=args.consistency)
    print(f"exported {summary['points']} points ({summary['geometry']} geometry) with {summary['dim']}-d "
          f"embeddings to {summary['out']}")
    return 0
