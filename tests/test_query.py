"""3D queries on hand-made exported fields: relevancy, 3D masks, frame localisation, projection."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from find3d.errors import DataError, InputError
from find3d.field.export import write_export
from find3d.query import Field
from find3d.query.field import QueryResult, read_ply, select
from find3d.query.render import project_points, relevancy_image, save_relevancy_images

DIM = 8


def basis(i: int) -> np.ndarray:
    vector = np.zeros(DIM, np.float32)
    vector[i] = 1.0
    return vector


def look_at(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    """OpenGL camera-to-world looking from ``eye`` at ``target`` with world z up."""
    back = (eye - target) / np.linalg.norm(eye - target)
    right = np.cross([0.0, 0.0, 1.0], back)
    right /= np.linalg.norm(right)
    up = np.cross(back, right)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, up, back, eye
    return c2w


def camera(c2w: np.ndarray, name: str) -> dict:
    return {"file_path": f"images/{name}.png", "c2w": c2w.tolist(), "fl_x": 50.0, "fl_y": 50.0,
            "cx": 32.0, "cy": 24.0, "w": 64, "h": 48}


def make_field(root: Path, code_dim: int = 0) -> tuple[Path, np.ndarray]:
    """Points whose features blend basis 0 (the 'mug') into basis 1 (the 'table') with known weights."""
    weights = np.linspace(1.0, 0.0, 11, dtype=np.float32)  # point i: weight of the mug direction
    features = weights[:, None] * basis(0) + (1 - weights[:, None]) * basis(1)
    xyz = np.stack([np.linspace(-0.5, 0.5, 11), np.zeros(11), np.zeros(11)], axis=1).astype(np.float32)
    rgb = np.full((11, 3), 0.5, np.float32)
    image_vectors = np.stack([basis(1), 0.8 * basis(0) + 0.2 * basis(1), basis(0), basis(2)])
    frames = [camera(look_at(np.array([0.0, -2.0, 0.5 * k]), np.zeros(3)), f"f{k}") for k in range(3)]
    frames.append(camera(look_at(np.array([0.0, -2.0, 0.0]), np.array([0.0, -3.0, 0.0])), "away"))
    write_export(root, xyz, rgb, features, image_vectors, frames, code_dim=code_dim)
    return root, weights


@pytest.mark.parametrize("code_dim", [0, 2])
def test_relevancy_ordering_threshold_and_frames(tmp_path: Path, code_dim: int) -> None:
    root, weights = make_field(tmp_path / "field", code_dim)
    field = Field.load(root)
    assert (field.code is not None) == bool(code_dim)
    negatives = np.stack([basis(1), basis(2)])  # 'table' and an unrelated canonical phrase
    result = field.query(basis(0) * 3.0, negatives=negatives, threshold=0.6, top_k_frames=2)

    # Relevancy = sigmoid(10 (cos(mug) - max cos(neg))), monotone in the mug weight.
    cos_mug = weights / np.sqrt(weights**2 + (1 - weights) ** 2)
    cos_table = (1 - weights) / np.sqrt(weights**2 + (1 - weights) ** 2)
    expected = 1 / (1 + np.exp(-10 * (cos_mug - np.maximum(cos_table, 0.0))))
    np.testing.assert_allclose(result.relevancy, expected, atol=2e-3)
    assert list(result.indices) == [0, 1, 2, 3, 4]  # weight 0.6 -> relevancy 0.94, 0.5 -> 0.5: most relevant first
    assert np.all(np.diff(result.scores) <= 0)
    strict = field.query(basis(0), negatives=negatives, threshold=0.9995, top_k_frames=0)
    assert list(strict.indices) == [0, 1] and strict.frames == []

    # Frames rank by the share of the mask they see: the camera looking away sees none of it.
    every = field.query(basis(0), negatives=negatives, threshold=0.6, top_k_frames=4).frames
    assert [hit.index for hit in every] == [0, 1, 2, 3]
    assert [hit.score for hit in every] == pytest.approx([1.0, 1.0, 1.0, 0.0])
    np.testing.assert_allclose(every[2].c2w, json.loads((root / "meta.json").read_text())["frames"][2]["c2w"])
    # Image-level vectors rank frames for a retrieval-space vector.
    hits = field.localize(basis(0), top_k=2)
    assert [hit.index for hit in hits] == [2, 1] and hits[0].score == pytest.approx(1.0, abs=1e-3)

    plain = field.relevancy(basis(0))  # no negatives: (1 + cos) / 2
    np.testing.assert_allclose(plain, (1 + cos_mug) / 2, atol=2e-3)


def test_selection_is_most_relevant_first_with_ties_in_index_order() -> None:
    rng = np.random.default_rng(0)
    relevancy = rng.random(100_000).astype(np.float32)
    relevancy[::7] = 0.75  # ties
    relevancy[:3] = [0.0, -0.0, 1.0]
    for threshold in (0.0, 0.5, 0.75, 1.0):
        selected = np.flatnonzero(relevancy >= threshold)
        expected = selected[np.argsort(-relevancy[selected], kind="stable")]
        np.testing.assert_array_equal(select(relevancy, threshold), expected)
    assert list(select(relevancy, 1.0)) == [2] and list(select(relevancy, 0.0)[-2:]) == [0, 1]
    # relevancy below zero (not a field's, but an array someone passes) keeps the same order
    assert list(select(np.array([0.5, -1e-9, 0.2], np.float32), -1.0)) == [0, 2, 1]


def test_occluded_points_are_not_visible(tmp_path: Path) -> None:
    """A point hidden behind a nearer one does not count for the frame (z-buffer of the export)."""
    xyz = np.array([[0.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.3, 1.0, 0.0]], np.float32)
    features = np.stack([basis(0), basis(0), basis(1)])
    frames = [camera(look_at(np.array([0.0, -2.0, 0.0]), np.zeros(3)), "front")]
    write_export(tmp_path / "field", xyz, np.zeros_like(xyz), features, basis(0)[None], frames, code_dim=0)
    field = Field.load(tmp_path / "field")
    assert field.visible(0, np.arange(3)).tolist() == [True, False, True]
    indices, offsets = field.visibility()  # the per-frame cache frame ranking sums over
    assert indices.tolist() == [0, 2] and offsets.tolist() == [0, 2]
    result = field.query(basis(0), negatives=basis(1)[None], threshold=0.9, top_k_frames=1)
    assert list(result.indices) == [0, 1] and result.frames[0].score == pytest.approx(0.5, abs=1e-3)


def six_rooms(folder: Path, instances: bool) -> tuple[np.ndarray, list[np.ndarray]]:
    """An export of six rooms, each a wall, clutter and a mug (its instance with ``instances``), seen by 40
    frames among which walls and clutter hide the mugs from many; (the points, each mug's indices)."""
    rng = np.random.default_rng(7)
    parts, mugs, labels = [], [], []
    for room in range(6):
        wall = np.stack(np.meshgrid([4.0 * room], np.linspace(0, 4, 40), np.linspace(0, 2.5, 25)), -1).reshape(-1, 3)
        clutter = rng.uniform([4.0 * room + 0.3, 0, 0], [4.0 * room + 3.7, 4, 1.5], (400, 3))
        mug = rng.normal([4.0 * room + rng.uniform(1, 3), rng.uniform(1, 3), 0.8], 0.05, (60, 3))
        start = sum(len(part) for part in parts) + len(wall) + len(clutter)
        mugs.append(np.arange(start, start + len(mug)))
        parts += [wall, clutter, mug]
        labels += [np.full(len(wall), 2 * room), np.full(len(clutter), -1), np.full(len(mug), 2 * room + 1)]
    xyz = np.concatenate(parts).astype(np.float32)
    features = np.tile(basis(1), (len(xyz), 1))
    eyes = np.stack([rng.uniform(0.2, 23.8, 40), rng.uniform(0.2, 3.8, 40), np.full(40, 1.4)], 1)
    targets = eyes + np.stack([rng.uniform(-3, 3, 40), rng.uniform(-3, 3, 40), np.full(40, -0.6)], 1)
    frames = [camera(look_at(eye, target), f"f{k}") for k, (eye, target) in enumerate(zip(eyes, targets))]
    write_export(folder, xyz, np.zeros_like(xyz), features, np.tile(basis(1), (40, 1)), frames, code_dim=0,
                 segments=np.concatenate(labels).astype(np.int32) if instances else None)
    return xyz, mugs


def ranked_by_every_frame(folder: Path, relevancy: np.ndarray, order: np.ndarray) -> list:
    """Every frame ranked by z-buffering every frame (the path eval-3d takes once ``visibility()`` is known)."""
    exact = Field.load(folder)
    exact.visibility()
    return exact.rank_frames(relevancy, order, top_k=40)


def test_bounded_frame_ranking_equals_every_frame_z_buffered(tmp_path: Path) -> None:
    """A widespread answer (one object in each of six rooms) among walls and clutter that hide it from many of
    40 frames: ranking frames by branch and bound on lazily refined bounds gives exactly the ranking of
    z-buffering every frame."""
    xyz, mugs = six_rooms(tmp_path / "field", instances=False)
    order = np.concatenate(mugs)
    relevancy = np.zeros(len(xyz), np.float32)
    relevancy[order] = np.random.default_rng(7).uniform(0.5, 1.0, len(order))

    bounded = Field.load(tmp_path / "field").rank_frames(relevancy, order, top_k=5)
    every = ranked_by_every_frame(tmp_path / "field", relevancy, order)
    assert [hit.index for hit in bounded] == [hit.index for hit in every[:5]]
    assert [hit.score for hit in bounded] == pytest.approx([hit.score for hit in every[:5]], abs=1e-9)
    shares = [hit.score for hit in every]
    assert shares[0] > 0 and shares[-1] == 0 and len(set(shares)) >= 8  # a ranking with something to decide


def test_whole_object_frames_ranked_from_the_stored_table(tmp_path: Path) -> None:
    """An export with instances stores how many points of each instance each frame sees: a whole-object answer
    (every mug, one relevancy a mug) ranks every frame from it exactly as z-buffering every frame does; a
    selection that is not whole instances (half of each mug) takes the z-buffer path, with the same result."""
    xyz, mugs = six_rooms(tmp_path / "field", instances=True)
    field = Field.load(tmp_path / "field")
    table, sizes = field._instance_views
    assert table.shape == (40, 12) and list(sizes[1::2]) == [60] * 6 and table.nnz > 40
    relevancy = np.zeros(len(xyz), np.float32)
    for mug, score in zip(mugs, [0.9, 0.8, 0.8, 0.7, 0.6, 0.55]):
        relevancy[mug] = score
    for order in (np.concatenate(mugs), np.concatenate([mug[::2] for mug in mugs])):
        ranked = field.rank_frames(relevancy, order, top_k=40)
        every = ranked_by_every_frame(tmp_path / "field", relevancy, order)
        assert [hit.index for hit in ranked] == [hit.index for hit in every]
        assert [hit.score for hit in ranked] == pytest.approx([hit.score for hit in every], abs=1e-9)
        assert ranked[0].score > 0 and ranked[-1].score == 0 and len({hit.score for hit in every}) >= 8
    assert field._instance_scores(np.concatenate(mugs), relevancy[np.concatenate(mugs)].astype(np.float64),
                                  1.0) is not None
    assert field._instance_scores(mugs[0][::2], relevancy[mugs[0][::2]].astype(np.float64), 1.0) is None


def test_localisation_takes_the_middle_of_tied_points(tmp_path: Path) -> None:
    """LERF localisation: the most relevant visible point; among equal scores (a whole-object answer) the
    one nearest their centroid, not the first one exported."""
    from find3d.query.eval_3d import localised

    field = Field.load(make_field(tmp_path / "field")[0])
    hit = field.frame(0)
    uv, _ = project_points(field.points, hit.c2w, hit.fx, hit.fy, hit.cx, hit.cy)

    def mask_at(point: int) -> np.ndarray:
        mask = np.zeros((hit.height, hit.width), bool)
        mask[int(uv[point, 1]), int(uv[point, 0])] = True
        return mask

    tied = np.ones(len(field), np.float32)
    assert localised(field, tied, 0, mask_at(5)) and not localised(field, tied, 0, mask_at(0))
    peaked = np.where(np.arange(len(field)) == 2, 1.0, 0.5).astype(np.float32)
    assert localised(field, peaked, 0, mask_at(2)) and not localised(field, peaked, 0, mask_at(5))


def test_attribute_queries_name_one_instance_each(tmp_path: Path) -> None:
    """eval-3d's "the red mug" queries: one per instance whose colour its category's other instances do not
    share; a colour two instances share ("the white robot") names none, and objects without GT points or
    colour (the table, a hidden mug) ask nothing."""
    from find3d.query.eval_3d import Scene, attribute_queries

    objects = {1: ("mug", "red"), 2: ("mug", "blue"), 3: ("robot", "white"), 4: ("robot", "white"),
               5: ("duck", "yellow"), 6: ("table", None), 7: ("mug", "green")}
    table = {i: {"category": c, "colour": colour, "isthing": c != "table"} for i, (c, colour) in objects.items()}
    ids = np.array([1, 2, 3, 4, 5, 6], np.int32)  # object 7 is never seen: no GT points
    scene = Scene(tmp_path, {"frames": []}, table, np.zeros((len(ids), 3), np.float32), ids)
    queries = {q["text"]: q["target"] for q in attribute_queries(scene)}
    assert queries == {"the red mug": 1, "the blue mug": 2, "the yellow duck": 5}


def test_mask_ply_round_trip(tmp_path: Path) -> None:
    field = Field.load(make_field(tmp_path / "field")[0])
    result = field.query(basis(0), negatives=basis(1)[None], threshold=0.6)
    result.write_ply(tmp_path / "mask.ply", field.points, field.colors)
    points, colors = read_ply(tmp_path / "mask.ply")
    np.testing.assert_allclose(points, field.points[result.indices], atol=1e-6)
    np.testing.assert_allclose(colors, 0.5, atol=1 / 255)  # PLY stores 8-bit colours


def test_projection_and_relevancy_image(tmp_path: Path) -> None:
    c2w = look_at(np.array([0.0, -2.0, 0.0]), np.zeros(3))
    uv, depth = project_points(np.array([[0.0, 0.0, 0.0], [0.2, 0.0, 0.1], [0.0, -3.0, 0.0]]), c2w,
                               50.0, 50.0, 32.0, 24.0)
    np.testing.assert_allclose(uv[0], [32.0, 24.0], atol=1e-9)  # the target lands on the principal point
    np.testing.assert_allclose(uv[1], [32.0 + 50 * 0.2 / 2, 24.0 - 50 * 0.1 / 2], atol=1e-9)  # right and up
    np.testing.assert_allclose(depth[:2], [2.0, 2.0])
    assert depth[2] < 0  # behind the camera

    field = Field.load(make_field(tmp_path / "field")[0])
    result = field.query(basis(0), negatives=basis(1)[None], threshold=0.6, top_k_frames=1)
    frame = field.frame(0)
    picture = relevancy_image(field.points, result.relevancy, frame, threshold=result.threshold, radius=0)
    assert picture.shape == (48, 64, 3)
    lit_columns = np.flatnonzero(picture.any(axis=(0, 2)))
    # Selected points x in [-0.5, -0.1] at depth 2 -> columns 32 + 25x: 19.5 ... 29.5
    assert lit_columns.min() >= 19 and lit_columns.max() <= 30
    assert np.flatnonzero(picture.any(axis=(1, 2))).tolist() == [24]
    # whole objects are outlined in magenta, inside the tinted region: the same pixels lit, its rim recoloured
    grey = np.full((48, 64, 3), 128, np.uint8)
    tinted, outlined = (relevancy_image(field.points, result.relevancy, frame, grey, threshold=result.threshold,
                                        radius=2, outline=outline) for outline in (False, True))
    rim = np.any(outlined != tinted, axis=2)
    assert rim.any() and np.all(outlined[rim] == (255, 0, 255))
    assert np.array_equal(np.any(tinted != grey, axis=2), np.any(outlined != grey, axis=2))
    assert not rim[24, 22:28].any() and rim[22, 22:28].all()  # the 5-px band's middle row keeps its tint
    wider = field.query(basis(0), negatives=basis(1)[None], threshold=0.6, top_k_frames=3)
    assert len(save_relevancy_images(field, wider, tmp_path / "png")) == 3
    # a later answer into the same folder replaces the earlier one's pictures
    paths = save_relevancy_images(field, result, tmp_path / "png")
    assert len(paths) == 1 and sorted((tmp_path / "png").glob("relevancy_*.png")) == paths
    # the pictures show the answer's own points (a relation's target), not all the relevancy lights
    target = QueryResult(np.ones(len(field), np.float32), np.array([0]), np.ones(1, np.float32), 0.5, [frame])
    [path] = save_relevancy_images(field, target, tmp_path / "target")
    lit = np.flatnonzero(np.asarray(Image.open(path)).any(axis=(0, 2)))
    assert lit.min() >= 18 and lit.max() <= 21  # point 0 (x = -0.5) -> column 19.5, radius 1


def test_bad_queries_and_files(tmp_path: Path) -> None:
    root = make_field(tmp_path / "field")[0]
    field = Field.load(root)
    with pytest.raises(InputError, match="expected"):
        field.query(np.ones(DIM + 1))
    with pytest.raises(InputError, match="zero"):
        field.query(np.zeros(DIM))
    with pytest.raises(InputError, match="threshold"):
        field.query(basis(0), threshold=1.5)
    with pytest.raises(DataError, match="not found"):
        Field.load(tmp_path / "missing")
    (root / "features.f16").write_bytes(b"\0" * 6)
    with pytest.raises(DataError, match=r"features\.f16"):
        Field.load(root)
    (root / "meta.json").write_text('{"format": "find3d-field-points", "version": 1}')
    with pytest.raises(DataError, match=r"version 1.*re-run"):
        Field.load(root)
    (root / "meta.json").write_text('{"format": "find3d-field-points", "version": 2}')
    with pytest.raises(DataError, match="malformed"):
        Field.load(root)


def test_nearest_negative_is_cached_per_set_and_bounded(tmp_path: Path) -> None:
    from find3d.query.field import NEGATIVE_SETS

    field = Field.load(make_field(tmp_path / "field", code_dim=2)[0])
    features = np.asarray(field.features, np.float32)
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    for k in range(NEGATIVE_SETS + 2):  # more sets than are kept: the oldest go, answers stay exact
        negatives = np.stack([basis(1), basis(2)]) + 0.1 * k * basis(0)
        expected = np.max(unit @ (negatives / np.linalg.norm(negatives, axis=1, keepdims=True)).T, axis=1)
        np.testing.assert_allclose(field.nearest_negative(negatives), expected, atol=2e-3)
        relevancy = field.relevancy(basis(0), negatives)
        np.testing.assert_allclose(relevancy, 1 / (1 + np.exp(-10 * (unit[:, 0] - expected))), atol=2e-3)
    assert len(field._nearest_negative) == NEGATIVE_SETS
    assert field.nearest_negative(negatives) is field.nearest_negative(negatives.copy())  # same set: cached
