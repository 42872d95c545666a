"""Real capture layouts: a phone scene without depth, and an ns-process-data capture (per-frame intrinsics,
lens distortion, images_2/ downscales, applied_transform, no depth) through embed-frames -> ns-train
find-field -> export-field -> query, scored against the scene's 3D ground truth."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fixtures.capture import APPLIED_TRANSFORM, convert, distorted, to_saved
from fixtures.field import train_field
from PIL import Image

from find3d.cli import main
from find3d.data.make_scene import make_scene

PACKAGED = Path(__file__).resolve().parent.parent / "find3d" / "assets" / "interface-cpu.pt"
SIZE = 128


@pytest.fixture(scope="module")
def phone_scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A phone capture (``--sensor rgb``: JPEGs with exposure drift, no depth) of a make-scene tabletop."""
    out = tmp_path_factory.mktemp("phone") / "scene"
    make_scene(out, seed=1, views=24, heldout=0, size=SIZE, sensor="rgb")
    return out


@pytest.mark.parametrize("camera_model", ["OPENCV", "OPENCV_FISHEYE"])
def test_capture_rays_see_what_the_scene_saw(phone_scene: Path, tmp_path: Path, camera_model: str) -> None:
    """nerfstudio's rays through the capture's distorted, per-frame-calibrated pixels land on the object the
    original pinhole camera saw there (instance masks put through the same lens)."""
    import cv2
    from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig

    capture = convert(phone_scene, tmp_path / "capture", camera_model)
    original = json.loads((phone_scene / "transforms.json").read_text())
    cameras = json.loads((capture / "transforms.json").read_text())["frames"]

    def parse(downscale: int):  # nerfstudio's frame = the saved one, nothing recentred or rescaled
        return NerfstudioDataParserConfig(data=capture, downscale_factor=downscale, train_split_fraction=1.0,
                                          orientation_method="none", center_method="none",
                                          auto_scale_poses=False).setup().get_dataparser_outputs("train")

    half = parse(2)
    assert half.image_filenames[0].parent.name == "images_2" and int(half.cameras.width[0]) == SIZE // 2
    outputs = parse(1)
    mismatch = []
    for index in (1, 2, 5):
        bundle = outputs.cameras.generate_rays(camera_indices=index, keep_shape=True)
        # A point on every ray, in the original world: 0.7 m along it, then undo applied_transform.
        saved = (bundle.origins + 0.7 * bundle.directions).reshape(-1, 3).numpy().astype(np.float64)
        world = (saved - APPLIED_TRANSFORM[:, 3]) @ APPLIED_TRANSFORM[:, :3]
        c2w = np.asarray(original["frames"][index]["transform_matrix"])
        local = (world - c2w[:3, 3]) @ c2w[:3, :3]
        u = original["fl_x"] * local[:, 0] / -local[:, 2] + original["cx"]
        v = -original["fl_y"] * local[:, 1] / -local[:, 2] + original["cy"]
        inside = (u >= 0) & (u < SIZE) & (v >= 0) & (v < SIZE)
        assert inside.mean() > 0.6  # a fisheye sees past the pinhole image
        truth = np.asarray(Image.open(phone_scene / original["frames"][index]["instance_path"]))
        seen = distorted(truth, original, cameras[index], camera_model, cv2.INTER_NEAREST).reshape(-1)
        mismatch.append((seen[inside] != truth[v[inside].astype(int), u[inside].astype(int)]).mean())
    print(f"{camera_model}: share of the capture's rays on another object than the scene saw {np.mean(mismatch):.4f}")
    assert np.mean(mismatch) < 0.002  # ignoring the distortion: 0.007 (fisheye) - 0.02 (OPENCV)


