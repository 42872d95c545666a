"""Declarative task specs (paper Table 6) and the attention masks built from them.

A task names its prompt types (``p.*``) and query types (``q.*``), which query types read which
prompt types in the *content* attention, which types see which in the *condition* (masked self-)
attention, and which query outputs go through the semantic and pixel projections. Adding a task
means adding a ``TaskSpec``; the masks below are derived from specs plus per-element ids:

* ``entity``: the item an element belongs to (a class name, phrase, caption, spatial prompt or
  interleave entry), ``-1`` for global elements (image features, object and image queries). Two
  elements that both carry an entity see each other only when the entities match, so a text-side
  query never mixes items, and its embedding does not depend on what else is in the batch.
* ``part``: inside an interleave entry, which of its entities a token belongs to (``-1`` for the
  connecting words). A query with a part (an interleave-grounding entity query) reads only its
  own part's tokens; prompt tokens ignore parts so an entry's tokens still see the whole sentence.
* ``valid``: padding is never visible.

Several tasks can share one forward pass: elements carry their task index and never see another
task's elements; the image features are the only prompt all tasks read.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

PROMPT_TYPES = ("p.image", "p.class", "p.text", "p.caption", "p.spatial", "p.interleave")
QUERY_TYPES = (
    "q.object", "q.image", "q.class", "q.grounding", "q.text", "q.caption", "q.segment", "q.spatial",
    "q.entity", "q.interleave",
)
TYPES = PROMPT_TYPES + QUERY_TYPES
TYPE_INDEX = {name: i for i, name in enumerate(TYPES)}

#: Learnable pool each query type is sampled from. Generic proposals are the object queries; queries
#: that segment one given item (phrase, spatial prompt, interleave entity) all copy one learnable item
#: query, so that what they segment comes from the item they read and not from their position: copies
#: of the object queries by position left queries past the training's item count (4 phrases, ~3
#: entities per entry) untrained, and at entity position 5 interleave grounding mIoU was 7.4 where
#: the SEEM-style protocol, asking fewer items at once, reached 53.8. Queries that summarise a whole
#: item (image, class name, phrase, caption, spatial prompt, interleave entry) copy the image-level
#: query, as in the reference.
QUERY_POOL = {
    "q.object": "object", "q.grounding": "item", "q.segment": "item", "q.entity": "item",
    "q.image": "image", "q.class": "image", "q.text": "image", "q.caption": "image", "q.spatial": "image",
    "q.interleave": "image",
}


@dataclass(frozen=True)
class TaskSpec:
    """One row of Table 6: prompts, queries, attention rules and projections of a task."""

    name: str
    prompts: tuple[str, ...]
    queries: tuple[str, ...]
    #: query type -> prompt types it reads in the content (cross-) attention
    content: dict[str, tuple[str, ...]]
    #: query or (non-image) prompt type -> types it sees in the condition (self-) attention
    condition: dict[str, tuple[str, ...]]
    #: query types whose outputs go through the semantic projection
    semantic: tuple[str, ...]
    #: query types whose outputs go through the pixel projection (they predict masks and their
    #: content attention onto image features is restricted by their previous-layer mask)
    pixel: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        for name in (*self.prompts, *self.queries):
            if name not in TYPE_INDEX:
                raise ValueError(f"task {self.name}: unknown type {name!r}; known types are {TYPES}")
        for query, seen in self.content.items():
            if query not in self.queries or any(p not in self.prompts for p in seen):
                raise ValueError(f"task {self.name}: content rule {query} <- {seen} uses undeclared types")
        sequence = set(self.queries) | set(self.prompts) - {"p.image"}
        for who, seen in self.condition.items():
            if who not in sequence or any(s not in sequence for s in seen):
                raise ValueError(f"task {self.name}: condition rule {who} <- {seen} uses undeclared types")
        if not set(self.semantic) | set(self.pixel) <= set(self.queries):
            raise ValueError(f"task {self.name}: projections name undeclared query types")

    def table(self, rules: dict[str, tuple[str, ...]]) -> torch.Tensor:
        """``(len(TYPES), len(TYPES))`` bool: row type may see column type under ``rules``."""
        out = torch.zeros(len(TYPES), len(TYPES), dtype=torch.bool)
        for who, seen in rules.items():
            for other in seen:
                out[TYPE_INDEX[who], TYPE_INDEX[other]] = True
        return out


GENERIC = TaskSpec(
    name="generic",
    prompts=("p.image", "p.class"),
    queries=("q.object", "q.image", "q.class"),
    content={"q.object": ("p.image",), "q.image": ("p.image",), "q.class": ("p.class",)},
    condition={
        "q.object": ("q.object", "q.image"),
        "q.image": ("q.object", "q.image"),
        "q.class": ("p.class", "q.class"),
        "p.class": ("p.class",),
    },
    semantic=("q.object", "q.image", "q.class"),
    pixel=("q.object",),
)

GROUNDING = TaskSpec(
    name="grounding",
    prompts=("p.image", "p.text"),
    queries=("q.grounding", "q.text"),
    content={"q.grounding": ("p.image", "p.text"), "q.text": ("p.text",)},
    condition={
        "q.grounding": ("q.grounding", "q.text"),
        "q.text": ("p.text", "q.text"),
        "p.text": ("p.text",),
    },
    semantic=("q.grounding", "q.text"),
    pixel=("q.grounding",),
)

RETRIEVAL = TaskSpec(
    name="retrieval",
    prompts=("p.image", "p.caption"),
    queries=("q.image", "q.caption"),
    content={"q.image": ("p.image",), "q.caption": ("p.caption",)},
    condition={
        "q.image": ("q.image",),
        "q.caption": ("p.caption", "q.caption"),
        "p.caption": ("p.caption",),
    },
    semantic=("q.image", "q.caption"),
)

INTERACTIVE = TaskSpec(
    name="interactive",
    prompts=("p.image", "p.spatial"),
    queries=("q.segment", "q.spatial"),
    content={"q.segment": ("p.image", "p.spatial"), "q.spatial": ("p.spatial",)},
    condition={
        "q.segment": ("q.segment", "q.spatial"),
        "q.spatial": ("p.spatial", "q.spatial"),
        "p.spatial": ("p.spatial",),
    },
    semantic=("q.segment", "q.spatial"),
    pixel=("q.segment",),
)

INTERLEAVE_GROUNDING = TaskSpec(
    name="interleave_grounding",
    prompts=("p.image", "p.interleave"),
    queries=("q.entity", "q.interleave"),
    content={"q.entity": ("p.image", "p.interleave"), "q.interleave": ("p.interleave",)},
    condition={
        "q.entity": ("q.entity", "q.interleave"),
        "q.interleave": ("p.interleave", "q.interleave"),
        "p.interleave": ("p.interleave",),
    },
    semantic=("q.entity", "q.interleave"),
    pixel=("q.entity",),
)

INTERLEAVE_RETRIEVAL = TaskSpec(
    name="interleave_retrieval",
    prompts=("p.image", "p.interleave"),
    queries=("q.image", "q.interleave"),
    content={"q.image": ("p.image",), "q.interleave": ("p.interleave",)},
    condition={
        "q.image": ("q.image",),
        "q.interleave": ("p.interleave", "q.interleave"),
        "p.interleave": ("p.interleave",),
    },
    semantic=("q.image", "q.interleave"),
)

TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (GENERIC, GROUNDING, RETRIEVAL, INTERACTIVE, INTERLEAVE_GROUNDING, INTERLEAVE_RETRIEVAL)
}


@dataclass
class Elements:
    """A run of sequence elements (prompt tokens or queries) shared by a batch of ``B`` images.

    Types and tasks are per position (the same for every image); ids and padding are per image.
    """

    types: torch.Tensor  # (N,) long, index into TYPES
    tasks: torch.Tensor  # (N,) long, index into the batch's task list
    entity: torch.Tensor  # (B, N) long, -1 = global
    part: torch.Tensor  # (B, N) long, -1 = none
    valid: torch.Tensor  # (B, N) bool

    @staticmethod
    def cat(runs: list[Elements]) -> Elements:
        return Elements(
            types=torch.cat([r.types for r in runs]),
            tasks=torch.cat([r.tasks for r in runs]),
            entity=torch.cat([r.entity for r in runs], dim=1),
            part=torch.cat([r.part for r in runs], dim=1),
            valid=torch.cat([r.valid for r in runs], dim=1),
        )

    @property
    def is_query(self) -> torch.Tensor:
        return self.types >= len(PROMPT_TYPES)


def _rules(specs: list[TaskSpec], rules: str) -> torch.Tensor:
    """``(n_tasks, len(TYPES), len(TYPES))`` visibility tables for ``rules`` ('content'/'condition')."""
    return torch.stack([spec.table(getattr(spec, rules)) for spec in specs])


def _visible(specs: list[TaskSpec], rules: str, rows: Elements, cols: Elements) -> torch.Tensor:
    """``(B, R, C)`` bool: row element may attend column element (type rules, task, entity, part, padding)."""
    tables = _rules(specs, rules).to(rows.types.device)
    by_type = tables[rows.tasks[:, None], rows.types[:, None], cols.types[None, :]]  # (R, C)
    same_task = rows.tasks[:, None] == cols.tasks[None, :]
    row_ent, col_ent = rows.entity[:, :, None], cols.entity[:, None, :]
    scoped = (row_ent >= 0) & (col_ent >= 0)
    # Only queries are restricted to a part; prompt tokens of an entry read the whole sentence.
    row_part = torch.where(rows.is_query[None, :], rows.part, torch.full_like(rows.part, -1))[:, :, None]
    same_item = (row_ent == col_ent) & ((row_part < 0) | (row_part == cols.part[:, None, :]))
    return (by_type & same_task)[None] & (~scoped | same_item) & cols.valid[:, None, :]


def content_mask(specs: list[TaskSpec], queries: Elements, tokens: Elements) -> torch.Tensor:
    """``(B, Q, T)`` bool: which non-image prompt tokens each query reads in the content attention."""
    return _visible(specs, "content", queries, tokens)


def image_access(specs: list[TaskSpec], queries: Elements) -> torch.Tensor:
    """``(Q,)`` bool: which queries read the image features in the content attention."""
    image = TYPE_INDEX["p.image"]
    return _rules(specs, "content").to(queries.types.device)[queries.tasks, queries.types, image]


def mask_restricted(specs: list[TaskSpec], queries: Elements) -> torch.Tensor:
    """``(Q,)`` bool: queries whose image attention follows their previous-layer mask (pixel queries)."""
    pixel = torch.tensor([[t in spec.pixel for t in TYPES] for spec in specs], device=queries.types.device)
    return pixel[queries.tasks, queries.types]


def condition_mask(specs: list[TaskSpec], sequence: Elements) -> torch.Tensor:
    """``(B, S, S)`` bool over [prompt tokens, queries]: the condition (self-) attention mask.

    Every valid element also sees itself, so no row is empty.
    """
    mask = _visible(specs, "condition", sequence, sequence)
    eye = torch.eye(mask.shape[-1], dtype=torch.bool, device=mask.device)
    return mask | eye[None]


def predicted_mask_attention(mask_logits: torch.Tensor, restricted: torch.Tensor) -> torch.Tensor:
    """``(B, Q, h*w)`` bool from previous-layer mask logits ``(B, Q, h, w)`` at the attended level.

    As in Mask2Former: a restricted query reads only pixels it predicts as foreground
    (sigmoid >= 0.5); a query predicting no foreground at all reads everything, so it can recover.
    """
    allowed = mask_logits.flatten(2).sigmoid() >= 0.5
    allowed = allowed | ~allowed.any(-1, keepdim=True) | ~restricted[None, :, None]
    return allowed


def attention_bias(allowed: torch.Tensor) -> torch.Tensor:
    """Boolean ``allowed`` (B, R, C) with fully blocked rows opened up (their output is ignored)."""
    return allowed | ~allowed.any(-1, keepdim=True)
