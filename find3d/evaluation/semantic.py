"""Semantic segmentation mIoU, as detectron2's ``SemSegEvaluator`` defines it.

A ``num_classes x num_classes`` confusion matrix (GT rows, prediction columns) is accumulated over
pixels whose GT is not ``ignore_label``. Per class ``IoU = TP / (TP + FP + FN)``; mIoU averages the
classes present in the GT or the prediction (a class only predicted scores 0; a class absent from
both is excluded). fwIoU weights IoU by GT frequency, pACC is pixel accuracy and mACC averages the
per-class accuracy of the classes present in the GT. All in percent.
"""

from __future__ import annotations

import numpy as np

from find3d.errors import InputError
from find3d.evaluation._checks import require_updates, same_shape


class SemanticEvaluator:
    """Streaming mIoU over ``(H, W)`` integer label maps."""

    def __init__(self, num_classes: int, ignore_label: int = 255) -> None:
        if num_classes < 1:
            raise InputError(f"SemanticEvaluator: num_classes must be >= 1, got {num_classes}.")
        self.num_classes = num_classes
        self.ignore_label = ignore_label
        self.confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
        self.images = 0

    def update(self, gt: np.ndarray, pred: np.ndarray) -> None:
        """Add one image: GT labels (``ignore_label`` allowed) and predicted labels in ``[0, num_classes)``."""
        gt, pred = np.asarray(gt, dtype=np.int64), np.asarray(pred, dtype=np.int64)
        same_shape(pred, gt, "semantic")
        valid = gt != self.ignore_label
        gt, pred = gt[valid], pred[valid]
        for name, labels in (("ground truth", gt), ("prediction", pred)):
            if labels.size and (labels.min() < 0 or labels.max() >= self.num_classes):
                raise InputError(
                    f"semantic {name}: labels must lie in [0, {self.num_classes}) or equal ignore_label "
                    f"{self.ignore_label}; got [{labels.min()}, {labels.max()}]."
                )
        self.confusion += np.bincount(gt * self.num_classes + pred, minlength=self.num_classes**2).reshape(
            self.num_classes, self.num_classes
        )
        self.images += 1

    def per_class_iou(self) -> np.ndarray:
        """IoU per class in percent; NaN for classes absent from both GT and prediction."""
        tp = np.diag(self.confusion).astype(np.float64)
        union = self.confusion.sum(axis=0) + self.confusion.sum(axis=1) - tp
        iou = np.full(self.num_classes, np.nan)
        present = union > 0
        iou[present] = 100.0 * tp[present] / union[present]
        return iou

    def compute(self) -> dict[str, float]:
        """``mIoU, fwIoU, pACC, mACC`` in percent."""
        require_updates(self.images, "SemanticEvaluator")
        gt_count = self.confusion.sum(axis=1).astype(np.float64)
        if gt_count.sum() == 0:
            raise InputError("SemanticEvaluator: every GT pixel was ignore_label; nothing to score.")
        tp = np.diag(self.confusion).astype(np.float64)
        iou = self.per_class_iou()
        in_gt = gt_count > 0
        frequency = gt_count / gt_count.sum()
        return {
            "mIoU": float(np.nanmean(iou)),
            "fwIoU": float(np.sum(frequency[in_gt] * iou[in_gt])),
            "pACC": float(100.0 * tp.sum() / gt_count.sum()),
            "mACC": float(np.mean(100.0 * tp[in_gt] / gt_count[in_gt])),
        }
