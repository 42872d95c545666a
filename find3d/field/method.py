"""``ns-train find-field``: the nerfstudio method specification (entry point in setup.py).

Defaults fit a CPU (this runs ``ns-train find-field --data SCENE`` without options): the device is
CUDA only when present, 512 rays per batch, 2000 iterations, no mixed precision, a batch evaluated
every 500 steps. Measured on 2 shared CPU cores: 0.4–1.6 s per iteration at 384–512 rays (48
samples per ray), so the default run takes 15–50 minutes there. With CUDA, raise
``--pipeline.datamanager.train-num-rays-per-batch`` (e.g. 4096) and the iterations.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from nerfstudio.configs.base_config import MachineConfig, ViewerConfig
from nerfstudio.engine.optimizers import AdamOptimizerConfig
from nerfstudio.engine.schedulers import MultiStepSchedulerConfig
from nerfstudio.engine.trainer import TrainerConfig
from nerfstudio.pipelines.base_pipeline import VanillaPipelineConfig
from nerfstudio.plugins.types import MethodSpecification

from find3d.field.data import FindDataManagerConfig, scene_dir_of
from find3d.field.embeddings import EmbeddingStore, scene_frames
from find3d.field.model import FindFieldModelConfig

MAX_ITERATIONS = 2000


@dataclass
class FindTrainerConfig(TrainerConfig):
    """nerfstudio's TrainerConfig, with the two checks ``ns-train`` needs before a find-field run starts.

    ``save_config`` is the last step of ``ns-train`` before training (and the only one find3d's plugin
    sees), so it is where the run is made portable and its input checked:

    - every path is stored absolute: nerfstudio resolves ``config.yml`` paths from the working directory,
      so a relative ``--data scene`` would break ``ns-eval``, ``ns-render``, ``ns-viewer`` and
      ``find3d export-field`` run from anywhere else;
    - the embeddings store must be complete: a missing or partial one stops here with find3d's one-line
      message (exit 2) instead of under a traceback from deep inside the trainer;
    - the scene's poses must be finite: nerfstudio trains on a NaN pose without a word (and its dataparser
      transform turns NaN), which only shows much later as a broken export.
    """

    def save_config(self) -> None:
        from find3d.errors import Find3dError

        self.make_paths_absolute()
        datamanager = self.pipeline.datamanager
        if isinstance(datamanager, FindDataManagerConfig):
            try:
                scene_frames(scene_dir_of(Path(datamanager.data or datamanager.dataparser.data)))
                EmbeddingStore.open(datamanager.store_dir())
            except Find3dError as err:
                print(f"ns-train {self.method_name}: error: {err}", file=sys.stderr)
                raise SystemExit(2) from None
        super().save_config()

    def make_paths_absolute(self) -> None:
        """Every relative path of the run (data, embeddings, output folder) as an absolute one."""
        datamanager = self.pipeline.datamanager
        dataparser = getattr(datamanager, "dataparser", None)
        if getattr(datamanager, "data", None) is not None and dataparser is not None:
            dataparser.data = datamanager.data  # what the data manager does when it starts; stored as used
        for owner, name in ((self, "output_dir"), (self, "data"), (self, "load_dir"), (datamanager, "data"),
                            (datamanager, "embeddings"), (dataparser, "data")):
            value = getattr(owner, name, None)
            if isinstance(value, Path) and not value.is_absolute():
                setattr(owner, name, value.absolute())


find_field = MethodSpecification(
    config=FindTrainerConfig(
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
