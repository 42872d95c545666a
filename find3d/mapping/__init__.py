"""Live 3D mapping: FIND embeddings of keyframes fused with depth into a bounded, queryable voxel map.

One module per concern: ``fusion`` (frame samples and the voxel-hashed ``VoxelMap``, also what
``eval-3d``'s fusion baseline runs), ``live`` (the map, its keyframes and a ``find3d.query.field.Field``
snapshot that ``find3d.query.answer.answer`` answers on), ``sync`` (colour paired with depth and
pose from bounded buffers), ``worker`` (a thread that keeps only the newest pending keyframe),
``record`` (the keyframes as a make-scene scene folder), ``cold`` (voxels spilled to disk when memory is
full, memory-mapped, read back when seen again), ``store`` (a map saved atomically as a field export
plus its own state, and loaded again) and ``mapper`` (all of it behind ``Mapper.wants`` / ``offer``).
The ROS 2 ``mapping_node`` is a thin shell around ``Mapper``.
"""
