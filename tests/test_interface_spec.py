"""Attention masks built from the Table 6 task specs: who reads what, per task."""

from __future__ import annotations

import pytest
import torch

from find3d.interface.spec import (
    TASKS,
    TYPE_INDEX,
    Elements,
    TaskSpec,
    attention_bias,
    condition_mask,
    content_mask,
    image_access,
    mask_restricted,
    predicted_mask_attention,
)


def run(type_name: str, entity: list[int], part: list[int] | None = None, valid: list[bool] | None = None,
        task: int = 0) -> Elements:
    """A run of elements for a batch of one image."""
    count = len(entity)
    return Elements(
        types=torch.full((count,), TYPE_INDEX[type_name]),
        tasks=torch.full((count,), task),
        entity=torch.tensor([entity]),
        part=torch.tensor([part if part is not None else [-1] * count]),
        valid=torch.tensor([valid if valid is not None else [True] * count]))


def masks(task: str, tokens: list[Elements], queries: list[Elements]):
    """(content over tokens, image access, condition over [tokens, queries]) for one task."""
    specs = [TASKS[task]]
    token_ids, query_ids = Elements.cat(tokens), Elements.cat(queries)
    content = content_mask(specs, query_ids, token_ids)[0]
    condition = condition_mask(specs, Elements.cat([token_ids, query_ids]))[0]
    return content, image_access(specs, query_ids), condition


def test_generic_object_queries_never_see_text_and_the_image_query_sees_the_image() -> None:
    tokens = [run("p.class", [0, 0, 1, 1, 2])]
    queries = [run("q.object", [-1] * 4), run("q.image", [-1]), run("q.class", [0, 1, 2])]
    content, sees_image, condition = masks("generic", tokens, queries)
    assert not content[:5].any()  # object + image queries read no class token
    assert sees_image[:5].all() and not sees_image[5:].any()
    assert content[5].tolist() == [True, True, False, False, False]  # class query 0: its own name only
    assert content[7].tolist() == [False, False, False, False, True]
    objects, image, classes = slice(5, 9), 9, slice(10, 13)
    assert condition[objects, objects].all() and condition[objects, image].all()
    assert not condition[objects, :5].any() and not condition[objects, classes].any()
    assert not condition[classes, objects].any()  # class embeddings never depend on the image
    assert condition[classes, classes].equal(torch.eye(3, dtype=torch.bool))


def test_grounding_queries_see_only_their_own_phrase() -> None:
    tokens = [run("p.text", [0, 0, 0, 1, 1])]
    queries = [run("q.grounding", [0, 1]), run("q.text", [0, 1])]
    content, sees_image, condition = masks("grounding", tokens, queries)
    assert content[0].tolist() == [True, True, True, False, False]  # entity 0 cannot see entity 1's tokens
    assert content[1].tolist() == [False, False, False, True, True]
    assert sees_image.tolist() == [True, True, False, False]
    assert content[2].equal(content[0]) and content[3].equal(content[1])
    grounding, text = slice(5, 7), slice(7, 9)
    assert condition[grounding, text].equal(torch.eye(2, dtype=torch.bool))
    assert not condition[text, grounding].any()  # phrase embeddings do not depend on the image
    assert condition[:5, :5].equal(torch.block_diag(torch.ones(3, 3), torch.ones(2, 2)).bool())


def test_retrieval_keeps_image_and_caption_apart() -> None:
    tokens = [run("p.caption", [0, 0, 0])]
    queries = [run("q.image", [-1]), run("q.caption", [0])]
    content, sees_image, condition = masks("retrieval", tokens, queries)
    assert not content[0].any() and content[1].all()
    assert sees_image.tolist() == [True, False]
    assert not condition[3, 4] and not condition[4, 3]  # no leak between the two sides of the contrastive loss


def test_interactive_segment_query_reads_its_own_prompt() -> None:
    tokens = [run("p.spatial", [0, 0, 0, 1, 1, 1])]
    queries = [run("q.segment", [0, 1]), run("q.spatial", [0, 1])]
    content, sees_image, _ = masks("interactive", tokens, queries)
    assert content[0].tolist() == [True] * 3 + [False] * 3
    assert content[1].tolist() == [False] * 3 + [True] * 3
    assert sees_image.tolist() == [True, True, False, False]


