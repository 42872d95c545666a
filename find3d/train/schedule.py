"""Which samples each step trains on, and the learning-rate schedule — both pure functions of the step.

Deriving the batch from (seed, step) instead of iterator state is what makes ``--resume``
bit-for-bit: a resumed run asks for step k's batch and gets exactly what the killed run would have
seen, on every rank, with no sampler state to save.
"""

from __future__ import annotations

import math

import numpy as np


def epoch_of(step: int, num_items: int, batch_size: int, world_size: int = 1) -> int:
    """The epoch ``step`` falls in (datasets reseed their augmentation per epoch)."""
    return step // max(num_items // (batch_size * world_size), 1)


def batch_indices(num_items: int, batch_size: int, step: int, seed: int, rank: int = 0,
                  world_size: int = 1) -> list[int]:
    """This rank's dataset indices for ``step``: epochs are seeded permutations, cut into global batches."""
    if num_items <= 0:
        raise ValueError("cannot draw batches from an empty dataset")
    global_batch = batch_size * world_size
    per_epoch = max(num_items // global_batch, 1)
    epoch, offset = divmod(step, per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(num_items)
    if num_items < global_batch:  # tiny datasets: repeat the permutation to fill the batch
        order = np.resize(order, global_batch)
    batch = order[offset * global_batch : (offset + 1) * global_batch]
    return batch[rank * batch_size : (rank + 1) * batch_size].tolist()


def step_seed(seed: int, step: int, rank: int = 0) -> int:
    """Seed for the per-step randomness (augmentation, point sampling, dropout)."""
    return int(np.random.default_rng([seed, step, rank]).integers(2**62))


def warmup_cosine(step: int, total_steps: int, warmup_steps: int, min_ratio: float = 0.05) -> float:
    """Learning-rate multiplier: linear warm-up, then cosine decay to ``min_ratio``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min((step - warmup_steps) / max(total_steps - warmup_steps, 1), 1.0)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
