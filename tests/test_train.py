"""train-interface end to end: weights move, encoders do not, resume is exact, DDP runs on gloo."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import TINY_TRAIN_OVERRIDES

from find3d.config import load_config
from find3d.encoders import build_vision_encoder
from find3d.errors import ConfigError
from find3d.train.checkpoint import load_checkpoint
from find3d.train.config import TrainInterfaceConfig
from find3d.train.loop import build_run, train_interface

BIN = Path(sys.executable).parent


def tiny_config(data: Path, out: Path, *extra: str) -> TrainInterfaceConfig:
    return load_config(TrainInterfaceConfig, None, [f"data={data}", f"output_dir={out}", *TINY_TRAIN_OVERRIDES, *extra])


def losses(run_dir: Path) -> list[tuple[int, float]]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(row["step"], row["loss"]) for row in rows]


def test_training_moves_the_interface_and_never_the_encoders(tiny_dataset, tiny_checkpoint):
    state = load_checkpoint(tiny_checkpoint)
    fresh = build_run(tiny_config(tiny_dataset, tiny_checkpoint.parent.parent / "fresh"), resume=False)
    initial = fresh.model.interface.state_dict()
    changed = [k for k, v in state["model"].items() if not torch.equal(v, initial[k])]
    assert len(changed) > 0.5 * len(initial), "most interface tensors should have been updated"
    # The checkpoint holds no encoder weights, and the encoders used in training are the packaged ones.
    assert not any(k.startswith(("vision.", "language.")) for k in state["model"])
    packaged = build_vision_encoder("efficientnet-lite0").state_dict()
    trained_with = fresh.model.vision.state_dict()
    assert all(torch.equal(packaged[k], trained_with[k]) for k in packaged)
    assert all(not p.requires_grad for p in fresh.model.vision.parameters())


def test_run_folder_has_config_curve_png_and_tensorboard(tiny_checkpoint):
    run_dir = tiny_checkpoint.parent.parent
    assert (run_dir / "config.yaml").is_file() and any((run_dir / "tensorboard").iterdir())
    assert [step for step, _ in losses(run_dir)] == [1, 2, 3]
    png = (run_dir / "loss_curves.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000


def test_init_from_starts_from_a_checkpoint_s_weights(tiny_dataset, tiny_checkpoint, tmp_path):
    from find3d.demo import PACKAGED_INTERFACE

    state = load_checkpoint(tiny_checkpoint)
    run = build_run(tiny_config(tiny_dataset, tmp_path / "tuned", f"init_from={tiny_checkpoint}"), resume=False)
    assert run.start_step == 0 and run.scheduler.last_epoch == 0  # only the weights carry over
    assert all(torch.equal(value, state["model"][key]) for key, value in run.model.interface.state_dict().items())
    # The packaged interface, stored in float16, fine-tunes in float32 from the same values.
    packaged = load_checkpoint(PACKAGED_INTERFACE)
    cpu_yaml = Path(__file__).resolve().parents[1] / "configs" / "interface" / "cpu.yaml"
    config = load_config(TrainInterfaceConfig, cpu_yaml, [f"data={tiny_dataset}", f"output_dir={tmp_path / 'packaged'}",
                                                          f"init_from={PACKAGED_INTERFACE}"])
    weights = build_run(config, resume=False).model.interface.state_dict()
    assert all(value.dtype == torch.float32 and torch.equal(value, packaged["model"][key].float())
               for key, value in weights.items() if value.is_floating_point())
    with pytest.raises(ConfigError, match=r"its interface differs from this config's in \d+ tensors"):
        build_run(tiny_config(tiny_dataset, tmp_path / "other", f"init_from={tiny_checkpoint}",
                              "interface.num_layers=3"), resume=False)
    with pytest.raises(ConfigError, match=r"trained on encoders .*'minilm-l6'.* this run uses .*'smollm2-135m'"):
        build_run(tiny_config(tiny_dataset, tmp_path / "llm", f"init_from={tiny_checkpoint}",
                              "encoders.language=smollm2-135m"), resume=False)


def test_unknown_task_is_a_config_error(tiny_dataset, tmp_path):
    with pytest.raises(ConfigError, match=r"tasks: unknown \['segmentation'\]"):
        build_run(tiny_config(tiny_dataset, tmp_path, "tasks=[segmentation]"), resume=False)


@pytest.mark.slow
def test_checkpoint_carries_inference_thresholds_which_a_resume_may_change(tiny_dataset, tmp_path):
    from find3d.interface.api import load_interface

    run = train_interface(tiny_config(tiny_dataset, tmp_path, "max_steps=1", "interface.object_threshold=0.35"))
    assert load_interface(run / "checkpoints" / "last.pt").config.interface.object_threshold == 0.35
    resumed = build_run(tiny_config(tiny_dataset, tmp_path, "max_steps=1", "interface.object_threshold=0.3",
                                    "torch_threads=2"), resume=True)
    assert resumed.start_step == 1
    with pytest.raises(ConfigError, match="different config"):
        build_run(tiny_config(tiny_dataset, tmp_path, "max_steps=1", "interface.num_layers=3"), resume=True)


def test_resume_after_kill_reproduces_the_uninterrupted_curve(tiny_dataset, tmp_path):
    steps = ["max_steps=24", "checkpoint_every=2", "keep_checkpoints=50"]
    reference = train_interface(tiny_config(tiny_dataset, tmp_path / "uninterrupted", *steps))

    killed = tmp_path / "killed"
    command = [str(BIN / "find3d"), "train-interface", f"data={tiny_dataset}", f"output_dir={killed}",
               *TINY_TRAIN_OVERRIDES, *steps]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while not (killed / "checkpoints" / "step_00000004.pt").exists():
        assert process.poll() is None and time.time() < deadline, "training died before its 2nd checkpoint"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    interrupted_at = load_checkpoint(killed)["step"]
    assert interrupted_at < 24, "the kill must land before the end for this test to mean anything"

    resumed = subprocess.run([*command, "--resume"], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert losses(killed) == losses(reference)  # bit-for-bit, step by step
    final, expected = load_checkpoint(killed)["model"], load_checkpoint(reference)["model"]
    assert all(torch.equal(final[k], expected[k]) for k in expected)


def test_loader_workers_share_the_steps_and_keep_the_curve(tiny_dataset, tmp_path):
    # Each worker builds every 2nd step; a worker iterating all steps would hand every batch over twice
    # (6 logged steps for max_steps=3) and train on repeats.
    in_process = train_interface(tiny_config(tiny_dataset, tmp_path / "in_process"))
    two_workers = train_interface(tiny_config(tiny_dataset, tmp_path / "workers", "num_workers=2"))
    assert [step for step, _ in losses(two_workers)] == [1, 2, 3]
    assert losses(two_workers) == losses(in_process)


@pytest.mark.slow
def test_two_process_gloo_ddp(tiny_dataset, tmp_path):
    out = tmp_path / "ddp"
    command = [str(BIN / "python"), "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29517",
               "-m", "find3d.cli", "train-interface", f"data={tiny_dataset}", f"output_dir={out}",
               *TINY_TRAIN_OVERRIDES, "batch_size=2"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    state = load_checkpoint(out)
    assert state["step"] == 3
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert len(losses(out)) == 3  # rank 0 alone logs