def test_interleave_entities_see_their_own_reference_tokens_only() -> None:
    # "a <ref:0> next to the red square": context (-1), visual ref (part 0), context, text entity (part 1)
    tokens = [run("p.interleave", [0] * 7, part=[-1, 0, 0, 0, -1, 1, 1])]
    queries = [run("q.entity", [0, 0], part=[0, 1]), run("q.interleave", [0])]
    content, sees_image, condition = masks("interleave_grounding", tokens, queries)
    assert content[0].tolist() == [False, True, True, True, False, False, False]
    assert content[1].tolist() == [False] * 5 + [True, True]
    assert content[2].all()  # the entry query reads the whole sentence
    assert sees_image.tolist() == [True, True, False]
    assert condition[:7, :7].all()  # prompt tokens of one entry see each other across parts


def test_interleave_retrieval_image_query_never_sees_the_entry() -> None:
    tokens = [run("p.interleave", [0, 0, 0], part=[-1, 0, -1])]
    queries = [run("q.image", [-1]), run("q.interleave", [0])]
    content, sees_image, condition = masks("interleave_retrieval", tokens, queries)
    assert not content[0].any() and content[1].all()
    assert sees_image.tolist() == [True, False]
    assert not condition[3, :3].any()


def test_padding_is_invisible_and_tasks_in_one_pass_are_isolated() -> None:
    specs = [TASKS["grounding"], TASKS["interactive"]]
    tokens = Elements.cat([run("p.text", [0, 0, 1], valid=[True, True, False], task=0),
                           run("p.spatial", [0, 0], task=1)])
    queries = Elements.cat([run("q.grounding", [0, 1], valid=[True, False], task=0),
                            run("q.segment", [0], task=1)])
    content = content_mask(specs, queries, tokens)[0]
    assert content[0].tolist() == [True, True, False, False, False]
    assert content[2].tolist() == [False, False, False, True, True]
    condition = condition_mask(specs, Elements.cat([tokens, queries]))[0]
    assert not condition[:3, 3:5].any() and not condition[5:7, 7].any() and not condition[7, 5:7].any()
    # the padded query reads nothing; opened up so attention stays finite (its output is ignored)
    assert not content[1].any() and attention_bias(content[None])[0, 1].all()


def test_previous_masks_restrict_pixel_queries_but_not_the_image_query() -> None:
    specs = [TASKS["generic"]]
    queries = Elements.cat([run("q.object", [-1, -1]), run("q.image", [-1])])
    restricted = mask_restricted(specs, queries)
    assert restricted.tolist() == [True, True, False]
    logits = torch.tensor([[[[5.0, -5.0], [-5.0, -5.0]], [[-5.0] * 2] * 2, [[-5.0] * 2] * 2]])
    allowed = predicted_mask_attention(logits, restricted)[0]
    assert allowed[0].tolist() == [True, False, False, False]  # sigmoid < 0.5 blocked
    assert allowed[1].all()  # nothing predicted: fully blocked row unblocked
    assert allowed[2].all()  # image-level query exempt


def test_a_new_task_is_just_a_spec() -> None:
    spec = TaskSpec(name="caption_grounding", prompts=("p.image", "p.caption"), queries=("q.grounding", "q.caption"),
                    content={"q.grounding": ("p.image", "p.caption"), "q.caption": ("p.caption",)},
                    condition={"q.grounding": ("q.grounding",), "q.caption": ("p.caption", "q.caption"),
                               "p.caption": ("p.caption",)},
                    semantic=("q.grounding", "q.caption"), pixel=("q.grounding",))
    tokens = run("p.caption", [0, 1])
    queries = run("q.grounding", [1])
    assert content_mask([spec], queries, tokens)[0].tolist() == [[False, True]]
    with pytest.raises(ValueError, match="undeclared"):
        TaskSpec(name="bad", prompts=("p.image",), queries=("q.object",), content={"q.object": ("p.text",)},
                 condition={}, semantic=())
