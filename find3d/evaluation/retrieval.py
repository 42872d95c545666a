"""Image–text retrieval recall (IR@k / TR@k) and interleave-to-image retrieval recall.

As X-Decoder's ``RetrievalEvaluator``: with several captions per image, IR@k (text -> image) is the
share of captions whose own image is among the k most similar images, and TR@k (image -> text) the
share of images with at least one of their captions among the k most similar captions.

Interleave retrieval (FIND-Bench) ranks images for each interleave entry. Images a query must not
retrieve (those its visual references were cut from, or the query's own entry) are excluded by a
boolean mask. FIND's evaluator subtracts a near-zero 1e-6 from such scores; here they are removed
from the ranking outright, which is what the exclusion is meant to achieve. Ties rank by index
(a stable sort), and embeddings are compared by cosine similarity as the references do. Percent.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np

from find3d.errors import InputError
from find3d.evaluation._checks import require_updates

DEFAULT_KS = (1, 5, 10)


def _rank_of_target(scores: np.ndarray, target: np.ndarray) -> np.ndarray:
    """0-based rank of ``target[i]`` within row ``i`` of ``scores`` (descending, ties by index)."""
    order = np.argsort(-scores, axis=1, kind="stable")
    return np.argmax(order == target[:, None], axis=1)


def query_recall(
    similarity: np.ndarray, target: np.ndarray, exclude: np.ndarray | None = None, ks: Sequence[int] = DEFAULT_KS
) -> dict[int, float]:
    """Recall@k (percent) of ``(Q, N)`` query-to-candidate scores with one target candidate per query.

    ``exclude`` (``(Q, N)`` bool) removes candidates from a query's ranking; a target may not be excluded.
    """
    scores = np.asarray(similarity, dtype=np.float64).copy()
    target = np.asarray(target, dtype=np.int64)
    if scores.ndim != 2 or target.shape != (scores.shape[0],):
        raise InputError(f"retrieval: expected (Q, N) scores and Q targets, got {scores.shape} and {target.shape}.")
    if target.size and (target.min() < 0 or target.max() >= scores.shape[1]):
        raise InputError(f"retrieval: target indices must lie in [0, {scores.shape[1]}).")
    if exclude is not None:
        exclude = np.asarray(exclude, dtype=bool)
        if exclude.shape != scores.shape:
            raise InputError(f"retrieval: exclusion mask {exclude.shape} must match scores {scores.shape}.")
        if exclude[np.arange(len(target)), target].any():
            raise InputError("retrieval: a query's own target is excluded; exclude only distractors.")
        scores[exclude] = -np.inf
    ranks = _rank_of_target(scores, target)
    return {k: float(100.0 * np.mean(ranks < k)) for k in ks}


def image_text_recall(
    similarity: np.ndarray, image_of_caption: np.ndarray, ks: Sequence[int] = DEFAULT_KS
) -> dict[str, float]:
    """``IR@k`` and ``TR@k`` (percent) from ``(images, captions)`` scores and each caption's image index."""
    scores = np.asarray(similarity, dtype=np.float64)
    owner = np.asarray(image_of_caption, dtype=np.int64)
    if scores.ndim != 2 or owner.shape != (scores.shape[1],):
        raise InputError(
            f"retrieval: expected (images, captions) scores and one image index per caption, "
            f"got {scores.shape} and {owner.shape}."
        )
    results = {f"IR@{k}": v for k, v in query_recall(scores.T, owner, ks=ks).items()}
    # Image -> text: an image is a hit when its best-ranked own caption is within k.
    caption_rank = np.argsort(np.argsort(-scores, axis=1, kind="stable"), axis=1)
    own = owner[None, :] == np.arange(scores.shape[0])[:, None]
    if not own.any(axis=1).all():
        raise InputError("retrieval: every image needs at least one caption for TR@k.")
    best = np.where(own, caption_rank, np.iinfo(np.int64).max).min(axis=1)
    results.update({f"TR@{k}": float(100.0 * np.mean(best < k)) for k in ks})
    return results


