"""FindInterface end to end on the real packaged encoders: shapes, losses, gradients, overfitting."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from find3d.data.samples import (
    InterleaveEntity,
    InterleaveEntry,
    Phrase,
    Sample,
    Segment,
    SpatialPrompt,
    VisualRef,
)
from find3d.encoders import build_language_encoder, build_vision_encoder
from find3d.interface.collate import collate
from find3d.interface.config import InterfaceConfig
from find3d.interface.criterion import FindCriterion
from find3d.interface.model import FindInterface, FindModel
from find3d.interface.spec import TASKS

CLASSES = ["square", "disc", "floor"]
ISTHING = [True, True, False]
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (40, 60, 230)}
SIZE = 64

SMALL = InterfaceConfig(hidden_dim=64, num_layers=3, num_heads=4, ffn_dim=128, projection_dim=64, num_queries=9,
                        pixel_decoder_dim=32, num_points=512)


def _shape_mask(kind: str, centre: tuple[int, int], radius: int) -> np.ndarray:
    ys, xs = np.mgrid[:SIZE, :SIZE]
    if kind == "square":
        return (abs(ys - centre[0]) <= radius) & (abs(xs - centre[1]) <= radius)
    return (ys - centre[0]) ** 2 + (xs - centre[1]) ** 2 <= radius**2


def _point(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    out = np.zeros_like(mask)
    out[int(ys.mean()), int(xs.mean())] = True
    return out


def synthetic_sample(seed: int) -> Sample:
    """A grey floor with a coloured square and a coloured disc; every task annotated."""
    rng = np.random.default_rng(seed)
    image = np.full((SIZE, SIZE, 3), 120, dtype=np.uint8)
    image += rng.integers(0, 12, image.shape, dtype=np.uint8)
    colours = rng.permutation(list(COLOURS))[:2]
    square = _shape_mask("square", (int(rng.integers(14, 24)), int(rng.integers(14, 50))), int(rng.integers(7, 11)))
    disc = _shape_mask("disc", (int(rng.integers(42, 50)), int(rng.integers(14, 50))), int(rng.integers(7, 11)))
    disc &= ~square
    image[square] = COLOURS[colours[0]]
    image[disc] = COLOURS[colours[1]]
    floor = ~(square | disc)
    segments = [Segment(square, 0, True, 1), Segment(disc, 1, True, 2), Segment(floor, 2, False, 3)]
    phrases = [Phrase(f"the {colours[0]} square", square), Phrase(f"the {colours[1]} disc", disc)]
    sentence = f"a {colours[0]} square above a {colours[1]} disc"
    first = sentence.index("square") - len(colours[0]) - 1
    second = sentence.index("disc") - len(colours[1]) - 1
    ref_image = image[::-1].copy()
    entities = [
        InterleaveEntity(f"{colours[0]} square", (first, first + len(colours[0]) + 7), square),
        InterleaveEntity(f"{colours[1]} disc", (second, second + len(colours[1]) + 5), disc,
                         ref=VisualRef(ref_image, disc[::-1].copy(), "flipped/2")),
    ]
    return Sample(
        key=f"synthetic/{seed}", image=image, segments=segments, phrases=phrases,
        captions=[sentence],
        spatial=[SpatialPrompt("point", _point(square), square), SpatialPrompt("mask", disc, disc)],
        interleave=[InterleaveEntry(sentence, entities)])


@pytest.fixture(scope="module")
def encoders():
    return build_vision_encoder("efficientnet-lite0"), build_language_encoder("minilm-l6")


@pytest.fixture(scope="module")
def model(encoders) -> FindModel:
    torch.manual_seed(0)
    vision, language = encoders
    return FindModel(FindInterface.for_encoders(SMALL, vision, language), vision, language)


def test_forward_every_task_alone_and_jointly(model: FindModel) -> None:
    batch = collate([synthetic_sample(s) for s in range(2)], CLASSES, SMALL.class_prompt)
    assert batch.tasks == tuple(TASKS)
    model.eval()
    objects = SMALL.num_queries - 1
    expected_masks = {"generic": objects, "grounding": 2, "interactive": 2, "interleave_grounding": 2}
    with torch.no_grad():
        pyramid, texts, refs = model.encode(batch)
        joint = model.interface(pyramid, texts, batch, refs)
        for task in TASKS:
            alone = model.interface(pyramid, texts, batch, refs, tasks=[task])[task]
            assert set(alone["semantic"]) == set(TASKS[task].queries) - {"q.class"}
            for query, values in alone["semantic"].items():
                assert values.shape[0] == 2 and values.shape[-1] == SMALL.projection_dim
                assert torch.allclose(values.norm(dim=-1), torch.ones(()), atol=1e-4)
                # tasks in one pass never see each other: joint == alone
                assert torch.allclose(values, joint[task]["semantic"][query], atol=1e-4)
            if task in expected_masks:
                assert alone["masks"].shape == (2, expected_masks[task], SIZE // 4, SIZE // 4)
            else:
                assert "masks" not in alone
    assert joint["generic"]["logits"].shape == (2, objects, len(CLASSES) + 1)


def test_text_embeddings_do_not_depend_on_the_batch(model: FindModel) -> None:
    model.eval()
    with torch.no_grad():
        alone = model.encode_texts(["a photo of a disc."])
        together = model.encode_texts(["a photo of a square.", "a photo of a disc.", "floor"])
    assert alone.shape == (1, SMALL.projection_dim)
    assert torch.allclose(alone[0], together[1], atol=1e-5)


def test_losses_finite_and_gradients_reach_only_the_interface(model: FindModel) -> None:
    batch = collate([synthetic_sample(s) for s in range(3)], CLASSES, SMALL.class_prompt)
    model.train()
    outputs = model(batch)
    assert len(outputs["generic"]["aux"]) == SMALL.num_layers
    losses = FindCriterion(SMALL)(outputs, batch)
    for task in TASKS:
        assert any(name.startswith(task + ".") for name in losses), task
    assert {"grounding.match", "interactive.match", "interleave_grounding.match", "generic.class.aux0",
            "interleave_grounding.match.aux0"} <= set(losses)
    assert torch.isfinite(losses["loss"])
    model.interface.zero_grad()
    losses["loss"].backward()
    frozen = list(model.vision.parameters()) + list(model.language.parameters())
    assert all(p.grad is None and not p.requires_grad for p in frozen)
    interface_ids = {id(p) for p in model.interface.parameters()}
    assert not interface_ids & {id(p) for p in frozen}
    for name in ("sampler.object_queries.weight", "sampler.image_query.weight", "sampler.text_proj.1.weight",
                 "sampler.kind_embed.weight", "sampler.reference_embed", "pixel_decoder.lateral.4.weight",
                 "layers.0.content.q.weight", "semantic_proj.weight", "no_object", "logit_scale"):
        grad = model.interface.get_parameter(name).grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_entity_items_are_their_prompt_tokens_averaged(model: FindModel) -> None:
    """The interleave matching loss reads each entity's final prompt tokens averaged per part, in training
    only; a padded (missing) entity gives a zero vector and stays out of the loss."""
    from find3d.interface.model import _part_means
    from find3d.interface.spec import Elements

    tokens = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [3.0, 0.0], [5.0, 5.0]]])
    ids = Elements(types=torch.zeros(4, dtype=torch.long), tasks=torch.zeros(4, dtype=torch.long),
                   entity=torch.zeros(1, 4, dtype=torch.long), part=torch.tensor([[0, -1, 0, 1]]),
                   valid=torch.tensor([[True, True, True, False]]))
    # part 0 = mean of tokens 0 and 2 (the context token 1 is not in it); part 1's only token is padding
    assert torch.allclose(_part_means(tokens, ids, 2), torch.tensor([[[1.0, 0.0], [0.0, 0.0]]]))
    plain = dataclasses.replace(synthetic_sample(4), interleave=[])
    batch = collate([synthetic_sample(3), plain], CLASSES, SMALL.class_prompt)
    model.train()
    items = model(batch, tasks=["interleave_grounding"])["interleave_grounding"]["semantic"]["p.interleave"]
    assert items.shape == (2, 2, SMALL.projection_dim)
    assert torch.allclose(items[0].norm(dim=-1), torch.ones(2), atol=1e-5) and not items[1].any()
    model.eval()
    with torch.no_grad():
        assert "p.interleave" not in model(batch, tasks=["interleave_grounding"])["interleave_grounding"]["semantic"]


def _two_entries(seed: int) -> tuple[Sample, Sample]:
    """The synthetic sample with a second, all-text entry naming its shapes the other way round; and
    that second entry alone."""
    sample = synthetic_sample(seed)
    first = sample.interleave[0]
    square, disc = (e.text for e in first.entities)
    sentence = f"the {disc} is below the {square}"
    spans = [(sentence.index(disc), sentence.index(disc) + len(disc)),
             (sentence.index(square), sentence.index(square) + len(square))]
    second = InterleaveEntry(sentence, [InterleaveEntity(disc, spans[0], first.entities[1].target),
                                        InterleaveEntity(square, spans[1], first.entities[0].target)])
    return dataclasses.replace(sample, interleave=[first, second]), dataclasses.replace(sample, interleave=[second])


def test_every_interleave_entry_grounds_as_if_alone(model: FindModel) -> None:
    """All entries of an image train interleave grounding in one pass: parts are numbered across
    entries, and no entry's queries or tokens see another's, so each entry's masks and embeddings are
    those it gets alone; interleave retrieval reads the first entry only."""
    both, second = _two_entries(3)
    batch = collate([both], CLASSES, "{}")
    assert [[part for _, part in pieces] for pieces in batch.interleave[0]] == [[-1, 0, -1, 1], [-1, 2, -1, 3]]
    assert batch.entity_entry.tolist() == [[0, 0, 1, 1]] and batch.entity_valid.all()
    assert batch.entity_object.tolist() == [[0, 1, 1, 0]]  # the second entry names the same two shapes
    assert batch.entity_targets[0, 2].equal(batch.entity_targets[0, 1])
    model.eval()
    with torch.no_grad():
        joint = model(batch, tasks=["interleave_grounding", "interleave_retrieval"])
        alone = model(collate([second], CLASSES, "{}"), tasks=["interleave_grounding"])["interleave_grounding"]
        first = model(collate([synthetic_sample(3)], CLASSES, "{}"), tasks=["interleave_retrieval"])
    grounding = joint["interleave_grounding"]
    assert grounding["masks"].shape[1] == 4 and grounding["semantic"]["q.interleave"].shape[1] == 2
    assert torch.allclose(grounding["masks"][0, 2:], alone["masks"][0], atol=1e-4)
    assert torch.allclose(grounding["semantic"]["q.entity"][0, 2:], alone["semantic"]["q.entity"][0], atol=1e-4)
    assert not torch.allclose(grounding["semantic"]["q.entity"][0, :2], alone["semantic"]["q.entity"][0], atol=1e-2)
    retrieval = joint["interleave_retrieval"]["semantic"]["q.interleave"]
    assert retrieval.shape[1] == 1
    assert torch.allclose(retrieval, first["interleave_retrieval"]["semantic"]["q.interleave"], atol=1e-5)
    model.train()
    losses = FindCriterion(SMALL)(model(batch, tasks=["interleave_grounding"]), batch)
    assert torch.isfinite(losses["interleave_grounding.match"])


def test_an_item_is_segmented_the_same_wherever_it_is_asked(model: FindModel) -> None:
    """Phrases and spatial prompts are segmented by copies of one item query: a phrase's mask does not
    depend on its position or on the other phrases asked with it (nor a prompt's on the others)."""
    sample = synthetic_sample(5)
    swapped = dataclasses.replace(sample, phrases=sample.phrases[::-1], spatial=sample.spatial[::-1])
    alone = dataclasses.replace(sample, phrases=sample.phrases[1:], spatial=sample.spatial[1:])
    model.eval()
    with torch.no_grad():
        outs = [model(collate([s], CLASSES, "{}"), tasks=["grounding", "interactive"])
                for s in (sample, swapped, alone)]
    for task in ("grounding", "interactive"):
        masks = [out[task]["masks"][0] for out in outs]
        assert torch.allclose(masks[0], masks[1].flip(0), atol=1e-4)
        assert torch.allclose(masks[0][1], masks[2][0], atol=1e-4)


def test_item_matching_never_opposes_an_object_to_itself() -> None:
    """Items naming one object, in two entries or twice in one ("a brown mug ... the brown mug"), are
    no negatives of each other."""
    from find3d.interface.criterion import _item_matching

    items = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]])  # item 2 names item 0's object
    valid, scale = torch.ones(1, 3, dtype=torch.bool), torch.tensor(20.0)
    plain = _item_matching(items, items, valid, scale)
    grouped = _item_matching(items, items, valid, scale, groups=torch.tensor([[0, 0, 1]]))
    coreferent = _item_matching(items, items, valid, scale, objects=torch.tensor([[0, 1, 0]]))
    assert plain > 0.4  # a tie costs log 2 for items 0 and 2
    assert grouped < 1e-6 and coreferent < 1e-6
    phrases = [Phrase("a brown mug", np.eye(4, dtype=bool)), Phrase("the wall", ~np.eye(4, dtype=bool)),
               Phrase("the brown mug", np.eye(4, dtype=bool))]
    sample = Sample("s", np.zeros((4, 4, 3), dtype=np.uint8), phrases=phrases)
    assert collate([sample, Sample("t", sample.image)], [], "{}").phrase_object.tolist() == [[0, 1, 0], [-1, -1, -1]]


