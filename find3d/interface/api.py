"""The public Python API of a trained interface: ``find3d.Interface.from_checkpoint(path)``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from find3d.interface.model import FindInterface, FindModel


@dataclass
class LoadedInterface:
    """A trained model with the vocabulary it was trained on."""

    model: FindModel
    class_names: list[str]
    isthing: list[bool]
    config: object  # find3d.train.config.TrainInterfaceConfig
    step: int


def load_interface(checkpoint: str | Path, device: str | torch.device = "cpu") -> LoadedInterface:
    """Rebuild encoders + interface from a checkpoint file or run folder, in eval mode on ``device``."""
    from find3d.config import from_dict
    from find3d.encoders import build_language_encoder, build_vision_encoder
    from find3d.train.checkpoint import load_checkpoint
    from find3d.train.config import TrainInterfaceConfig

    state = load_checkpoint(checkpoint, map_location="cpu")
    config = from_dict(TrainInterfaceConfig, state["config"], where=f"checkpoint {checkpoint} config")
    names = state["encoders"]
    vision = build_vision_encoder(names["vision"])
    language = build_language_encoder(names["language"], layer=names["language_layer"])
    interface = FindInterface.for_encoders(config.interface, vision, language)
    interface.load_state_dict(state["model"])
    model = FindModel(interface, vision, language).to(device).eval()
    return LoadedInterface(model, list(state["class_names"]), list(state["isthing"]), config, int(state["step"]))
