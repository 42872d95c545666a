"""Training checkpoints: written atomically, validated on load, enough state to resume bit-for-bit.

A checkpoint holds the trainable weights, optimizer and scheduler state, the step, the resolved
config and the RNG states. Data order and per-step randomness are derived from (seed, step), so
these states are all that a resumed run needs to continue exactly where a killed run stopped.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from find3d.errors import ModelError
from find3d.fileio import atomic_torch_save

FORMAT = "find3d-interface-checkpoint"
VERSION = 1
_NAME = re.compile(r"step_(\d+)\.pt$")
REQUIRED = ("format", "version", "step", "model", "config")


def checkpoint_path(run_dir: Path, step: int) -> Path:
    return run_dir / "checkpoints" / f"step_{step:08d}.pt"


def save_checkpoint(run_dir: Path, step: int, state: dict[str, Any], keep: int = 3) -> Path:
    """Write ``state`` for ``step`` atomically, point ``last.pt`` at it, prune all but ``keep`` files."""
    path = checkpoint_path(run_dir, step)
    atomic_torch_save({"format": FORMAT, "version": VERSION, "step": step, **state}, path)
    last = run_dir / "checkpoints" / "last.pt"
    tmp = last.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(path.name)
    tmp.replace(last)  # atomic: readers see the old or the new checkpoint, never none
    for old in list_checkpoints(run_dir)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoints of a run, oldest first."""
    folder = run_dir / "checkpoints"
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if _NAME.search(p.name)), key=lambda p: int(_NAME.search(p.name)[1]))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu",
                    fix: str = "pass an intact one, e.g. an earlier step_*.pt of the same run") -> dict[str, Any]:
    """Load and validate a checkpoint file (or a run folder: its latest checkpoint); ``fix`` ends the
    message of a corrupt file (what to do depends on the caller: resuming a run, or evaluating)."""
    path = Path(path)
    if path.is_dir():
        found = list_checkpoints(path)
        if not found:
            raise ModelError(f"{path}: no checkpoints in {path / 'checkpoints'}; train first (find3d train-interface)")
        path = found[-1]
    if not path.is_file():
        raise ModelError(f"checkpoint {path}: file not found; pass a .pt file or a run folder")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:  # torch raises many types for truncated or foreign files
        raise ModelError(
            f"checkpoint {path} is corrupt or not a torch file ({type(err).__name__}: {err}); {fix}"
        ) from err
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ModelError(f"checkpoint {path} is not a find3d interface checkpoint (missing format tag)")
    missing = [key for key in REQUIRED if key not in state]
    if missing:
        raise ModelError(f"checkpoint {path} lacks {missing}; it was written by an incompatible version")
    if state["version"] > VERSION:
        raise ModelError(f"checkpoint {path} has format version {state['version']}; upgrade find3d to read it")
    return state
