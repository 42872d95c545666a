"""Disk cache of frozen vision-encoder pyramids, so training epochs after the first skip the backbone.

Key: sha256 of (encoder name, pixel dtype, image shape, pixel bytes): the resolution is part of the
shape, so the same picture at another size is another entry. Value: one ``.npy`` per image holding
all pyramid levels flattened and concatenated in stride order as float16 (half the disk and page
cache of float32); level shapes follow from the encoder's strides / channels and the image size.
Files are read memory-mapped and written with ``atomic_open`` (temporary file + rename), so two
processes writing the same key both publish a complete, identical file and readers never see a
partial one.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from pathlib import Path

import numpy as np
import torch

from find3d.encoders.base import VisionEncoder, validate_images
from find3d.errors import InputError
from find3d.fileio import atomic_open


class FeatureCache:
    """``cache(images) -> pyramid``, running ``encoder`` only on images not cached yet.

    ``images``: uint8 ``(B, H, W, 3)`` (numpy or torch, as ``find3d.fileio.load_image`` gives) or
    float ``(B, 3, H, W)`` in [0, 1]. Results are the encoder's output rounded to float16, returned
    as float32 CPU tensors, identical whether computed now or read back.
    """

    def __init__(self, root: str | os.PathLike, encoder: VisionEncoder) -> None:
        self.encoder = encoder
        # one folder per encoder; names like "hf:org/model" become file-system safe
        self.root = Path(root) / re.sub(r"[^A-Za-z0-9._-]+", "_", encoder.name)
        self.hits = 0
        self.misses = 0

    def __call__(self, images: np.ndarray | torch.Tensor) -> dict[int, torch.Tensor]:
        pixels, floats = _as_batch(images)
        height, width = floats.shape[2:]
        shapes = self.encoder.level_shapes(height, width)
        paths = [self.path(key) for key in self._keys(pixels)]
        flat: list[np.ndarray | None] = [_read(path, shapes) for path in paths]
        missing = [i for i, entry in enumerate(flat) if entry is None]
        self.hits += len(flat) - len(missing)
        self.misses += len(missing)
        if missing:
            computed = self.encoder(floats[missing])
            for row, index in enumerate(missing):
                entry = np.concatenate([computed[s][row].cpu().numpy().reshape(-1) for s in shapes]).astype(np.float16)
                _write(paths[index], entry)
                flat[index] = entry
        return _unflatten(flat, shapes)

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.npy"

    def _keys(self, pixels: np.ndarray) -> list[str]:
        prefix = f"{self.encoder.name}|{pixels.dtype.str}|{pixels.shape[1:]}|".encode()
        return [hashlib.sha256(prefix + np.ascontiguousarray(image).tobytes()).hexdigest() for image in pixels]


def _as_batch(images: np.ndarray | torch.Tensor) -> tuple[np.ndarray, torch.Tensor]:
    """(pixels to hash, validated float ``(B, 3, H, W)`` batch for the encoder)."""
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu()
        if images.dtype == torch.uint8:
            images = images.numpy()
    if isinstance(images, np.ndarray):
        if images.dtype != np.uint8:
            raise InputError(
                f"images: got a {images.dtype} numpy array; pass uint8 (B, H, W, 3) or a float (B, 3, H, W) tensor."
            )
        if images.ndim != 4 or images.shape[-1] != 3:
            raise InputError(f"images: got uint8 shape {images.shape}; expected (B, H, W, 3) RGB.")
        floats = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
        return images, validate_images(floats)
    floats = validate_images(images)
    return floats.numpy(), floats


def _read(path: Path, shapes: dict[int, tuple[int, int, int]]) -> np.ndarray | None:
    """The memory-mapped entry, or ``None`` if absent or not of the expected size (then recomputed)."""
    try:
        entry = np.load(path, mmap_mode="r")
    except (FileNotFoundError, ValueError, OSError):
        return None
    expected = sum(math.prod(shape) for shape in shapes.values())
    return entry if entry.dtype == np.float16 and entry.shape == (expected,) else None


def _write(path: Path, entry: np.ndarray) -> None:
    with atomic_open(path, "wb") as handle:
        np.save(handle, entry)


def _unflatten(flat: list[np.ndarray], shapes: dict[int, tuple[int, int, int]]) -> dict[int, torch.Tensor]:
    pyramid: dict[int, torch.Tensor] = {}
    offset = 0
    for stride, shape in shapes.items():
        size = math.prod(shape)
        levels = [np.asarray(entry[offset : offset + size], dtype=np.float32).reshape(shape) for entry in flat]
        pyramid[stride] = torch.from_numpy(np.stack(levels))
        offset += size
    return pyramid
