"""The two protocols every frozen foundation model is wrapped into.

* ``VisionEncoder``: ``(B, 3, H, W)`` float images in [0, 1] -> multi-scale feature pyramid
  ``{stride: (B, C_s, ceil(H/stride), ceil(W/stride))}``. Normalisation is the encoder's own business.
* ``LanguageEncoder``: list of strings -> ``TokenEmbeddings`` (token vectors from a chosen hidden
  layer plus the attention mask), as FIND reads LLaMA's layer -12 instead of the last one.

Both are frozen: ``FrozenModule`` keeps them in eval mode whatever ``.train()`` is called with,
and their parameters never require gradients, so an optimizer over the whole model cannot touch them.
``forward`` validates its input (raising ``InputError``) and runs the subclass's ``_encode`` without
autograd, so no graph is ever built through a backbone.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from find3d.errors import InputError
from find3d.validate import strings

#: images smaller than this cannot reach the coarsest (stride 32) level with one pixel
MIN_IMAGE_SIZE = 32


class FrozenModule(nn.Module):
    """An ``nn.Module`` that stays in eval mode with gradients off for all its parameters."""

    def freeze(self) -> FrozenModule:
        for param in self.parameters():
            param.requires_grad_(False)
        return super().train(False)

    def train(self, mode: bool = True) -> FrozenModule:  # noqa: ARG002 - frozen by design
        return super().train(False)


@dataclass
class TokenEmbeddings:
    """Token vectors and which of them are real (``mask`` True) rather than padding."""

    tokens: torch.Tensor  # (B, T, D) float
    mask: torch.Tensor  # (B, T) bool

    def to(self, device: torch.device | str) -> TokenEmbeddings:
        return TokenEmbeddings(self.tokens.to(device), self.mask.to(device))


def pyramid_shape(stride: int, channels: int, height: int, width: int) -> tuple[int, int, int]:
    """``(C, ceil(H/s), ceil(W/s))``: the size of one pyramid level (TF "SAME" rounding)."""
    return channels, math.ceil(height / stride), math.ceil(width / stride)


def validate_images(images: object, name: str = "images") -> torch.Tensor:
    """Check a ``(B, 3, H, W)`` float batch in [0, 1]; return it as float32."""
    expected = f"expected a (B, 3, H, W) float tensor in [0, 1] with H, W >= {MIN_IMAGE_SIZE}"
    if not isinstance(images, torch.Tensor):
        raise InputError(f"{name}: got {type(images).__name__}; {expected} (see find3d.fileio.as_rgb_array).")
    if images.ndim != 4 or images.shape[1] != 3:
        hint = " (channels last? use images.permute(0, 3, 1, 2))" if images.ndim == 4 and images.shape[-1] == 3 else ""
        raise InputError(f"{name}: got shape {tuple(images.shape)}; {expected}{hint}.")
    if images.shape[0] == 0:
        raise InputError(f"{name}: the batch is empty; {expected}.")
    if images.shape[2] < MIN_IMAGE_SIZE or images.shape[3] < MIN_IMAGE_SIZE:
        raise InputError(f"{name}: {images.shape[3]}x{images.shape[2]} px is too small; {expected}.")
    if not images.is_floating_point():
        raise InputError(f"{name}: got dtype {images.dtype}; {expected} (divide uint8 images by 255).")
    low, high = float(images.min()), float(images.max())
    if not (low >= 0.0 and high <= 1.0):  # written this way to also reject NaN
        raise InputError(f"{name}: values span [{low:.3g}, {high:.3g}]; {expected} (divide uint8 images by 255).")
    return images.float()


class VisionEncoder(FrozenModule, abc.ABC):
    """A frozen image backbone returning a feature pyramid keyed by stride."""

    #: registry / cache name, e.g. ``efficientnet-lite0`` or ``hf:facebook/dinov2-small``
    name: str
    #: output strides, ascending (e.g. ``(4, 8, 16, 32)``)
    strides: tuple[int, ...]
    #: channels per stride, same order as ``strides``
    channels: tuple[int, ...]

    def forward(self, images: torch.Tensor) -> dict[int, torch.Tensor]:
        """``images``: ``(B, 3, H, W)`` float in [0, 1]; returns ``{stride: (B, C, ceil(H/s), ceil(W/s))}``."""
        images = validate_images(images)
        device = next(self.parameters()).device
        with torch.no_grad():
            return self._encode(images.to(device))

    def level_shapes(self, height: int, width: int) -> dict[int, tuple[int, int, int]]:
        """``{stride: (C, H', W')}`` for an ``H x W`` input, without running the model."""
        return {s: pyramid_shape(s, c, height, width) for s, c in zip(self.strides, self.channels)}

    @abc.abstractmethod
    def _encode(self, images: torch.Tensor) -> dict[int, torch.Tensor]:
        """Validated float32 ``(B, 3, H, W)`` in [0, 1] on the model's device -> pyramid."""


class LanguageEncoder(FrozenModule, abc.ABC):
    """A frozen text model whose hidden layer ``layer`` provides the token embeddings."""

    name: str
    #: width of the returned token vectors
    dim: int
    #: hidden layer index used (negative counts from the last layer, as in the paper's -12)
    layer: int

    def forward(self, texts: str | Sequence[str]) -> TokenEmbeddings:
        """Encode non-empty strings (one string is one text); returns padded tokens ``(B, T, dim)`` and mask
        ``(B, T)``."""
        texts = strings(texts, "texts")  # one string is one text
        with torch.no_grad():
            return self._encode(texts)

    @abc.abstractmethod
    def _encode(self, texts: list[str]) -> TokenEmbeddings:
        """Validated non-empty strings -> token embeddings."""
