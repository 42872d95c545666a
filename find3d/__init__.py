"""find3d: FIND (Interfacing Foundation Models' Embeddings) for 2D, 3D and ROS 2.

Heavy modules are imported lazily so that ``import find3d`` and ``find3d --help`` stay fast.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
