"""Any Hugging Face vision model (CLIP / SigLIP / DINOv2 / SAM vision towers, ...) as a ``VisionEncoder``.

The tower's dense output (patch tokens reshaped to a map, or SAM's neck map) has the model's own
stride, its patch size. The pyramid is derived from that single map as in ViTDet's simple feature
pyramid, without its learned layers (those belong to the trainable interface): the map is resampled
bilinearly (antialiased when shrinking) to ``ceil(H/s) x ceil(W/s)`` for each stride s in 4, 8, 16, 32.
All levels therefore have the tower's channel count.
"""

from __future__ import annotations

import inspect
import json
import math
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from find3d.compat.quiet import no_transformers_progress
from find3d.encoders.base import VisionEncoder
from find3d.encoders.convnets import IMAGENET_MEAN, IMAGENET_STD, PYRAMID_STRIDES
from find3d.encoders.hub import resolve_model_dir
from find3d.errors import ModelError

#: attributes under which composite models (CLIP, SigLIP, SAM) keep their vision tower
_TOWER_ATTRIBUTES = ("vision_model", "vision_encoder", "vision_tower")


class HFVisionEncoder(VisionEncoder):
    def __init__(self, name_or_path: str) -> None:
        super().__init__()
        from transformers import AutoModel

        folder = resolve_model_dir(name_or_path)
        with no_transformers_progress():
            model = AutoModel.from_pretrained(folder, local_files_only=True)
        self.name = f"hf:{name_or_path}"
        self.tower = _vision_tower(model, name_or_path)
        config = self.tower.config
        self.patch = int(getattr(config, "patch_size", 16))
        mean, std = _normalisation(folder)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self._interpolate = "interpolate_pos_encoding" in inspect.signature(self.tower.forward).parameters
        self.strides = PYRAMID_STRIDES
        # SAM's neck projects to output_channels; ViTs return hidden_size
        width = int(getattr(config, "output_channels", None) or config.hidden_size)
        self.channels = (width,) * len(PYRAMID_STRIDES)
        self.freeze()
        self.fixed_size = self._probe_fixed_size(int(getattr(config, "image_size", 224)))

    def _probe_fixed_size(self, native: int) -> int | None:
        """``None`` if the tower takes any multiple of its patch size, else the one size it accepts.

        Whether position embeddings interpolate differs per architecture (DINOv2 always, CLIP /
        SigLIP on request, SAM never); a two-patch forward at a non-native size tells directly.
        """
        probe = torch.zeros(1, 3, 2 * self.patch, 3 * self.patch)
        try:
            with torch.no_grad():
                self._dense(probe)
        except (ValueError, RuntimeError):
            return native
        return None

    def _dense(self, pixels: torch.Tensor) -> torch.Tensor:
        """Normalised pixels -> ``(B, C, h, w)`` map at the tower's own stride."""
        kwargs = {"interpolate_pos_encoding": True} if self._interpolate else {}
        hidden = self.tower(pixel_values=pixels, **kwargs).last_hidden_state
        if hidden.ndim == 4:  # already a map (SAM neck)
            return hidden
        rows, cols = pixels.shape[2] // self.patch, pixels.shape[3] // self.patch
        # leading CLS / register tokens precede the row-major patch tokens
        patches = hidden[:, hidden.shape[1] - rows * cols :]
        return patches.transpose(1, 2).reshape(hidden.shape[0], hidden.shape[2], rows, cols)

    def _encode(self, images: torch.Tensor) -> dict[int, torch.Tensor]:
        height, width = images.shape[2:]
        if self.fixed_size is not None:
            size = (self.fixed_size, self.fixed_size)
        else:  # nearest multiple of the patch size, so no border is dropped or padded
            size = tuple(max(self.patch, round(n / self.patch) * self.patch) for n in (height, width))
        if size != (height, width):
            images = F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=True)
        dense = self._dense((images - self.mean) / self.std)
        return {
            stride: F.interpolate(
                dense,
                size=(math.ceil(height / stride), math.ceil(width / stride)),
                mode="bilinear",
                align_corners=False,
                antialias=True,
            )
            for stride in self.strides
        }


def _vision_tower(model: nn.Module, name: str) -> nn.Module:
    for attribute in _TOWER_ATTRIBUTES:
        tower = getattr(model, attribute, None)
        if isinstance(tower, nn.Module):
            return tower
    if "pixel_values" in inspect.signature(model.forward).parameters:
        return model
    raise ModelError(f"hf:{name} ({type(model).__name__}) has no vision tower; pass a vision or vision-language model.")


def _normalisation(folder: Path) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean / std from the model's ``preprocessor_config.json``, else ImageNet's."""
    config_file = folder / "preprocessor_config.json"
    if config_file.is_file():
        config = json.loads(config_file.read_text(encoding="utf-8"))
        if "image_mean" in config and "image_std" in config:
            return tuple(config["image_mean"]), tuple(config["image_std"])
    return IMAGENET_MEAN, IMAGENET_STD
