"""Every shipped YAML config validates into its dataclass."""

from __future__ import annotations

from pathlib import Path

import pytest

from find3d.config import load_config
from find3d.train.config import TrainInterfaceConfig

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


@pytest.mark.parametrize("path", sorted((CONFIGS / "interface").glob("*.yaml")), ids=lambda p: p.name)
def test_interface_configs_validate(path):
    config = load_config(TrainInterfaceConfig, path)
    assert config.max_steps > 0 and config.batch_size > 0
    assert config.interface.num_queries > 1
