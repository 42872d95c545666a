"""Multi-task losses of the FIND interface, with weights from ``InterfaceConfig``.

* generic: Hungarian-matched class cross-entropy (no-object down-weighted) + point-sampled mask
  BCE + dice (Mask2Former);
* grounding, interactive, interleave grounding: every query has its own target (phrase, prompt,
  entity), so BCE + dice directly, scaled by the task multiplier (0.4 by default); plus a
  class-like cross-entropy of each mask query's embedding against the embeddings of all items of
  its image (phrases, prompts, or the entities of its entry: their prompt tokens averaged; items
  naming the same object are no negatives of each other), which
  puts regions and their descriptions in one space and makes each query tell its item from the
  others (the reference's "softmax CE over matched queries"; weight: class weight x task multiplier);
* retrieval, interleave retrieval: symmetric InfoNCE between image-query and caption / entry-query
  embeddings of the batch, with the interface's learnable logit scale.

Every layer's auxiliary outputs get the same losses (deep supervision); matching is redone per layer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from find3d.interface.collate import FindBatch
from find3d.interface.config import InterfaceConfig
from find3d.interface.matcher import hungarian_match, point_sample


def _uncertain_points(logits: torch.Tensor, num_points: int, oversample: float, importance: float) -> torch.Tensor:
    """``(N, P, 2)`` points: mostly where ``logits (N, h, w)`` is least certain, the rest uniform."""
    count = len(logits)
    candidates = torch.rand(count, int(num_points * oversample), 2, device=logits.device)
    uncertainty = -point_sample(logits.detach(), candidates).abs()
    chosen = int(importance * num_points)
    top = uncertainty.topk(chosen, dim=1).indices
    picked = torch.gather(candidates, 1, top[..., None].expand(-1, -1, 2))
    uniform = torch.rand(count, num_points - chosen, 2, device=logits.device)
    return torch.cat([picked, uniform], dim=1)


def sigmoid_dice(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-mask dice loss of ``(N, P)`` logits against ``(N, P)`` binary targets -> ``(N,)``."""
    probs = logits.sigmoid()
    return 1 - (2 * (probs * targets).sum(-1) + 1) / (probs.sum(-1) + targets.sum(-1) + 1)


