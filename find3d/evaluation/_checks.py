"""Input validation shared by the evaluators (shape mistakes are the usual user error)."""

from __future__ import annotations

import numpy as np

from find3d.errors import InputError


def as_mask_stack(masks: np.ndarray, name: str) -> np.ndarray:
    """``(N, H, W)`` bool from a bool/0-1 array; a single ``(H, W)`` mask becomes ``(1, H, W)``."""
    array = np.asarray(masks)
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3:
        raise InputError(f"{name}: expected (N, H, W) masks, got shape {array.shape}; stack one mask per item.")
    if array.dtype != bool:
        if not np.isin(array, (0, 1)).all():
            raise InputError(f"{name}: masks must be boolean or 0/1; threshold probabilities first (e.g. > 0.5).")
        array = array.astype(bool)
    return array


def same_shape(a: np.ndarray, b: np.ndarray, what: str) -> None:
    if a.shape != b.shape:
        raise InputError(
            f"{what}: prediction shape {a.shape} differs from ground truth {b.shape}; "
            "resize predictions to the ground-truth resolution first."
        )


def require_updates(count: int, evaluator: str) -> None:
    if count == 0:
        raise InputError(f"{evaluator}.compute(): nothing was added; call update(...) at least once.")
