"""3D queries on an exported feature field: LERF relevancy, 3D masks and frame localisation.

``Field.query(query, interface=find3d.Interface)`` takes text, an image crop (path, PIL image or
array) or an interleaved query ("the mug next to <image:keys.png>") and encodes it and the canonical
negatives "object", "things", "stuff", "texture" through ``Interface.encode_query`` into the
per-pixel space the field was distilled from; without an interface it takes embeddings (the
query and optional negatives) already in that space. ``find3d query`` is the same call.

Relevancy (LERF): with unit vectors and cosine similarities s⁺ (query) and sⱼ⁻ (negatives),
``relevancy = min_j softmax(10·[s⁺, sⱼ⁻])[0] = sigmoid(10·(s⁺ − max_j sⱼ⁻))``; 0.5 means "as close
to the query as to the closest negative". Without negatives, ``relevancy = (1 + s⁺) / 2``.

Frames are ranked by how much of the 3D mask they see: the summed relevancy of the selected points
that project inside the frame within ``VISIBILITY_RANGE`` in front of every other exported point (a
z-buffer of the export at ``ZBUFFER_STRIDE`` px), over the summed relevancy of all selected points. This
uses only the poses and works for every kind of query; the frames' image-level vectors live in the interface's
*retrieval* space, not the per-pixel space queries are encoded into, so they serve ``localize``
with retrieval-space vectors instead. What a frame sees is found among the points of the
``VISIBILITY_CELL`` cells whose boxes are not wholly outside its view (a point outside the view
cannot occlude one inside, so this is exact), and only for the frames whose view holds a box of the
selection's cells; frames' visibility is kept, least recently used first out, up to
``VISIBILITY_CACHE`` point indices, so 10,000 frames over 10M points cost what a query touches.
A saved map or an export with instances also stores, per frame, how many points of each instance it sees
(``write_frame_instances``, ``INSTANCE_VIEWS``): a whole-object answer (whole instances, one relevancy
each) then ranks every frame with one sparse product, the same ranking without a z-buffer at query time.

Scores are computed in row chunks over the memory-mapped point features, so memory stays linear
in N with a small constant. With the export's PCA code (``code.f32``: d + 1 float32 per point) a
query reads (d + 1)·4 bytes per point instead of D·2, which is what makes 1M-point queries fast; the
code is stored dimension-major so each chunk is one wide (K, d+1) x (d+1, n) product.
"""

from __future__ import annotations

import hashlib
import heapq
import numbers
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from find3d import validate
from find3d.errors import DataError, InputError
from find3d.fileio import atomic_open, atomic_write_json, read_json, read_npz
from find3d.query.segments import segment_points

if TYPE_CHECKING:
    import torch

FORMAT = "find3d-field-points"
VERSION = 2  # 2: code.f32 is dimension-major
#: points per product: a chunk's scores (1 MiB) stay in L2 while written, and each code row streams 1 MiB at a
#: time (10M points: 1.00x a sequential read of the bytes against 1.06x at 1 << 16, bench/results/scale.md)
CHUNK_ROWS = 1 << 18
NEGATIVE_SETS = 8  # sets of negatives whose per-point nearest cosine a field keeps (N float32 each)
TEMPERATURE = 10.0  # LERF's softmax temperature
CANONICAL_NEGATIVES = ("object", "things", "stuff", "texture")  # LERF's negatives (explicit opt-in)
SAME_CLASS_COSINE = 0.9  # a vocabulary class this close to the query is the query, not a negative
NEAREST_CLASS_COSINE = 0.8  # the query's nearest class is its own from this cosine up ("the red mug": 0.895)...
NEAREST_CLASS_MARGIN = 0.1  # ...when it leads the second nearest by this much ("the laptop": cube 0.787, +0.095)
#: least relevancy of a query's best instance for the query to count as found (``Field.query``): calibrated on
#: held-out scenes so that present and absent objects are told apart equally well (bench/calibrate_absent.py,
#: bench/results/absent.md)
ACCEPTANCE = 0.25
ZBUFFER_STRIDE = 4  # px per z-buffer cell: exported points are sparser than pixels, so cells must be coarse
VISIBILITY_CELL = 0.5  # m: cells of the spatial index frames are culled against
#: m: farthest a frame sees (beyond any depth camera's range: a map has no points a frame saw from farther,
#: and a floor's other rooms down a long corridor are not in its view)
VISIBILITY_RANGE = 15.0
VISIBILITY_CACHE = 1 << 26  # point indices of frames' visibility kept (int32: 256 MiB)
OCCLUSION_TOLERANCE = 0.05  # relative depth behind the z-buffer still counted as the same surface
FALLBACK_POINTS = 100  # with nothing above the threshold, frames are ranked by this many best points
INSTANCE_VIEWS = "frame_instances.npz"  # the frames' view of the instances (``write_frame_instances``)
_FIX = "re-run `find3d export-field --config RUN/config.yml --out DIR`"


@dataclass(frozen=True)
class FrameHit:
    """A frame ranked for a query: its camera (OpenGL c2w in the world frame, pinhole intrinsics)."""

    index: int
    file_path: str
    score: float
    c2w: np.ndarray  # (4, 4)
    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int


@dataclass(frozen=True)
class Candidate:
    """The most relevant 3D instance of a query, whether or not it passed (``QueryResult.closest``)."""

    segment: int  # its label in ``Field.segments``
    score: float  # its relevancy
    name: str | None  # the interface's class nearest its mean embedding ("stone"), when an interface was given


@dataclass
class QueryResult:
    """Relevancy of every point, the thresholded 3D mask and the best frames.

    ``found`` is False when nothing passed the acceptance test: ``indices`` is then empty, and
    ``closest`` names the best rejected instance with its score ("not here; the nearest thing is the
    stone, 0.18"), which is what a robot asked for an absent object needs to hear."""

    relevancy: np.ndarray  # (N,) float32
    indices: np.ndarray  # (M,) int64, selected points, most relevant first
    scores: np.ndarray  # (M,) float32
    threshold: float
    frames: list[FrameHit] = field(default_factory=list)
    found: bool = True
    closest: Candidate | None = None  # whole-object answers: the best instance, accepted or not

    def describe(self, query: str) -> str:
        """One line for people: what was found, or that nothing was and what came closest."""
        if self.found:
            return f"{len(self.indices)} points selected (threshold {self.threshold:g})"
        closest = ""
        if self.closest is not None:
            what = f"the {self.closest.name}" if self.closest.name else f"instance {self.closest.segment}"
            closest = f" (closest: {what}, {self.closest.score:.2f})"
        return f"no {query!r} in this scene{closest}"

    def write_ply(self, path: str | os.PathLike, points: np.ndarray, colors: np.ndarray | None = None) -> None:
        """Write the selected points (with their colours, if given) as a PLY file, atomically."""
        write_ply(path, points[self.indices], None if colors is None else colors[self.indices])


