"""The pybullet data engine: seeded tabletop scenes rendered into official dataset formats.

``catalog`` names the categories and assets, ``scene`` composes, builds and renders scenes,
``annotate`` turns a render into files and a per-image record, ``language`` writes true captions,
referring expressions and grounded entries, ``coco`` assembles the official JSON payloads.
``find3d.data.make_data`` and ``find3d.data.make_scene`` drive them.
"""
