"""The one text syntax for interleaved queries, shared by Python, the CLI and ROS 2.

    the mug next to <image:keys.png>                 whole image as the reference
    the mug next to <image:keys.png#keys_mask.png>   reference = the mask's non-zero pixels
    the mug next to <image:keys.png#box=40,30,120,90> reference = box x0,y0,x1,y1 in pixels

Plain text without ``<image:...>`` is a text query; a query that is only ``<image:...>`` is an
image-crop query. Paths are relative to ``base_dir`` (default: the current directory).

Where the images travel with the query (a ROS 2 request, a Python caller holding arrays),
``parse_query(text, images=[...], masks=[...])`` reads ``<image:N>`` as the N-th of ``images``,
its region being ``masks[N]`` (when given and not None) or a ``#box=`` suffix.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from find3d.data.samples import InterleaveEntity, InterleaveEntry, VisualRef
from find3d.errors import Find3dWarning, InputError
from find3d.fileio import load_image

_TOKEN = re.compile(r"<image:([^<>#]+)(?:#([^<>]+))?>")
_FORM = "<image:path[#mask.png|#box=x0,y0,x1,y1]>"
_INDEXED_FORM = "<image:N[#box=x0,y0,x1,y1]> (N: the position of the image sent with the query)"
#: what a visual entity is called in the entry's sentence (its span), so the sentence stays readable
PLACEHOLDER = "<image>"


def parse_query(text: str, base_dir: str | Path = ".", images: Sequence[Any] | None = None,
                masks: Sequence[Any | None] | None = None) -> InterleaveEntry:
    """Parse ``text`` into an ``InterleaveEntry`` whose visual entities carry loaded ``VisualRef``s.

    With ``images``, ``<image:N>`` names ``images[N]`` (see the module docstring) instead of a file.
    """
    if not isinstance(text, str):
        raise InputError(f"query: got {type(text).__name__}; pass text such as 'the mug next to <image:keys.png>'")
    if masks is not None and (images is None or len(masks) not in (0, len(images))):
        raise InputError(f"masks: {len(masks)} given for {0 if images is None else len(images)} images; "
                         "pass none, or one per image (None for a whole image)")
    form = _FORM if images is None else _INDEXED_FORM  # a ROS request names images by position, not path
    if not text.strip():
        raise InputError(f"empty query: pass a phrase, a {form.split('[')[0]}> reference, or both")
    if text.count("<") != text.count(">"):
        raise InputError(f"query {text!r}: unbalanced '<' / '>'; write references as {form}")
    sentence, entities, cursor = "", [], 0
    for match in _TOKEN.finditer(text):
        sentence += text[cursor : match.start()]
        if images is None:
            ref = _load_ref(match.group(1).strip(), match.group(2), Path(base_dir), text)
        else:
            ref = _indexed_ref(match.group(1).strip(), match.group(2), images, masks or (), text)
        span = (len(sentence), len(sentence) + len(PLACEHOLDER))
        sentence += PLACEHOLDER
        entities.append(InterleaveEntity(text=PLACEHOLDER, span=span, target=np.zeros((0, 0), bool), ref=ref))
        cursor = match.end()
    sentence += text[cursor:]
    if "<" in sentence.replace(PLACEHOLDER, ""):
        raise InputError(f"query {text!r}: malformed reference; use {form}")
    return InterleaveEntry(sentence=" ".join(sentence.split()) if not entities else sentence, entities=entities)


def _load_ref(path_text: str, selector: str | None, base_dir: Path, query: str) -> VisualRef:
    path = Path(path_text)
    path = path if path.is_absolute() else base_dir / path
    image = load_image(path)
    height, width = image.shape[:2]
    if selector is None:
        mask = np.ones((height, width), bool)
    elif selector.startswith("box="):
        mask = _box_mask(selector[4:], height, width, query)
    else:
        mask_path = Path(selector) if Path(selector).is_absolute() else base_dir / selector
        mask_image = load_image(mask_path)
        if mask_image.shape[:2] != (height, width):
            raise InputError(
                f"query {query!r}: mask {mask_path} is {mask_image.shape[1]}x{mask_image.shape[0]} but image "
                f"{path} is {width}x{height}; use a mask of the image's size"
            )
        mask = mask_image.max(axis=-1) > 0
    if not mask.any():
        raise InputError(f"query {query!r}: the reference region in {path} is empty; select a non-empty mask or box")
    return VisualRef(image=image, mask=mask, source=str(path))


def _indexed_ref(index_text: str, selector: str | None, images: Sequence[Any], masks: Sequence[Any | None],
                 query: str) -> VisualRef:
    """``<image:N>``: the N-th in-memory image, its region ``masks[N]`` or a ``#box=`` selector."""
    from find3d.fileio import as_rgb_array

    if not index_text.isdigit() or int(index_text) >= len(images):
        fix = (f"it carries {len(images)}: use <image:0> ... <image:{len(images) - 1}>" if images
               else "it carries none: send the image with the query, or drop the reference")
        raise InputError(f"query {query!r}: <image:{index_text}> names no image; {fix}")
    index = int(index_text)
    image = as_rgb_array(images[index], f"image {index}")
    height, width = image.shape[:2]
    region = masks[index] if index < len(masks) else None
    if selector is not None and not selector.startswith("box="):
        raise InputError(f"query {query!r}: <image:{index}#{selector}>: with in-memory images only #box=x0,y0,x1,y1 "
                         "selects a region; send the region as that image's mask instead")
    if selector is not None and region is not None:
        raise InputError(f"query {query!r}: image {index} has both a mask and #{selector}; keep one of them")
    if selector is not None:
        mask = _box_mask(selector[4:], height, width, query)
    elif region is None:
        mask = np.ones((height, width), bool)
    else:
        mask = np.asarray(region)
        mask = mask.max(axis=-1) if mask.ndim == 3 else mask
        if mask.shape != (height, width):
            raise InputError(f"query {query!r}: mask {index} is {mask.shape[1] if mask.ndim == 2 else '?'}x"
                             f"{mask.shape[0]} but image {index} is {width}x{height}; send a mask of the image's size")
        mask = mask > 0
    if not mask.any():
        raise InputError(f"query {query!r}: the region of image {index} is empty; select a non-empty mask or box")
    return VisualRef(image=image, mask=mask, source=f"<image:{index}>")


