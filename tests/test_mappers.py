"""Mappers: masks stay aligned through augmentation, prompts lie in their targets, interleave draws."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from fixtures.tiny_coco import COLOURS, write_tiny_dataset

from find3d.data.dataset import DataConfig, FindDataset
from find3d.data.mappers import draw_prompt, eval_transform, train_transform
from find3d.errors import ConfigError


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_dataset(tmp_path_factory.mktemp("tiny"))


def _crop_flip_reference(source: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """What a scale-1 crop (+ flip) must produce, written with plain numpy slicing."""
    flipped = matrix[0, 0] < 0
    crop_x = round(float(matrix[0, 2]) - (size - 1)) if flipped else round(-float(matrix[0, 2]))
    crop_y = round(-float(matrix[1, 2]))
    out = source[crop_y:crop_y + size, crop_x:crop_x + size]
    return out[:, ::-1] if flipped else out


def test_crop_and_flip_keep_masks_on_their_pixels(tiny):
    # Crop size 32 of a 64x48 image at jitter 2.0 is scale 1: the sample must equal numpy slicing.
    config = DataConfig(image_size=32, min_scale=2.0, max_scale=2.0)
    dataset = FindDataset(tiny.root, "val", config)
    record = dataset.records[0]
    image = record.load_image()
    seen_flips, seen_crops = set(), set()
    for epoch in range(12):
        dataset.set_epoch(epoch)
        sample = dataset[0]
        geometry = dataset.mapper.transform(48, 64, np.random.default_rng([config.seed, epoch, 0]))
        seen_flips.add(bool(geometry.matrix[0, 0] < 0))
        seen_crops.add(round(geometry.matrix[1, 2]))
        assert (sample.image == _crop_flip_reference(image, geometry.matrix, 32)).all()
        for segment in sample.segments:
            truth = _crop_flip_reference(tiny.mask(1, segment.segment_id), geometry.matrix, 32)
            assert (segment.mask == truth).all()
    assert seen_flips == {True, False} and len(seen_crops) > 3


def test_scaled_masks_cover_their_colour(tiny):
    # At a non-integer scale, the pixels inside each (eroded) mask must show that segment's colour.
    dataset = FindDataset(tiny.root, "val", DataConfig(image_size=96, min_scale=1.1, max_scale=1.9))
    categories = {1: 0, 2: 1, 100: 2}
    colour_of = {index: COLOURS[cat] for cat, index in categories.items()}
    for epoch in range(6):
        dataset.set_epoch(epoch)
        sample = dataset[0]
        assert sample.image.shape == (96, 96, 3)
        for segment in sample.segments:
            inner = cv2.erode(segment.mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
            if inner.any():
                error = np.abs(sample.image[inner].astype(int) - colour_of[segment.category]).max(axis=1)
                assert np.median(error) < 20


def test_eval_mode_is_deterministic_and_keeps_every_target(tiny):
    config = DataConfig(image_size=64, eval_max_size=80, augment=False)
    dataset = FindDataset(tiny.root, "val", config)
    a, b = dataset[0], dataset[0]
    assert a.image.shape == (80, 80, 3) and (a.image == b.image).all()
    # Shorter side 48 -> 64 (scale 4/3) makes the longer 85 > 80, so the longer side is capped at 80.
    geometry = eval_transform(48, 64, 64, 80)
    assert geometry.matrix[0, 0] == pytest.approx(80 / 64)
    assert len(a.segments) == 3 and all(s.mask.any() for s in a.segments)
    total = sum(s.mask.sum() for s in a.segments)
    assert total == pytest.approx(80 * 60, rel=0.02)  # the whole image, centred, nothing cropped
    rows = np.nonzero(np.any([s.mask for s in a.segments], axis=0).any(axis=1))[0]
    assert rows.min() == 10 and rows.max() == 69  # 10 px of padding above and below


def test_train_transform_reproducible_from_seed():
    m1 = train_transform(48, 64, 32, (0.5, 1.5), True, np.random.default_rng(5)).matrix
    m2 = train_transform(48, 64, 32, (0.5, 1.5), True, np.random.default_rng(5)).matrix
    assert (m1 == m2).all()


def test_same_seed_same_sample_other_seed_differs(tiny):
    first = FindDataset(tiny.root, "val", DataConfig(image_size=48, seed=3))[0]
    again = FindDataset(tiny.root, "val", DataConfig(image_size=48, seed=3))[0]
    other = FindDataset(tiny.root, "val", DataConfig(image_size=48, seed=4))[0]
    assert (first.image == again.image).all()
    assert [s.prompt.tobytes() for s in first.spatial] == [s.prompt.tobytes() for s in again.spatial]
    assert not ((first.image == other.image).all()
                and [s.prompt.tobytes() for s in first.spatial] == [s.prompt.tobytes() for s in other.spatial])


@pytest.mark.parametrize("kind", ["point", "scribble", "polygon", "circle", "mask", "box"])
def test_spatial_prompts_lie_in_their_target(tiny, kind):
    rng = np.random.default_rng(0)
    for segment_id in (11, 12, 13, 21):
        target = tiny.mask(1 if segment_id < 20 else 2, segment_id)
        for _ in range(20):
            prompt = draw_prompt(kind, target, rng)
            assert prompt.kind == kind and prompt.prompt.any() and (prompt.target == target).all()
            if kind == "box":
                x0, y0, x1, y1 = (int(v) for v in prompt.box)
                ys, xs = np.nonzero(target)
                assert (x0, y0, x1, y1) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
                inside = np.zeros_like(target)
                inside[y0:y1, x0:x1] = True
                assert not (prompt.prompt & ~inside).any()
            else:
                assert not (prompt.prompt & ~target).any()
            if kind == "point":
                assert prompt.prompt.sum() <= 13  # a click, not a region


def test_dataset_spatial_prompts_match_segments(tiny):
    dataset = FindDataset(tiny.root, "val", DataConfig(image_size=48, max_spatial=2))
    sample = dataset[0]
    assert len(sample.spatial) == 2
    masks = [s.mask.tobytes() for s in sample.segments]
    for prompt in sample.spatial:
        assert prompt.target.tobytes() in masks
        if prompt.kind != "box":
            assert not (prompt.prompt & ~prompt.target).any()


def test_grounding_phrases_carry_their_masks(tiny):
    sample = FindDataset(tiny.root, "val", DataConfig(image_size=64, augment=False))[0]
    by_text = {p.text: p.mask for p in sample.phrases}
    segments = {s.segment_id: s.mask for s in sample.segments}
    assert set(by_text) == {"red cup", "blue ball", "table", "the red cup on the left"}
    assert (by_text["blue ball"] == segments[12]).all() and (by_text["table"] == segments[13]).all()
    ref = by_text["the red cup on the left"]  # RefCOCO-g polygon of the cup
    assert (ref & segments[11]).sum() / (ref | segments[11]).sum() > 0.9


def test_subsets_are_redrawn_every_epoch_without_augmentation(tiny):
    """A capped subset (phrases here; interleave entries share the rule) is redrawn every epoch even
    with geometric augmentation off, as in the CPU config; with room for all, evaluation keeps the
    files' order."""
    capped = FindDataset(tiny.root, "val", DataConfig(image_size=48, augment=False, max_phrases=1, max_spatial=0))
    everything = FindDataset(tiny.root, "val", DataConfig(image_size=48, augment=False, max_spatial=0))
    drawn, orders = set(), set()
    for epoch in range(40):
        capped.set_epoch(epoch)
        everything.set_epoch(epoch)
        drawn.update(p.text for p in capped[0].phrases)
        orders.add(tuple(p.text for p in everything[0].phrases))
    assert drawn == {"red cup", "blue ball", "table", "the red cup on the left"} and len(orders) == 1


