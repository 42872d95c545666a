"""PNG figures of evaluation outputs: panoptic overlays, grounding masks, retrieval strips.

Drawn with matplotlib's Agg backend (no display needed) and written atomically. Colours are a pure
function of the class index, so the same class looks the same in every figure and run.
"""

from __future__ import annotations

import colorsys
import os
import textwrap
from collections.abc import Sequence
from typing import Any

import numpy as np

from find3d.errors import InputError
from find3d.evaluation._checks import as_mask_stack
from find3d.fileio import as_rgb_array, atomic_open

_GOLDEN = 0.618033988749895
_ALPHA = 0.55


def class_color(index: int) -> tuple[float, float, float]:
    """Deterministic RGB in [0, 1]: golden-ratio hue steps keep neighbouring indices distinct."""
    hue = (index * _GOLDEN) % 1.0
    value = 0.95 if index % 2 == 0 else 0.75
    return colorsys.hsv_to_rgb(hue, 0.75, value)


def _overlay(image: np.ndarray, masks: np.ndarray, colors: Sequence[tuple[float, float, float]]) -> np.ndarray:
    out = image.astype(np.float64) / 255.0
    for mask, color in zip(masks, colors):
        out[mask] = (1.0 - _ALPHA) * out[mask] + _ALPHA * np.asarray(color)
    return out


def _label_anchor(mask: np.ndarray) -> tuple[int, int]:
    """(x, y) of the mask's interior-most pixel, where a label covers the segment best."""
    from scipy.ndimage import distance_transform_edt

    depth = distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(depth)), depth.shape)
    return int(x), int(y)


def _wrap(text: str, panel_px: int) -> str:
    """At most two lines of roughly a panel's width (paragraph phrases can be long)."""
    width = max(12, panel_px // 6)
    return textwrap.fill(textwrap.shorten(text, 2 * width, placeholder="..."), width)


def _figure(width_px: int, height_px: int, dpi: int = 100) -> Any:
    from matplotlib.figure import Figure

    # A bare Figure uses Agg when saved and never touches pyplot's global state.
    return Figure(figsize=(width_px / dpi, height_px / dpi), dpi=dpi)


def _save(fig: Any, path: str | os.PathLike) -> None:
    with atomic_open(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=fig.dpi)


def _check_masks(image: np.ndarray, masks: np.ndarray, name: str) -> np.ndarray:
    stack = as_mask_stack(masks, name) if len(masks) else np.zeros((0, *image.shape[:2]), dtype=bool)
    if stack.shape[1:] != image.shape[:2]:
        raise InputError(f"{name}: masks {stack.shape[1:]} do not match the image {image.shape[:2]}; resize them.")
    return stack


def save_panoptic(
    path: str | os.PathLike,
    image: Any,
    masks: np.ndarray,
    categories: Sequence[int],
    class_names: Sequence[str],
) -> None:
    """Image-sized PNG: each segment tinted with its class colour and labelled with its class name."""
    rgb = as_rgb_array(image)
    stack = _check_masks(rgb, masks, "panoptic masks")
    if len(categories) != len(stack):
        raise InputError(f"panoptic figure: {len(stack)} masks but {len(categories)} categories.")
    height, width = rgb.shape[:2]
    fig = _figure(width, height)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(_overlay(rgb, stack, [class_color(c) for c in categories]))
    for mask, category in zip(stack, categories):
        if mask.any():
            x, y = _label_anchor(mask)
            name = class_names[category] if 0 <= category < len(class_names) else str(category)
            ax.text(
                x,
                y,
                name,
                fontsize=8,
                ha="center",
                va="center",
                color="white",
                bbox={"facecolor": class_color(category), "alpha": 0.8, "pad": 1, "linewidth": 0},
            )
    ax.set_axis_off()
    _save(fig, path)


def save_grounding(
    path: str | os.PathLike, image: Any, masks: np.ndarray, phrases: Sequence[str], panel_px: int = 256
) -> None:
    """One panel per phrase (interleave entities included), its mask overlaid and the phrase as title."""
    rgb = as_rgb_array(image)
    stack = _check_masks(rgb, masks, "grounding masks")
    if len(phrases) != len(stack) or not len(stack):
        raise InputError(f"grounding figure: need one phrase per mask (got {len(stack)} masks, {len(phrases)}).")
    fig = _figure(panel_px * len(stack), panel_px + 40)
    for i, (mask, phrase) in enumerate(zip(stack, phrases)):
        ax = fig.add_subplot(1, len(stack), i + 1)
        ax.imshow(_overlay(rgb, mask[None], [class_color(i)]))
        ax.set_title(_wrap(phrase, panel_px), fontsize=8)
        ax.set_axis_off()
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.82, wspace=0.04)
    _save(fig, path)


def save_retrieval_strip(
    path: str | os.PathLike,
    query: str | Any,
    images: Sequence[Any],
    scores: Sequence[float],
    correct: Sequence[bool] | None = None,
    panel_px: int = 160,
) -> None:
    """The query (text, or an image) followed by the top-5 images with scores; hits framed green."""
    shown = list(zip(images, scores))[:5]
    if not shown:
        raise InputError("retrieval figure: no retrieved images to draw.")
    hits = [False] * len(shown) if correct is None else list(correct)[: len(shown)]
    fig = _figure(panel_px * (len(shown) + 1), panel_px + 40)
    ax = fig.add_subplot(1, len(shown) + 1, 1)
    if isinstance(query, str):
        ax.text(0.5, 0.5, query, ha="center", va="center", wrap=True, fontsize=8)
    else:
        ax.imshow(as_rgb_array(query, "query image"))
    ax.set_title("query", fontsize=8)
    ax.set_axis_off()
    for rank, ((image, score), hit) in enumerate(zip(shown, hits), start=1):
        ax = fig.add_subplot(1, len(shown) + 1, rank + 1)
        ax.imshow(as_rgb_array(image, f"retrieved image {rank}"))
        ax.set_title(f"#{rank}  {score:.3f}", fontsize=8, color="green" if hit else "black")
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_color("green" if hit else "lightgray")
            spine.set_linewidth(3 if hit else 1)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.02, top=0.85, wspace=0.08)
    _save(fig, path)
