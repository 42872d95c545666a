"""3D instances of a point field or a live map: FIND's per-frame masks lifted and merged across views.

A 3D answer a robot can act on is a set of *objects*. Geometry alone cuts a scene at its gaps, and on
a real desk objects touch: two teddies side by side, a duck leaning on a block were one piece. FIND
segments every frame (generic / panoptic segmentation, one of its six tasks), and where two touching
objects meet, most views show the boundary: one mask ends and another begins. So a field is cut once,
without looking at any query, in the spirit of MaskClustering's view consensus:

1. *Nodes*: the points fall into ``voxel``-sized cells (by default 1 cm, or 1.5 times the points'
   median spacing in a sparser export, so that neighbouring points' cells touch, up to 3 cm; a live
   map's own voxels are its nodes); each
   node carries its points' mean embedding and, per frame that sees it, the 2D mask most of its
   points fall in (``MaskVotes.observe``; frames' masks are ``find3d.field.embeddings``' ``segments``).
2. *Support planes*: the largest plane (RANSAC: ``RANSAC_TRIALS`` random triples of node centres,
   inliers within ``plane_distance``, refit by least squares) is cut off while it holds at least
   ``min_plane_share`` of the points, at most ``max_planes`` times: the table top, the floor, a wall.
   Objects stand on planes, so this boundary needs no mask at all.
3. *View consensus*, in two steps (``MaskVotes`` holds, per pair of touching nodes, in how many frames a
   mask saw both and in how many one mask held both):
   - *fragments*: touching nodes join where the masks confirm it (one mask in at least
     ``STRICT_AGREEMENT`` of at least ``min_views`` views) and their colours agree (CIELAB distance
     up to ``colour_distance``, lightness discounted: shading is not a border);
   - *merging*: touching fragments join when, summed over their whole shared border, at least
     ``agreement`` of the views put both sides in one mask (average linkage: a few views that merged
     two objects in 2D cannot bridge them); fragments of clearly different colour need
     ``STRICT_AGREEMENT_COLOUR`` (a painted toy stays whole, two touching twins of different colours
     stay two). Mutual best pairs merge first, round after round.
   Nodes whose embeddings disagree (cosine < ``feature_cosine``) never join. Without masks (``votes=None``,
   or masks that never held two touching nodes) every touching pair joins: the connected pieces of old.
4. *Speckle*: pieces whose surface is under ``min_area`` (counted in nodes of ``voxel`` squared) join
   the touching piece they share most edges with (a node the masks never saw belongs with its
   neighbours, a small piece one mask cut off belongs with its object); what touches nothing becomes
   label -1.

A query then scores each instance by the mean of its points' embeddings (``Field.segment_vectors``),
which averages away the per-point confusions of an instance's minority pixels.

Deterministic: the RANSAC draws come from a generator seeded with ``SEED``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from find3d.errors import InputError
from find3d.query.objects import voxel_components

RANSAC_TRIALS = 300
RANSAC_SAMPLE = 20_000  # nodes the trials count inliers on; the final inliers are found among all nodes
SEED = 0
KEY_BITS = 21  # per axis of a packed voxel key: 2^21 cells of 1 cm span 21 km
KEY_OFFSET = 1 << (KEY_BITS - 1)
# 13 of the 26 neighbour offsets: each touching pair of cells is found once, from its lower key.
HALF_NEIGHBOURHOOD = np.array([(dx, dy, dz) for dx in (-1, 0, 1) for dy in (-1, 0, 1) for dz in (-1, 0, 1)
                               if (dx, dy, dz) > (0, 0, 0)], dtype=np.int64)
MIN_VOXEL = 0.01  # m: the finest node size (a tabletop object is then several nodes across)
MAX_VOXEL = 0.03  # m: the coarsest (a cell as large as a small object holds no object's shape)
SPACING_FACTOR = 1.5  # node size / median point spacing of a sparse export: neighbours' cells then touch
STRICT_AGREEMENT = 0.9  # edges the masks confirm this clearly join without a vote of their fragments' borders
LIGHTNESS_WEIGHT = 0.3  # share of a CIELAB lightness difference that counts towards a colour difference
STRICT_AGREEMENT_COLOUR = 0.9  # border agreement that merges fragments of different colour (a painted toy)
NEIGHBOUR_DELTAS = (HALF_NEIGHBOURHOOD[:, 0] << (2 * KEY_BITS)) + (HALF_NEIGHBOURHOOD[:, 1] << KEY_BITS) \
    + HALF_NEIGHBOURHOOD[:, 2]
NODE_CHUNK = 1 << 18  # nodes whose neighbours are searched at once
EDGE_CHUNK = 1 << 16  # edges whose embeddings or colours are compared at once: bounds the (edges, D) temporaries


@dataclass(frozen=True)
class SegmentParameters:
    """How a field is cut into instances (module docstring)."""

    plane_distance: float = 0.008  # m: a plane's inliers; thin enough to leave a mug's base with the mug
    min_plane_share: float = 0.1  # least share of all points a support plane holds
    max_planes: int = 3  # table, floor, one wall
    voxel: float | None = None  # m: node size of the consensus graph; None: ``node_voxel`` of the points
    min_views: int = 2  # least frames that saw both ends of an edge in a mask, for the edge to count
    agreement: float = 0.5  # least share of those frames that put both ends in one mask
    feature_cosine: float = 0.0  # least cosine of two joined nodes' mean embeddings (-1: off)
    colour_distance: float = 12.0  # CIELAB distance (``_colour_distance``) from which two colours differ
    min_area: float = 0.004  # m^2: smaller pieces are speckle (about what a 5 cm ball shows the cameras)

    def __post_init__(self) -> None:
        for name in ("plane_distance", "voxel"):
            value = getattr(self, name)
            if value is None and name == "voxel":
                continue
            if not (np.isfinite(value) and value > 0):
                raise InputError(f"segments: {name}={value}; pass a positive length in metres.")
        if not 0 < self.min_plane_share <= 1 or not 0 <= self.agreement <= 1 or not -1 <= self.feature_cosine <= 1:
            raise InputError(f"segments: min_plane_share={self.min_plane_share}, agreement={self.agreement}, "
                             f"feature_cosine={self.feature_cosine}; need a share in (0, 1], a share in [0, 1] "
                             "and a cosine in [-1, 1].")
        if self.max_planes < 0 or not self.min_area >= 0 or self.min_views < 1:
            raise InputError(f"segments: max_planes={self.max_planes}, min_area={self.min_area}, "
                             f"min_views={self.min_views}; need max_planes >= 0, min_area >= 0, min_views >= 1.")


def pack_keys(cells: np.ndarray) -> np.ndarray:
    """(n,) int64 keys of (n, 3) integer cell coordinates (|coordinate| < 2^20); neighbours differ by
    ``NEIGHBOUR_DELTAS``."""
    shifted = np.asarray(cells, dtype=np.int64) + KEY_OFFSET
    return (shifted[:, 0] << (2 * KEY_BITS)) | (shifted[:, 1] << KEY_BITS) | shifted[:, 2]


def cell_keys(xyz: np.ndarray, voxel: float) -> tuple[np.ndarray, np.ndarray]:
    """(int64 keys of the points inside the addressable range, bool mask of those points)."""
    index = np.floor(np.asarray(xyz, dtype=np.float64) / voxel)
    with np.errstate(invalid="ignore"):
        inside = np.all(np.isfinite(index), axis=1) & np.all(np.abs(index) < KEY_OFFSET, axis=1)
    return pack_keys(index[inside].astype(np.int64)), inside


def neighbour_pairs(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Touching pairs among sorted unique ``keys``: ``(i, k, j)`` with ``keys[j] == keys[i] + NEIGHBOUR_DELTAS[k]``,
    in ``i`` order; ``i`` and ``j`` int32 (int64 from 2^31 keys on), ``k`` int8. Found ``NODE_CHUNK`` keys at a
    time, so the (keys, 13) searches never hold more than a chunk (a 10M-voxel map's would be gigabytes)."""
    index = np.int32 if len(keys) < 2**31 else np.int64
    parts = []
    for start in range(0, len(keys), NODE_CHUNK):
        wanted = np.asarray(keys[start:start + NODE_CHUNK], np.int64)[:, None] + NEIGHBOUR_DELTAS[None, :]
        found = np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)
        i, k = np.nonzero(np.asarray(keys[found]) == wanted)
        parts.append(((i + start).astype(index), k.astype(np.int8), found[i, k].astype(index)))
    if not parts:
        return np.zeros(0, index), np.zeros(0, np.int8), np.zeros(0, index)
    return tuple(np.concatenate([part[n] for part in parts]) for n in range(3))  # type: ignore[return-value]


