"""3D instances (view consensus of 2D masks, planes, colour) and whole-object 3D answers on a hand-made tabletop."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fixtures.tabletop import STEP, grid, observations, sphere, two_touching_balls

from find3d.errors import InputError
from find3d.field.export import write_export
from find3d.query import Field
from find3d.query.segments import SegmentParameters, segment_points

DIM = 8


def box(lower: tuple[float, float, float], size: float) -> np.ndarray:
    x0, y0, z0 = lower
    faces = [grid((x0, x0 + size), (y0, y0 + size), z0 + size)]  # top; the sides below
    ticks = np.arange(0, size, STEP)
    for t in ticks:
        faces += [np.stack([np.full_like(ticks, x0 + edge), y0 + ticks, np.full_like(ticks, z0 + t)], 1)
                  for edge in (0, size)]
        faces += [np.stack([x0 + ticks, np.full_like(ticks, y0 + edge), np.full_like(ticks, z0 + t)], 1)
                  for edge in (0, size)]
    return np.concatenate(faces)


def tabletop(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Points and their part: 0 floor, 1 table top, 2 ball, 3 cube, 4 second ball (touching nothing)."""
    parts = [grid((-1.0, 1.0), (-1.0, 1.0), -0.7), grid((-0.4, 0.4), (-0.3, 0.3), 0.0),
             sphere((0.15, 0.1, 0.041), 0.04, rng), box((-0.2, -0.1, 0.001), 0.06),
             sphere((-0.1, 0.15, 0.031), 0.03, rng)]
    points = np.concatenate(parts) + rng.normal(scale=0.001, size=(sum(map(len, parts)), 3))
    return points.astype(np.float32), np.repeat(np.arange(len(parts)), [len(p) for p in parts])


def test_segments_are_the_planes_and_the_objects_on_them() -> None:
    points, part = tabletop(np.random.default_rng(0))
    labels = segment_points(points)
    assert labels.dtype == np.int32 and labels.shape == (len(points),)
    for index in range(part.max() + 1):
        truth = part == index
        found, counts = np.unique(labels[truth], return_counts=True)
        best = found[np.argmax(counts)]
        assert best >= 0
        iou = np.logical_and(labels == best, truth).sum() / np.logical_or(labels == best, truth).sum()
        assert iou > 0.85, f"part {index}: best segment IoU {iou:.2f}"  # a box loses its bottom 8 mm to the table
    np.testing.assert_array_equal(segment_points(points), labels)  # deterministic
    # Without plane cutting everything standing on the table joins it: the planes are what separate.
    merged = segment_points(points, SegmentParameters(max_planes=0))
    assert len(np.unique(merged[part >= 1])) == 1


def test_segment_parameters_are_checked() -> None:
    for bad in ({"voxel": 0.0}, {"plane_distance": -1.0}, {"min_plane_share": 0.0}, {"min_area": -1.0},
                {"voxel": float("nan")}, {"agreement": 1.5}, {"min_views": 0}):
        with pytest.raises(InputError):
            SegmentParameters(**bad)


def basis(i: int) -> np.ndarray:
    vector = np.zeros(DIM, np.float32)
    vector[i] = 1.0
    return vector


def confused_field(root: Path, rng: np.random.Generator) -> tuple[Field, np.ndarray]:
    """The tabletop with per-point embeddings as a 2D interface gives them: each part its class
    direction, but 30% of the first ball's points carry the cube's."""
    points, part = tabletop(rng)
    features = np.stack([basis(i) for i in part]) + rng.normal(scale=0.05, size=(len(points), DIM))
    ball = np.flatnonzero(part == 2)
    features[rng.choice(ball, size=int(0.3 * len(ball)), replace=False)] = basis(3)
    frames = [{"file_path": "images/top.png", "c2w": np.eye(4).tolist(), "fl_x": 50.0, "fl_y": 50.0,
               "cx": 32.0, "cy": 24.0, "w": 64, "h": 48}]
    write_export(root, points, np.zeros_like(points), features.astype(np.float32), basis(0)[None], frames,
                 code_dim=0)
    return Field.load(root), part


@pytest.mark.parametrize("code_dim", [0, 6])
def test_object_answers_take_whole_segments(tmp_path: Path, code_dim: int) -> None:
    field, part = confused_field(tmp_path / "field", np.random.default_rng(1))
    if code_dim:  # the same field through the PCA code: segment vectors are decoded from it
        write_export(tmp_path / "coded", field.points, field.colors, np.asarray(field.features, np.float32),
                     field.image_vectors, field.frames, code_dim=code_dim)
        field = Field.load(tmp_path / "coded")
    negatives = np.stack([basis(i) for i in (0, 1, 3, 4, 5)])  # every class but the ball's
    ball = part == 2

    points = field.query(basis(2), negatives, top_k_frames=0, objects=False)
    chosen = np.zeros(len(field), bool)
    chosen[points.indices] = True
    assert 0.6 < chosen[ball].mean() < 0.8  # per point, the confused 30% are lost

    objects = field.query(basis(2), negatives, top_k_frames=0)
    chosen = np.zeros(len(field), bool)
    chosen[objects.indices] = True
    iou = np.logical_and(chosen, ball).sum() / np.logical_or(chosen, ball).sum()
    assert iou > 0.85  # the whole ball but the cap the table plane takes, nothing else
    assert np.allclose(objects.relevancy[objects.indices], objects.relevancy[objects.indices][0])

    # No instance beats its negatives: the best one answers if it reaches the acceptance, else nothing does
    # and the answer names it.
    hard = np.stack([basis(2) * 0.9 + basis(3) * 0.1, basis(0)])
    weak = field.query(basis(2), hard, top_k_frames=0, acceptance=0.01)
    labels = field.segments[weak.indices]
    assert weak.found and len(np.unique(labels)) == 1 and weak.scores.max() < 0.5
    absent = field.query(basis(2), hard, top_k_frames=3, acceptance=0.99)
    assert not absent.found and len(absent.indices) == 0 and absent.frames == []
    assert absent.closest is not None and absent.closest.segment == labels[0]
    assert absent.closest.score == pytest.approx(weak.scores.max())
    assert absent.describe("the ball") == f"no 'the ball' in this scene (closest: instance {labels[0]}, " \
        f"{absent.closest.score:.2f})"


