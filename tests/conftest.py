"""Test-wide settings: offline hubs, localhost-only DDS, and the CUDA-only marker."""

from __future__ import annotations

import os

import pytest

# Nothing may reach a model hub at test time; ROS 2 discovery stays on this machine.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")


def pytest_collection_modifyitems(config, items):  # noqa: ARG001 - pytest hook signature
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="CUDA-only path; no GPU on this machine")
    for item in items:
        if "requires_cuda" in item.keywords:
            item.add_marker(skip)
