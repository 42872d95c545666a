"""Hungarian matching of object queries to ground-truth segments (Mask2Former costs).

Costs are computed on the same random points for predictions and targets, so matching never
touches full-resolution masks: class cost -p(class), mask cost = pairwise BCE, dice cost.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment


def point_sample(masks: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Values of ``masks (N, H, W)`` at ``points (N, P, 2)`` (x, y in [0, 1]) -> ``(N, P)`` (bilinear)."""
    grid = 2.0 * points[:, None] - 1.0
    return F.grid_sample(masks[:, None].float(), grid, align_corners=False)[:, 0, 0]


def pairwise_bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean BCE of every prediction ``(N, P)`` logits against every target ``(M, P)`` -> ``(N, M)``."""
    positive = F.softplus(-logits)
    negative = F.softplus(logits)
    return (positive @ targets.T + negative @ (1 - targets).T) / logits.shape[1]


def pairwise_dice(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Dice loss of every prediction against every target -> ``(N, M)``."""
    probs = logits.sigmoid()
    numerator = 2 * probs @ targets.T
    denominator = probs.sum(-1)[:, None] + targets.sum(-1)[None, :]
    return 1 - (numerator + 1) / (denominator + 1)


@torch.no_grad()
def hungarian_match(logits: torch.Tensor, masks: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor,
                    num_points: int, class_weight: float, mask_weight: float, dice_weight: float
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Match one image: ``logits (N, K+1)``, ``masks (N, h, w)`` logits vs ``labels (M,)``, ``targets (M, H, W)``.

    Returns (query indices, target indices), each ``(min(N, M),)``.
    """
    if not len(labels):
        empty = torch.zeros(0, dtype=torch.long, device=logits.device)
        return empty, empty
    points = torch.rand(1, num_points, 2, device=masks.device)
    pred = point_sample(masks, points.expand(len(masks), -1, -1))
    true = point_sample(targets, points.expand(len(targets), -1, -1))
    cost = (-class_weight * logits.softmax(-1)[:, labels]
            + mask_weight * pairwise_bce(pred, true)
            + dice_weight * pairwise_dice(pred, true))
    rows, cols = linear_sum_assignment(cost.float().cpu().numpy())
    return (torch.as_tensor(rows, dtype=torch.long, device=logits.device),
            torch.as_tensor(cols, dtype=torch.long, device=logits.device))
