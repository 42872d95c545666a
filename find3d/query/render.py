"""Relevancy images: project a query's 3D relevancy into a frame and colour-map it over the image."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from find3d.fileio import atomic_open, load_image
from find3d.query.field import Field, FrameHit, QueryResult


def project_points(points: np.ndarray, c2w: np.ndarray, fx: float, fy: float, cx: float, cy: float,
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates (N, 2) (x right, y down, pixel centres at +0.5) and depth (N,) along the view axis.

    ``c2w`` is an OpenGL camera-to-world matrix (camera looks along −z, y up), as in transforms.json;
    points behind the camera get depth <= 0.
    """
    rotation, origin = c2w[:3, :3], c2w[:3, 3]
    local = (np.asarray(points, dtype=np.float64) - origin) @ rotation  # world -> camera: R^T (p - t)
    depth = -local[:, 2]
    safe = np.where(np.abs(depth) < 1e-9, 1e-9, depth)
    uv = np.stack([fx * local[:, 0] / safe + cx, -fy * local[:, 1] / safe + cy], axis=1)
    return uv, depth


HIGHLIGHT_ALPHA = 0.6  # opacity of the relevancy colours over the frame (query PNGs and the viewer's composite)
OUTLINE_RGB = (1.0, 0.0, 1.0)  # a selection's outline: magenta, a colour turbo never draws


def relevancy_image(points: np.ndarray, relevancy: np.ndarray, frame: FrameHit, image: np.ndarray | None = None,
                    threshold: float = 0.5, radius: int = 1, alpha: float = HIGHLIGHT_ALPHA,
                    selected: np.ndarray | None = None, colour: tuple[float, float, float] | None = None,
                    outline: bool = False) -> np.ndarray:
    """(H, W, 3) uint8: the frame's image with the relevancy of the ``selected`` points (indices; default
    those at or above ``threshold``) that fall in the frame splatted (nearest point wins, ``radius`` px
    squares) through the turbo colour map, or all in ``colour`` (RGB in [0, 1]); ``outline`` (whole objects): the
    splatted region's border pixels in ``OUTLINE_RGB``, as the viewer draws them (tinted alone, an object can pass
    for one of another colour)."""
    from matplotlib import colormaps

    height, width = frame.height, frame.width
    canvas = np.zeros((height, width, 3), np.float32) if image is None else image[..., :3].astype(np.float32) / 255
    keep = np.flatnonzero(relevancy >= threshold) if selected is None else np.asarray(selected, np.int64)
    uv, depth = project_points(points[keep], frame.c2w, frame.fx, frame.fy, frame.cx, frame.cy)
    cols, rows = np.floor(uv[:, 0]).astype(np.int64), np.floor(uv[:, 1]).astype(np.int64)
    visible = (depth > 0) & (cols >= 0) & (cols < width) & (rows >= 0) & (rows < height)
    keep, cols, rows, depth = keep[visible], cols[visible], rows[visible], depth[visible]
    # Paint far to near so that the nearest point's relevancy ends up on top.
    order = np.argsort(-depth, kind="stable")
    colours = (colormaps["turbo"](relevancy[keep[order]])[:, :3] if colour is None
               else np.tile(colour, (len(order), 1))).astype(np.float32)
    overlay = np.zeros((height, width, 3), np.float32)
    covered = np.zeros((height, width), bool)
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            r = np.clip(rows[order] + dy, 0, height - 1)
            c = np.clip(cols[order] + dx, 0, width - 1)
            overlay[r, c] = colours
            covered[r, c] = True
    canvas[covered] = (1 - alpha) * canvas[covered] + alpha * overlay[covered]
    if outline:
        canvas[_border(covered)] = OUTLINE_RGB
    return (canvas * 255 + 0.5).astype(np.uint8)


