"""``find3d.Interface`` on a real 3-step-trained checkpoint over the packaged encoders: every method's
shapes and dtypes at the ORIGINAL (non-square) resolution, determinism, the shared query space,
interleave references, input validation, and the lazy top-level export."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from find3d.data.mappers import eval_transform
from find3d.data.samples import InterleaveEntity, InterleaveEntry
from find3d.errors import InputError
from find3d.fileio import load_image
from find3d.interface.api import (
    GroundingResult,
    InteractiveResult,
    Interface,
    PanopticResult,
    PixelEmbedding,
    RetrievalResult,
    _resample,
)

HEIGHT, WIDTH = 96, 128  # a non-square crop of the 128 px renders: the canvas is padded


@pytest.fixture(scope="module")
def api(tiny_checkpoint) -> Interface:
    torch.set_num_threads(1)
    return Interface.from_checkpoint(tiny_checkpoint, device="cpu")


@pytest.fixture(scope="module")
def images(tiny_dataset) -> list[np.ndarray]:
    paths = sorted((Path(tiny_dataset) / "train2017").glob("*.jpg"))[:3]
    return [np.ascontiguousarray(load_image(p)[16: 16 + HEIGHT]) for p in paths]


@pytest.fixture(scope="module")
def reference(images, tmp_path_factory) -> Path:
    """A reference image file (its first row masked out) for the ``<image:...>`` syntax."""
    root = tmp_path_factory.mktemp("refs")
    Image.fromarray(images[1]).save(root / "ref.png")
    return root / "ref.png"


def test_properties(api):
    assert api.class_names and len(api.isthing) == len(api.class_names)
    assert api.dim == 64 and api.device == torch.device("cpu") and api.canvas_size == 128


def test_segment_at_original_resolution(api, images):
    # A 3-step model's masks are near 0.5 everywhere: on some images none keeps a pixel above it, so
    # check the contract on the first image that yields segments at threshold 0 (one must).
    results = [api.segment(image, threshold=0.0, probabilities=True) for image in images]
    assert any(r.segments for r in results), "threshold 0 keeps every query whose mask has pixels"
    result = next(r for r in results if r.segments)
    assert isinstance(result, PanopticResult)
    assert result.segment_ids.shape == (HEIGHT, WIDTH) and result.segment_ids.dtype == np.int32
    ids = set(np.unique(result.segment_ids)) - {0}
    assert ids <= {s["id"] for s in result.segments}
    for seg in result.segments:
        assert set(seg) == {"id", "category", "class_name", "isthing", "score", "query"}
        assert seg["class_name"] == api.class_names[seg["category"]] and 0.0 <= seg["score"] <= 1.0
    assert result.probabilities.shape == (len(api.class_names), HEIGHT, WIDTH)
    np.testing.assert_allclose(result.probabilities.sum(0), 1.0, atol=1e-4)
    assert api.segment(images[0], threshold=1.0).segments == []


def test_segment_open_vocabulary(api, images):
    result = api.segment(images[0], classes=["red mug", "a small yellow rubber duck", "mug"], threshold=0.0,
                         probabilities=True)
    assert result.class_names == ["red mug", "a small yellow rubber duck", "mug"]
    assert result.probabilities.shape == (3, HEIGHT, WIDTH)
    assert all(s["isthing"] for s in result.segments)  # new names default to things, "mug" is one


def test_ground_interact_shapes(api, images):
    grounding = api.ground(images[0], ["the mug", "a duck", "the mug"])
    assert isinstance(grounding, GroundingResult)
    assert grounding.masks.shape == (3, HEIGHT, WIDTH) and grounding.masks.dtype == bool
    assert grounding.probabilities.dtype == np.float32 and grounding.scores.shape == (3,)
    # phrases do not see each other: the first phrase's mask is the same alone or with others
    single = api.ground(images[0], "the mug")
    np.testing.assert_allclose(single.probabilities[0], grounding.probabilities[0], atol=1e-5)

    clicked = api.interact(images[0], points=[(3, 5), (WIDTH - 0.5, HEIGHT - 1)], boxes=[(10, 20, 60, 90)])
    assert isinstance(clicked, InteractiveResult)
    assert clicked.mask.shape == (HEIGHT, WIDTH) and clicked.mask.dtype == bool
    assert clicked.prompt_probabilities.shape == (3, HEIGHT, WIDTH)
    np.testing.assert_array_equal(clicked.probability, clicked.prompt_probabilities.max(0))


def test_same_call_twice_is_identical(api, images):
    first, second = api.segment(images[1], threshold=0.0), api.segment(images[1], threshold=0.0)
    np.testing.assert_array_equal(first.segment_ids, second.segment_ids)
    assert first.segments == second.segments
    a, b = api.embed_pixels(images[1]), api.embed_pixels(images[1])
    assert torch.equal(a.features, b.features) and torch.equal(a.image_vector, b.image_vector)
    np.testing.assert_array_equal(api.interact(images[1], points=[(40, 40)]).probability,
                                  api.interact(images[1], points=[(40, 40)]).probability)


def test_image_formats_agree(api, images, tmp_path):
    path = tmp_path / "frame.png"
    Image.fromarray(images[2]).save(path)
    vectors = [api.embed_image(x) for x in (images[2], path, str(path), Image.open(path),
                                            images[2].astype(np.float32) / 255.0)]
    for vector in vectors[1:]:
        torch.testing.assert_close(vector, vectors[0], atol=1e-5, rtol=0)


def test_retrieve(api, images):
    result = api.retrieve(images, ["a mug on a table", "a duck"])
    assert isinstance(result, RetrievalResult)
    assert result.similarity.shape == (3, 2) and result.similarity.dtype == np.float32
    assert result.image_to_text.shape == (3, 2) and result.text_to_image.shape == (2, 3)
    for i in range(3):
        assert result.similarity[i, result.image_to_text[i, 0]] == result.similarity[i].max()
    vectors = torch.stack([api.embed_image(im) for im in images])
    with torch.no_grad():
        texts = api.model.encode_texts(["a mug on a table", "a duck"], kind="caption")
    np.testing.assert_allclose(result.similarity, (vectors @ texts.T).numpy(), atol=1e-5)


def test_embed_pixels(api, images):
    embedding = api.embed_pixels(images[0])
    # the same forward pass's panoptic ids, at the original size: segment's own
    np.testing.assert_array_equal(embedding.segments, api.segment(images[0]).segment_ids)
    assert isinstance(embedding, PixelEmbedding)
    # stride 4 of the model input: the 96x128 crop fills 96x128 of the 128 px canvas
    assert embedding.features.shape == (HEIGHT // 4, WIDTH // 4, api.dim)
    assert embedding.features.dtype == torch.float32 and embedding.image_vector.shape == (api.dim,)
    torch.testing.assert_close(embedding.features.norm(dim=-1), torch.ones(HEIGHT // 4, WIDTH // 4))
    assert api.embed_pixels(images[0], size=(HEIGHT, WIDTH)).features.shape == (HEIGHT, WIDTH, api.dim)
    torch.testing.assert_close(api.embed_image(images[0]), embedding.image_vector, atol=1e-5, rtol=0)


def test_encode_query_spaces(api, reference):
    text = api.encode_query("a red mug")
    assert text.shape == (api.dim,) and abs(float(text.norm()) - 1) < 1e-5
    # the same words through the interleave syntax / an entry whose entities are text are the same vector
    assert torch.equal(api.encode_query("  a red   mug "), text)
    entry = InterleaveEntry("a red mug", [InterleaveEntity("mug", (6, 9), np.zeros((0, 0), bool))])
    assert torch.equal(api.encode_query(entry), text)
    prompt = api.model.interface.config.class_prompt
    with torch.no_grad():
        direct = api.model.encode_texts([prompt.format("red mug"), prompt.format("a red mug")])
    # the prompt brings its own article: the query's is dropped, so "the red mug" is "red mug", not "a a red mug"
    torch.testing.assert_close(text, direct[0])
    assert not torch.allclose(text, direct[1], atol=1e-3)
    assert torch.equal(api.encode_query("The red mug"), text) and torch.equal(api.encode_query("red mug"), text)
    assert not torch.equal(api.encode_query("another red mug"), text)  # only an article is dropped
    # an image crop: the mean of its per-pixel embeddings, whether given as array or as <image:...>
    crop = api.encode_query(load_image(reference))
    torch.testing.assert_close(api.encode_query(f"<image:{reference}>"), crop)
    torch.testing.assert_close(api.encode_query(reference), crop)
    pixels = api.embed_pixels(load_image(reference)).features
    torch.testing.assert_close(crop, torch.nn.functional.normalize(pixels.mean((0, 1)), dim=0))
    mixed = api.encode_query(f"a red mug next to <image:{reference}#box=0,0,40,30>")
    assert mixed.shape == (api.dim,) and not torch.allclose(mixed, text) and not torch.allclose(mixed, crop)


def test_interleave(api, images, reference):
    query = f"the mug next to <image:{reference.name}#box=10,10,60,50>"
    result = api.interleave_ground(images[0], query, base_dir=reference.parent)
    assert result.masks.shape == (1, HEIGHT, WIDTH) and result.masks.dtype == bool
    assert result.probabilities.shape == (1, HEIGHT, WIDTH) and result.entities == [str(reference)]
    # a different reference region changes the entity's mask: the reference is really read
    other = api.interleave_ground(images[0], f"the mug next to <image:{reference}#box=0,0,8,8>")
    assert not np.allclose(other.probabilities, result.probabilities)

    similarity = api.interleave_retrieve([query, "a duck on the floor"], images, base_dir=reference.parent)
    assert similarity.shape == (2, 3) and similarity.dtype == np.float32
    # an entry's embedding does not depend on which other entries share its batch
    alone = api.interleave_retrieve(["a duck on the floor"], images)
    np.testing.assert_allclose(alone[0], similarity[1], atol=1e-5)


def test_resample_maps_canvas_back_to_the_original():
    """A mask put on the canvas by the eval mapper and pooled to stride 4 comes back onto itself."""
    mask = np.zeros((HEIGHT, WIDTH), bool)
    mask[20:70, 30:100] = True
    geometry = eval_transform(HEIGHT, WIDTH, 128, 160)
    canvas = torch.from_numpy(geometry.mask(mask).astype(np.float32))[None, None]
    logits = torch.nn.functional.avg_pool2d(canvas, 4) * 20 - 10
    back = _resample(logits, geometry, (HEIGHT, WIDTH), (HEIGHT, WIDTH))[0, 0] > 0
    intersection = (back.numpy() & mask).sum()
    assert intersection / (back.numpy() | mask).sum() > 0.95


@pytest.mark.parametrize(("call", "message"), [
    (lambda api, im: api.ground(im, ""), "non-empty string"),
    (lambda api, im: api.ground(im, []), "empty list"),
    (lambda api, im: api.segment(im, classes=[]), "empty list"),
    (lambda api, im: api.segment(im, classes=3), "pass a string or a list of strings"),
    (lambda api, im: api.segment(im, classes=["a", "b"], isthing=[True]), "one flag per class"),
    (lambda api, im: api.ground(im[..., 0], "mug"), "single-channel"),
    (lambda api, _im: api.ground(np.zeros((32, 32, 4), np.uint8), "mug"), "alpha channel"),
    (lambda api, im: api.interact(im, points=[(WIDTH, 5)]), "outside the 128x96 image"),
    (lambda api, im: api.interact(im, points=[(-1, 5)]), "0 <= x < 128"),
    (lambda api, im: api.interact(im, boxes=[(50, 10, 40, 20)]), "has no area"),
    (lambda api, im: api.interact(im), "at least one prompt"),
    (lambda api, _im: api.retrieve([], ["mug"]), "at least one image"),
    (lambda api, im: api.interleave_ground(im, "just words"), "use ground()"),
    (lambda api, im: api.interleave_ground(im, "<image:missing.png>"), "file not found"),
    (lambda api, _im: api.encode_query("   "), "empty query"),
    (lambda api, _im: api.encode_query(np.zeros((4, 4, 3), np.uint8)), "too small"),
    (lambda api, im: api.embed_pixels(im, size=(0, 5)), "(height, width)"),
])
def test_bad_inputs_raise_input_error(api, images, call, message):
    with pytest.raises(InputError, match=re.escape(message)):
        call(api, images[0])


def test_unknown_device(tiny_checkpoint):
    with pytest.raises(InputError, match="use 'auto', 'cpu' or 'cuda"):
        Interface.from_checkpoint(tiny_checkpoint, device="tpu7")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="asks for CUDA but"):
            Interface.from_checkpoint(tiny_checkpoint, device="cuda")


def test_lazy_top_level_export():
    code = ("import sys, find3d; assert 'torch' not in sys.modules, 'import find3d pulled torch'; "
            "from find3d.interface.api import Interface; assert find3d.Interface is Interface; "
            "assert 'Interface' in find3d.__all__")
    subprocess.run([sys.executable, "-c", code], check=True)
    with pytest.raises(AttributeError, match="no attribute 'Interfce'"):
        __import__("find3d").Interfce  # noqa: B018 - the attribute access is the test
