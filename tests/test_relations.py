"""Spatial relations of interleaved 3D queries: parsing and picking the target instance."""

from __future__ import annotations

import numpy as np

from find3d.query.objects import group_objects
from find3d.query.relations import pick, split_relation


def test_split_relation_finds_the_phrase_outside_references() -> None:
    rel = split_relation("the red mug next to <image:keys.png#box=1,2,3,4>")
    assert (rel.head, rel.relation, rel.phrase) == ("the red mug", "near", "next to")
    assert rel.other == "<image:keys.png#box=1,2,3,4>"
    rel = split_relation("the duck to the left of the tray")
    assert (rel.head, rel.relation, rel.other) == ("the duck", "left", "the tray")
    assert split_relation("the mug behind <image:0>").relation == "behind"
    assert split_relation("the teddy bear on top of the table").relation == "on"
    # words inside a reference path and relation words without a second entity are not relations
    assert split_relation("<image:on/next to/mug.png>") is None
    assert split_relation("the mug next to") is None
    assert split_relation("the red mug") is None


def _cluster(centre: tuple[float, float, float], count: int = 20) -> np.ndarray:
    rng = np.random.default_rng(int(abs(centre[0]) * 100 + centre[2] * 1000))
    return np.asarray(centre) + rng.uniform(-0.01, 0.01, (count, 3))


def test_pick_chooses_the_instance_that_satisfies_the_relation() -> None:
    # two mugs at x = -0.3 and x = +0.3, a duck at x = +0.45; a box on top of the right mug
    points = np.concatenate([_cluster((-0.3, 0, 0)), _cluster((0.3, 0, 0)), _cluster((0.45, 0, 0)),
                             _cluster((0.3, 0, 0.1))])
    relevancy = np.ones(len(points), np.float32)
    mugs = group_objects(points, np.arange(40), relevancy)
    duck = group_objects(points, np.arange(40, 60), relevancy)[0]
    box = group_objects(points, np.arange(60, 80), relevancy)[0]
    left_mug = min(mugs, key=lambda o: o.center[0])
    right_mug = max(mugs, key=lambda o: o.center[0])
    assert pick(mugs, duck, "near", points) is right_mug
    # a camera looking along +y from the front: its x axis is the world's x
    camera = np.eye(4)
    assert pick(mugs, duck, "left", points, camera) is right_mug  # both are left of the duck: the nearer
    assert pick([left_mug, right_mug, duck], right_mug, "right", points, camera) is duck
    assert pick(mugs, box, "near", points) is right_mug
    assert pick([box, duck], right_mug, "on", points) is box
    assert pick([], duck, "near", points) is None