def _border(mask: np.ndarray) -> np.ndarray:
    """The pixels of ``mask`` with a pixel outside it among their 8 neighbours (the viewer's ``composite`` rule:
    beyond the image's edge counts as inside)."""
    outside = np.pad(~mask, 1, constant_values=False)
    height, width = mask.shape
    near = np.zeros_like(mask)
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            near |= outside[dy:dy + height, dx:dx + width]
    return mask & near


def save_relevancy_images(field: Field, result: QueryResult, out_dir: str | os.PathLike,
                          query: str = "") -> list[Path]:
    """One PNG per frame in ``result.frames`` (``relevancy_<rank>_<frame name>.png``); returns the paths.

    Each shows the answer's own points (``result.indices``: a relation's target, not every point the head
    entity's relevancy lights) that the frame sees unoccluded (``Field.visibility``). An answer that
    found nothing gets one picture, ``not_found_<frame name>.png``: the frame that best shows the closest
    rejected instance, that instance drawn in grey and the verdict written on it. Pictures of an earlier
    answer written to ``out_dir`` are removed: the folder shows one answer."""
    from PIL import Image

    out_dir = Path(out_dir)
    pictures: list[tuple[Path, np.ndarray]] = []
    for rank, frame in enumerate(result.frames):
        visible = _visible_of(field, result.indices, frame.index)
        picture = relevancy_image(field.points, result.relevancy, frame, _frame_image(field, frame), selected=visible,
                                  outline=result.closest is not None)  # whole objects (closest is theirs)
        pictures.append((out_dir / f"relevancy_{rank}_{Path(frame.file_path).stem}.png", picture))
    if not result.found and result.closest is not None:
        candidate = np.flatnonzero(field.segments == result.closest.segment)
        [frame] = field.rank_frames(np.ones(len(field), np.float32), candidate, 1) or [None]
        if frame is not None:
            visible = _visible_of(field, candidate, frame.index)
            picture = relevancy_image(field.points, result.relevancy, frame, _frame_image(field, frame),
                                      selected=visible, colour=NOT_FOUND_GREY)
            pictures.append((out_dir / f"not_found_{Path(frame.file_path).stem}.png",
                             _caption(picture, result.describe(query))))
    paths = []
    for path, picture in pictures:
        with atomic_open(path) as handle:
            Image.fromarray(picture).save(handle, format="PNG")
        paths.append(path)
    for stale in {*out_dir.glob("relevancy_*.png"), *out_dir.glob("not_found_*.png")} - set(paths):
        stale.unlink(missing_ok=True)
    return paths


NOT_FOUND_GREY = (0.55, 0.55, 0.55)  # "this is what came closest": no colour of the relevancy map's


def _frame_image(field: Field, frame: FrameHit) -> np.ndarray | None:
    source = Path(field.meta.get("scene", "")) / frame.file_path
    return load_image(source) if source.is_file() else None


def _visible_of(field: Field, indices: np.ndarray, frame_index: int) -> np.ndarray:
    return np.intersect1d(indices, field.frame_visibility(frame_index))  # this frame's only (a large field has many)


def _caption(picture: np.ndarray, text: str) -> np.ndarray:
    """The picture with ``text`` on a dark band along its top, wrapped to the width in Pillow's bundled
    scalable font (its bitmap default draws spaces a pixel wide: "in thisscene")."""
    from PIL import Image, ImageDraw, ImageFont

    image = Image.fromarray(picture)
    draw, font = ImageDraw.Draw(image), ImageFont.load_default(size=CAPTION_PX)
    lines: list[str] = []
    for word in text.split():
        if lines and font.getlength(f"{lines[-1]} {word}") <= image.width - 6:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    step = CAPTION_PX + 2
    draw.rectangle((0, 0, image.width, step * len(lines) + 4), fill=(0, 0, 0))
    for row, line in enumerate(lines):
        draw.text((3, 2 + step * row), line, fill=(255, 255, 255), font=font)
    return np.asarray(image)


CAPTION_PX = 11  # font size of a caption: legible on a 256-px frame, two lines for a typical verdict