def test_interleave_visual_probability_is_half(tiny):
    dataset = FindDataset(tiny.root, "val", DataConfig(image_size=32, max_spatial=0))
    visual = total = 0
    for epoch in range(300):
        dataset.set_epoch(epoch)
        for index in range(len(dataset)):
            for entry in dataset[index].interleave:
                visual += sum(e.ref is not None for e in entry.entities)
                total += len(entry.entities)
    assert total == 300 * 5
    assert 0.46 < visual / total < 0.54


def test_visual_references_carry_the_right_image_and_mask(tiny):
    dataset = FindDataset(tiny.root, "val", DataConfig(image_size=48, augment=False, interleave_visual_prob=1.0))
    cross = dataset[1].interleave[0]
    assert cross.sentence == "a cup like this one on the table"
    cup, table = cross.entities
    assert cup.text == "cup" and cross.sentence[slice(*cup.span)] == "cup"
    # The cross-image reference is image 1 (untransformed) and its cup segment 11.
    assert cup.ref.source == "1/11"
    assert (cup.ref.image == dataset.records[0].load_image()).all()
    assert (cup.ref.mask == tiny.mask(1, 11)).all()
    # Same-image references: a shape drawn on the segment itself, in the sample's own image.
    sample = dataset[0]
    for entity in sample.interleave[0].entities:
        assert entity.ref.image is sample.image
        assert entity.ref.mask.any() and not (entity.ref.mask & ~entity.target).any()
    assert table.ref.source == "2/22"
    parts = cross.parts()
    assert parts[0] == "a " and parts[1] is cup.ref and parts[2] == " like this one on " and parts[3] is table.ref


def test_config_rejects_unknown_prompt_kinds():
    with pytest.raises(ConfigError, match="lasso"):
        DataConfig(spatial_kinds=["point", "lasso"])


def test_dataset_pickles_for_spawned_workers(tiny):
    import pickle

    dataset = FindDataset(tiny.root, "val", DataConfig(image_size=32, interleave_visual_prob=1.0))
    before = dataset[1]
    clone = pickle.loads(pickle.dumps(dataset))
    after = clone[1]
    assert (before.image == after.image).all()
    assert after.interleave[0].entities[0].ref.source == "1/11"
