"""``find3d eval-3d``: text queries on an exported field against a make-scene scene's 3D ground truth.

Protocol (each category is asked as a user would: "the mug" and a synonym, "the cup"
(``PHRASINGS``), each encoded through the interface with the negatives ``Field.query`` uses by
default, the interface's vocabulary minus the query's class; the selection is ``Field.query``'s:
whole 3D instances at relevancy >= ``--threshold``, or else the best one if it reaches ``--acceptance``,
else nothing ("not found"; ``--points``: each point at relevancy >= ``--threshold``); a category's metrics
are means over its phrasings):

- 3D IoU per category, on the ground-truth points (``ground_truth/points.npz``: things and the table,
  one per 5 mm voxel). Each GT point takes the selection of its nearest point of the method, or is
  unselected when that point is farther than ``--match-distance`` (the method has no surface there);
  IoU = |selected ∩ category| / |selected ∪ category| over GT points; mIoU = mean over categories
  (``miou_per_wording``: the same for each wording alone, the class name first).
  ``selected_ratio``: |selected| / |category| over GT points (the most of a category's phrasings;
  ``max_selected_ratio`` the most of all categories): 2 means a selection twice its object's size.
  Floor and wall carry no GT points, so selections there are not counted.
- Localisation accuracy (LERF) on the held-out views: for each held-out view and each category
  visible in it (>= ``MIN_VISIBLE`` of its pixels in the instance mask), the visible point (z-buffered)
  with the highest relevancy is projected (among ties, the one nearest their centroid); correct if it
  lands on that category's instance mask.
- Frame localisation top-1 / top-5: correct if the category is visible in the frame per the instance
  masks; frames ranked three ways, side by side: ``visibility`` (``Field.rank_frames``: share of the
  3D mask the frame sees), ``retrieval`` (FIND's image-text retrieval: ``Field.localize`` of
  ``Interface.encode_retrieval``) and ``combined`` (reciprocal-rank fusion of the two, k = 2).
  ``frame_top1`` / ``frame_top5`` are the ``visibility`` ranking's.
- Interleaved (scenes with two instances of a category, ``make-scene --repeat``): for every instance
  whose nearest other object is nearer to it than to the category's other instances, "the mug next
  to the duck" (text) and "the mug next to <image:0>" (that object's instance mask in the held-out
  view that shows most of it): the IoU on GT points of ``answer()``'s target mask with the instance.
  With ``make-scene --clutter``, also "the ball on the tray" for every thing resting on another whose
  category is unique in the scene.
- Attributes: "the red mug" for every thing instance whose colour no other instance of its category
  shares (ground_truth/objects.json's colour word); the IoU on GT points of ``answer()``'s mask with
  that instance. ``twin_iou`` averages the queries whose category has another instance, where only
  the colour tells them apart.

- Present objects found: the share of those category queries (both phrasings) whose answer found
  anything (``QueryResult.found``); a query not found scores IoU 0.
- Absent objects: every thing category of the interface's vocabulary that the scene lacks ("the mug"
  on a table without one) and the ``OUT_OF_VOCABULARY`` phrases ("the laptop"), each answered by
  ``Field.query``; ``not_found_share`` is the share answered "not found".
- 3D instance AP (ScanNet's AP25 / AP50) of the method's instances (``Field.segments``), on GT points:
  each GT point takes the instance of its nearest method point (as IoU above), a GT thing instance is
  a mask over GT points, and so is a predicted instance (those without GT points, on floor or wall,
  are left out). Scores: the instance's class probability, a softmax (temperature 10) of its mean
  embedding's cosines with the interface's vocabulary; its class is the argmax. Class-agnostic AP
  matches every prediction to every thing; per-category AP matches predictions of a class to things
  of that class, averaged over the categories present. Computed by pycocotools' COCOeval on a
  one-row "image" of GT points; the table is a crowd (ignore) region, so a prediction on it is
  neither a hit nor a false alarm.

Fusion baseline (no field): every training frame's stored 2D embeddings are back-projected with the
frame's depth (the scene's own: exact, or a sensor's with ``make-scene --sensor rgbd``; a scene without
depth, ``--sensor rgb`` or a phone capture, uses the field's geometry instead: its exported points
z-buffered into each frame, so the baseline fuses the 2D embeddings onto the geometry the field found)
and fused into a voxel map (``find3d.mapping.fusion``: unit embeddings
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
from find3d.query.field import ACCEPTANCE

#: how a user might ask for each category besides "the <category>" (synonyms, not the training words)
PHRASINGS: dict[str, str] = {
    "mug": "the cup", "duck": "the rubber duck", "teddy bear": "the stuffed bear", "soccer ball": "the football",
    "lego brick": "the lego", "wooden block": "the wooden piece", "domino": "the domino tile", "cube": "the block",
    "ball": "the small sphere", "tray": "the box tray", "robot": "the little robot", "robot arm": "the robotic arm",
    "toy car": "the race car", "bunny": "the rabbit", "ring": "the torus", "stone": "the rock",
    "table": "the tabletop",
}
#: things no make-scene table holds and the interface never learnt, asked as absent objects (none of them is
#: in the calibration of ``find3d.query.field.SAME_CLASS_COSINE``: bench/calibrate_absent.py)
OUT_OF_VOCABULARY = ("the laptop", "a screwdriver", "the coffee machine", "a pair of scissors", "the smartphone",
                     "a banana", "the houseplant", "the wine glass")
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
def iou_per_category(chosen: np.ndarray, scene: Scene, ids: list[int], match: np.ndarray) -> float:
    """3D IoU on GT points of the selection ``chosen`` (bool per method point) transferred by ``match``
    (nearest method point, -1: none)."""
    selected = np.zeros(len(scene.gt_xyz), bool)
    matched = match >= 0
    selected[matched] = chosen[match[matched]]
    truth = np.isin(scene.gt_object, ids)
    union = np.logical_or(selected, truth).sum()
    return float(np.logical_and(selected, truth).sum() / union) if union else 0.0


def nearest_match(points: np.ndarray, targets: np.ndarray, distance: float) -> np.ndarray:
    """For each target, the index of its nearest point within ``distance``, else -1."""
    from scipy.spatial import cKDTree

    found, index = cKDTree(points).query(targets, distance_upper_bound=distance)
    return np.where(np.isfinite(found), index, -1).astype(np.int64)


def localised(field: Any, relevancy: np.ndarray, frame_index: int, mask: np.ndarray) -> bool:
    """LERF: does the most relevant visible point of the frame land on ``mask``?

    Among equally relevant points (a whole-object answer scores all of a segment's points alike) the
    one nearest their centroid stands for them: the middle of what the view sees of the object, not
    whichever point the export happened to write first, which lay on the table's rim as often as not."""
    from find3d.query.render import project_points

    indices, offsets = field.visibility()
    visible = indices[offsets[frame_index]:offsets[frame_index + 1]]
    if len(visible) == 0:
        return False
    scores = relevancy[visible]
    tied = visible[scores == scores.max()]
    points = np.asarray(field.points[tied], dtype=np.float64)
    best = tied[np.argmin(np.linalg.norm(points - points.mean(axis=0), axis=1))]
    hit = field.frame(frame_index)
    uv, _ = project_points(field.points[best:best + 1], hit.c2w, hit.fx, hit.fy, hit.cx, hit.cy)
    col, row = int(uv[0, 0]), int(uv[0, 1])
    return bool(mask[min(max(row, 0), mask.shape[0] - 1), min(max(col, 0), mask.shape[1] - 1)])


def evaluate(field: Any, scene: Scene, embeddings: dict[str, Any], threshold: float, match_distance: float,
             retrieval: dict[str, list[np.ndarray]] | None = None, objects: bool = True,
             acceptance: float = ACCEPTANCE) -> dict[str, Any]:
    """Every metric of the module docstring for one method.

    ``embeddings``: category -> (query, negatives), or a list of them (one per phrasing);
    ``retrieval``: category -> one retrieval-space vector per phrasing (frame ranking by retrieval);
    ``objects``: ``Field.query``'s (whole segments, default) or per-point selection.
    """
    frame_index = {entry["file_path"]: i for i, entry in enumerate(field.frames)}
    visible = {path: _visible_ids(scene.instances(path)) for path in frame_index}
    heldout = [p for p in scene.transforms.get("val_filenames", []) if p in frame_index]
    match = nearest_match(field.points, scene.gt_xyz, match_distance)
    per_category: dict[str, dict[str, Any]] = {}
    for category, ids in scene.categories().items():
        phrasings = embeddings[category]
        phrasings = [phrasings] if isinstance(phrasings, tuple) else list(phrasings)
        vectors = (retrieval or {}).get(category) or [None] * len(phrasings)
        rows = [_one_query(field, scene, query, negatives, vector, ids, threshold, match, frame_index, visible,
                           heldout, objects, acceptance) for (query, negatives), vector in zip(phrasings, vectors)]
        per_category[category] = {
            "iou": float(np.mean([r["iou"] for r in rows])),
            "iou_per_phrasing": [r["iou"] for r in rows],
            "selected_ratio": float(max(r["selected_ratio"] for r in rows)),
            "localisation": {"correct": sum(r["correct"] for r in rows), "views": sum(r["views"] for r in rows)},
            "found": [r["found"] for r in rows],
            **{f"{key}": float(np.mean([r[key] for r in rows])) for key in rows[0] if key.startswith("frame_")},
        }
    return {"per_category": per_category, **_summary(per_category)}


RANKINGS = ("visibility", "retrieval", "combined")
RRF_K = 2.0  # reciprocal-rank fusion constant: small, so a frame near the top of either list counts


def _one_query(field: Any, scene: Scene, query: np.ndarray, negatives: np.ndarray | None,
               vector: np.ndarray | None, ids: list[int], threshold: float, match: np.ndarray,
               frame_index: dict[str, int], visible: dict[str, set[int]], heldout: list[str],
               objects: bool, acceptance: float) -> dict[str, Any]:
    result = field.query(query, negatives, threshold, top_k_frames=0, objects=objects, acceptance=acceptance)
    relevancy, order = result.relevancy, result.indices
    count = len(field.frames)
    rankings = {"visibility": [hit.index for hit in field.rank_frames(relevancy, order, top_k=count)]}
    if vector is not None:
        rankings["retrieval"] = [hit.index for hit in field.localize(vector, top_k=count)]
        fused = np.zeros(count)
        for ranked in (rankings["visibility"], rankings["retrieval"]):
            fused[ranked] += 1.0 / (RRF_K + np.arange(1, count + 1))
        rankings["combined"] = np.argsort(-fused, kind="stable").tolist()
    paths = [entry["file_path"] for entry in field.frames]
    chosen = np.zeros(len(field.points), bool)
    chosen[order] = True
    row: dict[str, Any] = {"iou": iou_per_category(chosen, scene, ids, match), "found": result.found}
    # How many GT points the selection stands on, per GT point of the category (2: twice the object).
    row["selected_ratio"] = int(chosen[match[match >= 0]].sum()) / max(int(np.isin(scene.gt_object, ids).sum()), 1)
    for name, ranked in rankings.items():
        seen = [bool(visible[paths[i]] & set(ids)) for i in ranked[:5]]
        prefix = "frame" if name == "visibility" else f"frame_{name}"
        row[f"{prefix}_top1"], row[f"{prefix}_top5"] = float(seen[0]) if seen else 0.0, float(any(seen))
    views = [p for p in heldout if visible[p] & set(ids)]
    hits = [localised(field, relevancy, frame_index[p], np.isin(scene.instances(p), ids)) for p in views]
    row.update(correct=int(sum(hits)), views=len(views))
    return row


def _visible_ids(instances: np.ndarray) -> set[int]:
    ids, counts = np.unique(instances, return_counts=True)
    return {int(i) for i, c in zip(ids, counts) if i > 0 and c >= MIN_VISIBLE * instances.size}


def _summary(per_category: dict[str, dict[str, Any]]) -> dict[str, float]:
    rows = list(per_category.values())
    correct = sum(r["localisation"]["correct"] for r in rows)
    views = sum(r["localisation"]["views"] for r in rows)
    found = [f for r in rows for f in r["found"]]
    summary = {"miou": float(np.mean([r["iou"] for r in rows])) if rows else 0.0,
               "min_iou": float(min(r["iou"] for r in rows)) if rows else 0.0,
               "localisation_accuracy": correct / views if views else 0.0,
               "present_found_share": float(np.mean(found)) if found else 0.0,
               "max_selected_ratio": float(max(r["selected_ratio"] for r in rows)) if rows else 0.0}
    # Per wording (0: "the <category>", the class's own name; 1: PHRASINGS' other one): how much of the mIoU the
    # interface loses to words it was not trained on, apart from what it loses to the scene.
    wordings = min((len(r["iou_per_phrasing"]) for r in rows), default=0)
    summary["miou_per_wording"] = [float(np.mean([r["iou_per_phrasing"][k] for r in rows])) for k in range(wordings)]
    for key in (rows[0] if rows else {"frame_top1": 0, "frame_top5": 0}):
        if key.startswith("frame_"):
            summary[key] = float(np.mean([r[key] for r in rows])) if rows else 0.0
    return summary


# ------------------------------------------------------------------------------------ instances
AP_THRESHOLDS = (0.25, 0.5)
INSTANCE_METRICS = ("ap25_agnostic", "ap50_agnostic", "ap25_mean_category", "ap50_mean_category")
AGNOSTIC = 1  # the one category of class-agnostic AP


def instance_ap(field: Any, scene: Scene, interface: Any, match: np.ndarray) -> dict[str, Any]:
    """3D instance AP at IoU 0.25 / 0.5 on GT points (module docstring): class-agnostic and per category."""
    from find3d.evaluation.instance import InstanceEvaluator

    labels = field.segments
    predicted = np.where(match >= 0, labels[np.maximum(match, 0)], -1)  # each GT point's predicted instance
    present = np.unique(predicted[predicted >= 0])
    masks = (predicted[None, None, :] == present[:, None, None])  # (P, 1, n): pixels = GT points
    vectors = field.segment_vectors()[present]
    cosines = vectors @ interface.vocabulary_vectors().T
    probabilities = np.exp(10.0 * (cosines - cosines.max(axis=1, keepdims=True)))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    names = interface.class_names
    classes, scores = probabilities.argmax(axis=1), probabilities.max(axis=1)
    things = {i: o for i, o in scene.objects.items() if o.get("isthing") and np.any(scene.gt_object == i)}
    truth = np.stack([(scene.gt_object == i)[None] for i in things]) if things else np.zeros((0, 1, len(match)), bool)
    # the table is a crowd region: predictions on it are neither hits nor false alarms (ScanNet's ignore)
    table = [i for i, o in scene.objects.items() if o["category"] == "table" and np.any(scene.gt_object == i)]
    crowd = np.stack([(scene.gt_object == i)[None] for i in table]) if table else np.zeros((0, 1, len(match)), bool)
    category_ids = {name: k + 1 for k, name in enumerate(names)}
    agnostic = InstanceEvaluator([AGNOSTIC], AP_THRESHOLDS)
    agnostic.update(np.concatenate([truth, crowd]), [AGNOSTIC] * (len(truth) + len(crowd)), masks, scores,
                    [AGNOSTIC] * len(masks), [False] * len(truth) + [True] * len(crowd))
    per_category = InstanceEvaluator(sorted(category_ids.values()), AP_THRESHOLDS)
    gt_categories = [category_ids[o["category"]] for o in things.values()]
    crowd_categories = sorted(set(gt_categories))  # the table is ignored in every evaluated category
    per_category.update(np.concatenate([truth, *[crowd] * len(crowd_categories)]) if len(crowd) else truth,
                        gt_categories + [c for c in crowd_categories for _ in crowd],
                        masks, scores, [category_ids[names[c]] for c in classes],
                        [False] * len(truth) + [True] * (len(crowd) * len(crowd_categories)))
    ids_to_name = {v: k for k, v in category_ids.items()}
    out: dict[str, Any] = {"instances": len(present), "gt_instances": len(things)}
    by_category = per_category.at_thresholds()
    for threshold, agnostic_ap in agnostic.at_thresholds().items():
        per = by_category[threshold]
        key = f"ap{round(threshold * 100)}"
        out[f"{key}_agnostic"] = agnostic_ap["mean"] / 100
        out[f"{key}_per_category"] = {ids_to_name[c]: v / 100 for c, v in per["per_category"].items()}
        out[f"{key}_mean_category"] = per["mean"] / 100
    return out


def absent_queries(scene: Scene, interface: Any) -> list[str]:
    """Queries for what the scene does not hold: every catalogue thing category it lacks, and
    ``OUT_OF_VOCABULARY`` phrases."""
    present = {o["category"] for o in scene.objects.values()}
    missing = [name for name, thing in zip(interface.class_names, interface.isthing) if thing and name not in present]
    return [f"the {name}" for name in missing] + list(OUT_OF_VOCABULARY)


def evaluate_absent(field: Any, interface: Any, queries: list[str], threshold: float,
                    acceptance: float = ACCEPTANCE) -> dict[str, Any]:
    """Share of absent-object queries answered "not found" (``Field.query``'s whole-object answer)."""
    rows = []
    for text in queries:
        result = field.query(text, interface=interface, threshold=threshold, top_k_frames=0, acceptance=acceptance)
        rows.append({"query": text, "found": result.found,
                     "closest": None if result.closest is None else
                     {"name": result.closest.name, "score": result.closest.score}})
    rejected = [not r["found"] for r in rows]
    return {"queries": rows, "not_found_share": float(np.mean(rejected)) if rows else None}


# ------------------------------------------------------------------------------------ interleaved
def interleaved_queries(scene: Scene) -> list[dict[str, Any]]:
    """Relation queries with one right answer (module docstring): target instance, anchor, text, view."""
    things = {i: o for i, o in scene.objects.items() if o.get("isthing") and np.any(scene.gt_object == i)}
    centre = {i: scene.gt_xyz[scene.gt_object == i].mean(axis=0) for i in things}
    names = [o["category"] for o in things.values()]
    heldout = scene.transforms.get("val_filenames", [])
    out = []
    for target, entry in things.items():
        twins = [i for i, o in things.items() if o["category"] == entry["category"] and i != target]
        anchors = [i for i, o in things.items() if o["category"] != entry["category"]
                   and names.count(o["category"]) == 1]
        if not twins or not anchors:
            continue
        anchor = min(anchors, key=lambda i: np.linalg.norm(centre[i] - centre[target]))
        near = np.linalg.norm(centre[anchor] - centre[target])
        if near > 0.8 * min(np.linalg.norm(centre[anchor] - centre[t]) for t in twins):
            continue  # ambiguous: a twin is about as close to the anchor
        areas = [(int((scene.instances(p) == anchor).sum()), p) for p in heldout]
        area, view = max(areas) if areas else (0, None)
        category, other = entry["category"], things[anchor]["category"]
        out.append({"target": target, "category": category, "anchor": anchor, "anchor_category": other,
                    "text": f"the {category} next to the {other}"})
        if area > 0:
            out.append({"target": target, "category": category, "anchor": anchor, "anchor_category": other,
                        "text": f"the {category} next to <image:0>", "view": view})
    return out + _on_queries(things, names)


def _on_queries(things: dict[int, dict[str, Any]], names: list[str]) -> list[dict[str, Any]]:
    """"the ball on the tray" for every thing resting on another (``make-scene --clutter``'s contacts) whose
    support is the only one of its category, so the anchor is unambiguous."""
    out = []
    for target, entry in things.items():
        contact = entry.get("contact") or {}
        support = things.get(int(contact.get("partner", 0)))
        if contact.get("kind") != "on" or support is None or names.count(support["category"]) != 1:
            continue
        out.append({"target": target, "category": entry["category"], "anchor": int(contact["partner"]),
                    "anchor_category": support["category"],
                    "text": f"the {entry['category']} on the {support['category']}"})
    return out


def attribute_queries(scene: Scene) -> list[dict[str, Any]]:
    """"the red mug" for every thing instance whose colour word no other instance of its category shares
    (module docstring): its target is that instance."""
    things = {i: o for i, o in scene.objects.items()
              if o.get("isthing") and o.get("colour") and np.any(scene.gt_object == i)}
    out = []
    for target, entry in things.items():
        others = [o for i, o in things.items() if i != target and o["category"] == entry["category"]]
        if any(o["colour"] == entry["colour"] for o in others):
            continue  # "the white robot" names no single robot
        text = f"the {entry['colour']} {entry['category']}"
        out.append({"target": target, "category": entry["category"], "text": text})
    return out


def evaluate_targets(field: Any, scene: Scene, interface: Any, tasks: list[dict[str, Any]], threshold: float,
                     match_distance: float, objects: bool = True, acceptance: float = ACCEPTANCE) -> dict[str, Any]:
    """IoU of ``answer()``'s target with each task's intended instance (``interleaved_queries``,
    ``attribute_queries``), per query and in the mean; ``twin_iou``: the mean over the queries whose
    category has another instance in the scene (the ones a category answer cannot get right)."""
    from PIL import Image

    from find3d.query.answer import answer

    match = nearest_match(field.points, scene.gt_xyz, match_distance)
    instances = scene.categories()
    rows = []
    for task in tasks:
        images = masks = None
        if "view" in task:
            images = [np.asarray(Image.open(scene.root / task["view"]).convert("RGB"))]
            masks = [scene.instances(task["view"]) == task["anchor"]]
        result = answer(field, interface, task["text"], images=images, masks=masks, threshold=threshold, top_k=0,
                        objects=objects, acceptance=acceptance)
        chosen = np.zeros(len(field.points), bool)
        chosen[result.result.indices] = True
        twins = len(instances[task["category"]]) - 1
        rows.append({"query": task["text"], "target": task["target"], "anchor": task.get("anchor"),
                     "visual": "view" in task, "twins": twins,
                     "iou": iou_per_category(chosen, scene, [task["target"]], match)})
    hard = [r["iou"] for r in rows if r["twins"]]
    return {"queries": rows, "target_iou": float(np.mean([r["iou"] for r in rows])) if rows else None,
            "twin_iou": float(np.mean(hard)) if hard else None}


TARGET_METRICS = (("interleaved", "target_iou", "interleaved target IoU"),
                  ("attributes", "target_iou", "attribute ('the red mug') target IoU"),
                  ("attributes", "twin_iou", "attribute target IoU, category with another instance"))


def target_summaries(report: dict[str, Any]) -> list[tuple[str, float | None, int]]:
    """``(label, mean IoU or None, queries)`` of one method's ``evaluate_targets`` reports (``TARGET_METRICS``)."""
    out = []
    for key, stat, label in TARGET_METRICS:
        queries = report.get(key, {}).get("queries", [])
        count = sum(1 for q in queries if stat == "target_iou" or q["twins"])
        out.append((label, report.get(key, {}).get(stat), count))
    return out


# --------------------------------------------------------------------------------- fusion baseline
def fusion_baseline(scene: Scene, field: Any, out: Path, voxel: float | None = None) -> Any:
    """Fuse the stored 2D embeddings of the training frames with their depth (or, without, the field's
    geometry) into a voxel map (module doc)."""
    from find3d.field.embeddings import STORE_DIRNAME, EmbeddingStore
    from find3d.field.export import write_export
    from find3d.mapping.fusion import DEFAULT_VOXEL, VoxelMap
    from find3d.query.field import Field

    store = EmbeddingStore.open(scene.root / STORE_DIRNAME)
    fused = VoxelMap(store.meta.dim, DEFAULT_VOXEL if voxel is None else voxel)
    for path in scene.transforms.get("train_filenames", []):
        fused.integrate(frame_samples(scene, store, path, field))
    if len(fused) == 0:
        raise DataError(f"{scene.root}: no training view has depth; regenerate the scene.")
    write_export(out, fused.points(), fused.colors(), fused.features(), np.asarray(store.image_vectors),
                 field.frames, code_dim=0, segments=fused.segments(),
                 extra={"scene": str(scene.root.resolve()), "checkpoint": store.meta.checkpoint,
                        "voxel": fused.voxel,
                        "method": "fusion baseline: stored 2D embeddings fused with the frames' depth, or "
                                  "the field's geometry where they have none (find3d.mapping)"})
    return Field.load(out)


def frame_samples(scene: Scene, store: Any, path: str, field: Any | None = None) -> Any:
    """One training frame's embedding cells back-projected with its depth (``find3d.mapping.fusion``), or
    with ``field``'s geometry where the frame has no depth map."""
    from PIL import Image

    from find3d.fileio import load_image
    from find3d.ingest.camera import Intrinsics
    from find3d.mapping.fusion import cell_samples

    frame = scene.frame(path)
    camera = Intrinsics.from_transforms({**scene.transforms, **frame})  # per-frame intrinsics win
    index = store.index_of(path)
    features = store.frame_features(index)
    if "depth_file_path" in frame:
        depth = np.asarray(Image.open(scene.root / frame["depth_file_path"])).astype(np.float64) / 1000.0
    elif field is not None:
        depth = geometry_depth(field, path, (camera.height, camera.width), features.shape[:2])
    else:
        raise DataError(f"{scene.root}: frame {path} has no depth map and no field gives it geometry; pass the "
                        "field exported from this scene.")
    return cell_samples(features, depth, camera, np.asarray(frame["transform_matrix"]), load_image(scene.root / path),
                        segments=store.frame_segments(index))


def geometry_depth(field: Any, path: str, shape: tuple[int, int], cells: tuple[int, int]) -> np.ndarray:
    """(H, W) z-depth of ``field``'s points seen from frame ``path``: the nearest point in each of the
    (h, w) ``cells`` (an embedding map's grid), 0 where no point falls."""
    from find3d.query.render import project_points

    index = next(i for i, entry in enumerate(field.frames) if entry["file_path"] == path)
    hit = field.frame(index)
    uv, z = project_points(field.points, hit.c2w, hit.fx, hit.fy, hit.cx, hit.cy)
    row = np.floor(uv[:, 1] * cells[0] / shape[0]).astype(np.int64)
    col = np.floor(uv[:, 0] * cells[1] / shape[1]).astype(np.int64)
    inside = (z > 0) & (row >= 0) & (row < cells[0]) & (col >= 0) & (col < cells[1])
    zbuffer = np.full(cells[0] * cells[1], np.inf)
    np.minimum.at(zbuffer, row[inside] * cells[1] + col[inside], z[inside])
    zbuffer = np.where(np.isfinite(zbuffer), zbuffer, 0.0).reshape(cells)
    return zbuffer[np.arange(shape[0]) * cells[0] // shape[0]][:, np.arange(shape[1]) * cells[1] // shape[1]]


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
    parser.add_argument("--acceptance", type=float, default=ACCEPTANCE,
                        help=f"least relevancy of a query's best instance for it to count as found (default "
                             f"{ACCEPTANCE}, calibrated: bench/results/absent.md)")
    parser.add_argument("--points", action="store_true",
                        help="select single points at relevancy >= --threshold instead of whole 3D instances")
    parser.add_argument("--canonical-negatives", action="store_true",
                        help="score against LERF's 'object, things, stuff, texture' instead of the vocabulary")


def query_embeddings(interface: Any, scene: Scene, canonical: bool = False
                     ) -> tuple[dict[str, list[tuple[np.ndarray, np.ndarray | None]]], dict[str, list[np.ndarray]]]:
    """Per category, (query, negatives) and a retrieval vector for each of its phrasings."""
    from find3d.query.field import CANONICAL_NEGATIVES, encode, encode_negatives

    embeddings, retrieval = {}, {}
    for category in scene.categories():
        texts = [f"the {category}"] + ([PHRASINGS[category]] if category in PHRASINGS else [])
        pairs = []
        for text in texts:
            vector = encode(interface, text)
            negatives = encode_negatives(interface, list(CANONICAL_NEGATIVES) if canonical else None,
                                         query_vector=vector)
            pairs.append((vector, negatives))
        embeddings[category] = pairs
        retrieval[category] = [interface.encode_retrieval(text).numpy() for text in texts]
    return embeddings, retrieval


def run(args: argparse.Namespace) -> int:
    from find3d.query.field import Field
    from find3d.query.run_query import load_interface

    if args.match_distance <= 0 or not 0.0 <= args.threshold <= 1.0 or not 0.0 <= args.acceptance <= 1.0:
        raise InputError("need --match-distance > 0, 0 <= --threshold <= 1 and 0 <= --acceptance <= 1.")
    scene, field = Scene.load(args.scene), Field.load(args.field)
    check_same_scene(field, scene)
    interface = load_interface(field, args.checkpoint)
    embeddings, retrieval = query_embeddings(interface, scene, canonical=args.canonical_negatives)
    out = args.out or args.field
    baseline = fusion_baseline(scene, field, out / "fusion")
    results: dict[str, Any] = {"protocol": __doc__.split("Protocol", 1)[1].strip(), "threshold": args.threshold,
                               "acceptance": args.acceptance,
                               "match_distance": args.match_distance,
                               "selection": "points" if args.points else "objects"}
    # built once for both methods: the interleaved tasks read the held-out views' instance masks
    targets = {"interleaved": interleaved_queries(scene), "attributes": attribute_queries(scene)}
    absent = absent_queries(scene, interface)
    for name, method in (("field", field), ("fusion_baseline", baseline)):
        results[name] = evaluate(method, scene, embeddings, args.threshold, args.match_distance, retrieval,
                                 objects=not args.points, acceptance=args.acceptance)
        results[name]["instances"] = instance_ap(method, scene, interface,
                                                 nearest_match(method.points, scene.gt_xyz, args.match_distance))
        results[name]["absent"] = evaluate_absent(method, interface, absent, args.threshold, args.acceptance)
        for key, tasks in targets.items():
            results[name][key] = evaluate_targets(method, scene, interface, tasks, args.threshold,
                                                  args.match_distance, objects=not args.points,
                                                  acceptance=args.acceptance)
    atomic_write_json(out / "eval_3d.json", results)
    print(format_table(results))
    print(f"-> {out / 'eval_3d.json'}")
    return 0


def check_same_scene(field: Any, scene: Scene) -> None:
    """Refuse a field exported from another scene than ``--scene``, at once (not after a minute of scoring).

    The export's meta.json records its scene's folder. Another existing folder is another scene (two
    make-scene seeds share file names and, on one orbit, poses too, so those cannot tell them apart); a
    recorded folder that is gone (moved, copied elsewhere) is accepted when the field's frames and poses are
    the scene's.
    """
    recorded = field.meta.get("scene")
    if recorded and Path(recorded).resolve() == scene.root.resolve():
        return
    poses = {f["file_path"]: np.asarray(f["transform_matrix"], dtype=np.float64) for f in scene.transforms["frames"]}
    same_frames = all(f["file_path"] in poses and np.allclose(f["c2w"], poses[f["file_path"]], atol=1e-6)
                      for f in field.frames)
    if same_frames and not (recorded and Path(recorded).is_dir()):
        return
    made = f"was exported from scene {recorded} (its meta.json)" if recorded else "records no scene"
    frames = "" if same_frames else ", and its frames and poses are not the scene's"
    fix = f"--scene {recorded}" if recorded else "the scene it was trained on"
    raise InputError(f"--field {field.root} {made}, not --scene {scene.root}{frames}; pass {fix}, or the field "
                     f"exported from {scene.root}.")


def format_table(results: dict[str, Any]) -> str:
    """Markdown table: per-category IoU and the summary metrics of both methods."""
    methods = ("field", "fusion_baseline")
    lines = ["| metric | find-field | fusion baseline |", "|---|---|---|"]
    for category in results["field"]["per_category"]:
        values = [results[m]["per_category"][category]["iou"] for m in methods]
        lines.append(f"| IoU {category} | {values[0]:.3f} | {values[1]:.3f} |")
    keys = ["miou", "min_iou", "localisation_accuracy", "present_found_share"] + [
        k for k in results["field"] if k.startswith("frame_")]
    for key in keys:
        if all(key in results[m] for m in methods):
            lines.append(f"| {key} | {results['field'][key]:.3f} | {results['fusion_baseline'][key]:.3f} |")
    for k, wording in enumerate(("class names", "other wordings")):
        if all(len(results[m].get("miou_per_wording", [])) > k for m in methods):
            values = [results[m]["miou_per_wording"][k] for m in methods]
            lines.append(f"| miou, {wording} only | {values[0]:.3f} | {values[1]:.3f} |")
    for key in INSTANCE_METRICS:
        if all(key in results[m].get("instances", {}) for m in methods):
            values = [results[m]["instances"][key] for m in methods]
            lines.append(f"| instance {key} | {values[0]:.3f} | {values[1]:.3f} |")
    if all(results[m].get("absent", {}).get("not_found_share") is not None for m in methods):
        count = len(results["field"]["absent"]["queries"])
        values = [results[m]["absent"]["not_found_share"] for m in methods]
        lines.append(f"| absent objects answered 'not found' ({count} queries) | {values[0]:.3f} | {values[1]:.3f} |")
    summaries = [target_summaries(results[m]) for m in methods]
    for (label, field_value, count), (_, fusion_value, _) in zip(*summaries):
        if field_value is not None and fusion_value is not None:
            lines.append(f"| {label} ({count} queries) | {field_value:.3f} | {fusion_value:.3f} |")
    return "\n".join(lines)