class MaskVotes:
    """The view-consensus graph's evidence: for each node (a row) and each of its 13 forward neighbours,
    in how many frames a mask saw both (``seen``) and in how many one mask held both (``same``).

    Rows are the caller's: a field's node indices, a live map's voxel rows (``grow`` and ``move``
    keep them aligned with the map's own arrays)."""

    def __init__(self, capacity: int = 0) -> None:
        self.seen = np.zeros((capacity, len(NEIGHBOUR_DELTAS)), np.float32)
        self.same = np.zeros((capacity, len(NEIGHBOUR_DELTAS)), np.float32)

    def grow(self, capacity: int) -> None:
        for name in ("seen", "same"):
            old = getattr(self, name)
            grown = np.zeros((capacity, old.shape[1]), np.float32)
            grown[:min(len(old), capacity)] = old[:capacity]
            setattr(self, name, grown)

    def move(self, holes: np.ndarray, movers: np.ndarray, cleared: slice) -> None:
        """Rows ``movers`` move into ``holes``; rows in ``cleared`` are emptied (a map's eviction)."""
        for array in (self.seen, self.same):
            array[holes] = array[movers]
            array[cleared] = 0

    def observe(self, keys: np.ndarray, rows: np.ndarray, masks: np.ndarray) -> None:
        """One frame: ``keys`` / ``rows`` of the nodes it sees (any order, repeats allowed) and the 2D mask id
        at each (0 = no mask); each node's vote is the mask most of its observations fall in."""
        keys, rows, masks = np.asarray(keys, np.int64), np.asarray(rows, np.int64), np.asarray(masks, np.int64)
        keep = masks > 0
        if not keep.any():
            return
        keys, rows, masks = keys[keep], rows[keep], masks[keep]
        # majority mask per node: count (node, mask) pairs, keep each node's most frequent one
        pairs, counts = np.unique(np.stack([keys, masks], axis=1), axis=0, return_counts=True)
        order = np.lexsort((-counts, pairs[:, 0]))
        pairs = pairs[order]
        first = np.concatenate([[True], pairs[1:, 0] != pairs[:-1, 0]])
        node_keys, node_masks = pairs[first, 0], pairs[first, 1]
        node_rows = rows[np.unique(keys, return_index=True)[1]]  # np.unique sorts keys as pairs[first] are
        i, k, j = neighbour_pairs(node_keys)
        np.add.at(self.seen, (node_rows[i], k), 1.0)
        np.add.at(self.same, (node_rows[i], k), (node_masks[i] == node_masks[j]).astype(np.float32))


