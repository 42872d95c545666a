"""``find3d eval-3d``: text queries on an exported field against a make-scene scene's 3D ground truth.

Protocol (every query is the category name, encoded through the interface with the canonical
negatives; a point is selected at relevancy >= ``--threshold``):

- 3D IoU per category, on the ground-truth points (``ground_truth/points.npz``: things and the table,
  one per 5 mm voxel). Each GT point takes the selection of its nearest point of the method, or is
  unselected when that point is farther than ``--match-distance`` (the method has no surface there);
  IoU = |selected ∩ category| / |selected ∪ category| over GT points; mIoU = mean over categories.
  Floor and wall carry no GT points, so selections there are not counted.
- Localisation accuracy (LERF) on the held-out views: for each held-out view and each category
  visible in it (>= ``MIN_VISIBLE`` of its pixels in the instance mask), the visible point (z-buffered)
  with the highest relevancy is projected; correct if it lands on that category's instance mask.
- Frame localisation top-1 / top-5: frames ranked by ``Field.rank_frames``; correct if the category
  is visible in the frame per the instance masks.

Fusion baseline (no field): every training frame's stored 2D embeddings are back-projected with the
frame's ground-truth depth and fused into a voxel map (``find3d.mapping.fusion``: unit embeddings
averaged per ``DEFAULT_VOXEL`` voxel), the very code the live mapping node runs, so the baseline
measures that node's map. The map is written as an export (``OUT/fusion/``) and evaluated by exactly
the same code.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from find3d.errors import DataError, InputError
from find3d.fileio import atomic_write_json, read_json

MIN_VISIBLE = 0.002  # share of a view's pixels an object must cover to count as visible
MATCH_DISTANCE = 0.05  # metres: about the spacing of a 50k-point export of a tabletop; farther = no surface


@dataclass
class Scene:
    """Ground truth of a make-scene folder."""

    root: Path
    transforms: dict[str, Any]
    objects: dict[int, dict[str, Any]]
    gt_xyz: np.ndarray
    gt_object: np.ndarray

    @classmethod
    def load(cls, root: Path) -> Scene:
        points = root / "ground_truth" / "points.npz"
        if not points.is_file():
            raise DataError(f"{root}: no ground_truth/points.npz; eval-3d needs a `find3d make-scene` scene.")
        with np.load(points) as data:
            xyz, object_id = data["xyz"], data["object_id"]
        objects = {int(k): v for k, v in read_json(root / "ground_truth" / "objects.json")["objects"].items()}
        return cls(root, read_json(root / "transforms.json"), objects, xyz, object_id)

    def categories(self) -> dict[str, list[int]]:
        """Category -> object ids, for the objects that have GT points (things and the table)."""
        present = set(np.unique(self.gt_object).tolist())
        out: dict[str, list[int]] = {}
        for object_id, entry in sorted(self.objects.items()):
            if object_id in present:
                out.setdefault(entry["category"], []).append(object_id)
        return out

    def frame(self, file_path: str) -> dict[str, Any]:
        return next(f for f in self.transforms["frames"] if f["file_path"] == file_path)

    def instances(self, file_path: str) -> np.ndarray:
        from PIL import Image

        return np.asarray(Image.open(self.root / self.frame(file_path)["instance_path"]))


# ------------------------------------------------------------------------------------------ metrics
def iou_per_category(relevancy: np.ndarray, threshold: float, scene: Scene, ids: list[int],
                     match: np.ndarray) -> float:
    """3D IoU on GT points of the selection transferred by ``match`` (nearest method point, -1: none)."""
    selected = np.zeros(len(scene.gt_xyz), bool)
    matched = match >= 0
    selected[matched] = relevancy[match[matched]] >= threshold
    truth = np.isin(scene.gt_object, ids)
    union = np.logical_or(selected, truth).sum()
    return float(np.logical_and(selected, truth).sum() / union) if union else 0.0


def nearest_match(points: np.ndarray, targets: np.ndarray, distance: float) -> np.ndarray:
    """For each target, the index of its nearest point within ``distance``, else -1."""
    from scipy.spatial import cKDTree

    found, index = cKDTree(points).query(targets, distance_upper_bound=distance)
    return np.where(np.isfinite(found), index, -1).astype(np.int64)


def localised(field: Any, relevancy: np.ndarray, frame_index: int, mask: np.ndarray) -> bool:
    """LERF: does the most relevant visible point of the frame land on ``mask``?"""
    from find3d.query.render import project_points

    indices, offsets = field.visibility()
    visible = indices[offsets[frame_index]:offsets[frame_index + 1]]
    if len(visible) == 0:
        return False
    best = visible[np.argmax(relevancy[visible])]
    hit = field.frame(frame_index)
    uv, _ = project_points(field.points[best:best + 1], hit.c2w, hit.fx, hit.fy, hit.cx, hit.cy)
    col, row = int(uv[0, 0]), int(uv[0, 1])
    return bool(mask[min(max(row, 0), mask.shape[0] - 1), min(max(col, 0), mask.shape[1] - 1)])


def evaluate(field: Any, scene: Scene, embeddings: dict[str, tuple[np.ndarray, np.ndarray]],
             threshold: float, match_distance: float) -> dict[str, Any]:
    """Every metric of the module docstring for one method; ``embeddings``: category -> (query, negatives)."""
    frame_index = {entry["file_path"]: i for i, entry in enumerate(field.frames)}
    visible = {path: _visible_ids(scene.instances(path)) for path in frame_index}
    heldout = [p for p in scene.transforms.get("val_filenames", []) if p in frame_index]
    match = nearest_match(field.points, scene.gt_xyz, match_distance)
    per_category: dict[str, dict[str, Any]] = {}
    for category, ids in scene.categories().items():
        query, negatives = embeddings[category]
        relevancy = field.relevancy(query, negatives)
        order = np.flatnonzero(relevancy >= threshold)
        ranked = [hit.file_path for hit in field.rank_frames(relevancy, order, top_k=5)]
        seen = [visible[p] & set(ids) != set() for p in ranked]
        views = [p for p in heldout if visible[p] & set(ids)]
        hits = [localised(field, relevancy, frame_index[p], np.isin(scene.instances(p), ids)) for p in views]
        per_category[category] = {
            "iou": iou_per_category(relevancy, threshold, scene, ids, match),
            "localisation": {"correct": int(sum(hits)), "views": len(views)},
            "frame_top1": bool(seen[:1] and seen[0]), "frame_top5": bool(any(seen)),
        }
    return {"per_category": per_category, **_summary(per_category)}


def _visible_ids(instances: np.ndarray) -> set[int]:
    ids, counts = np.unique(instances, return_counts=True)
    return {int(i) for i, c in zip(ids, counts) if i > 0 and c >= MIN_VISIBLE * instances.size}


def _summary(per_category: dict[str, dict[str, Any]]) -> dict[str, float]:
    rows = list(per_category.values())
    correct = sum(r["localisation"]["correct"] for r in rows)
    views = sum(r["localisation"]["views"] for r in rows)
    return {"miou": float(np.mean([r["iou"] for r in rows])) if rows else 0.0,
            "localisation_accuracy": correct / views if views else 0.0,
            "frame_top1": float(np.mean([r["frame_top1"] for r in rows])) if rows else 0.0,
            "frame_top5": float(np.mean([r["frame_top5"] for r in rows])) if rows else 0.0}


# --------------------------------------------------------------------------------- fusion baseline
def fusion_baseline(scene: Scene, field: Any, out: Path, voxel: float | None = None) -> Any:
    """Fuse the stored 2D embeddings of the training frames with GT depth into a voxel map (module doc)."""
    from find3d.field.embeddings import STORE_DIRNAME, EmbeddingStore
    from find3d.field.export import write_export
    from find3d.mapping.fusion import DEFAULT_VOXEL, VoxelMap
    from find3d.query.field import Field

    store = EmbeddingStore.open(scene.root / STORE_DIRNAME)
    fused = VoxelMap(store.meta.dim, DEFAULT_VOXEL if voxel is None else voxel)
    for path in scene.transforms.get("train_filenames", []):
        fused.integrate(frame_samples(scene, store, path))
    if len(fused) == 0:
        raise DataError(f"{scene.root}: no training view has depth; regenerate the scene.")
    write_export(out, fused.points(), fused.colors(), fused.features(), np.asarray(store.image_vectors),
                 field.frames, code_dim=0,
                 extra={"scene": str(scene.root.resolve()), "checkpoint": store.meta.checkpoint,
                        "voxel": fused.voxel,
                        "method": "fusion baseline: stored 2D embeddings fused with GT depth (find3d.mapping)"})
    return Field.load(out)


def frame_samples(scene: Scene, store: Any, path: str) -> Any:
    """One training frame's embedding cells back-projected with its GT depth (``find3d.mapping.fusion``)."""
    from PIL import Image

    from find3d.fileio import load_image
    from find3d.ingest.camera import Intrinsics
    from find3d.mapping.fusion import cell_samples

    frame = scene.frame(path)
    depth = np.asarray(Image.open(scene.root / frame["depth_file_path"])).astype(np.float64) / 1000.0
    camera = Intrinsics.from_transforms(scene.transforms)
    return cell_samples(store.frame_features(store.index_of(path)), depth, camera,
                        np.asarray(frame["transform_matrix"]), load_image(scene.root / path))


