"""Datasets: official-format loaders (``formats``), mappers, ``FindDataset`` and ``check-data``.

Names are resolved lazily so that ``find3d make-data`` or ``find3d --help`` do not import OpenCV.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DataConfig": "find3d.data.dataset",
    "FindDataset": "find3d.data.dataset",
    "FindMapper": "find3d.data.mappers",
    "check_data": "find3d.data.check",
    "discover": "find3d.data.formats",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'find3d.data' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
