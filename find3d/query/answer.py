"""A whole answer to a 3D query: the mask, its objects, per-entity masks and the best frames.

``answer(field, interface, query, ...)`` is what the ROS 2 nodes serve.

- Text or an image crop: ``Field.query`` for the query as a whole and the objects of that mask
  (``find3d.query.objects``; with whole-object answers each selected 3D instance is one object), most
  relevant first.
- Interleaved, FIND's semantics: each entity (the head's words or reference, then the others) gets
  its own 3D mask and objects, scored against the same kind of negatives. With a spatial relation
  between two entities ("the mug next to <image:keys.png>", "the duck behind the tray": see
  ``find3d.query.relations``) the head entity is the target and the relation picks, among the
  head's objects, the one that satisfies it relative to the other entity's best object: ``target``.
  ``result`` is then the target's mask (the head entity's relevancy on the target's points) and
  ``objects`` lists the target first, then the head's other instances — what a robot acts on.
- Without a relation an interleaved query keeps the mean-vector mask of ``Field.query`` and adds
  its per-entity masks.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from find3d.query.field import ACCEPTANCE, Field, QueryResult, encode, encode_negatives, nearest_class
from find3d.query.objects import MIN_OBJECT_POINTS, OBJECT_VOXEL, Object3D, group_objects
from find3d.query.relations import pick, split_relation


@dataclass
class EntityAnswer:
    """One entity of an interleaved query: its label, its own 3D mask and objects."""

    entity: str
    indices: np.ndarray  # (M,) int64, most relevant first
    scores: np.ndarray  # (M,) float32
    objects: list[Object3D]
    found: bool = True


@dataclass
class Answer:
    """``Field.query``'s result for the whole query (or the target's), its objects and per-entity masks."""

    result: QueryResult
    objects: list[Object3D]
    entities: list[EntityAnswer] = field(default_factory=list)
    target: Object3D | None = None  # the instance a spatial relation picked (``objects[0]`` then)
    relation: str | None = None  # "left", "right", "front", "behind", "near", "on" (relations.RELATIONS)

    @property
    def found(self) -> bool:
        """False when the scene holds nothing that passes for the query (``QueryResult.found``): no points,
        no objects; ``result.closest`` then names the best rejected instance."""
        return self.result.found


def answer(field_: Field, interface: Any, query: Any, images: Sequence[Any] | None = None,
           masks: Sequence[Any | None] | None = None, negatives: Sequence[str] | None = None,
           threshold: float = 0.5, top_k: int = 3, base_dir: str | os.PathLike = ".",
           object_voxel: float = OBJECT_VOXEL, min_object_points: int = MIN_OBJECT_POINTS,
           objects: bool = True, acceptance: float = ACCEPTANCE) -> Answer:
    """Answer ``query`` (text, interleaved text, or an image crop) on ``field_`` through ``interface``;
    ``objects``: select whole 3D instances (default) or single points; ``acceptance``: the least relevancy
    of a found instance (``Field.query``)."""
    def objects_of(indices: np.ndarray, relevancy: np.ndarray) -> list[Object3D]:
        return group_objects(field_.points, indices, relevancy, object_voxel, min_object_points,
                             field_.segments if objects else None)

    def entity(label: str, vector: Any) -> tuple[EntityAnswer, QueryResult]:
        vector = _array(vector)
        negative = encode_negatives(interface, negatives, base_dir, query_vector=vector)
        result = field_.query(vector, negative, threshold, top_k_frames=0, objects=objects, acceptance=acceptance)
        if result.closest is not None:  # an embedding carries no words: name the instance by the vocabulary
            vectors = field_.segment_vectors()
            result.closest = replace(result.closest, name=nearest_class(interface, vectors[result.closest.segment]))
        relevancy, order = result.relevancy, result.indices
        return EntityAnswer(label, order, relevancy[order], objects_of(order, relevancy), result.found), result

    relation = split_relation(query) if isinstance(query, str) else None
    if relation is not None:
        head, head_result = entity(relation.head, encode(interface, relation.head, base_dir, images, masks))
        head_relevancy = head_result.relevancy
        other_vector = encode(interface, relation.other, base_dir, images, masks)
        other, _ = entity(relation.other, other_vector)
        target = None
        if head.objects and other.objects:
            anchor = _anchor(field_, other.objects, other_vector) if objects else other.objects[0]
            camera = _viewer(field_, head.objects[0], anchor)
            target = pick(head.objects, anchor, relation.relation, field_.points, camera)
        if target is None and head.objects:
            target = head.objects[0]
        indices = target.indices if target is not None else np.zeros(0, np.int64)
        frames = field_.rank_frames(head_relevancy, indices, top_k) if top_k > 0 and len(indices) else []
        result = QueryResult(head_relevancy, indices, head_relevancy[indices], threshold, frames, head.found,
                             head_result.closest)
        rest = [obj for obj in head.objects if obj is not target]
        return Answer(result, ([target] if target is not None else []) + rest, [head, other], target,
                      relation.relation)
    result = field_.query(query, negatives=negatives, threshold=threshold, top_k_frames=top_k, interface=interface,
                          base_dir=base_dir, images=images, masks=masks, objects=objects, acceptance=acceptance)
    entities = []
    if isinstance(query, str) and "<image:" in query:
        entity_vectors = interface.encode_entities(query, base_dir=base_dir, images=images, masks=masks)
        if len(entity_vectors) > 1:
            entities = [entity(label, vector)[0] for label, vector in entity_vectors]
    return Answer(result, objects_of(result.indices, result.relevancy), entities)


def _array(vector: Any) -> np.ndarray:
    return vector.numpy() if hasattr(vector, "numpy") else np.asarray(vector, np.float32)


def _anchor(field_: Field, candidates: list[Object3D], vector: np.ndarray) -> Object3D:
    """The candidate segment whose mean embedding is nearest (cosine) the entity's vector.

    A visual reference ("<image:keys.png>") is a per-pixel embedding, like the segments', so against
    the vocabulary's text negatives most objects saturate near relevancy 1 and relevancy no longer
    tells them apart; the reference's nearest segment does. Objects without a segment rank last."""
    vectors, labels = field_.segment_vectors(), field_.segments
    unit = vector / max(float(np.linalg.norm(vector)), 1e-12)

    def similarity(obj: Object3D) -> float:
        label = int(labels[obj.indices[0]])
        return float(vectors[label] @ unit) if label >= 0 else -np.inf

    return max(candidates, key=similarity)


def _viewer(field_: Field, head: Object3D, other: Object3D) -> np.ndarray | None:
    """The camera of the frame that sees the most of both entities' chosen objects: "left of" is its left."""
    if not len(field_.frames):
        return None
    weights = np.zeros(len(field_), dtype=np.float32)
    weights[head.indices] = 1.0
    weights[other.indices] = 1.0
    selected = np.flatnonzero(weights)
    [best] = field_.rank_frames(weights, selected, 1)
    return best.c2w