class Field:
    """An exported point field (see ``find3d.field.export``), memory-mapped."""

    def __init__(self, root: Path, meta: dict[str, Any], points: np.ndarray, colors: np.ndarray,
                 features: np.ndarray, image_vectors: np.ndarray, code: np.ndarray | None,
                 decoder: tuple[np.ndarray, np.ndarray] | None, segments: np.ndarray | None = None) -> None:
        self.root = root
        self.meta = meta
        self.points = points
        self.colors = colors
        self.features = features
        self.image_vectors = image_vectors
        self.code = code
        self.decoder = decoder
        self.frames = meta["frames"]
        self._visibility: tuple[np.ndarray, np.ndarray] | None = None  # see ``visibility``
        self._seen_by_points: Any = None  # see ``_seen_by``
        self._frame_seen: dict[int, np.ndarray] = {}  # see ``frame_visibility``, least recently used first
        self._cells: CellIndex | None = None  # see ``frame_visibility``
        self._cameras: Cameras | None = None  # every frame's, for ``_frames_viewing``
        self._nearest_negative: dict[str, np.ndarray] = {}  # see ``nearest_negative``
        self._segments = segments  # see ``segments``
        self._segment_vectors: np.ndarray | None = None  # see ``segment_vectors``
        self._instance_views: tuple[Any, np.ndarray] | None = None  # see ``_instance_scores``
        # torch threads while scoring. The product is memory-bound: 2 threads are ~1.4x faster on an
        # idle CPU, but on an oversubscribed one (a robot running other nodes) their hand-offs stall
        # (measured 20x slower), so one thread is the safe default.
        self.threads = 1

    @property
    def dim(self) -> int:
        return int(self.meta["dim"])

    def __len__(self) -> int:
        return len(self.points)

    @classmethod
    def load(cls, root: str | os.PathLike) -> Field:
        """Open an export folder; missing or inconsistent files raise DataError naming the fix."""
        root = validate.path(root, "field folder")
        if not (root / "meta.json").is_file():
            what = "has no meta.json" if root.is_dir() else "not found"
            raise DataError(f"field folder {root} {what}; pass the --out folder of `find3d export-field`, "
                            f"or {_FIX}.")
        meta = read_json(root / "meta.json")
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise DataError(f"{root / 'meta.json'}: not a find3d field export; {_FIX}.")
        if meta.get("version") != VERSION:
            raise DataError(f"{root / 'meta.json'}: export format version {meta.get('version')}, this find3d "
                            f"reads version {VERSION}; {_FIX}.")
        try:
            count, dim, frames = int(meta["count"]), int(meta["dim"]), meta["frames"]
        except (KeyError, TypeError, ValueError) as err:
            raise DataError(f"{root / 'meta.json'}: missing or malformed entry {err}; {_FIX}.") from err
        points, colors = read_ply(root / "points.ply")
        if len(points) != count:
            raise DataError(f"{root / 'points.ply'}: {len(points)} points, meta.json says {count}; {_FIX}.")
        features = _memmap(root / "features.f16", np.float16, (count, dim))
        image_vectors = _memmap(root / "image_vectors.f16", np.float16, (len(frames), dim))
        code, decoder = None, None
        if meta.get("code"):
            code_dim = int(meta["code"]["dim"])
            code = _memmap(root / meta["code"]["file"], np.float32, (code_dim + 1, count))
            arrays = read_npz(root / meta["code"]["decoder"], ("mean", "components"), _FIX)
            decoder = (arrays["mean"], arrays["components"])
            if decoder[1].shape != (code_dim, dim):
                raise DataError(f"{root}: decoder shape {decoder[1].shape} != {(code_dim, dim)}; {_FIX}.")
        segments, vectors = None, None
        if meta.get("segments"):  # 3D instances cut at export (exports without them are cut on first use)
            segments = np.asarray(_memmap(root / meta["segments"]["file"], np.int32, (count,)))
            if meta["segments"].get("vectors"):  # their mean embeddings (a saved map stores them)
                shape = (int(meta["segments"]["count"]), dim)
                vectors = np.asarray(_memmap(root / meta["segments"]["vectors"], np.float32, shape))
        field = cls(root, meta, points, colors, features, image_vectors, code, decoder, segments)
        field._segment_vectors = vectors
        if segments is not None and meta["segments"].get("frames"):
            field._instance_views = read_instance_views(root / meta["segments"]["frames"], len(frames),
                                                        int(meta["segments"]["count"]))
        return field

    # ------------------------------------------------------------------------------------- scoring
    def _unit(self, vectors: Any, name: str) -> np.ndarray:
        if hasattr(vectors, "detach"):
            vectors = vectors.detach().float().cpu().numpy()
        array = np.asarray(vectors, dtype=np.float32)
        array = array.reshape(1, -1) if array.ndim == 1 else array
        if array.ndim != 2 or array.shape[1] != self.dim:
            raise InputError(f"{name}: shape {tuple(np.shape(vectors))}, expected ({self.dim},) or (K, {self.dim}); "
                             "encode it with the interface that produced this field.")
        norms = np.linalg.norm(array, axis=1, keepdims=True)
        if not np.all(np.isfinite(array)) or np.any(norms < 1e-12):
            raise InputError(f"{name}: zero or non-finite embedding; check the query encoding.")
        return array / norms

    def _similarity(self, queries: np.ndarray) -> Callable[[int, int], torch.Tensor]:
        """``(start, stop) -> (K, stop - start)`` cosines of points ``start:stop`` with K unit queries."""
        import torch

        if self.code is not None and self.decoder is not None:
            mean, components = self.decoder
            # cos(decoded, q) = [components q, mean · q] · [scaled code, scale] (see export).
            left = torch.from_numpy(np.hstack([queries @ components.T, queries @ mean[:, None]]).astype(np.float32))
            code = torch.from_numpy(self.code)
            return lambda start, stop: left @ code[:, start:stop]
        right = torch.from_numpy(np.ascontiguousarray(queries.T, dtype=np.float32))
        return lambda start, stop: (torch.from_numpy(self.features[start:stop]).float() @ right).T

    def relevancy(self, embedding: Any, negatives: Any | None = None) -> np.ndarray:
        """(N,) LERF relevancy of every point (see the module docstring)."""
        import torch

        query = self._unit(embedding, "query embedding")
        if len(query) != 1:
            raise InputError(f"query embedding: one vector expected, got {len(query)}; pass negatives separately.")
        nearest = None if negatives is None else torch.from_numpy(self.nearest_negative(negatives))

        def write(sims: torch.Tensor, rows: slice, target: torch.Tensor) -> None:
            # in place in the chunk's own output: no temporaries to allocate and stream through memory
            if nearest is None:
                torch.add(sims[0], 1.0, out=target).mul_(0.5)
            else:
                torch.sub(sims[0], nearest[rows], out=target).mul_(TEMPERATURE).sigmoid_()

        return self._per_point(query, write)

    def _per_point(self, units: np.ndarray, write: Callable[[torch.Tensor, slice, torch.Tensor], Any]) -> np.ndarray:
        """(N,) float32 filled a chunk of points at a time: ``write(cosines (K, n), rows, out[rows])`` with
        the chunk's cosines with the K unit vectors, on ``self.threads`` torch threads."""
        import torch

        similarity = self._similarity(units)
        out = np.empty(len(self), dtype=np.float32)
        threads = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            for start in range(0, len(out), CHUNK_ROWS):
                rows = slice(start, start + CHUNK_ROWS)
                write(similarity(start, start + CHUNK_ROWS), rows, torch.from_numpy(out[rows]))
        finally:
            torch.set_num_threads(threads)
        return out

    def nearest_negative(self, negatives: Any) -> np.ndarray:
        """(N,) float32: each point's cosine with its closest negative, cached per set of negatives.

        Query-independent: a robot asks with the same negatives again and again (the canonical ones,
        or the vocabulary minus the query's class), so their K products per point are paid once per
        set and a query reads one row of products, not 1 + K.
        """
        import torch

        units = self._unit(negatives, "negatives")
        return self._per_negatives("points", units, lambda: self._per_point(
            units, lambda sims, _rows, target: torch.amax(sims, dim=0, out=target)))

    def _per_negatives(self, kind: str, units: np.ndarray, compute: Callable[[], np.ndarray]) -> np.ndarray:
        """``compute()``, kept for the last ``NEGATIVE_SETS`` sets of negatives (unit ``units``) and kinds."""
        key = f"{kind}:{hashlib.sha1(units.tobytes()).hexdigest()}"
        cached = self._nearest_negative.get(key)
        if cached is None:
            cached = compute()
            if len(self._nearest_negative) >= NEGATIVE_SETS:
                self._nearest_negative.pop(next(iter(self._nearest_negative)))  # the oldest set
            self._nearest_negative[key] = cached
        return cached

    # ------------------------------------------------------------------------------------ objects
    @property
    def segments(self) -> np.ndarray:
        """(N,) int32: each point's class-agnostic 3D instance, -1 for speckle (``find3d.query.segments``);
        query-independent: cut once, from the frames' panoptic masks when the field was exported (or the
        live map built), else from geometry alone on first use."""
        if self._segments is None:
            self._segments = segment_points(self.points)
        return self._segments

    def segment_vectors(self) -> np.ndarray:
        """(S, D) float32 unit vectors: the direction of the mean embedding of each segment's points (stored by
        a saved map, else computed on first use)."""
        if self._segment_vectors is None:
            self._segment_vectors = segment_vectors(self.segments, self.features, self.code, self.decoder)
        return self._segment_vectors

    def instance_relevancy(self, embedding: Any, negatives: Any | None = None) -> np.ndarray:
        """(S,) LERF relevancy of each 3D instance (its mean embedding against the query and negatives)."""
        query = self._unit(embedding, "query embedding")
        if len(query) != 1:
            raise InputError(f"query embedding: one vector expected, got {len(query)}; pass negatives separately.")
        vectors = self.segment_vectors()
        nearest = None
        if negatives is not None:  # query-independent, so kept per set of negatives (as ``nearest_negative``)
            units = self._unit(negatives, "negatives")
            nearest = self._per_negatives("instances", units, lambda: (vectors @ units.T).max(axis=1))
        return lerf_relevancy(vectors @ query[0], nearest).astype(np.float32)

    def object_relevancy(self, embedding: Any, negatives: Any | None = None) -> np.ndarray:
        """(N,) LERF relevancy of each point's instance (``instance_relevancy``); 0 for speckle."""
        return self._per_instance(self.instance_relevancy(embedding, negatives))

    def _per_instance(self, scores: np.ndarray) -> np.ndarray:
        """(N,) float32: each point's instance's score, 0 for speckle (label -1 takes the appended 0)."""
        return np.take(np.append(scores, 0.0).astype(np.float32), self.segments)

    def query(self, query: Any, negatives: Any | None = None, threshold: float = 0.5, top_k_frames: int = 3,
              interface: Any | None = None, base_dir: str | os.PathLike = ".", images: Sequence[Any] | None = None,
              masks: Sequence[Any | None] | None = None, objects: bool = True,
              acceptance: float = ACCEPTANCE) -> QueryResult:
        """Relevancy of every point, the selected points and the ``top_k_frames`` best frames.

        With ``interface`` (a ``find3d.Interface``), ``query`` is text, interleaved text (references
        relative to ``base_dir``, or ``<image:N>`` naming ``images[N]`` with optional ``masks[N]``) or
        an image crop, and ``negatives`` phrases (default the vocabulary minus the query's class);
        without it both are embeddings.

        ``objects`` (default): whole 3D instances answer (``instance_relevancy``: each instance's mean
        embedding against the query and the negatives, by default every other class the interface knows,
        ``vocabulary_negatives``): those at or above ``threshold``, or, when none reaches it, the best one
        if it reaches ``acceptance`` (the calibrated ``ACCEPTANCE``: below it, present and absent objects
        cannot be told apart). When the best does not, the answer is empty, ``found`` is False and
        ``closest`` names it — "nothing here" is an answer a robot must be able to get.
        ``objects=False``, or a field too sparse to cut into any instance: each point on its own
        (``relevancy``), the points at or above ``threshold``.
        """
        threshold = validate.number(threshold, "threshold", 0.0, 1.0)
        acceptance = validate.number(acceptance, "acceptance", 0.0, 1.0)
        top_k_frames = validate.integer(top_k_frames, "top_k_frames", minimum=0)
        embedding = query
        if interface is None and _needs_interface(query, negatives):
            raise InputError(f"query {_short(query)}: text, paths and negative phrases need interface=; pass "
                             "interface=find3d.Interface.from_checkpoint(CKPT), or embeddings instead.")
        if interface is not None:
            embedding = encode(interface, query, base_dir, images, masks)
            negatives = encode_negatives(interface, negatives, base_dir, query_vector=embedding)
        closest = None
        if objects and len(self.segment_vectors()):  # cached: no O(N) pass per query
            scores = self.instance_relevancy(embedding, negatives)
            relevancy = self._per_instance(scores)
            best = int(np.argmax(scores))
            name = None if interface is None else nearest_class(interface, self.segment_vectors()[best])
            closest = Candidate(best, float(scores[best]), name)
            accepted = scores[best] >= acceptance and scores[best] > 0  # relevancy 0: speckle, never an answer
            order = select(relevancy, min(threshold, float(scores[best]))) if accepted else np.zeros(0, np.int64)
        else:
            relevancy = self.relevancy(embedding, negatives)
            order = select(relevancy, threshold)
        frames = self.rank_frames(relevancy, order, top_k_frames) if len(order) else []
        return QueryResult(relevancy, order, relevancy[order], threshold, frames, bool(len(order)), closest)

    def rank_frames(self, relevancy: np.ndarray, selected: np.ndarray, top_k: int = 3) -> list[FrameHit]:
        """The ``top_k`` frames seeing the largest share of the selected points' relevancy (module doc)."""
        if top_k <= 0:
            return []
        if len(selected) == 0:  # the best points stand in; a partition finds them in O(N), no full sort
            selected = np.argpartition(-relevancy, min(FALLBACK_POINTS, len(relevancy) - 1))[:FALLBACK_POINTS]
        weights = relevancy[selected].astype(np.float64)
        total = max(float(weights.sum()), 1e-12)
        if self._visibility is not None:
            # Every frame's visibility is known (eval-3d): per-frame sums of the weights its visible points
            # carry are one sparse product over the selected points' rows.
            scores = self._seen_by()[selected].T @ weights / total
        elif (scores := self._instance_scores(np.asarray(selected), weights, total)) is None:
            scores = self._bounded_scores(np.asarray(selected), weights, total, top_k)
        best = np.argsort(-scores, kind="stable")[:top_k]
        return [self.frame(int(i), float(scores[i])) for i in best]

    def _instance_scores(self, selected: np.ndarray, weights: np.ndarray, total: float) -> np.ndarray | None:
        """``rank_frames``' scores from the stored frames' view of the instances, when the selection is whole
        instances with one weight each (a whole-object answer): a frame's share is the sum over the selected
        instances of weight x the instance's points it sees. None when there is no such table or selection."""
        if self._instance_views is None or not len(selected):
            return None
        table, sizes = self._instance_views
        labels = self.segments[selected]
        if labels.min() < 0:
            return None
        ids, first, counts = np.unique(labels, return_index=True, return_counts=True)
        whole = np.array_equal(counts, sizes[ids])
        if not whole or not np.array_equal(weights, weights[first][np.searchsorted(ids, labels)]):
            return None  # part of an instance, or weights that differ inside one: the points' own z-buffer
        per_instance = np.zeros(table.shape[1])
        per_instance[ids] = weights[first]
        return table @ per_instance / total

    def _bounded_scores(self, selected: np.ndarray, weights: np.ndarray, total: float, top_k: int) -> np.ndarray:
        """(frames,) ``rank_frames``' scores, exact wherever they can reach the ``top_k`` (branch and bound):
        a frame sees at most the selection's weight that projects inside its view (occlusion only takes
        away), so frames are z-buffered in the order of that bound, largest first, until the next bound
        cannot beat the k-th best score (ties going to the lower index, as the final sort does); the rest
        are left at 0 and rank below. The bound is refined lazily: first the weight of the selection's cells
        whose boxes may be in view (one product for all frames), then, for a frame that reaches the front,
        the weight of those cells' points that project inside it; a widespread answer (an object on every
        floor of a building) thus projects its points into the few frames that contend, not into all."""
        order = np.argsort(selected)
        selected, weights = selected[order], weights[order]
        scores = np.zeros(len(self.frames))
        boxes = CellIndex(self.points[selected], VISIBILITY_CELL)
        candidates, in_view = self._frames_viewing(boxes)
        cell_weights = np.add.reduceat(weights[boxes.order], boxes.starts) if len(selected) else np.zeros(0)
        # (-bound, frame, its row of in_view, refined): the front is the largest bound, ties to the lower frame index
        heap = [(-float(bound), int(index), row, False)
                for row, (index, bound) in enumerate(zip(candidates, in_view @ cell_weights / total))]
        heapq.heapify(heap)
        best: list[tuple[float, int]] = []  # (-score, index) of the k best so far, in ranking order
        while heap:
            negative, index, row, refined = heapq.heappop(heap)
            if negative >= 0 or (len(best) >= top_k and (negative, index) >= best[top_k - 1]):
                break  # this frame and every one left rank below the k best
            if not refined:
                inside = boxes.points_in(in_view[row])
                bound = self._cameras.weight_in_view(self.points[selected[inside]], weights[inside],
                                                     np.array([index]))[0] / total
                heapq.heappush(heap, (-bound, index, row, True))
                continue
            scores[index] = weights[self._selection_seen(index, selected, boxes)].sum() / total
            best = sorted([*best, (-scores[index], index)])[:top_k]
        return scores

    def _selection_seen(self, index: int, selected: np.ndarray, boxes: CellIndex) -> np.ndarray:
        """Bool mask over the (sorted) ``selected`` points, whose ``CellIndex`` is ``boxes``: which frame ``index``
        sees. Only what can occlude them takes part in the z-buffer: the points in the boxes spanned by the
        camera and each of the selection's cells in view, widened by a z-buffer cell at the selection's depth
        (for a point that shares a z-buffer cell with a selected one off its ray); any other point is off
        their rays, so the answer is the full z-buffer's."""
        from find3d.query.render import project_points

        if self._visibility is not None or index in self._frame_seen:
            return np.isin(selected, self.frame_visibility(index), assume_unique=True)
        hit = self.frame(index)
        seen, _ = visible_points(self.points[selected], hit)
        if not seen.any():
            return seen
        _, depth = project_points(self.points[selected[seen]], hit.c2w, hit.fx, hit.fy, hit.cx, hit.cy)
        margin = 2.0 * float(depth.max()) * (1.0 + OCCLUSION_TOLERANCE) * ZBUFFER_STRIDE / min(hit.fx, hit.fy) + 1e-3
        cell_of = np.empty(len(selected), np.int64)
        cell_of[boxes.order] = np.repeat(np.arange(len(boxes.starts)), boxes.ends - boxes.starts)
        groups = np.unique(cell_of[seen])
        camera = hit.c2w[:3, 3]
        low = np.minimum(boxes.lower[groups], camera) - margin  # (G, 3)
        high = np.maximum(boxes.upper[groups], camera) + margin
        cells = self.cells()
        # the cells meeting the boxes' union box first (6 comparisons a cell): on a floor-sized map most of the
        # cells are far from this view, and the per-box test below costs 6 a cell and box
        near = np.flatnonzero(np.all(cells.upper >= low.min(axis=0), axis=1)
                              & np.all(cells.lower <= high.max(axis=0), axis=1))
        meets = np.zeros(len(near), bool)
        for start in range(0, len(groups), 64):  # (cells, 64, 3) comparisons at most
            part = slice(start, start + 64)
            meets |= np.any(np.all(cells.upper[near, None] >= low[None, part], axis=2)
                            & np.all(cells.lower[near, None] <= high[None, part], axis=2), axis=1)
        # an axis-aligned box of a long diagonal ray holds much that is off it: of those cells, keep the ones
        # whose image overlaps a group's (widened by two z-buffer cells) no farther than the group
        near = near[meets]
        mine, theirs = _image_boxes(cells, near, hit), _image_boxes(boxes, groups, hit)
        widen = 2.0 * ZBUFFER_STRIDE
        overlap = ((mine[:, None, 0] <= theirs[None, :, 1] + widen) & (mine[:, None, 1] >= theirs[None, :, 0] - widen)
                   & (mine[:, None, 2] <= theirs[None, :, 3] + widen) & (mine[:, None, 3] >= theirs[None, :, 2] - widen)
                   & (mine[:, None, 4] <= theirs[None, :, 5] * (1.0 + OCCLUSION_TOLERANCE)))
        keep = np.zeros(len(cells.starts), bool)
        keep[near] = overlap.any(axis=1) | (mine[:, 4] == -np.inf)
        candidates = np.union1d(cells.points_in(keep), selected)
        visible, _ = visible_points(self.points[candidates], hit)
        return np.isin(selected, candidates[visible], assume_unique=True)

    def visibility(self) -> tuple[np.ndarray, np.ndarray]:
        """``(indices, offsets)``: frame ``f`` sees points ``indices[offsets[f]:offsets[f + 1]]``.

        Query-independent, so it is computed on first use (one z-buffer per frame over the points of its
        view's cells) and kept: later queries only sum weights over it. All frames at once: for scoring many
        queries on one field (eval-3d); a query alone needs ``frame_visibility`` of a few frames.
        """
        if self._visibility is None:
            seen = [self._frame_seen[index] if index in self._frame_seen else self._visible_indices(index)
                    for index in range(len(self.frames))]
            offsets = np.zeros(len(seen) + 1, dtype=np.int64)
            offsets[1:] = np.cumsum([len(part) for part in seen])
            self._visibility = (np.concatenate(seen) if seen else np.zeros(0, np.int32), offsets)
        return self._visibility

    def frame_visibility(self, index: int) -> np.ndarray:
        """(M,) int32 sorted indices of the points frame ``index`` sees (inside, in front, unoccluded), kept
        until ``VISIBILITY_CACHE`` indices of other frames were used since (module docstring)."""
        if self._visibility is not None:
            indices, offsets = self._visibility
            return indices[offsets[index]:offsets[index + 1]]
        seen = self._frame_seen.pop(index, None)
        if seen is None:
            seen = self._visible_indices(index)
            held = sum(len(part) for part in self._frame_seen.values())
            while self._frame_seen and held + len(seen) > VISIBILITY_CACHE:
                held -= len(self._frame_seen.pop(next(iter(self._frame_seen))))
        self._frame_seen[index] = seen  # (re)inserted last: the most recently used
        return seen

    def _visible_indices(self, index: int) -> np.ndarray:
        """``frame_visibility`` computed: a z-buffer among the points of the cells the view may hold (of those
        within the frame's reach first: on a floor-sized map most cells are far from any one view)."""
        hit = self.frame(index)
        cells = self.cells()
        near = cells.within(hit.c2w[:3, 3], reach(hit))
        candidates = cells.points_in(near[cells.in_view(Cameras([hit]), near)[0]])
        seen, _ = visible_points(self.points[candidates], hit)
        return np.sort(candidates[seen]).astype(np.int32)

    def cells(self) -> CellIndex:
        """The points' spatial index (``CellIndex`` of ``VISIBILITY_CELL``), built on first use."""
        if self._cells is None:
            self._cells = CellIndex(self.points, VISIBILITY_CELL)
        return self._cells

    def _frames_viewing(self, boxes: CellIndex) -> tuple[np.ndarray, np.ndarray]:
        """The frames whose view may hold one of the ``boxes`` (a selection's ``CellIndex``), and for each of them
        (a row) which boxes it may hold."""
        if self._cameras is None:
            self._cameras = Cameras([self.frame(index) for index in range(len(self.frames))])
        in_view = boxes.in_view(self._cameras)
        candidates = np.flatnonzero(in_view.any(axis=1))
        return candidates, in_view[candidates]

    def _seen_by(self) -> Any:
        """(N, frames) sparse CSR: row ``p`` marks the frames that see point ``p`` (``visibility`` by point)."""
        if self._seen_by_points is None:
            from scipy.sparse import csc_matrix

            indices, offsets = self.visibility()  # frame-major lists are exactly CSC columns
            ones = np.ones(len(indices), dtype=np.float64)
            self._seen_by_points = csc_matrix((ones, indices, offsets), shape=(len(self), len(self.frames))).tocsr()
        return self._seen_by_points

    def visible(self, index: int, subset: np.ndarray | None = None) -> np.ndarray:
        """Bool mask over ``subset`` (default all points): which points frame ``index`` sees (inside, in
        front, unoccluded)."""
        return visible_points(self.points, self.frame(index), subset)[0]

    def localize(self, embedding: Any, top_k: int = 3) -> list[FrameHit]:
        """The ``top_k`` frames whose image-level vector is closest (cosine) to a retrieval-space vector."""
        if top_k <= 0:
            return []
        query = self._unit(embedding, "query embedding")[0]
        vectors = np.asarray(self.image_vectors, dtype=np.float32)
        scores = vectors @ query / np.maximum(np.linalg.norm(vectors, axis=1), 1e-12)
        best = np.argsort(-scores, kind="stable")[:top_k]
        return [self.frame(int(i), float(scores[i])) for i in best]

    def frame(self, index: int, score: float = 0.0) -> FrameHit:
        return frame_hit(self.frames[index], index, score)


