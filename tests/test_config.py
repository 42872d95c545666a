"""Typed YAML configs: nested dataclasses, overrides, unknown keys and wrong types rejected."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from find3d.config import describe, doc, load_config, to_dict
from find3d.errors import ConfigError


@dataclass
class Optim:
    lr: float = doc("learning rate", 1e-4)
    betas: tuple[float, float] = doc("Adam betas", (0.9, 0.999))


@dataclass
class Root:
    name: str = doc("run name", "run")
    steps: int = doc("optimisation steps", 10)
    out: Path = doc("output folder", Path("outputs"))
    optim: Optim = doc("optimiser", factory=Optim)
    tasks: list[str] = doc("tasks", factory=lambda: ["panoptic"])
    device: str | None = doc("device or auto", None)


def test_yaml_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: a\noptim:\n  lr: 0.001\ntasks: [panoptic, grounding]\n")
    cfg = load_config(Root, path, ["steps=5", "optim.betas=[0.5, 0.6]", "device=cpu"])
    assert cfg.name == "a" and cfg.steps == 5 and cfg.optim.lr == 0.001
    assert cfg.optim.betas == (0.5, 0.6) and cfg.tasks == ["panoptic", "grounding"] and cfg.device == "cpu"
    assert to_dict(cfg)["out"] == "outputs"


def test_int_accepted_for_float_but_not_string_for_int():
    assert load_config(Root, None, ["optim.lr=1"]).optim.lr == 1.0
    with pytest.raises(ConfigError, match=r"override steps=many: steps: expected an integer"):
        load_config(Root, None, ["steps=many"])


def test_unknown_key_lists_valid_ones(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  learning_rate: 3\n")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['learning_rate'\]; valid keys are \['betas', 'lr'\]"):
        load_config(Root, path)


def test_bad_yaml_missing_file_and_bad_override(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(Root, bad)
    with pytest.raises(ConfigError, match="file not found"):
        load_config(Root, tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(Root, None, ["steps"])


def test_describe_documents_every_field():
    rows = {key: help_text for key, _, help_text in describe(Root)}
    assert rows["optim.lr"] == "learning rate"
    assert all(rows.values())


@dataclass
class Required:
    must: int = field(metadata={"help": "required"})


def test_missing_required_key():
    with pytest.raises(ConfigError, match=r"required key\(s\) \['must'\]"):
        load_config(Required, None, [])