def _normalize(embeds: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(embeds, dtype=np.float64)
    if array.ndim != 2:
        raise InputError(f"retrieval {name}: expected (N, D) embeddings, got shape {array.shape}.")
    return array / np.maximum(np.linalg.norm(array, axis=1, keepdims=True), 1e-12)


class ImageTextRetrievalEvaluator:
    """Streaming image–text retrieval: ``update`` per batch of images with their captions, then ``compute``."""

    def __init__(self, ks: Sequence[int] = DEFAULT_KS) -> None:
        self.ks = tuple(ks)
        self.image_embeds: list[np.ndarray] = []
        self.caption_embeds: list[np.ndarray] = []
        self.image_of_caption: list[np.ndarray] = []
        self.num_images = 0

    def update(self, image_embeds: np.ndarray, caption_embeds: np.ndarray, image_of_caption: Sequence[int]) -> None:
        """Add ``(B, D)`` image and ``(C, D)`` caption embeddings; ``image_of_caption`` indexes this batch."""
        images = _normalize(image_embeds, "image_embeds")
        captions = _normalize(caption_embeds, "caption_embeds")
        owner = np.asarray(image_of_caption, dtype=np.int64)
        if owner.shape != (len(captions),) or (owner.size and (owner.min() < 0 or owner.max() >= len(images))):
            raise InputError(f"retrieval: image_of_caption needs {len(captions)} indices into this batch's images.")
        self.image_embeds.append(images)
        self.caption_embeds.append(captions)
        self.image_of_caption.append(owner + self.num_images)
        self.num_images += len(images)

    def compute(self) -> dict[str, float]:
        """``IR@k`` and ``TR@k`` for each k, in percent."""
        require_updates(self.num_images, "ImageTextRetrievalEvaluator")
        similarity = np.concatenate(self.image_embeds) @ np.concatenate(self.caption_embeds).T
        return image_text_recall(similarity, np.concatenate(self.image_of_caption), self.ks)


class InterleaveRetrievalEvaluator:
    """Streaming interleave-to-image retrieval keyed by image (sample) keys."""

    def __init__(self, ks: Sequence[int] = (5, 10)) -> None:
        self.ks = tuple(ks)
        self.image_keys: list[str] = []
        self.image_embeds: list[np.ndarray] = []
        self.query_embeds: list[np.ndarray] = []
        self.query_targets: list[str] = []
        self.query_excludes: list[frozenset[str]] = []

    def update(
        self,
        image_keys: Sequence[str],
        image_embeds: np.ndarray,
        query_embeds: np.ndarray,
        query_targets: Sequence[str],
        query_excludes: Sequence[Collection[str]] | None = None,
    ) -> None:
        """Add candidate images (keys, ``(B, D)`` embeddings) and queries (``(Q, D)``, target key, keys to exclude)."""
        images = _normalize(image_embeds, "image_embeds") if len(image_keys) else None
        queries = _normalize(query_embeds, "query_embeds") if len(query_targets) else None
        excludes = [()] * len(query_targets) if query_excludes is None else query_excludes
        if images is not None and len(images) != len(image_keys):
            raise InputError(f"interleave retrieval: {len(image_keys)} image keys but {len(images)} embeddings.")
        if queries is not None and not len(queries) == len(query_targets) == len(excludes):
            raise InputError("interleave retrieval: give one target and one exclusion set per query embedding.")
        if images is not None:
            self.image_keys.extend(image_keys)
            self.image_embeds.append(images)
        if queries is not None:
            self.query_embeds.append(queries)
            self.query_targets.extend(query_targets)
            self.query_excludes.extend(frozenset(e) for e in excludes)

    def compute(self) -> dict[str, float]:
        """``IR@k`` for each k, in percent."""
        require_updates(len(self.query_targets), "InterleaveRetrievalEvaluator")
        index = {key: i for i, key in enumerate(self.image_keys)}
        if len(index) != len(self.image_keys):
            raise InputError("interleave retrieval: image keys repeat; add each candidate image once.")
        missing = [t for t in self.query_targets if t not in index]
        if missing:
            raise InputError(f"interleave retrieval: target images {missing[:3]} were never added as candidates.")
        exclude = np.zeros((len(self.query_targets), len(index)), dtype=bool)
        for row, keys in enumerate(self.query_excludes):
            exclude[row, [index[k] for k in keys if k in index]] = True
        similarity = np.concatenate(self.query_embeds) @ np.concatenate(self.image_embeds).T
        target = np.array([index[t] for t in self.query_targets])
        return {f"IR@{k}": v for k, v in query_recall(similarity, target, exclude, self.ks).items()}
