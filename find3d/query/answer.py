"""A whole answer to a 3D query: the mask, its objects, per-entity masks and the best frames.

``answer(field, interface, query, ...)`` is what the ROS 2 nodes serve: ``Field.query`` for the
query as a whole (so a node's mask is exactly the Python API's), the objects of that mask
(``find3d.query.objects``) and, for an interleaved query, each entity's own mask and objects (its
words, then each visual reference), scored against the same negatives.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from find3d.query.field import Field, QueryResult, encode_negatives, select
from find3d.query.objects import MIN_OBJECT_POINTS, OBJECT_VOXEL, Object3D, group_objects


@dataclass
class EntityAnswer:
    """One entity of an interleaved query: its label, its own 3D mask and objects."""

    entity: str
    indices: np.ndarray  # (M,) int64, most relevant first
    scores: np.ndarray  # (M,) float32
    objects: list[Object3D]


@dataclass
class Answer:
    """``Field.query``'s result for the whole query, its objects and (interleaved) per-entity masks."""

    result: QueryResult
    objects: list[Object3D]
    entities: list[EntityAnswer] = field(default_factory=list)


def answer(field_: Field, interface: Any, query: Any, images: Sequence[Any] | None = None,
           masks: Sequence[Any | None] | None = None, negatives: Sequence[str] | None = None,
           threshold: float = 0.5, top_k: int = 3, base_dir: str | os.PathLike = ".",
           object_voxel: float = OBJECT_VOXEL, min_object_points: int = MIN_OBJECT_POINTS) -> Answer:
    """Answer ``query`` (text, interleaved text, or an image crop) on ``field_`` through ``interface``."""
    result = field_.query(query, negatives=negatives, threshold=threshold, top_k_frames=top_k, interface=interface,
                          base_dir=base_dir, images=images, masks=masks)

    def objects_of(indices: np.ndarray, relevancy: np.ndarray) -> list[Object3D]:
        return group_objects(field_.points, indices, relevancy, object_voxel, min_object_points)

    entities = []
    if isinstance(query, str) and "<image:" in query:
        entity_vectors = interface.encode_entities(query, base_dir=base_dir, images=images, masks=masks)
        if len(entity_vectors) > 1:
            negative = encode_negatives(interface, negatives, base_dir)
            for label, vector in entity_vectors:
                relevancy = field_.relevancy(vector.numpy(), negative)
                order = select(relevancy, threshold)
                entities.append(EntityAnswer(label, order, relevancy[order], objects_of(order, relevancy)))
    return Answer(result, objects_of(result.indices, result.relevancy), entities)
