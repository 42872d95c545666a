"""3D feature fields: the frame-embeddings store (``embed-frames``), the nerfstudio ``find-field``
method and the point export read by ``find3d.query``.

nerfstudio and torch are imported by the submodules that need them only.
"""