def test_inference_helpers(model: FindModel) -> None:
    annotated = synthetic_sample(7)
    batch = collate([Sample(key="bare", image=annotated.image)], CLASSES, SMALL.class_prompt)  # no annotations
    assert batch.tasks == ()
    model.eval()
    with torch.no_grad():
        outputs = model(batch, tasks=["generic", "retrieval"])
        captions = model.encode_texts(annotated.captions, kind="caption")
        paired = model(collate([annotated], CLASSES, SMALL.class_prompt), tasks=["retrieval"])["retrieval"]
    generic = outputs["generic"]
    pixels, image = FindInterface.pixel_embeddings(outputs, size=(SIZE, SIZE))
    assert pixels.shape == (1, SMALL.projection_dim, SIZE, SIZE) and image.shape == (1, SMALL.projection_dim)
    # a caption embedded alone equals its embedding inside the retrieval task
    assert torch.allclose(captions, paired["semantic"]["q.caption"][:, 0], atol=1e-5)
    assert torch.allclose(image, paired["semantic"]["q.image"][:, 0], atol=1e-5)
    assert torch.allclose(pixels.norm(dim=1), torch.ones(()), atol=1e-4)
    # a near-zero object threshold keeps every query, so segments must appear and be consistent
    [(segments, info)] = FindInterface.panoptic(generic, ISTHING, (SIZE, SIZE), object_threshold=0.0,
                                                overlap_threshold=0.0)
    assert segments.shape == (SIZE, SIZE) and info
    assert {s["id"] for s in info} == set(segments.unique().tolist()) - {0}
    assert len({s["category_id"] for s in info if not s["isthing"]}) == sum(not s["isthing"] for s in info)