@pytest.mark.slow
def test_ns_process_data_capture_end_to_end(phone_scene: Path, tmp_path: Path) -> None:
    """The capture, no depth, through the CLI with the packaged interface; a query's 3D IoU on GT points."""
    import find3d
    from find3d.query.eval_3d import Scene as GroundTruth
    from find3d.query.eval_3d import iou_per_category, nearest_match

    capture = convert(phone_scene, tmp_path / "capture")
    assert main(["embed-frames", "--data", str(capture), "--checkpoint", str(PACKAGED)]) == 0
    config = train_field(capture, tmp_path / "runs", iterations=400, timeout=1500,
                         extra=["nerfstudio-data", "--downscale-factor", "2"])
    field_dir = tmp_path / "field"
    assert main(["export-field", "--config", str(config), "--out", str(field_dir), "--num-points", "20000"]) == 0
    field = find3d.Field.load(field_dir)
    assert field.meta["geometry"] == "render"
    # Frames keep the capture's own per-frame cameras and poses (the transforms.json frame).
    frames = json.loads((capture / "transforms.json").read_text())["frames"]
    np.testing.assert_allclose(field.frame(4).c2w, frames[4]["transform_matrix"])
    assert field.frame(4).fx == pytest.approx(frames[4]["fl_x"])
    truth = GroundTruth.load(phone_scene)
    truth.gt_xyz = to_saved(truth.gt_xyz).astype(np.float32)  # the capture's frame
    table = truth.categories()["table"]
    interface = find3d.Interface.from_checkpoint(PACKAGED, device="cpu")
    result = field.query("the table", interface=interface, top_k_frames=0)
    chosen = np.zeros(len(field), bool)
    chosen[result.indices] = True
    iou = iou_per_category(chosen, truth, table, nearest_match(field.points, truth.gt_xyz, 0.05))
    # The points are in the capture's frame (applied_transform, per-frame intrinsics, distortion and
    # images_2/ all undone right): in the original world they would lie about a metre off.
    from scipy.spatial import cKDTree

    near = np.all((field.points >= truth.gt_xyz.min(axis=0) - 0.02) & (field.points <= truth.gt_xyz.max(axis=0) + 0.02),
                  axis=1)
    distance = float(np.median(cKDTree(truth.gt_xyz).query(field.points[near])[0]))
    print(f"ns-process-data capture, no depth, 400 iterations: points near the table {distance * 100:.1f} cm from "
          f"the GT points (median); 'the table' 3D IoU {iou:.3f} ({len(result.indices)} of {len(field)} points)")
    # Measured: 7.8 cm and IoU 0.39 (a field trained 400 CPU iterations without depth is still foggy;
    # bench/results/field.md); points left in the original world: 107 cm, IoU 0.
    assert distance < 0.15 and iou > 0.3


def test_eval_3d_fusion_baseline_without_depth(phone_scene: Path, tmp_path: Path) -> None:
    """eval-3d's fusion baseline on a scene without depth fuses the 2D embeddings onto the field's geometry
    (its points z-buffered into each frame) instead of stopping at the missing depth_file_path."""
    import shutil

    from scipy.spatial import cKDTree
    from test_field import object_vectors, write_mask_store

    from find3d.field.export import scene_cameras, write_export
    from find3d.query.eval_3d import Scene, fusion_baseline
    from find3d.query.field import Field

    scene = tmp_path / "scene"
    shutil.copytree(phone_scene, scene)
    store = write_mask_store(scene)  # each cell: its objects' vectors, as FIND's E(x)
    truth = Scene.load(scene)
    # A stand-in export: the GT points themselves, each with its object's vector.
    field_dir = tmp_path / "field"
    write_export(field_dir, truth.gt_xyz, np.zeros_like(truth.gt_xyz), object_vectors()[truth.gt_object],
                 np.asarray(store.image_vectors), scene_cameras(scene, store.meta.frames), code_dim=0)
    fused = fusion_baseline(truth, Field.load(field_dir), tmp_path / "fusion")
    distance, nearest = cKDTree(truth.gt_xyz).query(fused.points)
    features = np.asarray(fused.features, dtype=np.float32)
    named = (features @ object_vectors().T).argmax(axis=1) == truth.gt_object[nearest]
    print(f"fusion without depth: {len(fused)} voxels, median {np.median(distance) * 100:.2f} cm from the GT "
          f"points, {named.mean():.2f} named after their object")
    assert len(fused) > 1000 and np.median(distance) < 0.01 and named.mean() > 0.8
