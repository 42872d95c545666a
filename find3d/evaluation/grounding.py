"""Referring / entity / interleave grounding: cIoU, mIoU and precision@IoU.

As X-Decoder's and FIND's ``GroundingEvaluator``: each phrase's predicted mask is compared with its
GT mask; cIoU is cumulative intersection over cumulative union (large objects weigh more), mIoU is
the mean of per-phrase IoUs, precision@t the share of phrases with IoU >= t (the papers' "AP50" is
precision@0.5). A phrase whose prediction and GT are both empty scores IoU 0, as the reference's
``I / (U + 1e-6)`` does. All in percent. Used for RefCOCOg and FIND-Bench entity, paragraph and
interleave grounding.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from find3d.evaluation._checks import as_mask_stack, require_updates, same_shape

DEFAULT_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)


class GroundingEvaluator:
    """Streaming grounding metrics over boolean masks, one pair per phrase."""

    def __init__(self, thresholds: Sequence[float] = DEFAULT_THRESHOLDS) -> None:
        self.thresholds = tuple(thresholds)
        self.cum_intersection = 0
        self.cum_union = 0
        self.ious: list[float] = []

    def update(self, pred_masks: np.ndarray, gt_masks: np.ndarray) -> None:
        """Add phrases: ``(N, H, W)`` boolean predictions and GT (one ``(H, W)`` pair also accepted)."""
        pred = as_mask_stack(pred_masks, "grounding predictions")
        gt = as_mask_stack(gt_masks, "grounding ground truth")
        same_shape(pred, gt, "grounding")
        intersection = (pred & gt).reshape(len(gt), -1).sum(axis=1)
        union = (pred | gt).reshape(len(gt), -1).sum(axis=1)
        self.cum_intersection += int(intersection.sum())
        self.cum_union += int(union.sum())
        self.ious.extend(np.where(union > 0, intersection / np.maximum(union, 1), 0.0).tolist())

    def compute(self) -> dict[str, float]:
        """``cIoU, mIoU`` and ``precision@t`` for each threshold, in percent."""
        require_updates(len(self.ious), "GroundingEvaluator")
        ious = np.asarray(self.ious)
        results = {f"precision@{t}": float(100.0 * np.mean(ious >= t)) for t in self.thresholds}
        results["cIoU"] = 100.0 * self.cum_intersection / self.cum_union if self.cum_union else 0.0
        results["mIoU"] = float(100.0 * ious.mean())
        return results