def segment_points(points: np.ndarray, parameters: SegmentParameters = SegmentParameters(),
                   features: np.ndarray | None = None,
                   observations: list[tuple[np.ndarray, np.ndarray]] | None = None,
                   colors: np.ndarray | None = None) -> np.ndarray:
    """(N,) int32 instance label of every point, -1 for speckle (module docstring).

    ``features`` (N, D): the points' embeddings (for the feature test); ``observations``: per frame,
    ``(point indices, mask ids)`` of the points it sees and the 2D mask each lands in (None: geometry only);
    ``colors`` (N, 3) in [0, 1]: the points' colours (the colour test).
    """
    xyz = np.asarray(points, dtype=np.float64)
    labels = np.full(len(xyz), -1, dtype=np.int32)
    if parameters.voxel is None:
        parameters = replace(parameters, voxel=node_voxel(xyz))
    keys, inside = cell_keys(xyz, parameters.voxel)
    if not len(keys):
        return labels
    node_keys, node_of = np.unique(keys, return_inverse=True)
    member = _membership(node_of, len(node_keys))
    weights = np.asarray(member.sum(axis=1)).ravel()
    centres = (member @ xyz[inside]) / weights[:, None]
    node_features = None
    if features is not None:
        node_features = member @ np.asarray(features, dtype=np.float32)[inside]
        node_features /= np.maximum(np.linalg.norm(node_features, axis=1, keepdims=True), 1e-12)
    votes = None
    if observations is not None:
        votes = MaskVotes(len(node_keys))
        point_node = np.full(len(xyz), -1, np.int64)
        point_node[inside] = node_of
        for indices, masks in observations:
            nodes = point_node[np.asarray(indices, np.int64)]
            seen = nodes >= 0
            votes.observe(node_keys[nodes[seen]], nodes[seen], np.asarray(masks)[seen])
    node_colors = None if colors is None else (member @ np.asarray(colors, np.float64)[inside]) / weights[:, None]
    labels[inside] = segment_nodes(node_keys, centres, weights, parameters, node_features, votes,
                                   colors=node_colors)[node_of]
    return labels


