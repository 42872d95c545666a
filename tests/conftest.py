"""Test-wide settings: offline hubs, localhost-only DDS, and the CUDA-only marker."""

from __future__ import annotations

import os

import pytest

# Nothing may reach a model hub at test time; ROS 2 discovery stays on this machine.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
# A DDS domain of this run's own, so two runs on one machine (or a developer's nodes) never meet.
os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))


def pytest_collection_modifyitems(config, items):  # noqa: ARG001 - pytest hook signature
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="CUDA-only path; no GPU on this machine")
    for item in items:
        if "requires_cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """A real `find3d make-data` dataset of 12 rendered images (10 train + 2 val)."""
    from find3d.data.make_data import make_data

    root = tmp_path_factory.mktemp("tiny_dataset")
    make_data(root, images=12, seed=0, size=128, workers=1, overwrite=True)
    return root


TINY_TRAIN_OVERRIDES = [
    "batch_size=4", "max_steps=3", "checkpoint_every=3", "log_every=1", "num_workers=0", "torch_threads=1",
    "dataset.image_size=128", "dataset.augment=false", "interface.hidden_dim=64", "interface.num_layers=2",
    "interface.num_heads=4", "interface.ffn_dim=128", "interface.projection_dim=64", "interface.num_queries=11",
    "interface.pixel_decoder_dim=32", "interface.num_points=256", "optim.warmup_steps=1",
]


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_dataset, tmp_path_factory):
    """A real checkpoint: 3 training steps of a small interface on the packaged encoders."""
    from find3d.config import load_config
    from find3d.train.config import TrainInterfaceConfig
    from find3d.train.loop import train_interface

    out = tmp_path_factory.mktemp("tiny_run")
    overrides = [f"data={tiny_dataset}", f"output_dir={out}", *TINY_TRAIN_OVERRIDES]
    config = load_config(TrainInterfaceConfig, None, overrides)
    return train_interface(config) / "checkpoints" / "last.pt"


@pytest.fixture(scope="session")
def pipeline(tiny_checkpoint, tmp_path_factory):
    """A real field through the CLI: make-scene -> embed-frames -> ns-train find-field (depth-supervised) ->
    export-field; shared by the 3D pipeline and the ROS 2 tests."""
    import torch
    from fixtures.field import train_field

    from find3d.cli import main

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("pipeline")
    scene, field = root / "scene", root / "field"
    assert main(["make-scene", "--out", str(scene), "--views", "12", "--heldout", "3", "--size", "64"]) == 0
    assert main(["embed-frames", "--data", str(scene), "--checkpoint", str(tiny_checkpoint)]) == 0
    config = train_field(scene, root / "runs")
    assert main(["export-field", "--config", str(config), "--out", str(field), "--num-points", "4000"]) == 0
    return {"scene": scene, "field": field, "checkpoint": tiny_checkpoint, "root": root}
