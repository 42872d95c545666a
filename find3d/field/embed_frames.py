"""``find3d embed-frames``: FIND per-pixel and image-level embeddings of every frame of a scene.

Writes ``SCENE/find_embeddings`` (format in ``find3d.field.embeddings``); a second run resumes,
skipping frames already on disk, as long as the frames and the checkpoint are the same.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from find3d import validate


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, required=True, help="nerfstudio scene folder (with transforms.json)")
    parser.add_argument("--checkpoint", type=Path, required=True, help="trained FIND interface checkpoint")
    parser.add_argument("--code-dim", type=validate.cli(validate.integer, minimum=0), default=0,
                        help="store a PCA code of this size instead of full D-dim embeddings (0: full)")
    parser.add_argument("--commit-every", type=validate.cli(validate.integer, minimum=1), default=16,
                        help="mark frames done every this many frames")


def run(args: argparse.Namespace) -> int:
    from find3d import Interface  # the FIND interface; heavy, so imported only when the command runs
    from find3d.field.embeddings import embed_frames, frame_images

    frame_images(args.data)  # a broken scene is refused before the model loads
    interface = Interface.from_checkpoint(args.checkpoint)
    # Recorded for `find3d query`, which must encode with the very weights that embedded the frames:
    # resolved, so a training run's last.pt symlink moving on to a newer step cannot change them.
    # Whether a store is resumed is decided by the weights' content hash (interface.fingerprint).
    store = embed_frames(args.data, interface, checkpoint=str(resolved_checkpoint(args.checkpoint)),
                         code_dim=args.code_dim or None, commit_every=args.commit_every)
    meta = store.meta
    if store.replaced:
        print(f"embed-frames: re-embedded every frame: the store at {store.root} could not be resumed, "
              f"{store.replaced}", file=sys.stderr)
    kept = len(meta.frames) - store.written
    earlier = f" ({kept} already embedded by the same model, kept)" if kept else ""
    print(f"{store.written} of {len(meta.frames)} frames embedded now{earlier}: "
          f"{meta.height}x{meta.width}x{meta.dim} (model {meta.model}) -> {store.root}")
    return 0


def resolved_checkpoint(path: Path) -> Path:
    """The checkpoint file itself: a run folder's latest, a ``last.pt`` link's target."""
    from find3d.train.checkpoint import list_checkpoints

    if path.is_dir():
        found = list_checkpoints(path)
        if found:
            return found[-1].resolve()
    return path.resolve()