@pytest.mark.slow
def test_overfits_a_tiny_batch(encoders) -> None:
    """The interface alone (frozen features computed once) learns panoptic + grounding on 2 images."""
    torch.manual_seed(0)
    vision, language = encoders
    config = dataclasses.replace(SMALL, deep_supervision=False, num_points=256)
    model = FindModel(FindInterface.for_encoders(config, vision, language), vision, language)
    criterion = FindCriterion(config)
    batch = collate([synthetic_sample(s) for s in range(2)], CLASSES, config.class_prompt)
    pyramid, texts, _ = model.encode(batch)
    optimizer = torch.optim.AdamW(model.interface.parameters(), lr=1e-3)
    model.train()
    history = []
    for _ in range(60):
        outputs = model.interface(pyramid, texts, batch, tasks=["generic", "grounding"])
        loss = criterion(outputs, batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    start, end = np.mean(history[:5]), np.mean(history[-5:])
    assert end < 0.3 * start, (start, end)
    model.eval()
    with torch.no_grad():
        grounding = model.interface(pyramid, texts, batch, tasks=["grounding"])["grounding"]
    predicted = FindInterface.mask_probabilities(grounding, (SIZE, SIZE)) > 0.5
    inter = (predicted & batch.phrase_masks).sum((-2, -1)).float()
    union = (predicted | batch.phrase_masks).sum((-2, -1)).float()
    assert (inter / union).mean() > 0.5


def test_collate_interleave_pieces_and_reference_features(encoders) -> None:
    vision, _ = encoders
    sample = synthetic_sample(3)
    plain = dataclasses.replace(synthetic_sample(4), interleave=[], captions=[], spatial=[])
    batch = collate([sample, plain], CLASSES, "{}", vision=vision)
    colours = sample.phrases[0].text.split()[1], sample.phrases[1].text.split()[1]
    # "a <red square> above a <ref>": context, text entity (part 0), context, visual entity (part 1)
    assert batch.interleave[0] == [[("a", -1), (f"{colours[0]} square", 0), ("above a", -1), (0, 1)]]
    assert batch.interleave[1] == [] and batch.captions[1] is None
    assert batch.entity_entry.tolist() == [[0, 0], [-1, -1]]
    assert batch.entity_valid.tolist() == [[True, True], [False, False]]
    assert batch.spatial_valid.tolist() == [[True, True], [False, False]]
    assert batch.ref_images.shape == (1, 3, SIZE, SIZE) and batch.ref_masks[0].equal(
        torch.from_numpy(sample.interleave[0].entities[1].ref.mask))
    # two entities drawn on one image share its row of ref_images (and so its vision features)
    entry = sample.interleave[0]
    drawn = [dataclasses.replace(e, ref=VisualRef(sample.image, e.target, "self")) for e in entry.entities]
    shared = collate([sample, dataclasses.replace(sample, interleave=[dataclasses.replace(entry, entities=drawn)])],
                     CLASSES, "{}")
    assert shared.ref_image_index.tolist() == [0, 1, 1] and len(shared.ref_images) == 2
    assert shared.interleave[1][0][1][0] == 1 and shared.interleave[1][0][3][0] == 2
    assert batch.ref_pyramid is not None and batch.ref_pyramid[4].shape == (1, 24, SIZE // 4, SIZE // 4)
    assert batch.class_texts == CLASSES and batch.images.max() <= 1.0
    moved = batch.to("cpu")
    assert moved.keys == batch.keys and moved.panoptic[0].masks.equal(batch.panoptic[0].masks)


def test_heterogeneous_batch_trains_each_task_on_its_annotated_images(model: FindModel) -> None:
    full = synthetic_sample(0)
    panoptic_only = dataclasses.replace(synthetic_sample(1), phrases=[], captions=[], spatial=[], interleave=[])
    caption_only = dataclasses.replace(synthetic_sample(2), segments=[], phrases=[], spatial=[], interleave=[])
    batch = collate([full, panoptic_only, caption_only], CLASSES, SMALL.class_prompt)
    assert batch.tasks == tuple(TASKS)
    model.train()
    outputs = model(batch)
    assert outputs["generic"]["valid"].tolist() == [True, True, False]
    assert outputs["retrieval"]["valid"].tolist() == [True, False, True]
    assert outputs["grounding"]["valid"].tolist() == [[True, True], [False, False], [False, False]]
    losses = FindCriterion(SMALL)(outputs, batch)
    # one image with an interleave entry: no negative, so no interleave contrastive term
    assert "interleave_retrieval.contrastive" not in losses and "interleave_grounding.mask" in losses
    assert all(torch.isfinite(v) for v in losses.values())


def test_collate_names_misaligned_masks() -> None:
    from find3d.errors import DataError

    sample = synthetic_sample(5)
    sample.phrases[0].mask = sample.phrases[0].mask[:32]
    with pytest.raises(DataError, match="must resize masks"):
        collate([sample], CLASSES)


def test_hungarian_matching_finds_the_permutation() -> None:
    from find3d.interface.matcher import hungarian_match

    targets = torch.zeros(2, 16, 16, dtype=torch.bool)
    targets[0, :8], targets[1, 8:] = True, True
    masks = torch.full((3, 16, 16), -8.0)
    masks[2, :8], masks[0, 8:] = 8.0, 8.0  # query 2 predicts target 0, query 0 predicts target 1
    logits = torch.zeros(3, 3)
    queries, gts = hungarian_match(logits, masks, torch.tensor([0, 1]), targets, 256, 2.0, 5.0, 5.0)
    assert dict(zip(gts.tolist(), queries.tolist())) == {0: 2, 1: 0}


def test_panoptic_merges_stuff_and_drops_low_scores() -> None:
    masks = torch.full((1, 4, 8, 8), -8.0)
    masks[0, 0, :4, :4] = 8.0  # a thing (class 0)
    masks[0, 1, 4:, :] = 8.0  # stuff (class 2), two queries: merged into one segment
    masks[0, 2, :4, 4:] = 8.0
    masks[0, 3] = 8.0  # everywhere, but no confident class
    logits = torch.full((1, 4, 4), -10.0)
    logits[0, 0, 0] = logits[0, 1, 2] = logits[0, 2, 2] = 10.0
    logits[0, 3] = 0.0
    [(segments, info)] = FindInterface.panoptic({"logits": logits, "masks": masks}, ISTHING, (8, 8), 0.8, 0.8)
    assert [(s["category_id"], s["isthing"]) for s in info] == [(0, True), (2, False)]
    assert (segments[:4, :4] == 1).all() and (segments[4:] == 2).all() and (segments[:4, 4:] == 2).all()


@pytest.mark.parametrize("reduce", ["avg", "max"])
def test_pool_levels_equals_adaptive_pooling_of_the_input(reduce: str) -> None:
    """Pooling level from level (read the input once) gives what pooling the input to each size gives."""
    from find3d.interface.pixel_decoder import pool_levels

    maps = torch.rand(2, 3, 96, 96)
    adaptive = torch.nn.functional.adaptive_avg_pool2d if reduce == "avg" else torch.nn.functional.adaptive_max_pool2d
    # unsorted, identity, non-dividing; then a factor 3 (no halving) followed by a factor 4 (two halvings)
    for sizes in ([(12, 12), (48, 48), (24, 24), (96, 96), (10, 10)], [(8, 8), (32, 32)]):
        for size, pooled in zip(sizes, pool_levels(maps, sizes, reduce)):
            torch.testing.assert_close(pooled, adaptive(maps, size), rtol=0, atol=1e-6)


def test_memory_only_pixel_decoder_pass_matches_the_full_pass(model: FindModel) -> None:
    """Visual references skip the stride-4 level: their memory equals the full pass's."""
    images = collate([synthetic_sample(0)], CLASSES, SMALL.class_prompt).images
    with torch.no_grad():
        pyramid = model.vision(images)
        full = model.interface.pixel_decoder(dict(pyramid))
        memory_only = model.interface.pixel_decoder(dict(pyramid), mask_features=False)
    assert memory_only.mask_features is None and full.mask_features is not None
    for a, b in zip(full.memory, memory_only.memory):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_a_memory_level_may_repeat(encoders) -> None:
    """cpu.yaml attends strides 32/16/16: the stride-16 map is read by two layers, each with its own
    level embedding, and every task still trains."""
    vision, language = encoders
    config = dataclasses.replace(SMALL, feature_strides=(32, 16, 16))
    model = FindModel(FindInterface.for_encoders(config, vision, language), vision, language).train()
    batch = collate([synthetic_sample(1), synthetic_sample(2)], CLASSES, config.class_prompt)
    torch.nn.init.normal_(model.interface.pixel_decoder.level_embed)
    with torch.no_grad():
        pixels = model.interface.pixel_decoder(dict(model.vision(batch.images)))
    assert [m.shape[-1] for m in pixels.memory] == [SIZE // 32, SIZE // 16, SIZE // 16]
    assert torch.equal(pixels.memory[1], pixels.memory[2])
    assert not torch.equal(pixels.positions[1], pixels.positions[2])
    losses = FindCriterion(config)(model(batch), batch)
    assert torch.isfinite(losses["loss"]) and all(any(n.startswith(t) for n in losses) for t in TASKS)
