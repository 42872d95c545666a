"""Instance-segmentation mask AP computed by pycocotools' own ``COCOeval`` (iouType ``"segm"``).

Ground truth and predictions are collected per image, RLE-encoded with ``pycocotools.mask.encode``
and assembled into in-memory COCO dictionaries, so AP, AP50, AP75 and APs/APm/APl are exactly
COCO's (101-point interpolation, up to 100 detections per image, area ranges by mask area).
Values are in percent as detectron2 reports them; a metric COCO cannot define (e.g. no small
objects) is NaN, where COCOeval writes -1.

``at_thresholds`` gives AP at chosen IoU thresholds, per category and averaged over the categories
with ground truth, from the same accumulated precision (3D instance AP at IoU 0.25 / 0.5, as ScanNet's
benchmark reports it, is ``InstanceEvaluator(categories, iou_thresholds=(0.25, 0.5))``, one "image"
per scene whose pixels are the scene's ground-truth points).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from typing import Any

import numpy as np

from find3d.errors import InputError
from find3d.evaluation._checks import as_mask_stack, require_updates

# COCOeval.stats order for iouType "segm".
_STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def _rle(mask: np.ndarray) -> dict[str, Any]:
    from pycocotools import mask as mask_utils

    return mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))


def _check_lengths(n: int, name: str, values: Sequence | np.ndarray) -> np.ndarray:
    array = np.asarray(values)
    if array.shape != (n,):
        raise InputError(f"instance {name}: expected {n} values (one per mask), got shape {array.shape}.")
    return array


class InstanceEvaluator:
    """Streaming COCO mask AP: ``update`` once per image, then ``compute``.

    ``categories`` lists every category id of the dataset (COCOeval averages over those with GT).
    """

    def __init__(self, categories: Sequence[int], iou_thresholds: Sequence[float] | None = None) -> None:
        self.categories = [int(c) for c in categories]
        self.iou_thresholds = None if iou_thresholds is None else np.asarray(iou_thresholds, dtype=np.float64)
        self.images: list[dict[str, Any]] = []
        self.gt_annotations: list[dict[str, Any]] = []
        self.detections: list[dict[str, Any]] = []

    def update(
        self,
        gt_masks: np.ndarray,
        gt_categories: Sequence[int],
        pred_masks: np.ndarray,
        pred_scores: Sequence[float],
        pred_categories: Sequence[int],
        gt_iscrowd: Sequence[bool] | None = None,
    ) -> None:
        """Add one image: ``(N, H, W)`` GT masks with categories, ``(M, H, W)`` predictions with scores."""
        gt = as_mask_stack(gt_masks, "instance ground truth")
        pred = as_mask_stack(pred_masks, "instance predictions") if len(pred_masks) else np.zeros((0, *gt.shape[1:]))
        if pred.shape[1:] != gt.shape[1:]:
            raise InputError(f"instance: predicted masks {pred.shape[1:]} differ from GT {gt.shape[1:]}; resize first.")
        gt_cats = _check_lengths(len(gt), "gt_categories", gt_categories)
        crowd = _check_lengths(len(gt), "gt_iscrowd", [False] * len(gt) if gt_iscrowd is None else gt_iscrowd)
        scores = _check_lengths(len(pred), "pred_scores", pred_scores)
        pred_cats = _check_lengths(len(pred), "pred_categories", pred_categories)
        unknown = set(gt_cats.tolist()) | set(pred_cats.tolist())
        unknown -= set(self.categories)
        if unknown:
            raise InputError(f"instance: categories {sorted(unknown)} are not in the evaluator's category list.")
        image_id = len(self.images) + 1
        self.images.append({"id": image_id, "height": gt.shape[1], "width": gt.shape[2]})
        for mask, category, is_crowd in zip(gt, gt_cats, crowd):
            self.gt_annotations.append(
                {
                    "id": len(self.gt_annotations) + 1,  # COCO treats id 0 as "no match"
                    "image_id": image_id,
                    "category_id": int(category),
                    "segmentation": _rle(mask),
                    "area": float(mask.sum()),
                    "iscrowd": int(bool(is_crowd)),
                }
            )
        for mask, score, category in zip(pred, scores, pred_cats):
            self.detections.append(
                {
                    "image_id": image_id,
                    "category_id": int(category),
                    "segmentation": _rle(mask),
                    "score": float(score),
                }
            )

    def _coco_eval(self) -> Any:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        coco_gt = COCO()
        coco_gt.dataset = {
            "images": self.images,
            "annotations": self.gt_annotations,
            "categories": [{"id": c, "name": str(c)} for c in self.categories],
        }
        # COCOeval prints its progress and table; keep stdout for the caller's own report.
        with contextlib.redirect_stdout(io.StringIO()):
            coco_gt.createIndex()
            coco_dt = coco_gt.loadRes(self.detections)
            evaluator = COCOeval(coco_gt, coco_dt, iouType="segm")
            if self.iou_thresholds is not None:
                evaluator.params.iouThrs = self.iou_thresholds
                # a scene is one "image" with every instance in it: ScanNet caps nothing
                evaluator.params.maxDets = [1, 10, max(100, len(self.detections))]
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
        return evaluator

    def compute(self) -> dict[str, float]:
        """``AP, AP50, AP75, APs, APm, APl`` in percent (NaN where COCO reports -1)."""
        require_updates(len(self.images), "InstanceEvaluator")
        if not self.gt_annotations:
            raise InputError("InstanceEvaluator: no ground-truth instance was added; AP is undefined without GT.")
        if not self.detections:
            # loadRes cannot build an empty result set; with GT but no detection every AP is 0.
            return dict.fromkeys(_STAT_NAMES, 0.0)
        stats = self._coco_eval().stats
        return {name: float(100.0 * v) if v >= 0 else float("nan") for name, v in zip(_STAT_NAMES, stats)}

    def at_thresholds(self) -> dict[float, dict[str, Any]]:
        """Per IoU threshold (``iou_thresholds``): ``{"mean": AP, "per_category": {category: AP}}`` in percent,
        over all areas and up to 100 detections; categories without ground truth are left out."""
        if self.iou_thresholds is None:
            raise InputError("InstanceEvaluator: at_thresholds needs iou_thresholds=(...) at construction.")
        require_updates(len(self.images), "InstanceEvaluator")
        with_gt = sorted({a["category_id"] for a in self.gt_annotations if not a["iscrowd"]})
        if not self.detections:
            return {float(t): {"mean": 0.0, "per_category": dict.fromkeys(with_gt, 0.0)} for t in self.iou_thresholds}
        evaluator = self._coco_eval()
        precision = evaluator.eval["precision"]  # (T, R, K, A, M); -1 where a category has no GT
        order = list(evaluator.params.catIds)
        out = {}
        for t, threshold in enumerate(self.iou_thresholds):
            per = {}
            for category in with_gt:
                values = precision[t, :, order.index(category), 0, -1]
                per[category] = float(100.0 * np.mean(np.maximum(values, 0.0)))
            out[float(threshold)] = {"mean": float(np.mean(list(per.values()))) if per else 0.0, "per_category": per}
        return out
