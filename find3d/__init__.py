"""find3d: FIND (Interfacing Foundation Models' Embeddings) for 2D, 3D and ROS 2.

Heavy modules are imported lazily so that ``import find3d`` and ``find3d --help`` stay fast:
``find3d.Interface`` (torch, the encoders) and ``find3d.Field`` (an exported 3D field; open3d) are
imported on first access.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from find3d.interface.api import Interface
    from find3d.query.field import Field

__version__ = "0.1.0"

__all__ = ["Field", "Interface", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "Interface":
        from find3d.interface.api import Interface

        return Interface
    if name == "Field":
        from find3d.query.field import Field

        return Field
    raise AttributeError(f"module 'find3d' has no attribute {name!r}")