def _box_mask(spec: str, height: int, width: int, query: str) -> np.ndarray:
    """The mask of ``#box=x0,y0,x1,y1`` (pixels: left, top, right, bottom edges); a box reaching past the image
    is clipped to it with a warning, one with no area or none of it inside is refused."""
    form = (f"write #box=x0,y0,x1,y1 in pixels of the {width}x{height} image (left, top, right, bottom edges; "
            "x0 < x1, y0 < y1)")
    try:
        x0, y0, x1, y1 = (float(v) for v in spec.split(","))
    except ValueError as err:
        raise InputError(f"query {query!r}: #box={spec} is not four numbers; {form}, e.g. #box=10,10,50,40") from err
    if not all(np.isfinite((x0, y0, x1, y1))):
        raise InputError(f"query {query!r}: #box={spec} has a non-finite number; {form}")
    if x0 >= x1 or y0 >= y1:
        fix = f"#box={_num(min(x0, x1))},{_num(min(y0, y1))},{_num(max(x0, x1))},{_num(max(y0, y1))}"
        raise InputError(f"query {query!r}: #box={spec} has no area (x0 < x1 and y0 < y1 are needed); {form}"
                         + (f", e.g. {fix}" if x0 != x1 and y0 != y1 else ""))
    clipped = (max(x0, 0.0), max(y0, 0.0), min(x1, float(width)), min(y1, float(height)))
    if clipped[0] >= clipped[2] or clipped[1] >= clipped[3]:
        raise InputError(f"query {query!r}: #box={spec} lies outside the {width}x{height} image; {form}")
    if clipped != (x0, y0, x1, y1):
        box = ",".join(_num(v) for v in clipped)
        warnings.warn(f"query {query!r}: #box={spec} reaches outside the {width}x{height} image; using the part "
                      f"inside it, #box={box}", Find3dWarning, stacklevel=2)
        x0, y0, x1, y1 = clipped
    mask = np.zeros((height, width), bool)
    mask[int(y0) : int(np.ceil(y1)), int(x0) : int(np.ceil(x1))] = True
    return mask


def _num(value: float) -> str:
    return f"{value:g}"
