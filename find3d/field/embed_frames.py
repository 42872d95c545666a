"""``find3d embed-frames``: FIND per-pixel and image-level embeddings of every frame of a scene.

Writes ``SCENE/find_embeddings`` (format in ``find3d.field.embeddings``); a second run resumes,
skipping frames already on disk, as long as the frames and the checkpoint are the same.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from find3d.errors import InputError


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, required=True, help="nerfstudio scene folder (with transforms.json)")
    parser.add_argument("--checkpoint", type=Path, required=True, help="trained FIND interface checkpoint")
    parser.add_argument("--code-dim", type=int, default=0,
                        help="store a PCA code of this size instead of full D-dim embeddings (0: full)")
    parser.add_argument("--commit-every", type=int, default=16, help="mark frames done every this many frames")


def run(args: argparse.Namespace) -> int:
    from find3d import Interface  # the FIND interface; heavy, so imported only when the command runs
    from find3d.field.embeddings import embed_frames

    if args.code_dim < 0 or args.commit_every < 1:
        raise InputError("--code-dim must be >= 0 and --commit-every >= 1.")
    interface = Interface.from_checkpoint(args.checkpoint)
    # Recorded for `find3d query`, which must encode with the very weights that embedded the frames:
    # resolved, so a training run's last.pt symlink moving on to a newer step cannot change them.
    store = embed_frames(args.data, interface, checkpoint=str(args.checkpoint.resolve()),
                         code_dim=args.code_dim or None, commit_every=args.commit_every)
    meta = store.meta
    print(f"{len(meta.frames)} frames embedded: {meta.height}x{meta.width}x{meta.dim} -> {store.root}")
    return 0
