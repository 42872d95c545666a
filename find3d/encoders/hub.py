"""Resolve a Hugging Face model name or local path to a local folder, never touching the network."""

from __future__ import annotations

import os
from pathlib import Path

from find3d.errors import ModelError


def hf_hub_cache() -> Path:
    """The hub cache folder, read from the environment at call time (``HF_HUB_CACHE``, then ``HF_HOME``).

    ``huggingface_hub.constants`` freezes these when first imported; reading them per call lets a
    process (or a test) point at another cache after transformers was imported.
    """
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "huggingface"
    return Path(home).expanduser() / "hub"


def resolve_model_dir(name_or_path: str) -> Path:
    """A local folder with ``config.json``: the path itself, or the cached snapshot of hub repo ``name``."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(f"{path}: no config.json in this folder; pass a folder written by save_pretrained.")
        return path
    if name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1:
        raise ModelError(f"{name_or_path}: no such folder; pass an existing model folder or a hub name like org/model.")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    cache = hf_hub_cache()
    try:
        snapshot = Path(snapshot_download(name_or_path, cache_dir=cache, local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, ValueError) as err:
        raise ModelError(
            f"hf:{name_or_path} is not in the local Hugging Face cache ({cache}) and find3d never downloads. "
            f"Fetch it on a machine with internet: `huggingface-cli download {name_or_path}` (then copy the cache "
            f"folder here, or set HF_HUB_CACHE), or pass a local folder: hf:/path/to/model."
        ) from err
    if not (snapshot / "config.json").is_file():
        raise ModelError(f"hf:{name_or_path}: cached snapshot {snapshot} has no config.json; re-download it.")
    return snapshot
