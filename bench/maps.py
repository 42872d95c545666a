"""What the map benchmarks share (bench/map_storage.py, bench/floor.py, bench/scale.py): a make-scene scene
embedded by the packaged interface, fused as eval-3d's fusion baseline fuses it (GT depth, the stored
embeddings and masks), turned into a ``Field``, and scored by eval-3d's own metrics."""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
INTERFACE = ROOT / "find3d" / "assets" / "interface-cpu.pt"  # the packaged interface (find3d/assets/README.md)


def prepare(scene: Path, seed: int, **options: Any) -> None:
    """make-scene (``options``: its keyword arguments) and embed-frames with the packaged interface, unless
    ``scene`` already holds both (a benchmark run again reuses them)."""
    from find3d import Interface
    from find3d.data.make_scene import make_scene
    from find3d.field.embeddings import STORE_DIRNAME, embed_frames

    if not (scene / "transforms.json").is_file():
        make_scene(scene, seed=seed, overwrite=True, **options)
    if not (scene / STORE_DIRNAME).is_dir():
        embed_frames(scene, Interface.from_checkpoint(INTERFACE, device="cpu"), checkpoint=str(INTERFACE))


def open_scene(scene: Path) -> tuple[Any, Any]:
    """(eval-3d's ``Scene``, the embeddings store) of a prepared scene."""
    from find3d.field.embeddings import STORE_DIRNAME, EmbeddingStore
    from find3d.query.eval_3d import Scene

    return Scene.load(scene), EmbeddingStore.open(scene / STORE_DIRNAME)


def fuse(scene: Any, store: Any, paths: list[str], voxels: Any) -> Any:
    """``voxels`` (a ``VoxelMap``) with the frames ``paths`` fused, as eval-3d's fusion baseline does."""
    from find3d.query.eval_3d import frame_samples

    for path in paths:
        voxels.integrate(frame_samples(scene, store, path))
    return voxels


def cameras(scene: Any, store: Any) -> list[dict[str, Any]]:
    """Every embedded frame as an export lists it (what a field's frames are: training and held-out views)."""
    from find3d.field.export import scene_cameras

    return scene_cameras(scene.root, store.meta.frames)


def as_field(scene: Any, store: Any, points: np.ndarray, colors: np.ndarray, features: np.ndarray,
             segments: np.ndarray) -> Any:
    """An in-memory ``Field`` over the scene's frames."""
    from find3d.query.field import Field

    frames = cameras(scene, store)
    meta = {"format": "bench", "dim": features.shape[1], "count": len(points), "frames": frames,
            "scene": str(scene.root)}
    return Field(scene.root, meta, points, colors, features, np.asarray(store.image_vectors, np.float32), None,
                 None, segments)


def score(field: Any, scene: Any, interface: Any, embeddings: dict, instances: bool = True) -> dict[str, float]:
    """eval-3d's metrics of ``field``: whole-object mIoU, lowest category IoU, frame top-1, localisation,
    per-point mIoU and (``instances``) instance AP50 averaged over categories."""
    from find3d.query.eval_3d import MATCH_DISTANCE, evaluate, instance_ap, nearest_match

    objects = evaluate(field, scene, embeddings, 0.5, MATCH_DISTANCE)
    points = evaluate(field, scene, embeddings, 0.5, MATCH_DISTANCE, objects=False)
    out = {"miou": objects["miou"], "min_iou": objects["min_iou"], "frame_top1": objects["frame_top1"],
           "localisation": objects["localisation_accuracy"], "miou_points": points["miou"]}
    if instances:
        match = nearest_match(field.points, scene.gt_xyz, MATCH_DISTANCE)
        out["ap50"] = instance_ap(field, scene, interface, match)["ap50_mean_category"]
    return out


def interface() -> Any:
    from find3d import Interface

    return Interface.from_checkpoint(INTERFACE, device="cpu")


WORK_HELP = "scenes folder to reuse (default: a temporary one)"  # a map benchmark's --work


@contextmanager
def session(work: Path | None) -> Iterator[tuple[Path, Any]]:
    """(``work``, or a temporary folder while the block runs; the packaged interface) of a map benchmark's run,
    on one torch thread (as a map runs beside a robot's other processes)."""
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        yield work or Path(folder), interface()
