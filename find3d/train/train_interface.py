"""``find3d train-interface``: joint multi-task training of the FIND interface."""

from __future__ import annotations

import argparse
from pathlib import Path


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=None,
                        help="YAML config (e.g. configs/interface/cpu.yaml); defaults apply when omitted")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the latest checkpoint in output_dir, exactly where it stopped")
    parser.add_argument("--print-config", action="store_true", help="print every config key with its help and exit")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="config overrides, e.g. max_steps=500 data=data/synth interface.num_layers=4")
    parser.epilog = ("Multi-GPU / multi-node: torchrun --nproc-per-node N -m find3d.cli train-interface ... "
                     "(DistributedDataParallel; gloo on CPU, NCCL on CUDA).")


def run(args: argparse.Namespace) -> int:
    from find3d.config import describe, load_config
    from find3d.train.config import TrainInterfaceConfig

    if args.print_config:
        for key, default, help_text in describe(TrainInterfaceConfig):
            print(f"{key:38s} {default:28s} {help_text}")
        return 0
    config = load_config(TrainInterfaceConfig, args.config, args.overrides)
    from find3d.train.loop import train_interface

    out = train_interface(config, resume=args.resume)
    print(f"checkpoints in {out / 'checkpoints'} (latest: last.pt); TensorBoard logs in {out / 'tensorboard'}")
    return 0
