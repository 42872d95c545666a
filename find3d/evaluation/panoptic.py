"""Panoptic quality (PQ / SQ / RQ) for all, thing and stuff categories.

Identical to panopticapi's ``pq_compute`` (which detectron2's ``COCOPanopticEvaluator`` calls):

- a prediction matches a ground-truth segment of the same category when their IoU is > 0.5, where
  the union leaves out the predicted pixels that fall on VOID (id 0) ground truth; crowd
  ground-truth segments never match;
- unmatched non-crowd ground-truth segments are false negatives; an unmatched prediction is a false
  positive unless more than half of its area lies on VOID plus the crowd region of its category;
- per category ``PQ = sum(IoU of matches) / (TP + FP/2 + FN/2)``, ``SQ = sum(IoU) / TP`` (0 without
  matches), ``RQ = TP / (TP + FP/2 + FN/2)``; the totals average the categories with
  ``TP + FP + FN > 0`` (all, things only, stuff only). Reported in percent, with detectron2's keys.

Simplified: segments are given as in-memory id maps plus ``SegmentInfo`` lists instead of PNG/JSON
files; areas are counted from the id maps (panopticapi takes ground-truth areas from the JSON,
which equal the pixel counts for COCO), so a segment listed but absent from its map is dropped; and
an empty group (e.g. no stuff category seen) reports NaN where panopticapi would divide by zero.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from find3d.errors import InputError
from find3d.evaluation._checks import as_mask_stack, require_updates, same_shape

VOID = 0
# Pair (gt id, pred id) is packed into one int64 so one np.unique counts every intersection.
_OFFSET = 1 << 24
_MATCH_IOU = 0.5


@dataclass(frozen=True)
class SegmentInfo:
    """One segment of an id map: its id (> 0, the value of its pixels), category and crowd flag."""

    id: int
    category: int
    iscrowd: bool = False


@dataclass
class _CategoryStat:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    iou: float = 0.0


def id_map_from_masks(
    masks: np.ndarray, categories: Sequence[int], iscrowd: Sequence[bool] | None = None
) -> tuple[np.ndarray, list[SegmentInfo]]:
    """Pack non-overlapping ``(N, H, W)`` masks into an id map (ids 1..N, 0 = void) and its segment list."""
    stack = as_mask_stack(masks, "panoptic masks")
    if len(categories) != len(stack):
        raise InputError(f"panoptic masks: {len(stack)} masks but {len(categories)} categories; give one per mask.")
    if (stack.sum(axis=0) > 1).any():
        raise InputError("panoptic masks overlap; a panoptic segmentation assigns each pixel to one segment.")
    crowd = [False] * len(stack) if iscrowd is None else list(iscrowd)
    ids = np.zeros(stack.shape[1:], dtype=np.int64)
    infos = []
    for index, (mask, category, is_crowd) in enumerate(zip(stack, categories, crowd), start=1):
        ids[mask] = index
        infos.append(SegmentInfo(index, int(category), bool(is_crowd)))
    return ids, infos


def _segment_table(ids: np.ndarray, segments: Sequence[SegmentInfo], which: str) -> dict[int, SegmentInfo]:
    if ids.size and (ids.min() < 0 or ids.max() >= _OFFSET):
        raise InputError(f"{which} id map: ids must lie in [0, 2**24) as panoptic PNG ids do.")
    table = {s.id: s for s in segments}
    if VOID in table:
        raise InputError(f"{which} segments: id {VOID} is reserved for void; number segments from 1.")
    unknown = set(np.unique(ids).tolist()) - set(table) - {VOID}
    if unknown:
        raise InputError(f"{which} id map has ids {sorted(unknown)[:5]} without a SegmentInfo; list every segment.")
    return table


class PanopticEvaluator:
    """Streaming PQ: ``update`` once per image, then ``compute``.

    ``isthing`` maps every category of the dataset to whether it is a thing (else stuff).
    """

    def __init__(self, isthing: Mapping[int, bool]) -> None:
        self.isthing = dict(isthing)
        self.stats: dict[int, _CategoryStat] = {c: _CategoryStat() for c in self.isthing}
        self.images = 0

    def update(
        self,
        gt_ids: np.ndarray,
        gt_segments: Sequence[SegmentInfo],
        pred_ids: np.ndarray,
        pred_segments: Sequence[SegmentInfo],
    ) -> None:
        """Add one image: ``(H, W)`` int id maps (0 = void / unlabeled) and the segments they hold."""
        gt_ids, pred_ids = np.asarray(gt_ids, dtype=np.int64), np.asarray(pred_ids, dtype=np.int64)
        same_shape(pred_ids, gt_ids, "panoptic")
        gt_table = _segment_table(gt_ids, gt_segments, "ground-truth")
        pred_table = _segment_table(pred_ids, pred_segments, "predicted")
        for info in (*gt_table.values(), *pred_table.values()):
            if info.category not in self.isthing:
                raise InputError(f"panoptic: category {info.category} is not in the evaluator's category list.")
        pairs, counts = np.unique(gt_ids * _OFFSET + pred_ids, return_counts=True)
        overlap = {(int(p // _OFFSET), int(p % _OFFSET)): int(n) for p, n in zip(pairs, counts)}
        self._accumulate(overlap, gt_table, pred_table)
        self.images += 1

    def _accumulate(
        self, overlap: dict[tuple[int, int], int], gt_table: dict[int, SegmentInfo], pred_table: dict[int, SegmentInfo]
    ) -> None:
        gt_area: dict[int, int] = {}
        pred_area: dict[int, int] = {}
        for (g, p), n in overlap.items():
            gt_area[g] = gt_area.get(g, 0) + n
            pred_area[p] = pred_area.get(p, 0) + n
        gt_matched, pred_matched = set(), set()
        for (g, p), inter in overlap.items():
            if g not in gt_table or p not in pred_table:
                continue
            gt, pred = gt_table[g], pred_table[p]
            if gt.iscrowd or gt.category != pred.category:
                continue
            union = pred_area[p] + gt_area[g] - inter - overlap.get((VOID, p), 0)
            iou = inter / union
            # IoU > 0.5 makes the match unique, so no assignment step is needed.
            if iou > _MATCH_IOU:
                stat = self.stats[gt.category]
                stat.tp += 1
                stat.iou += iou
                gt_matched.add(g)
                pred_matched.add(p)
        crowd_of_category: dict[int, int] = {}
        for g, gt in gt_table.items():
            if g in gt_matched or g not in gt_area:
                continue
            if gt.iscrowd:
                crowd_of_category[gt.category] = g
                continue
            self.stats[gt.category].fn += 1
        for p, pred in pred_table.items():
            if p in pred_matched or p not in pred_area:
                continue
            ignored = overlap.get((VOID, p), 0)
            if pred.category in crowd_of_category:
                ignored += overlap.get((crowd_of_category[pred.category], p), 0)
            if ignored / pred_area[p] > _MATCH_IOU:
                continue
            self.stats[pred.category].fp += 1

    def per_category(self) -> dict[int, dict[str, float]]:
        """PQ / SQ / RQ (percent) of each category that has any TP, FP or FN."""
        out = {}
        for category, s in self.stats.items():
            if s.tp + s.fp + s.fn == 0:
                continue
            denominator = s.tp + 0.5 * s.fp + 0.5 * s.fn
            out[category] = {
                "PQ": 100.0 * s.iou / denominator,
                "SQ": 100.0 * s.iou / s.tp if s.tp else 0.0,
                "RQ": 100.0 * s.tp / denominator,
            }
        return out

    def compute(self) -> dict[str, float]:
        """``PQ, SQ, RQ`` plus ``_th`` (things) and ``_st`` (stuff) variants, in percent."""
        require_updates(self.images, "PanopticEvaluator")
        per_category = self.per_category()
        results: dict[str, float] = {}
        groups = {"": (True, False), "_th": (True,), "_st": (False,)}  # suffix -> accepted isthing values
        for suffix, accepted in groups.items():
            chosen = [v for c, v in per_category.items() if self.isthing[c] in accepted]
            for metric in ("PQ", "SQ", "RQ"):
                results[metric + suffix] = float(np.mean([v[metric] for v in chosen])) if chosen else float("nan")
        return results
