"""The evaluation figures are written as PNGs of the expected size with visible content."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from find3d.errors import InputError
from find3d.evaluation.visualize import class_color, save_grounding, save_panoptic, save_retrieval_strip


def _image(height: int = 48, width: int = 64) -> np.ndarray:
    # A plain grey image: any colour in the output must come from the overlays.
    return np.full((height, width, 3), 128, dtype=np.uint8)


def _masks(height: int = 48, width: int = 64) -> np.ndarray:
    masks = np.zeros((2, height, width), dtype=bool)
    masks[0, :24] = True
    masks[1, 24:, 32:] = True
    return masks


def _read(path) -> np.ndarray:
    with Image.open(path) as img:
        assert img.format == "PNG"
        return np.asarray(img.convert("RGB"))


def _saturation(pixels: np.ndarray) -> np.ndarray:
    return pixels.max(axis=-1).astype(int) - pixels.min(axis=-1).astype(int)


def test_class_colors_are_deterministic_and_distinct() -> None:
    assert class_color(3) == class_color(3)
    assert len({class_color(i) for i in range(20)}) == 20


def test_panoptic_overlay_png(tmp_path) -> None:
    path = tmp_path / "panoptic.png"
    save_panoptic(path, _image(), _masks(), categories=[0, 1], class_names=["wall", "cup"])
    pixels = _read(path)
    assert pixels.shape == (48, 64, 3)
    # The tinted segments are coloured (the input was grey) and the untouched corner stays grey.
    assert (_saturation(pixels) > 40).mean() > 0.3
    assert (pixels[40:, :8] == 128).all()
    # Same class, same tint: the centre of segment 0 carries class 0's colour blended over grey.
    expected = 0.45 * 128 + 0.55 * 255 * np.asarray(class_color(0))
    assert np.abs(pixels[2, 2].astype(float) - expected).max() <= 3


def test_grounding_png(tmp_path) -> None:
    path = tmp_path / "grounding.png"
    save_grounding(path, _image(), _masks(), ["the wall on the left", "a red cup"], panel_px=128)
    pixels = _read(path)
    assert pixels.shape == (128 + 40, 2 * 128, 3)
    assert (_saturation(pixels) > 40).any()
    assert pixels.std() > 10


def test_retrieval_strip_png(tmp_path) -> None:
    path = tmp_path / "retrieval.png"
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (32, 32, 3), dtype=np.uint8) for _ in range(6)]
    save_retrieval_strip(
        path,
        "a cup on a table",
        images,
        [0.9, 0.8, 0.7, 0.6, 0.5, 0.4],
        correct=[False, True, False, False, False],
        panel_px=100,
    )
    pixels = _read(path)
    assert pixels.shape == (100 + 40, 6 * 100, 3)  # query + top-5 (the sixth image is dropped)
    assert pixels.std() > 10
    # The hit is framed green.
    green = (pixels[..., 1] > 100) & (pixels[..., 0] < 60) & (pixels[..., 2] < 60)
    assert green.sum() > 50


def test_mismatched_masks_are_rejected(tmp_path) -> None:
    with pytest.raises(InputError, match="do not match the image"):
        save_panoptic(tmp_path / "x.png", _image(), _masks(20, 20), [0, 1], ["a", "b"])
    assert not (tmp_path / "x.png").exists()
