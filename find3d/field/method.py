"""``ns-train find-field``: the nerfstudio method specification (entry point in setup.py).

Defaults fit a CPU (this runs ``ns-train find-field --data SCENE`` without options): the device is
CUDA only when present, 512 rays per batch, 2000 iterations, no mixed precision, a batch evaluated
every 500 steps. Measured on 2 shared CPU cores: 0.4–1.6 s per iteration at 384–512 rays (48
samples per ray), so the default run takes 15–50 minutes there. With CUDA, raise
``--pipeline.datamanager.train-num-rays-per-batch`` (e.g. 4096) and the iterations.
"""

from __future__ import annotations

import torch
from nerfstudio.configs.base_config import MachineConfig, ViewerConfig
from nerfstudio.engine.optimizers import AdamOptimizerConfig
from nerfstudio.engine.schedulers import MultiStepSchedulerConfig
from nerfstudio.engine.trainer import TrainerConfig
from nerfstudio.pipelines.base_pipeline import VanillaPipelineConfig
from nerfstudio.plugins.types import MethodSpecification

from find3d.field.data import FindDataManagerConfig
from find3d.field.model import FindFieldModelConfig

MAX_ITERATIONS = 2000

find_field = MethodSpecification(
    config=TrainerConfig(
        method_name="find-field",
        steps_per_eval_batch=500,
        steps_per_eval_image=500,
        steps_per_eval_all_images=100_000,
        steps_per_save=1000,
        max_num_iterations=MAX_ITERATIONS,
        mixed_precision=False,
        machine=MachineConfig(device_type="cuda" if torch.cuda.is_available() else "cpu"),
        pipeline=VanillaPipelineConfig(
            datamanager=FindDataManagerConfig(
                train_num_rays_per_batch=512,
                eval_num_rays_per_batch=512,
            ),
            model=FindFieldModelConfig(eval_num_rays_per_chunk=4096),
        ),
        optimizers={
            "fields": {
                "optimizer": AdamOptimizerConfig(lr=1e-2, eps=1e-15),
                # MultiStepLR keeps the learning rates Python floats; nerfstudio's exponential scheduler
                # stores numpy floats, which torch>=2.6 refuses to load (weights_only) in ns-eval.
                "scheduler": MultiStepSchedulerConfig(
                    max_steps=MAX_ITERATIONS, gamma=0.33,
                    milestones=(MAX_ITERATIONS // 2, MAX_ITERATIONS * 3 // 4, MAX_ITERATIONS * 9 // 10),
                ),
            },
        },
        viewer=ViewerConfig(num_rays_per_chunk=4096),
        vis="viewer",
    ),
    description="FIND feature field: RGB/density field with a head distilling FIND's per-pixel embeddings.",
)
