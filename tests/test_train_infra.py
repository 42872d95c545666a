"""Training infrastructure: step-derived batches, LR schedule, atomic and validated checkpoints."""

from __future__ import annotations

import pytest
import torch

from find3d.errors import ModelError
from find3d.train.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint
from find3d.train.schedule import batch_indices, step_seed, warmup_cosine


def test_batches_cover_each_epoch_once_and_shard_across_ranks():
    seen = [i for step in range(5) for i in batch_indices(20, 4, step, seed=3)]
    assert sorted(seen) == list(range(20))  # one epoch = 5 steps of 4
    ranks = [batch_indices(20, 2, 1, seed=3, rank=r, world_size=2) for r in range(2)]
    assert ranks[0] + ranks[1] == batch_indices(20, 4, 1, seed=3)
    assert batch_indices(20, 4, 7, seed=3) == batch_indices(20, 4, 7, seed=3)
    assert batch_indices(20, 4, 5, seed=3) != batch_indices(20, 4, 0, seed=3)  # new epoch, new order


def test_tiny_dataset_still_fills_a_batch():
    assert len(batch_indices(3, 8, 0, seed=0)) == 8


def test_step_seed_and_schedule():
    assert step_seed(0, 5) == step_seed(0, 5) != step_seed(0, 6)
    assert warmup_cosine(0, 100, 10) == pytest.approx(0.1)
    assert warmup_cosine(10, 100, 10) == pytest.approx(1.0)
    assert warmup_cosine(100, 100, 10) == pytest.approx(0.05)


def test_checkpoints_rotate_and_last_points_to_newest(tmp_path):
    for step in (10, 20, 30, 40):
        save_checkpoint(tmp_path, step, {"model": {"w": torch.tensor(float(step))}, "config": {}}, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000030.pt", "step_00000040.pt"]
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["step"] == 40
    assert load_checkpoint(tmp_path)["model"]["w"].item() == 40.0


def test_corrupt_and_foreign_checkpoints_name_the_fix(tmp_path):
    path = save_checkpoint(tmp_path, 1, {"model": {}, "config": {}})
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(ModelError, match=r"corrupt .* pass an intact one, e\.g\. an earlier step_\*\.pt") as err:
        load_checkpoint(path)
    assert "resume" not in str(err.value)  # eval and the API load checkpoints too
    with pytest.raises(ModelError, match=r"corrupt .*; delete it and resume"):
        load_checkpoint(path, fix="delete it and resume")
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(ModelError, match="not a find3d interface checkpoint"):
        load_checkpoint(foreign)
    (tmp_path / "empty_run").mkdir()
    with pytest.raises(ModelError, match="no checkpoints"):
        load_checkpoint(tmp_path / "empty_run")
    with pytest.raises(ModelError, match="file not found"):
        load_checkpoint(tmp_path / "missing.pt")