def test_sparse_fields_are_answered_point_by_point(tmp_path: Path) -> None:
    """Points too far apart to form any segment: the object answer is the per-point one."""
    xyz = np.stack([np.linspace(-0.5, 0.5, 11), np.zeros(11), np.zeros(11)], axis=1).astype(np.float32)
    features = np.stack([basis(0)] * 5 + [basis(1)] * 6)
    frames = [{"file_path": "images/a.png", "c2w": np.eye(4).tolist(), "fl_x": 50.0, "fl_y": 50.0,
               "cx": 32.0, "cy": 24.0, "w": 64, "h": 48}]
    write_export(tmp_path / "field", xyz, np.zeros_like(xyz), features, basis(0)[None], frames, code_dim=0)
    field = Field.load(tmp_path / "field")
    assert (field.segments < 0).all()
    result = field.query(basis(0), basis(1)[None], top_k_frames=0)
    assert sorted(result.indices.tolist()) == [0, 1, 2, 3, 4]


def test_objects_of_a_whole_object_answer_are_its_segments() -> None:
    """Two selected segments 2.5 cm apart: one group by 3 cm voxel connectivity, two objects by segment."""
    from find3d.query.objects import group_objects

    rng = np.random.default_rng(2)
    balls = [sphere((0.0, 0.0, 0.5), 0.03, rng), sphere((0.085, 0.0, 0.5), 0.03, rng)]
    points = np.concatenate(balls)
    segments = np.repeat([0, 1], [len(b) for b in balls])
    everything, relevancy = np.arange(len(points)), np.ones(len(points), np.float32)
    assert len(group_objects(points, everything, relevancy)) == 1
    apart = group_objects(points, everything, relevancy, segments=segments)
    assert sorted(len(obj.indices) for obj in apart) == sorted(len(b) for b in balls)
    # points without a segment fall back to voxel connectivity
    unsegmented = group_objects(points, everything, relevancy, segments=np.full(len(points), -1))
    assert len(unsegmented) == 1


def test_a_relation_anchor_is_the_segment_nearest_the_reference(tmp_path: Path) -> None:
    """Saturated relevancies (every object ~1 against text negatives) leave the size-first order: the
    anchor is the candidate segment whose mean embedding is nearest the reference vector."""
    from find3d.query.answer import _anchor
    from find3d.query.objects import group_objects

    field, part = confused_field(tmp_path / "field", np.random.default_rng(3))
    everything = np.flatnonzero(field.segments >= 0)
    candidates = group_objects(field.points, everything, np.ones(len(field), np.float32), segments=field.segments)
    reference = basis(4) * 0.9 + basis(3) * 0.1  # the second ball's direction, a little of the cube's
    chosen = _anchor(field, candidates, reference)
    assert candidates[0] is not chosen  # the floor, first by size
    assert np.mean(part[chosen.indices] == 4) > 0.95


def best_iou(labels: np.ndarray, truth: np.ndarray) -> float:
    found, counts = np.unique(labels[truth], return_counts=True)
    best = found[np.argmax(counts)]
    return float(np.logical_and(labels == best, truth).sum() / np.logical_or(labels == best, truth).sum())


def test_touching_objects_are_told_apart_by_the_views_that_see_the_boundary() -> None:
    rng = np.random.default_rng(4)
    points, part = two_touching_balls(rng)
    assert best_iou(segment_points(points), part == 1) < 0.6  # geometry alone: the two balls are one piece
    # 3 of 10 views merge the balls in 2D; the other 7 outvote them on the shared border
    split = segment_points(points, observations=observations(part, 10, 3, rng))
    assert min(best_iou(split, part == 1), best_iou(split, part == 2)) > 0.85
    assert best_iou(split, part == 0) > 0.95
    # masks are the evidence: when every view merges them, so does the instance
    merged = segment_points(points, observations=observations(part, 10, 10, rng))
    assert best_iou(merged, part == 1) < 0.6
    # masks that hold nothing (an interface that keeps no segment) leave geometry to decide, as without masks
    void = [(seen, np.zeros_like(masks)) for seen, masks in observations(part, 4, 0, rng)]
    np.testing.assert_array_equal(segment_points(points, observations=void), segment_points(points))


def test_a_colour_border_needs_the_masks_clear_word_to_be_crossed() -> None:
    """Twins (one 2D mask in 8 of 10 views) of different colours stay apart; one ball in two colours (one
    mask in every view) stays whole."""
    rng = np.random.default_rng(5)
    points, part = two_touching_balls(rng)
    red, blue = np.array([0.8, 0.1, 0.1]), np.array([0.1, 0.2, 0.8])
    colours = np.where((part == 2)[:, None], blue, red).astype(np.float32)
    twins = segment_points(points, observations=observations(part, 10, 8, rng), colors=colours)
    assert min(best_iou(twins, part == 1), best_iou(twins, part == 2)) > 0.85
    painted = np.where((points[:, 2] > 0.041)[:, None], blue, red).astype(np.float32)  # one ball, two colours
    whole = segment_points(points, observations=observations(part, 10, 10, rng), colors=painted)
    assert best_iou(whole, part >= 1) > 0.85
