"""``find3d train-interface`` configuration (``configs/interface/*.yaml`` validate into this)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from find3d.config import doc
from find3d.data.dataset import DataConfig
from find3d.interface.config import InterfaceConfig


@dataclass
class EncodersConfig:
    """The frozen foundation models (names from ``find3d models``, or ``hf:NAME`` / ``hf:/path``)."""

    vision: str = doc("Vision encoder name.", "efficientnet-lite0")
    language: str = doc("Language encoder name.", "minilm-l6")
    language_layer: int | None = doc("Hidden layer of the language model (None: the encoder's default).", None)


@dataclass
class OptimConfig:
    """AdamW with linear warm-up and cosine decay."""

    lr: float = doc("Peak learning rate (paper: 1e-4 for 50 COCO epochs).", 1e-4, minimum=0)
    weight_decay: float = doc("AdamW weight decay (paper: 0.05).", 0.05, minimum=0)
    grad_clip: float = doc("Max global gradient norm; 0 disables clipping (paper: 0.01).", 0.01, minimum=0)
    warmup_steps: int = doc("Linear warm-up steps.", 100, minimum=0)
    min_lr_ratio: float = doc("Final learning rate as a fraction of the peak.", 0.05, minimum=0, maximum=1)


@dataclass
class TrainInterfaceConfig:
    """Joint multi-task training of the FIND interface on frozen encoders."""

    data: Path = doc("Dataset root in COCO layout (official download or `find3d make-data` output).",
                     Path("data/find3d-synthetic"))
    train_split: str = doc("Split trained on.", "train")
    val_split: str = doc("Split evaluated on after training (empty: none).", "val")
    output_dir: Path = doc("Run folder: checkpoints/, tensorboard/, metrics.jsonl, config.yaml.",
                           Path("outputs/interface"))
    feature_cache: Path | None = doc(
        "Folder of the frozen-backbone feature cache (None: <output_dir>/feature_cache). Only effective "
        "when data.augment is false, since augmented images never repeat.", None)
    init_from: Path | None = doc(
        "Start the interface from this checkpoint's weights (a .pt file or a run folder), e.g. "
        "find3d/assets/interface-cpu.pt to fine-tune the packaged interface on new data; the optimiser, schedule "
        "and step start afresh. Its encoders and interface architecture must be this config's. None: random "
        "initialisation. A --resume from output_dir's own checkpoint takes precedence.", None)
    tasks: list[str] = doc(
        "Tasks trained (generic, grounding, retrieval, interactive, interleave_grounding, interleave_retrieval); "
        "empty: every task annotated in the data. Single-task runs are the baselines of joint training.",
        factory=list)
    batch_size: int = doc("Images per step per process.", 8, minimum=1)
    max_steps: int = doc("Optimisation steps.", 2000, minimum=1)
    seed: int = doc("Seed of the data order, augmentation and initialisation.", 0)
    checkpoint_every: int = doc("Write an atomic checkpoint every N steps (and at the end).", 200, minimum=1)
    keep_checkpoints: int = doc("How many checkpoints to keep.", 3, minimum=1)
    log_every: int = doc("Log running losses every N steps (TensorBoard, metrics.jsonl).", 10, minimum=1)
    num_workers: int = doc("Data-loading worker processes (0: load in the training process).", 1, minimum=0)
    device: str = doc("'auto' (CUDA when available), 'cpu' or 'cuda[:i]'.", "auto")
    amp: bool = doc("bfloat16 autocast on CUDA (ignored on CPU).", True)
    torch_threads: int = doc("Intra-op CPU threads (0: torch's default).", 0, minimum=0)
    encoders: EncodersConfig = doc("Frozen foundation models.", factory=EncodersConfig)
    interface: InterfaceConfig = doc("Interface architecture and loss weights.", factory=InterfaceConfig)
    optim: OptimConfig = doc("Optimiser and schedule.", factory=OptimConfig)
    dataset: DataConfig = doc("Dataset mapping: image size, augmentation, prompt sampling.", factory=DataConfig)