def segment_vectors(labels: np.ndarray, features: np.ndarray, code: np.ndarray | None = None,
                    decoder: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """(S, D) float32: the unit direction of the mean embedding of each segment's points (``labels`` (N,), -1:
    none), from the (N, D) ``features`` or, with a PCA ``code`` and its ``decoder``, the code."""
    coded = code is not None and decoder is not None
    # With the PCA code the code itself is summed (d + 1 numbers a point) and decoded once: decoding is linear.
    chunks = (code[:, start:start + CHUNK_ROWS].T if coded else features[start:start + CHUNK_ROWS]
              for start in range(0, len(labels), CHUNK_ROWS))
    sums = segment_sums(labels, chunks, code.shape[0] if coded else features.shape[1])
    if coded:
        mean, components = decoder
        # the stored code is pre-scaled so that [code, scale] . [components, mean] is the unit vector
        sums = sums[:, :-1] @ components + sums[:, -1:] * mean[None, :]
    norms = np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
    return (sums / norms).astype(np.float32)


def segment_sums(labels: np.ndarray, chunks: Iterable[np.ndarray], width: int) -> np.ndarray:
    """(S, width) float64 sums per segment of the rows of ``chunks`` (consecutive (n, width) row blocks of the
    points ``labels`` label, -1: none), as sparse (S, n) x (n, width) products a chunk at a time."""
    from scipy.sparse import csr_matrix

    count = int(labels.max()) + 1 if len(labels) and labels.max() >= 0 else 0
    sums, start = np.zeros((count, width), np.float64), 0
    for values in chunks:
        chunk = np.asarray(labels[start:start + len(values)])
        rows = np.flatnonzero(chunk >= 0)
        member = csr_matrix((np.ones(len(rows)), (chunk[rows], rows)), shape=(count, len(chunk)))
        sums += member @ np.asarray(values, dtype=np.float64)
        start += len(values)
    return sums


def frame_hit(entry: dict[str, Any], index: int, score: float = 0.0) -> FrameHit:
    """A frame entry of an export's meta.json (``file_path``, ``c2w``, pinhole intrinsics) as a ``FrameHit``."""
    return FrameHit(index=index, file_path=entry["file_path"], score=score,
                    c2w=np.asarray(entry["c2w"], dtype=np.float64), fx=float(entry["fl_x"]),
                    fy=float(entry["fl_y"]), cx=float(entry["cx"]), cy=float(entry["cy"]),
                    width=int(entry["w"]), height=int(entry["h"]))


class CellIndex:
    """Points bucketed into cubes of ``size`` metres, with each cube's box of its points, to find quickly the
    points a camera may see."""

    def __init__(self, points: np.ndarray, size: float) -> None:
        cells = np.floor(np.asarray(points, np.float64) / size).astype(np.int64)
        if len(cells):  # one int64 per cell (a plain sort of 10M keys takes ~1 s, a lexsort of three rows ~4)
            cells -= cells.min(axis=0)
            span = cells.max(axis=0) + 1
            keys = (cells[:, 0] * span[1] + cells[:, 1]) * span[2] + cells[:, 2]
        else:
            keys = np.zeros(0, np.int64)
        order = np.argsort(keys)
        index = np.int32 if len(order) < 2**31 else np.int64
        self.order = order.astype(index)  # points, cell by cell
        sorted_keys = keys[order]
        starts = np.flatnonzero(np.diff(sorted_keys)) + 1
        self.starts = np.concatenate([[0], starts]).astype(np.int64) if len(order) else np.zeros(0, np.int64)
        self.ends = np.append(self.starts[1:], len(order)).astype(np.int64)
        inside = np.asarray(points, np.float32)[order] if len(order) else np.zeros((0, 3), np.float32)
        self.lower = np.minimum.reduceat(inside, self.starts) if len(order) else inside
        self.upper = np.maximum.reduceat(inside, self.starts) if len(order) else inside
        self._tree: Any = None  # the boxes' centres, and their largest half-diagonal, for ``within``
        self._half_diagonal = 0.0

    def within(self, centre: np.ndarray, radius: float) -> np.ndarray:
        """Indices of the cells whose box may hold a point within ``radius`` of ``centre`` (a superset)."""
        if self._tree is None:
            from scipy.spatial import cKDTree

            self._tree = cKDTree((self.lower.astype(np.float64) + self.upper) / 2.0)
            self._half_diagonal = float(np.linalg.norm(self.upper - self.lower, axis=1).max(initial=0.0)) / 2.0
        return np.sort(np.asarray(self._tree.query_ball_point(centre, radius + self._half_diagonal + 1e-3), np.int64))

    def in_view(self, cameras: Cameras, cells: np.ndarray | None = None) -> np.ndarray:
        """(frames, cells) bool over every cell or the indices ``cells``: False where a cell's box is wholly
        outside a frame's view (behind the camera, or all its corners in front of it and beyond one edge of the
        z-buffer's extent), True elsewhere."""
        lower, upper = (self.lower, self.upper) if cells is None else (self.lower[cells], self.upper[cells])
        corners = np.stack([np.stack([np.where(corner & 4, upper[:, 0], lower[:, 0]),
                                      np.where(corner & 2, upper[:, 1], lower[:, 1]),
                                      np.where(corner & 1, upper[:, 2], lower[:, 2])], axis=1)
                            for corner in range(8)], axis=1).reshape(-1, 3).astype(np.float64)  # (cells * 8, 3)
        out = np.zeros((len(cameras), len(lower)), bool)
        step = max(1, (1 << 22) // max(len(corners), 1))  # frames at a time: temporaries of ~100 MB at most
        for start in range(0, len(cameras), step):
            part = slice(start, start + step)
            uv, depth = cameras.project(corners, part)
            uv, depth = uv.reshape(len(uv), -1, 8, 2), depth.reshape(len(depth), -1, 8)
            width, height = cameras.extent[part, 0][:, None, None], cameras.extent[part, 1][:, None, None]
            beyond = (np.all(uv[..., 0] < 0, axis=2) | np.all(uv[..., 0] >= width, axis=2)
                      | np.all(uv[..., 1] < 0, axis=2) | np.all(uv[..., 1] >= height, axis=2))
            out[part] = np.any((depth > 0) & (depth <= VISIBILITY_RANGE), axis=2) \
                & ~(np.all(depth > 0, axis=2) & beyond)
        return out

    def points_in(self, cells: np.ndarray) -> np.ndarray:
        """Indices of the points in the cells marked True (cell by cell)."""
        starts, ends = self.starts[cells], self.ends[cells]
        lengths = ends - starts
        if not lengths.sum():
            return np.zeros(0, np.int64)
        # one arange over all the cells' runs: each run's positions, shifted to its start
        shift = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
        return self.order[np.arange(lengths.sum()) + shift].astype(np.int64)


def reach(hit: FrameHit) -> float:
    """How far from its camera a point the frame sees can be: ``VISIBILITY_RANGE`` deep at the z-buffer
    extent's farthest corner (widened by a pixel)."""
    width, height = -(-hit.width // ZBUFFER_STRIDE) * ZBUFFER_STRIDE, -(-hit.height // ZBUFFER_STRIDE) * ZBUFFER_STRIDE
    across = (max(hit.cx, width - hit.cx) + 1.0) / hit.fx
    down = (max(hit.cy, height - hit.cy) + 1.0) / hit.fy
    return VISIBILITY_RANGE * float(np.sqrt(1.0 + across**2 + down**2))


def write_frame_instances(folder: Path) -> None:
    """Store, for the export or saved map in ``folder`` (its meta.json written, with instances), how many points
    of each instance each frame sees (``frame_visibility``), and name the file in meta.json's ``segments``:
    ``Field.rank_frames`` then ranks frames for a whole-object answer without a z-buffer. One z-buffer a frame,
    a frame at a time (memory: one frame's visible points and the table)."""
    from tqdm import tqdm

    field = Field.load(folder)
    labels, count = field.segments, int(field.meta["segments"]["count"])
    ids, counts = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]  # a frame's row of the (frames, instances) CSR
    for index in tqdm(range(len(field.frames)), desc="frames' view of the instances", unit="frame", disable=None):
        seen = labels[field._visible_indices(index)]
        row, points = np.unique(seen[seen >= 0], return_counts=True)
        ids.append(row)
        counts.append(points)
    indptr = np.cumsum([0, *(len(row) for row in ids[1:])]).astype(np.int64)
    sizes = np.bincount(labels[labels >= 0], minlength=count).astype(np.int64)
    with atomic_open(folder / INSTANCE_VIEWS) as handle:
        np.savez(handle, indptr=indptr, indices=np.concatenate(ids).astype(np.int32),
                 data=np.concatenate(counts).astype(np.int32), sizes=sizes)
    meta = {**field.meta, "segments": {**field.meta["segments"], "frames": INSTANCE_VIEWS}}
    atomic_write_json(folder / "meta.json", meta)


def read_instance_views(path: Path, frames: int, count: int) -> tuple[Any, np.ndarray]:
    """(the (frames, instances) table of points seen, each instance's size) written by ``write_frame_instances``."""
    from scipy.sparse import csr_matrix

    arrays = read_npz(path, ("indptr", "indices", "data", "sizes"), _FIX)
    if len(arrays["indptr"]) != frames + 1 or len(arrays["sizes"]) != count:
        raise DataError(f"{path}: a table of {len(arrays['indptr']) - 1} frames and {len(arrays['sizes'])} "
                        f"instances, meta.json says {frames} and {count}; {_FIX}.")
    table = csr_matrix((arrays["data"].astype(np.float64), arrays["indices"], arrays["indptr"]), shape=(frames, count))
    return table, arrays["sizes"]


def _image_boxes(index: CellIndex, cells: np.ndarray, hit: FrameHit) -> np.ndarray:
    """(len(cells), 6): the image box (u0, u1, v0, v1) of each cell's box and its nearest and farthest depth; a
    box with a corner behind the camera gets an unbounded image box and depth -inf (it may be anywhere), one
    wholly behind it an empty one at depth +inf (it is nowhere)."""
    from find3d.query.render import project_points

    lower, upper = index.lower[cells], index.upper[cells]
    corners = np.stack([np.where(np.array([(c >> 2) & 1, (c >> 1) & 1, c & 1], bool), upper, lower)
                        for c in range(8)], axis=1).reshape(-1, 3)
    uv, depth = project_points(corners, hit.c2w, hit.fx, hit.fy, hit.cx, hit.cy)
    uv, depth = uv.reshape(-1, 8, 2), depth.reshape(-1, 8)
    out = np.stack([uv[..., 0].min(1), uv[..., 0].max(1), uv[..., 1].min(1), uv[..., 1].max(1), depth.min(1),
                    depth.max(1)], axis=1)
    behind = np.any(depth <= 0, axis=1)
    out[behind] = [-np.inf, np.inf, -np.inf, np.inf, -np.inf, np.inf]
    out[np.all(depth <= 0, axis=1)] = [np.inf, -np.inf, np.inf, -np.inf, np.inf, -np.inf]
    return out


class Cameras:
    """Frames' pinhole cameras stacked, to project one set of points into many frames at once."""

    def __init__(self, hits: list[FrameHit]) -> None:
        self.c2w = np.array([hit.c2w for hit in hits], np.float64).reshape(-1, 4, 4)
        self.intrinsics = np.array([(hit.fx, hit.fy, hit.cx, hit.cy) for hit in hits], np.float64).reshape(-1, 4)
        # the extent of each frame's z-buffer (``visible_points``), whole cells of ZBUFFER_STRIDE px
        self.extent = np.array([(-(-hit.width // ZBUFFER_STRIDE) * ZBUFFER_STRIDE,
                                 -(-hit.height // ZBUFFER_STRIDE) * ZBUFFER_STRIDE) for hit in hits],
                               np.float64).reshape(-1, 2)

    def __len__(self) -> int:
        return len(self.c2w)

    def weight_in_view(self, points: np.ndarray, weights: np.ndarray, frames: np.ndarray) -> np.ndarray:
        """(len(frames),) the ``weights`` of the ``points`` that project in front of each frame's camera and inside
        its z-buffer's extent, widened by a pixel (an upper bound of what the frame sees, whatever the rounding)."""
        out = np.zeros(len(frames))
        step = max(1, (1 << 22) // max(len(points), 1))
        points = np.asarray(points, np.float64)
        for start in range(0, len(frames), step):
            part = np.asarray(frames[start:start + step])
            uv, depth = self.project(points, part)
            extent = self.extent[part][:, None, :]
            inside = (depth > -1e-6) & (depth <= VISIBILITY_RANGE + 1e-6) & np.all((uv >= -1.0) & (uv < extent + 1.0),
                                                                                 axis=2)
            out[start:start + step] = inside @ weights
        return out

    def project(self, points: np.ndarray, frames: slice | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """((F, N, 2) pixel coordinates, (F, N) depth) of ``points`` in the ``frames``, as ``project_points``."""
        c2w, (fx, fy, cx, cy) = self.c2w[frames], self.intrinsics[frames].T[..., None]
        local = np.einsum("fnk,fkj->fnj", points[None] - c2w[:, None, :3, 3], c2w[:, :3, :3])
        depth = -local[..., 2]
        safe = np.where(np.abs(depth) < 1e-9, 1e-9, depth)
        return np.stack([fx * local[..., 0] / safe + cx, -fy * local[..., 1] / safe + cy], axis=-1), depth


def visible_points(points: np.ndarray, hit: FrameHit, subset: np.ndarray | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(bool mask over ``subset`` (default all points): which points the frame sees (inside, in front, within
    ``VISIBILITY_RANGE``, unoccluded by a z-buffer of all points at ``ZBUFFER_STRIDE`` px), their (n, 2) pixel
    coordinates)."""
    from find3d.query.render import project_points

    rows, cols = -(-hit.height // ZBUFFER_STRIDE), -(-hit.width // ZBUFFER_STRIDE)
    uv, depth = project_points(points, hit.c2w, hit.fx, hit.fy, hit.cx, hit.cy)
    cell_x, cell_y = np.floor(uv[:, 0] / ZBUFFER_STRIDE), np.floor(uv[:, 1] / ZBUFFER_STRIDE)
    inside = (depth > 0) & (depth <= VISIBILITY_RANGE) & (cell_x >= 0) & (cell_x < cols) & (cell_y >= 0) \
        & (cell_y < rows)
    cell = np.where(inside, cell_y * cols + cell_x, -1).astype(np.int64)
    zbuffer = np.full(rows * cols, np.inf)
    np.minimum.at(zbuffer, cell[inside], depth[inside])
    if subset is not None:
        cell, depth, uv = cell[subset], depth[subset], uv[subset]
    return (cell >= 0) & (depth <= zbuffer[np.maximum(cell, 0)] * (1.0 + OCCLUSION_TOLERANCE)), uv


def _needs_interface(query: Any, negatives: Any) -> bool:
    """Whether a query / negatives are words or files, which only an interface can embed."""
    def words(value: Any) -> bool:
        return isinstance(value, (str, os.PathLike)) or (
            isinstance(value, (list, tuple)) and any(isinstance(v, (str, os.PathLike)) for v in value))

    return words(query) or words(negatives)


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def encode(interface: Any, query: Any, base_dir: str | os.PathLike = ".", images: Sequence[Any] | None = None,
           masks: Sequence[Any | None] | None = None) -> np.ndarray:
    """(D,) float32 unit embedding of text, an interleaved query or an image crop (a ``Path`` is an image)."""
    if query is None or isinstance(query, (list, tuple, dict, set, bytes, bytearray, numbers.Number)):
        several = "; for several queries, call once per query" if isinstance(query, (list, tuple, set)) else ""
        raise InputError(f"query: got {type(query).__name__} {_short(query)}; pass one query: text ('the red mug'), "
                         "interleaved text ('the mug next to <image:keys.png>') or an image crop (a pathlib.Path, "
                         f"PIL image or (H, W, 3) array){several}.")
    if isinstance(query, str) and not query.strip():
        raise InputError("query: empty text; pass words, an <image:...> reference or --image CROP.")
    vector = interface.encode_query(query, base_dir=base_dir, images=images, masks=masks)
    if hasattr(vector, "detach"):
        vector = vector.detach().float().cpu().numpy()
    return np.asarray(vector, dtype=np.float32)


def encode_negatives(interface: Any, negatives: Any | None, base_dir: str | os.PathLike = ".",
                     query_vector: np.ndarray | None = None) -> np.ndarray | None:
    """(K, D) embeddings of negative phrases (empty: no negatives -> None).

    ``None`` with a ``query_vector``: the interface's own vocabulary minus the query's
    (``vocabulary_negatives``); ``None`` without one: LERF's canonical phrases.
    """
    if negatives is None and query_vector is not None and getattr(interface, "class_names", None):
        return vocabulary_negatives(interface, query_vector)
    # one string is one negative phrase, never its characters
    phrases = CANONICAL_NEGATIVES if negatives is None else validate.strings(negatives, "negatives", allow_empty=True)
    return np.stack([encode(interface, phrase, base_dir) for phrase in phrases]) if phrases else None


def vocabulary_negatives(interface: Any, query_vector: np.ndarray) -> np.ndarray | None:
    """(K, D) negatives for a query: every class the interface was trained on except the query's own.

    LERF's "object / things / stuff / texture" were picked for CLIP; this interface never saw them, and
    in its space they are far from everything, so every point beat them (the README's "the table" once
    selected 147706 of 147706 points). Its class embeddings are what its pixel embeddings were trained
    to match, so "relevancy >= 0.5" becomes "closer to the query than to any other known class" — a
    threshold that means something. The query's own classes are the vocabulary entries within
    ``SAME_CLASS_COSINE`` of it ("the cup": mug), and its nearest entry when that one is close
    (``NEAREST_CLASS_COSINE``) and clearly nearer than the next (``NEAREST_CLASS_MARGIN``): "the red
    mug", "a small toy duck", "the big red ceramic coffee mug on the left". A query that is near no class
    in particular ("the laptop": cube 0.787, teddy bear 0.693) keeps every class as a negative, so an
    instance of a known class is not taken for it: the query is then found only where something matches
    it better than anything the interface knows, which for a thing it never learnt is nowhere.
    """
    own = own_classes(interface, query_vector)
    return interface.vocabulary_vectors()[~own] if not own.all() else None


def own_classes(interface: Any, query_vector: np.ndarray) -> np.ndarray:
    """(C,) bool: the vocabulary classes a query names (``vocabulary_negatives``), none for a thing it never learnt."""
    query = np.asarray(query_vector, dtype=np.float32)
    query = query / max(float(np.linalg.norm(query)), 1e-12)
    similarity = interface.vocabulary_vectors() @ query
    own = similarity >= SAME_CLASS_COSINE
    nearest, second = np.argsort(-similarity)[:2] if len(similarity) > 1 else (0, 0)
    if similarity[nearest] >= NEAREST_CLASS_COSINE and similarity[nearest] - similarity[second] >= \
            NEAREST_CLASS_MARGIN:
        own[nearest] = True
    return own


def nearest_class(interface: Any, vector: np.ndarray) -> str:
    """The interface's vocabulary class nearest (cosine) an embedding: how an instance is named."""
    return interface.class_names[int(np.argmax(interface.vocabulary_vectors() @ np.asarray(vector, np.float32)))]


def lerf_relevancy(positive: np.ndarray, nearest_negative: np.ndarray | None) -> np.ndarray:
    """LERF relevancy from cosines with the query and with the closest negative (module docstring)."""
    if nearest_negative is None:
        return (1.0 + positive) / 2
    return 1.0 / (1.0 + np.exp(-TEMPERATURE * (positive - nearest_negative)))


def select(relevancy: np.ndarray, threshold: float) -> np.ndarray:
    """Indices of the points at or above ``threshold``, most relevant first (ties in index order)."""
    selected = np.flatnonzero(relevancy >= threshold)
    values = relevancy[selected].astype(np.float32) + np.float32(0.0)  # -0.0 becomes +0.0
    if len(relevancy) > 1 << 32 or (len(values) and values.min() < 0):  # never so in a field's relevancy
        return selected[np.argsort(-values, kind="stable")]
    # One sort of unique uint64 keys (descending relevancy in the high word, the index in the low word)
    # instead of a stable argsort of floats: 10x faster over millions of selected points. A non-negative
    # float32's bits order as its value does.
    keys = (np.uint64(0xFFFFFFFF) - values.view(np.uint32).astype(np.uint64)) << np.uint64(32)
    keys |= selected.astype(np.uint64)
    return (np.sort(keys) & np.uint64(0xFFFFFFFF)).astype(np.int64)


def _memmap(path: Path, dtype: Any, shape: tuple[int, ...]) -> np.ndarray:
    expected = int(np.prod(shape)) * np.dtype(dtype).itemsize
    if not path.is_file() or path.stat().st_size != expected:
        size = path.stat().st_size if path.is_file() else "missing"
        raise DataError(f"{path}: {size} bytes, expected {expected} for {shape} {np.dtype(dtype)}; {_FIX}.")
    # Copy-on-write: torch wants writable arrays; nothing is ever written back to the file.
    return np.memmap(path, dtype=dtype, mode="c", shape=shape)


def read_ply(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """(points (N, 3) float32, colours (N, 3) float32 in [0, 1], zeros if none) of a PLY file: numpy for a
    binary vertex list (what ``write_ply`` and open3d write: no 5 s open3d import before a first query),
    open3d for anything else."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: not found; {_FIX}.")
    vertices = _binary_vertices(path)
    if vertices is not None:
        points = np.stack([vertices[axis] for axis in "xyz"], axis=1).astype(np.float32)
        if not all(channel in vertices.dtype.names for channel in ("red", "green", "blue")):
            return points, np.zeros_like(points)
        colors = np.stack([vertices[c] for c in ("red", "green", "blue")], axis=1).astype(np.float32)
        return points, colors / 255.0 if vertices.dtype["red"].kind == "u" else colors
    import open3d as o3d

    cloud = o3d.io.read_point_cloud(str(path))
    points = np.asarray(cloud.points, dtype=np.float32)
    colors = np.asarray(cloud.colors, dtype=np.float32) if cloud.has_colors() else np.zeros_like(points)
    return points, colors


_PLY_TYPES = {"char": "i1", "uchar": "u1", "short": "<i2", "ushort": "<u2", "int": "<i4", "uint": "<u4",
              "float": "<f4", "double": "<f8", "int8": "i1", "uint8": "u1", "int16": "<i2", "uint16": "<u2",
              "int32": "<i4", "uint32": "<u4", "float32": "<f4", "float64": "<f8"}


def _binary_vertices(path: Path) -> np.ndarray | None:
    """The vertex records of a little-endian binary PLY whose only element is ``vertex`` with scalar x, y, z
    (and more scalar properties); None for any other PLY (open3d reads those)."""
    with open(path, "rb") as handle:
        if handle.readline().strip() != b"ply":
            return None
        count, fields, binary = None, [], False
        for _ in range(64):
            line = handle.readline().decode("ascii", "replace").split()
            if not line or line[0] in ("comment", "obj_info"):
                continue
            if line[0] == "end_header":
                break
            if line[0] == "format":
                binary = line[1:2] == ["binary_little_endian"]
            elif line[0] == "element":
                if count is not None or line[1] != "vertex":
                    return None
                count = int(line[2])
            elif line[0] == "property" and len(line) == 3 and line[1] in _PLY_TYPES:
                fields.append((line[2], _PLY_TYPES[line[1]]))
            else:
                return None
        else:
            return None
        dtype = np.dtype(fields) if fields else None
        if not binary or count is None or dtype is None or not {"x", "y", "z"} <= set(dtype.names):
            return None
        vertices = np.fromfile(handle, dtype=dtype, count=count)
    return vertices if len(vertices) == count else None


def write_ply(path: str | os.PathLike, points: np.ndarray, colors: np.ndarray | None = None) -> None:
    """Write points (float32) and colours (in [0, 1], stored as bytes) as a binary PLY file, atomically."""
    path = Path(path)
    points = np.asarray(points, dtype=np.float32).reshape(-1, 3)
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if colors is not None:
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    vertices = np.empty(len(points), dtype=fields)
    for axis, name in enumerate("xyz"):
        vertices[name] = points[:, axis]
    if colors is not None:
        bytes_ = np.clip(np.round(np.asarray(colors, dtype=np.float64).reshape(-1, 3) * 255.0), 0, 255)
        for channel, name in enumerate(("red", "green", "blue")):
            vertices[name] = bytes_[:, channel]
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {len(points)}",
              *(f"property {'float' if kind == '<f4' else 'uchar'} {name}" for name, kind in fields), "end_header", ""]
    with atomic_open(path) as handle:
        handle.write("\n".join(header).encode("ascii"))
        handle.write(vertices.tobytes())
