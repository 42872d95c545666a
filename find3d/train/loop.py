"""The multi-task training loop behind ``find3d train-interface``.

One step = one joint multi-task batch: every task annotated in the batch's images contributes its
losses (FindCriterion) to one backward pass. Frozen encoders run under ``no_grad`` (vision features
come from the disk cache after the first epoch when augmentation is off); only the interface is
optimised. Batches and per-step seeds are functions of (seed, step), so ``resume`` continues a
killed run exactly.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from tqdm import tqdm

from find3d import validate
from find3d.compat.quiet import loader_workers
from find3d.config import to_dict
from find3d.data.dataset import FindDataset
from find3d.encoders import build_language_encoder, build_vision_encoder
from find3d.encoders.cache import FeatureCache
from find3d.errors import ConfigError
from find3d.fileio import atomic_open
from find3d.interface.collate import FindBatch, collate
from find3d.interface.criterion import FindCriterion
from find3d.interface.model import FindInterface, FindModel
from find3d.interface.spec import TASKS
from find3d.train.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint
from find3d.train.config import TrainInterfaceConfig
from find3d.train.curves import plot_loss_curves
from find3d.train.distributed import DistInfo, all_reduce_mean, init_distributed, shutdown
from find3d.train.schedule import batch_indices, epoch_of, step_seed, warmup_cosine

#: fields a resumed run may change, as they do not affect what is trained: top-level (machine, logging)
#: and ``interface.*`` (inference only)
RESUMABLE = frozenset({"num_workers", "device", "torch_threads", "checkpoint_every", "log_every", "feature_cache"})
RESUMABLE_INTERFACE = frozenset({"object_threshold", "overlap_threshold"})


class StepBatches(IterableDataset):
    """Yields the collated batch of every step from ``start`` to ``stop`` (runs in loader workers).

    Each of W workers builds every W-th step; the loader takes one batch from each worker in turn, so the steps
    arrive in order and each once (a full range per worker would repeat every batch W times).
    """

    def __init__(self, dataset: FindDataset, config: TrainInterfaceConfig, start: int, stop: int, info: DistInfo):
        self.dataset, self.config, self.start, self.stop, self.info = dataset, config, start, stop, info

    def __iter__(self) -> Iterator[FindBatch]:
        cfg, n = self.config, len(self.dataset)
        worker = get_worker_info()
        first, stride = (0, 1) if worker is None else (worker.id, worker.num_workers)
        for step in range(self.start + first, self.stop, stride):
            self.dataset.set_epoch(epoch_of(step, n, cfg.batch_size, self.info.world_size))
            indices = batch_indices(n, cfg.batch_size, step, cfg.seed, self.info.rank, self.info.world_size)
            samples = [self.dataset[i] for i in indices]
            yield collate(samples, self.dataset.class_names, cfg.interface.class_prompt,
                          cfg.interface.max_spatial_prompts)


@dataclass
class Run:
    """Everything a training run holds."""

    config: TrainInterfaceConfig
    info: DistInfo
    dataset: FindDataset
    model: FindModel
    interface: torch.nn.Module  # the interface, DDP-wrapped when distributed
    criterion: FindCriterion
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    cache: FeatureCache
    start_step: int


def build_run(config: TrainInterfaceConfig, resume: bool) -> Run:
    unknown = sorted(set(config.tasks) - set(TASKS))
    if unknown:
        raise ConfigError(f"tasks: unknown {unknown}; choose from {list(TASKS)} (empty list: all)")
    validate.device(config.device, "device")  # CUDA asked of a CPU-only torch: one clear line, before any work
    info = init_distributed(config.device)
    if config.torch_threads:
        torch.set_num_threads(config.torch_threads)
    torch.manual_seed(config.seed)
    initial = _initial_weights(config) if config.init_from else None  # a bad file fails before the heavy work
    dataset = FindDataset(config.data, config.train_split, config.dataset)
    vision = build_vision_encoder(config.encoders.vision)
    language = build_language_encoder(config.encoders.language, layer=config.encoders.language_layer)
    interface = FindInterface.for_encoders(config.interface, vision, language)
    model = FindModel(interface, vision, language).to(info.device)
    optimizer = torch.optim.AdamW(interface.parameters(), lr=config.optim.lr, weight_decay=config.optim.weight_decay)
    optim = config.optim
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine(step, config.max_steps, optim.warmup_steps, optim.min_lr_ratio))
    start_step = _restore(config, interface, optimizer, scheduler) if resume else 0
    if initial is not None and start_step == 0:
        _load_initial(config, interface, initial)
    wrapped: torch.nn.Module = interface
    if info.world_size > 1:
        # Tasks absent from a batch leave their query pools unused in that step.
        wrapped = DistributedDataParallel(interface, find_unused_parameters=True)
    cache = FeatureCache(config.feature_cache or config.output_dir / "feature_cache", vision)
    return Run(config, info, dataset, model, wrapped, FindCriterion(config.interface).to(info.device),
               optimizer, scheduler, cache, start_step)


def _initial_weights(config: TrainInterfaceConfig) -> dict[str, torch.Tensor]:
    """``init_from``'s interface weights, once its encoders are known to be this run's (the interface reads
    their features, so weights trained on other encoders are noise here)."""
    state = load_checkpoint(config.init_from, fix="pass an intact checkpoint as init_from")
    names = {"vision": config.encoders.vision, "language": config.encoders.language}
    theirs = {key: state.get("encoders", {}).get(key) for key in names}
    if theirs != names:
        raise ConfigError(f"init_from {config.init_from}: trained on encoders {theirs}, this run uses {names}; "
                          "set encoders.* to the checkpoint's, or drop init_from")
    return state["model"]


def _load_initial(config: TrainInterfaceConfig, interface: torch.nn.Module, weights: dict[str, torch.Tensor]) -> None:
    own = interface.state_dict()
    differ = sorted(k for k in own.keys() | weights.keys() if k not in own or k not in weights or
                    own[k].shape != weights[k].shape)
    if differ:
        raise ConfigError(f"init_from {config.init_from}: its interface differs from this config's in {len(differ)} "
                          f"tensors (first: {differ[0]}); take interface.* from the checkpoint's config, or drop "
                          "init_from")
    interface.load_state_dict(weights)  # copies into this run's dtype (the packaged weights are float16)


def _restore(config: TrainInterfaceConfig, interface: torch.nn.Module, optimizer: torch.optim.Optimizer,
             scheduler: torch.optim.lr_scheduler.LambdaLR) -> int:
    if not list_checkpoints(config.output_dir):
        print(f"train-interface: --resume: no checkpoint in {config.output_dir / 'checkpoints'} yet; "
              "starting from step 0", file=sys.stderr)
        return 0
    state = load_checkpoint(config.output_dir, fix="delete it and --resume again to continue from the "
                            "checkpoint before it in the same folder")
    if _comparable(state["config"]) != _comparable(to_dict(config)):
        raise ConfigError(
            f"{config.output_dir}: --resume with a different config than the checkpoint's; "
            "use the same config and overrides, or a new output_dir")
    interface.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    return int(state["step"])


def _comparable(config: dict[str, Any]) -> dict[str, Any]:
    """A stored config minus the fields that may change on resume (machine, logging, inference)."""
    data = {key: value for key, value in config.items() if key not in RESUMABLE}
    data["interface"] = {k: v for k, v in config["interface"].items() if k not in RESUMABLE_INTERFACE}
    return data


def _cached_pyramid(run: Run, images: torch.Tensor) -> dict[int, torch.Tensor]:
    """The frozen pyramid from the disk cache, moved to the training device (the cache returns CPU tensors)."""
    return {stride: level.to(run.info.device, non_blocking=True) for stride, level in run.cache(images).items()}


def train_step(run: Run, batch: FindBatch, step: int) -> dict[str, float]:
    """One optimisation step; returns the loss terms as floats."""
    cfg, device = run.config, run.info.device
    torch.manual_seed(step_seed(cfg.seed, step, run.info.rank))
    batch = batch.to(device)
    pyramid = _cached_pyramid(run, batch.images)
    if len(batch.ref_images):
        batch.ref_pyramid = _cached_pyramid(run, batch.ref_images)
    _, texts, refs = run.model.encode(batch, pyramid)
    tasks = [t for t in batch.tasks if not cfg.tasks or t in cfg.tasks]
    if not tasks:  # e.g. a single-task run on a batch without that task's annotations
        run.scheduler.step()
        return {"loss": 0.0}
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cfg.amp and device.type == "cuda"):
        outputs = run.interface(pyramid, texts, batch, refs, tasks=tasks)
        losses = run.criterion(outputs, batch)
    run.optimizer.zero_grad(set_to_none=True)
    losses["loss"].backward()
    if cfg.optim.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(run.model.interface.parameters(), cfg.optim.grad_clip)
    run.optimizer.step()
    run.scheduler.step()
    return {k: float(v.detach()) for k, v in losses.items() if ".aux" not in k}


def train_interface(config: TrainInterfaceConfig, resume: bool = False) -> Path:
    """Train (or resume) the interface; returns the run folder with its checkpoints."""
    run = build_run(config, resume)
    out = config.output_dir
    if run.info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        with atomic_open(out / "config.yaml", "w") as handle:
            yaml.safe_dump(to_dict(config), handle, sort_keys=False)
        _truncate_log(out / "metrics.jsonl", run.start_step)
    writer = _tensorboard(out) if run.info.is_main else None
    workers = loader_workers(config.num_workers)  # more than the usable cores only queue
    loader = DataLoader(StepBatches(run.dataset, config, run.start_step, config.max_steps, run.info),
                        batch_size=None, num_workers=workers, prefetch_factor=2 if workers else None)
    bar = tqdm(total=config.max_steps, initial=run.start_step, desc="train-interface",
               disable=None if run.info.is_main else True, dynamic_ncols=True)
    running: dict[str, float] = {}
    started = time.time()
    step = run.start_step
    for step, batch in enumerate(loader, start=run.start_step):
        losses = train_step(run, batch, step)
        if not math.isfinite(losses["loss"]):
            raise FloatingPointError(f"loss became {losses['loss']} at step {step}; lower optim.lr or check the data")
        running = {k: 0.9 * running.get(k, v) + 0.1 * v for k, v in losses.items()}
        bar.update(1)
        bar.set_postfix(loss=f"{running['loss']:.3f}", refresh=False)
        if (step + 1) % config.log_every == 0 or step + 1 == config.max_steps:
            # Ranks see different tasks (and so different loss terms); only the total is averaged.
            logged = {**losses, **all_reduce_mean({"loss": losses["loss"]}, run.info)}
            _log(run, writer, out, step + 1, logged, time.time() - started)
        if run.info.is_main and ((step + 1) % config.checkpoint_every == 0 or step + 1 == config.max_steps):
            _checkpoint(run, step + 1)
    bar.close()
    if writer is not None:
        writer.close()
    shutdown(run.info)
    return out


def _checkpoint(run: Run, step: int) -> None:
    vision, language = run.model.vision, run.model.language
    save_checkpoint(run.config.output_dir, step, {
        "model": run.model.interface.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "config": to_dict(run.config),
        "class_names": run.dataset.class_names,
        "isthing": run.dataset.isthing,
        "encoders": {"vision": vision.name, "language": language.name, "language_layer": language.layer},
    }, keep=run.config.keep_checkpoints)
    plot_loss_curves(run.config.output_dir)


def _log(run: Run, writer: Any, out: Path, step: int, losses: dict[str, float], elapsed: float) -> None:
    if not run.info.is_main:
        return
    lr = run.optimizer.param_groups[0]["lr"]
    record = {"step": step, "lr": lr, "elapsed_s": round(elapsed, 2), **losses}
    with open(out / "metrics.jsonl", "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")
    if writer is not None:
        for key, value in losses.items():
            writer.add_scalar(f"loss/{key}", value, step)
        writer.add_scalar("lr", lr, step)


def _truncate_log(path: Path, start_step: int) -> None:
    """Drop log rows past the resumed step so the curve has no duplicates."""
    if not path.exists():
        return
    rows = [line for line in path.read_text().splitlines() if json.loads(line)["step"] <= start_step]
    with atomic_open(path, "w") as handle:
        handle.write("".join(row + "\n" for row in rows))


def _tensorboard(out: Path) -> Any:
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(out / "tensorboard"))