# -------------------------------------------------------------------------------------------- CLI
def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scene", type=Path, required=True, help="make-scene folder (with ground_truth/)")
    parser.add_argument("--field", type=Path, required=True, help="export folder of that scene's find-field")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="FIND interface checkpoint (default: the one recorded in the export)")
    parser.add_argument("--threshold", type=float, default=0.5, help="least relevancy of a selected point")
    parser.add_argument("--match-distance", type=float, default=MATCH_DISTANCE,
                        help="metres: farthest a method's point may be from a GT point to stand for it")
    parser.add_argument("--out", type=Path, default=None, help="folder for eval_3d.json and fusion/ (default: --field)")


def run(args: argparse.Namespace) -> int:
    from find3d.query.field import CANONICAL_NEGATIVES, Field, encode
    from find3d.query.run_query import load_interface

    if args.match_distance <= 0 or not 0.0 <= args.threshold <= 1.0:
        raise InputError("need --match-distance > 0 and 0 <= --threshold <= 1.")
    scene, field = Scene.load(args.scene), Field.load(args.field)
    interface = load_interface(field, args.checkpoint)
    negatives = np.stack([encode(interface, phrase) for phrase in CANONICAL_NEGATIVES])
    embeddings = {c: (encode(interface, c), negatives) for c in scene.categories()}
    out = args.out or args.field
    baseline = fusion_baseline(scene, field, out / "fusion")
    results = {"protocol": __doc__.split("Protocol", 1)[1].strip(), "threshold": args.threshold,
               "match_distance": args.match_distance,
               "field": evaluate(field, scene, embeddings, args.threshold, args.match_distance),
               "fusion_baseline": evaluate(baseline, scene, embeddings, args.threshold, args.match_distance)}
    atomic_write_json(out / "eval_3d.json", results)
    print(format_table(results))
    print(f"-> {out / 'eval_3d.json'}")
    return 0


def format_table(results: dict[str, Any]) -> str:
    """Markdown table: per-category IoU and the summary metrics of both methods."""
    methods = ("field", "fusion_baseline")
    lines = ["| metric | find-field | fusion baseline |", "|---|---|---|"]
    for category in results["field"]["per_category"]:
        values = [results[m]["per_category"][category]["iou"] for m in methods]
        lines.append(f"| IoU {category} | {values[0]:.3f} | {values[1]:.3f} |")
    for key in ("miou", "localisation_accuracy", "frame_top1", "frame_top5"):
        lines.append(f"| {key} | {results['field'][key]:.3f} | {results['fusion_baseline'][key]:.3f} |")
    return "\n".join(lines)
