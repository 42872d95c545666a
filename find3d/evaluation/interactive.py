"""Interactive segmentation: the standard click simulator and NoC@IoU.

Click simulation (RITM's protocol, which SEEM and FIND evaluate with): the error of the current
prediction is split into false negatives (object pixels missed) and false positives (background
taken). Each gets a Euclidean distance transform, computed with the image border counted as
boundary; the next click goes to the interior-most pixel of whichever error lies deeper — a
positive click for false negatives, a negative one for false positives (a tie goes negative, as in
RITM). With an empty prediction the first click is therefore the interior-most point of the object.
Pixels already clicked are not clicked again, so a model that ignores a click cannot freeze the loop.

NoC@t is the number of clicks needed to reach IoU >= t, ``max_clicks`` (20) when never reached,
averaged over objects; ``IoU@k`` is the mean IoU after k clicks (FIND reports k = 1). The simulation
stops early once the highest threshold and the largest k are reached, which changes no metric.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np

from find3d.errors import InputError
from find3d.evaluation._checks import as_mask_stack, require_updates, same_shape

DEFAULT_THRESHOLDS = (0.5, 0.8, 0.85, 0.9)


class Click(NamedTuple):
    y: int
    x: int
    positive: bool


def _interior_distance(mask: np.ndarray) -> np.ndarray:
    from scipy.ndimage import distance_transform_edt

    # Pad with background so pixels on the image border are 1 px from the boundary, as RITM does.
    return distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]


def next_click(gt: np.ndarray, pred: np.ndarray, clicked: np.ndarray | None = None) -> Click | None:
    """The simulated user's next click for boolean ``(H, W)`` masks; ``None`` when nothing is wrong.

    ``clicked`` (bool ``(H, W)``) marks pixels clicked before; they are never chosen again.
    """
    gt, pred = np.asarray(gt, dtype=bool), np.asarray(pred, dtype=bool)
    same_shape(pred, gt, "click simulation")
    allowed = np.ones_like(gt) if clicked is None else ~np.asarray(clicked, dtype=bool)
    fn_depth = _interior_distance(gt & ~pred) * allowed
    fp_depth = _interior_distance(~gt & pred) * allowed
    fn_max, fp_max = fn_depth.max(), fp_depth.max()
    if fn_max == 0 and fp_max == 0:
        return None
    positive = bool(fn_max > fp_max)
    depth = fn_depth if positive else fp_depth
    y, x = np.unravel_index(int(np.argmax(depth)), depth.shape)  # first maximum in row-major order
    return Click(int(y), int(x), positive)


def mask_iou(pred: np.ndarray, gt: np.ndarray) -> float:
    union = np.logical_or(pred, gt).sum()
    return float(np.logical_and(pred, gt).sum() / union) if union else 1.0


def _noc(ious: np.ndarray, threshold: float, max_clicks: int) -> int:
    reached = ious >= threshold
    return int(np.argmax(reached)) + 1 if reached.any() else max_clicks


class InteractiveEvaluator:
    """Streaming NoC: ``update(gt, predict)`` runs the click loop for one object.

    ``predict(clicks) -> (H, W) bool mask`` is called with the clicks so far (the model keeps any
    state it needs, e.g. its previous mask), so the evaluator does not depend on the model.
    """

    def __init__(
        self, thresholds: Sequence[float] = DEFAULT_THRESHOLDS, max_clicks: int = 20, iou_at: Sequence[int] = (1,)
    ) -> None:
        if max_clicks < 1 or any(not 1 <= k <= max_clicks for k in iou_at):
            raise InputError(f"InteractiveEvaluator: need max_clicks >= 1 and 1 <= iou_at <= max_clicks ({iou_at}).")
        self.thresholds = tuple(thresholds)
        self.max_clicks = max_clicks
        self.iou_at = tuple(iou_at)
        self.curves: list[np.ndarray] = []

    def simulate(self, gt: np.ndarray, predict: Callable[[list[Click]], np.ndarray]) -> list[float]:
        """IoU after each click for one object (stops early once every metric is settled)."""
        gt = np.asarray(gt, dtype=bool)
        if not gt.any():
            raise InputError("interactive: the ground-truth mask is empty; skip objects without pixels.")
        pred = np.zeros_like(gt)
        clicked = np.zeros_like(gt)
        clicks: list[Click] = []
        ious: list[float] = []
        while len(clicks) < self.max_clicks:
            click = next_click(gt, pred, clicked)
            if click is None:
                break
            clicks.append(click)
            clicked[click.y, click.x] = True
            pred = as_mask_stack(predict(list(clicks)), "interactive predict()")[0]
            same_shape(pred, gt, "interactive predict()")
            ious.append(mask_iou(pred, gt))
            if ious[-1] >= max(self.thresholds) and len(ious) >= max(self.iou_at):
                break
        return ious

    def update(self, gt: np.ndarray, predict: Callable[[list[Click]], np.ndarray]) -> list[float]:
        """Run the click loop on one object and record its IoU curve (returned too)."""
        ious = self.simulate(gt, predict)
        self.add_curve(ious)
        return ious

    def add_curve(self, ious: Sequence[float]) -> None:
        """Record an IoU-per-click curve computed elsewhere; a short curve keeps its last IoU."""
        if not len(ious):
            raise InputError("interactive: an IoU curve needs at least one click.")
        curve = np.asarray(ious, dtype=np.float64)[: self.max_clicks]
        # Stopping early means later clicks would change nothing, so the curve stays flat.
        self.curves.append(np.pad(curve, (0, self.max_clicks - len(curve)), mode="edge"))

    def compute(self) -> dict[str, float]:
        """``NoC@t`` for each threshold, ``IoU@k`` (percent) for each k and ``failed@t`` (percent over max)."""
        require_updates(len(self.curves), "InteractiveEvaluator")
        curves = np.stack(self.curves)
        results: dict[str, float] = {}
        for t in self.thresholds:
            nocs = np.array([_noc(c, t, self.max_clicks) for c in curves])
            results[f"NoC@{t}"] = float(nocs.mean())
            results[f"failed@{t}"] = float(100.0 * np.mean(~(curves >= t).any(axis=1)))
        for k in self.iou_at:
            results[f"IoU@{k}"] = float(100.0 * curves[:, k - 1].mean())
        return results
