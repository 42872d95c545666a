"""The interleaved query syntax: text, image references with masks or boxes, and its errors."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from find3d.errors import InputError
from find3d.interface.syntax import PLACEHOLDER, parse_query


@pytest.fixture
def keys(tmp_path):
    image = np.zeros((40, 60, 3), np.uint8)
    image[10:20, 5:25] = 200
    Image.fromarray(image).save(tmp_path / "keys.png")
    mask = np.zeros((40, 60), np.uint8)
    mask[10:20, 5:25] = 255
    Image.fromarray(mask).save(tmp_path / "keys_mask.png")
    Image.fromarray(mask[:20]).save(tmp_path / "small_mask.png")
    return tmp_path


def test_plain_text_is_a_text_entry():
    entry = parse_query("the  red mug")
    assert entry.sentence == "the red mug" and entry.entities == []


def test_image_reference_whole_mask_and_box(keys):
    entry = parse_query("the mug next to <image:keys.png> please", base_dir=keys)
    assert entry.sentence == f"the mug next to {PLACEHOLDER} please"
    (entity,) = entry.entities
    start, end = entity.span
    assert entry.sentence[start:end] == PLACEHOLDER
    assert entity.ref.image.shape == (40, 60, 3) and entity.ref.mask.all()
    masked = parse_query("<image:keys.png#keys_mask.png>", base_dir=keys).entities[0].ref.mask
    assert masked.sum() == 200 and masked[15, 10] and not masked[0, 0]
    boxed = parse_query("a <image:keys.png#box=5,10,25,20> on a <image:keys.png>", base_dir=keys)
    assert len(boxed.entities) == 2 and boxed.entities[0].ref.mask.sum() == 200
    assert [p if isinstance(p, str) else "REF" for p in boxed.parts()] == ["a ", "REF", " on a ", "REF"]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("", "empty query"),
        ("   ", "empty query"),
        ("the mug <image:keys.png", "unbalanced"),
        ("the mug <img:keys.png>", "malformed reference"),
        ("<image:nope.png>", "nope.png: file not found"),
        ("<image:keys.png#box=1,2,3>", "#box=1,2,3 is not four numbers; write #box=x0,y0,x1,y1 in pixels"),
        ("<image:keys.png#box=70,0,100,10>", "lies outside the 60x40 image"),
        ("<image:keys.png#small_mask.png>", "is 60x20 but image"),
    ],
)
def test_bad_queries_name_the_problem(keys, query, message):
    with pytest.raises(InputError, match=message):
        parse_query(query, base_dir=keys)