def node_voxel(xyz: np.ndarray) -> float:
    """The node size for points ``xyz``: ``SPACING_FACTOR`` times their median distance to the nearest other point
    (from a sample of at most ``RANSAC_SAMPLE`` points), within [``MIN_VOXEL``, ``MAX_VOXEL``]: points farther
    apart than that hold no object together, and are answered one by one."""
    from scipy.spatial import cKDTree

    finite = xyz[np.all(np.isfinite(xyz), axis=1)]
    if len(finite) < 2:
        return MIN_VOXEL
    sample = finite[np.random.default_rng(SEED).choice(len(finite), min(len(finite), RANSAC_SAMPLE), replace=False)]
    spacing = float(np.median(cKDTree(finite).query(sample, k=2)[0][:, 1]))
    return float(np.clip(SPACING_FACTOR * spacing, MIN_VOXEL, MAX_VOXEL))


def mask_observations(points: np.ndarray, frames: list[dict[str, Any]],
                      segment_maps: Callable[[int], np.ndarray | None]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per frame (export meta ``frames`` entries, with ``segment_maps(index)`` its (H, W) panoptic ids or
    None): ``(indices of the points it sees, the mask id under each)`` for ``segment_points``. Visibility is
    ``find3d.query.field.visible_points``' z-buffer, so a mask never votes for the points behind it."""
    from tqdm import tqdm

    from find3d.query.field import frame_hit, visible_points

    out = []
    for index, entry in enumerate(tqdm(frames, desc="3D instances", unit="view", disable=None, leave=False)):
        ids = segment_maps(index)
        if ids is None:
            continue
        seen, uv = visible_points(points, frame_hit(entry, index))
        indices = np.flatnonzero(seen)
        cols = np.clip(np.floor(uv[indices, 0]).astype(np.int64), 0, ids.shape[1] - 1)
        rows = np.clip(np.floor(uv[indices, 1]).astype(np.int64), 0, ids.shape[0] - 1)
        out.append((indices, ids[rows, cols]))
    return out


def segment_nodes(keys: np.ndarray, centres: np.ndarray, weights: np.ndarray,
                  parameters: SegmentParameters = SegmentParameters(), features: np.ndarray | None = None,
                  votes: MaskVotes | None = None, rows: np.ndarray | None = None,
                  colors: np.ndarray | None = None) -> np.ndarray:
    """(n,) int32 instance label of each node (sorted unique ``keys``, their ``centres``, point counts
    ``weights`` and ``colors``), -1 for speckle (module docstring). ``votes`` and ``features`` (embeddings,
    unit or not: a map's sums do) are the caller's rows: node ``i``'s is row ``rows[i]``, default ``i``, so a
    map passes its own arrays, never a reordered copy."""
    n = len(keys)
    rows = np.arange(n) if rows is None else np.asarray(rows, np.int64)
    plane = _planes(centres, weights, parameters)
    i, k, j = neighbour_pairs(keys)
    join = plane[i] == plane[j]  # never across a plane's border
    objects = plane[i] < 0
    if features is not None and parameters.feature_cosine > -1:
        tested = np.flatnonzero(join & objects)  # the test only ever cuts an edge between two objects' nodes
        join[tested] = _edge_cosines(features, rows[i[tested]], rows[j[tested]]) >= parameters.feature_cosine
    seen = None if votes is None else votes.seen[rows[i], k]
    if seen is None or not seen.any():  # no mask saw two touching nodes: geometry alone decides
        pieces = _components(n, i[join], j[join])
    else:
        same = votes.same[rows[i], k]
        # fragments: only edges the masks confirm; the rest is decided between whole fragments below
        sure = (seen >= parameters.min_views) & (same >= STRICT_AGREEMENT * seen)
        if colors is not None:  # and a colour edge is a border until the fragments' vote says otherwise
            sure &= _edges(lambda a, b: _colour_distance(colors[a], colors[b]), i, j) <= parameters.colour_distance
        pieces = _components(n, i[join & (~objects | sure)], j[join & (~objects | sure)])
        pieces = _merge_fragments(pieces, i[join & objects], j[join & objects], seen[join & objects],
                                  same[join & objects], parameters, weights, colors)
    return _absorb_speckle(pieces, i, j, max(1, round(parameters.min_area / parameters.voxel**2)))


def _merge_fragments(pieces: np.ndarray, i: np.ndarray, j: np.ndarray, seen: np.ndarray, same: np.ndarray,
                     parameters: SegmentParameters, weights: np.ndarray, colors: np.ndarray | None) -> np.ndarray:
    """Join touching fragments whose whole shared border the masks agree on (average linkage): summed
    over every edge between two fragments, at least ``agreement`` of the views that saw both ends put
    them in one mask, from ``min_views`` views up. A few edges that one merged mask joined cannot bridge
    two objects whose border is otherwise cut. Mutual best pairs merge first, round after round.

    The edges are summed into fragment pairs once; a round merges pairs of that table (whose sums add up
    as fragments merge) and the fragments' colour sums, so a round costs the fragments, not the edges."""
    a, b = pieces[i], pieces[j]
    across = a != b
    count = int(pieces.max()) + 1 if len(pieces) else 0
    low, high = np.minimum(a[across], b[across]), np.maximum(a[across], b[across])
    pairs, total_seen, total_same = _pair_sums(low, high, seen[across], same[across], count)
    label = np.arange(count)  # each original fragment's fragment now
    if colors is not None:
        mass = np.bincount(pieces, weights=weights, minlength=count)
        colour_sums = np.stack([np.bincount(pieces, weights=weights * colors[:, c], minlength=count)
                                for c in range(colors.shape[1])], axis=1)
        lab = rgb_to_lab(colour_sums / np.maximum(mass, 1e-12)[:, None])  # of each fragment's mean colour
    for _ in range(64):
        if not len(pairs):
            break
        score = total_same / np.maximum(total_seen, 1e-9)
        good = (total_seen >= parameters.min_views) & (score >= parameters.agreement)
        if colors is not None:
            # two touching fragments of clearly different colour need the masks' clear word to merge
            apart = _lab_distance(lab[pairs[:, 0]], lab[pairs[:, 1]]) > parameters.colour_distance
            good &= ~apart | (score >= STRICT_AGREEMENT_COLOUR)
        if not good.any():
            break
        chosen, score = pairs[good], score[good]
        # each fragment's best partner; a pair merges when each is the other's best (no chains per round)
        best = np.full(count, -1.0)
        np.maximum.at(best, chosen[:, 0], score)
        np.maximum.at(best, chosen[:, 1], score)
        chosen = chosen[(score >= best[chosen[:, 0]]) & (score >= best[chosen[:, 1]])]
        # a fragment tied between two partners merges with one of them this round
        chosen = chosen[np.unique(chosen[:, 0], return_index=True)[1]]
        chosen = chosen[np.unique(chosen[:, 1], return_index=True)[1]]
        chosen = chosen[~np.isin(chosen[:, 0], chosen[:, 1])]
        mapping = np.arange(count)
        mapping[chosen[:, 1]] = chosen[:, 0]
        label = mapping[label]
        if colors is not None:
            np.add.at(mass, chosen[:, 0], mass[chosen[:, 1]])
            np.add.at(colour_sums, chosen[:, 0], colour_sums[chosen[:, 1]])
            lab[chosen[:, 0]] = rgb_to_lab(colour_sums[chosen[:, 0]] / np.maximum(mass[chosen[:, 0]], 1e-12)[:, None])
        merged = mapping[pairs]
        keep = merged[:, 0] != merged[:, 1]
        pairs, total_seen, total_same = _pair_sums(np.minimum(merged[keep, 0], merged[keep, 1]),
                                                   np.maximum(merged[keep, 0], merged[keep, 1]),
                                                   total_seen[keep], total_same[keep], count)
    return label[pieces]


def _pair_sums(low: np.ndarray, high: np.ndarray, seen: np.ndarray, same: np.ndarray, count: int
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(unique (low, high) pairs of labels below ``count``, sorted; their summed ``seen``, ``same``)."""
    # one int64 per pair sorts as the (low, high) rows would, and far faster than np.unique(axis=0)
    codes, inverse = np.unique(np.asarray(low, np.int64) * count + high, return_inverse=True)
    pairs = np.stack([codes // max(count, 1), codes % max(count, 1)], axis=1)
    return (pairs, np.bincount(inverse, weights=seen, minlength=len(pairs)),
            np.bincount(inverse, weights=same, minlength=len(pairs)))


def _edge_cosines(features: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """(E,) cosine of the two ends' embeddings (unit or not: a map's sums, a memory-mapped float16 export)."""
    def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        left, right = np.asarray(features[a], np.float32), np.asarray(features[b], np.float32)
        norms = np.linalg.norm(left, axis=1) * np.linalg.norm(right, axis=1)
        return (left * right).sum(axis=1) / np.maximum(norms, 1e-30)

    return _edges(cosines, i, j)


def _edges(measure: Callable[[np.ndarray, np.ndarray], np.ndarray], i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """``measure(i, j)`` over the edges ``EDGE_CHUNK`` at a time."""
    out = np.empty(len(i), np.float64)
    for start in range(0, len(i), EDGE_CHUNK):
        out[start:start + EDGE_CHUNK] = measure(i[start:start + EDGE_CHUNK], j[start:start + EDGE_CHUNK])
    return out


def _colour_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """CIE76 distance of RGB colours in [0, 1] with lightness weighted by ``LIGHTNESS_WEIGHT``: hue and
    saturation tell two objects apart, while shading and shadows mostly change lightness alone."""
    return _lab_distance(rgb_to_lab(a), rgb_to_lab(b))


def _lab_distance(lab_a: np.ndarray, lab_b: np.ndarray) -> np.ndarray:
    """``_colour_distance`` of colours already in CIELAB."""
    return np.sqrt(((lab_a[:, 1:] - lab_b[:, 1:]) ** 2).sum(axis=1)
                   + (LIGHTNESS_WEIGHT * (lab_a[:, 0] - lab_b[:, 0])) ** 2)


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """(n, 3) sRGB in [0, 1] -> CIELAB (D65 white)."""
    rgb = np.clip(np.asarray(rgb, np.float64), 0.0, 1.0)
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    xyz = linear @ _SRGB_TO_XYZ.T / _D65_WHITE
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], axis=1)


_SRGB_TO_XYZ = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
_D65_WHITE = np.array([0.9505, 1.0, 1.089])


def _membership(node_of: np.ndarray, count: int) -> Any:
    """(nodes, points) sparse 0/1 matrix: node sums of point values are one product."""
    from scipy.sparse import csr_matrix

    return csr_matrix((np.ones(len(node_of), np.float32), (node_of, np.arange(len(node_of)))),
                      shape=(count, len(node_of)))


def _components(n: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(i), np.int8), (i, j)), shape=(n, n))
    return connected_components(graph, directed=False)[1].astype(np.int64)


def _absorb_speckle(pieces: np.ndarray, i: np.ndarray, j: np.ndarray, min_nodes: int) -> np.ndarray:
    """Pieces under ``min_nodes`` nodes join the touching large piece they share most edges with (repeated,
    so a chain of small pieces reaches a large one); then labels are renumbered 0.. by first node, -1 for
    what stays small."""
    size = np.bincount(pieces)
    for _ in range(8):  # each round moves small pieces one neighbour further; rarely more than two are needed
        small = size[pieces] < min_nodes
        across = (pieces[i] != pieces[j]) & (small[i] ^ small[j])
        if not across.any():
            break
        # (small piece, large piece) pairs with their edge counts; each small piece takes its strongest
        source = np.where(small[i[across]], pieces[i[across]], pieces[j[across]])
        target = np.where(small[i[across]], pieces[j[across]], pieces[i[across]])
        pairs, counts = np.unique(np.stack([source, target], axis=1), axis=0, return_counts=True)
        order = np.lexsort((-counts, pairs[:, 0]))
        pairs = pairs[order]
        first = np.concatenate([[True], pairs[1:, 0] != pairs[:-1, 0]])
        mapping = np.arange(len(size))
        mapping[pairs[first, 0]] = pairs[first, 1]
        pieces = mapping[pieces]
        size = np.bincount(pieces, minlength=len(size))
    keep = size[pieces] >= min_nodes
    labels = np.full(len(pieces), -1, np.int32)
    _, renumbered = np.unique(pieces[keep], return_inverse=True)
    labels[keep] = renumbered
    return labels


def _planes(centres: np.ndarray, weights: np.ndarray, parameters: SegmentParameters) -> np.ndarray:
    """(n,) int64: each node's plane piece (0, 1, ...) or -1 off every support plane (module docstring, 2)."""
    rng = np.random.default_rng(SEED)
    plane = np.full(len(centres), -1, np.int64)
    rest = np.arange(len(centres))
    total, label = float(weights.sum()), 0
    for _ in range(parameters.max_planes):
        if weights[rest].sum() < parameters.min_plane_share * total or len(rest) < 3:
            break
        inliers = _largest_plane(centres[rest], parameters.plane_distance, rng)
        if weights[rest[inliers]].sum() < parameters.min_plane_share * total:
            break
        members = rest[inliers]
        pieces = voxel_components(centres[members], 2 * parameters.voxel)  # the floor either side of a table
        plane[members] = label + pieces
        label += int(pieces.max()) + 1
        rest = rest[~inliers]
    return plane


def _largest_plane(xyz: np.ndarray, distance: float, rng: np.random.Generator) -> np.ndarray:
    """Bool mask of the inliers of the plane with the most of them (module docstring, step 2)."""
    sample = xyz[rng.choice(len(xyz), size=min(len(xyz), RANSAC_SAMPLE), replace=False)]
    triples = sample[rng.integers(0, len(sample), size=(RANSAC_TRIALS, 3))]
    normals = np.cross(triples[:, 1] - triples[:, 0], triples[:, 2] - triples[:, 0])
    norms = np.linalg.norm(normals, axis=1)
    valid = norms > 1e-12
    if not valid.any():
        return np.zeros(len(xyz), bool)
    normals = normals[valid] / norms[valid, None]
    offsets = (normals * triples[valid, 0]).sum(1)
    counts = (np.abs(sample @ normals.T - offsets) <= distance).sum(0)
    best = int(np.argmax(counts))
    inliers = np.abs(xyz @ normals[best] - offsets[best]) <= distance
    # Refit on the inliers: three points fix the plane only up to their noise.
    centre = xyz[inliers].mean(0)
    normal = np.linalg.svd(xyz[inliers] - centre, full_matrices=False)[2][-1]
    return np.abs((xyz - centre) @ normal) <= distance