class FindCriterion(nn.Module):
    """``criterion(outputs, batch)`` -> dict of weighted loss terms plus their sum under ``"loss"``."""

    def __init__(self, config: InterfaceConfig) -> None:
        super().__init__()
        self.config = config
        self.task_weights = {"grounding": config.grounding_weight, "interactive": config.spatial_weight,
                             "interleave_grounding": config.interleave_weight}
        self.contrastive = {"retrieval": ("q.caption", config.retrieval_weight),
                            "interleave_retrieval": ("q.interleave", config.interleave_contrastive_weight)}

    def forward(self, outputs: Mapping[str, Mapping[str, Any]], batch: FindBatch) -> dict[str, torch.Tensor]:
        losses: dict[str, torch.Tensor] = {}
        for task, out in outputs.items():
            layers = [out, *out.get("aux", [])]
            targets = self._targets(task, out["valid"], batch)
            for depth, layer in enumerate(layers):
                suffix = "" if depth == 0 else f".aux{depth - 1}"
                for name, value in self._task(task, layer, out["valid"], out["scale"], batch, targets).items():
                    losses[f"{task}.{name}{suffix}"] = value
        if not losses:
            raise ValueError("no task in the outputs had ground truth; check the batch's annotations")
        losses["loss"] = torch.stack(list(losses.values())).sum()
        return losses

    def _targets(self, task: str, valid: torch.Tensor, batch: FindBatch) -> Any:
        """The task's ground-truth masks as float, once: every layer point-samples them, and converting
        full-resolution masks per layer cost more than the mask losses themselves."""
        if task == "generic":
            return [None if target is None else target.masks.float() for target in batch.panoptic]
        if task in self.contrastive:
            return None
        masks = {"grounding": batch.phrase_masks, "interactive": batch.spatial_targets,
                 "interleave_grounding": batch.entity_targets}[task]
        return masks[valid].float()

    def _task(self, task: str, out: Mapping[str, Any], valid: torch.Tensor, scale: torch.Tensor,
              batch: FindBatch, targets: Any) -> dict[str, torch.Tensor]:
        """Loss terms of one layer's outputs; ``targets``: from ``_targets``."""
        if task == "generic":
            return self._generic(out, batch, targets)
        if task in self.contrastive:
            query, weight = self.contrastive[task]
            images = out["semantic"]["q.image"][:, 0]
            texts = out["semantic"][query][:, 0]
            if int(valid.sum()) < 2:  # a contrastive loss needs at least one negative
                return {}
            return {"contrastive": weight * _info_nce(images[valid], texts[valid], scale)}
        bce, dice = self._mask_losses(out["masks"][valid], targets)
        weight = self.task_weights[task]
        losses = {"mask": weight * self.config.mask_weight * bce, "dice": weight * self.config.dice_weight * dice}
        pixel, item = TASK_PAIRS[task]
        if item in out["semantic"]:  # the entities' token embeddings exist only in training
            groups, objects = {"grounding": (None, batch.phrase_object), "interactive": (None, None),
                               "interleave_grounding": (batch.entity_entry, batch.entity_object)}[task]
            ce = _item_matching(out["semantic"][pixel], out["semantic"][item], valid, scale, groups, objects)
            losses["match"] = weight * self.config.class_weight * ce
        return losses

    def _mask_losses(self, logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Point-sampled BCE and dice, averaged over masks: ``logits (N, h, w)`` vs float ``targets (N, H, W)``."""
        if not len(logits):
            zero = logits.sum() * 0.0
            return zero, zero
        cfg = self.config
        points = _uncertain_points(logits, cfg.num_points, cfg.oversample_ratio, cfg.importance_ratio)
        pred = point_sample(logits, points)
        true = point_sample(targets, points)
        bce = F.binary_cross_entropy_with_logits(pred, true, reduction="none").mean(-1)
        return bce.mean(), sigmoid_dice(pred, true).mean()

    def _generic(self, out: Mapping[str, Any], batch: FindBatch, masks_of: list[torch.Tensor | None]
                 ) -> dict[str, torch.Tensor]:
        cfg = self.config
        logits, masks = out["logits"], out["masks"]
        no_object = logits.shape[-1] - 1
        class_targets, matched_pred, matched_true, rows = [], [], [], []
        for b, target in enumerate(batch.panoptic):
            if target is None:
                continue
            queries, gts = hungarian_match(logits[b], masks[b], target.labels, masks_of[b], cfg.num_points,
                                           cfg.class_weight, cfg.mask_weight, cfg.dice_weight)
            labels = torch.full((logits.shape[1],), no_object, dtype=torch.long, device=logits.device)
            labels[queries] = target.labels[gts]
            class_targets.append(labels)
            rows.append(b)
            matched_pred.append(masks[b, queries])
            matched_true.append(masks_of[b][gts])
        weights = torch.ones(no_object + 1, device=logits.device)
        weights[no_object] = cfg.no_object_weight
        ce = F.cross_entropy(logits[rows].flatten(0, 1), torch.cat(class_targets), weight=weights)
        bce, dice = self._mask_losses(torch.cat(matched_pred), torch.cat(matched_true))
        return {"class": cfg.class_weight * ce, "mask": cfg.mask_weight * bce, "dice": cfg.dice_weight * dice}


#: (mask query type, item type) whose embeddings are matched per image; "p.interleave" = an entity's
#: prompt tokens averaged (``FindInterface._collect``)
TASK_PAIRS = {"grounding": ("q.grounding", "q.text"), "interactive": ("q.segment", "q.spatial"),
              "interleave_grounding": ("q.entity", "p.interleave")}


def _item_matching(queries: torch.Tensor, items: torch.Tensor, valid: torch.Tensor, scale: torch.Tensor,
                   groups: torch.Tensor | None = None, objects: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy of each valid mask query ``(B, n, P)`` over the valid items of its image, target = its own.

    ``groups`` ``(B, n)``: items compete only inside their group (an interleave entry's entities).
    ``objects`` ``(B, n)``: items naming the same object (identical targets: "a brown mug ... the brown
    mug", two referring sentences of one object) are no negatives of each other: pushing them apart
    would ask one region to match one description of itself and not the other.
    """
    logits = scale * queries @ items.transpose(1, 2)  # (B, n, n)
    allowed = valid[:, None, :]
    if groups is not None:
        allowed = allowed & (groups[:, :, None] == groups[:, None, :])
    if objects is not None:
        own = torch.eye(queries.shape[1], dtype=torch.bool, device=queries.device)
        allowed = allowed & ((objects[:, :, None] != objects[:, None, :]) | own)
    logits = logits.masked_fill(~allowed, float("-inf"))
    labels = torch.arange(queries.shape[1], device=queries.device).expand(queries.shape[0], -1)
    return F.cross_entropy(logits[valid], labels[valid])


def _info_nce(images: torch.Tensor, texts: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE between matching rows of two ``(N, P)`` normalised embedding sets."""
    logits = scale * images @ texts.T
    labels = torch.arange(len(images), device=images.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
