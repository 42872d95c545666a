"""EmbeddingSampler: the prompt tokens and queries each task feeds into the interface.

Prompts: image features (the pixel decoder's memory, read directly by the layers), class names /
phrases / captions (frozen language tokens projected to the interface width), spatial prompts
(image memory pooled under the rasterised prompt, one token per level), interleave entries (text
pieces' tokens, each visual entity replaced by memory of its reference image pooled under its mask).
Queries: sampled from three learnable pools (``spec.QUERY_POOL``): generic proposals are the object
queries, queries segmenting a given item copy the item query, queries summarising an item copy the
image-level query. Every element also gets a learned embedding of its type.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from find3d.interface.collate import SPATIAL_KINDS, FindBatch, Piece
from find3d.interface.config import InterfaceConfig
from find3d.interface.pixel_decoder import PixelFeatures, pool_levels
from find3d.interface.spec import QUERY_POOL, TYPE_INDEX, TYPES, Elements

#: (vectors (n, D), entity, part) of one stretch of prompt tokens
Stretch = tuple[torch.Tensor, int, int]


@dataclass
class Block:
    """What one task adds to the joint sequence: prompt tokens and queries with their ids."""

    task: str
    tokens: torch.Tensor  # (B, T, D)
    token_ids: Elements
    queries: torch.Tensor  # (B, Q, D)
    query_ids: Elements
    slots: dict[str, slice]  # query type -> positions inside this block's queries


def pool_under_masks(memory: list[torch.Tensor], masks: torch.Tensor) -> torch.Tensor:
    """Mean of each memory level under each mask: ``(B, N, H, W)`` masks -> ``(B, N, levels, C)``.

    Masks are max-pooled to each level so that a single clicked pixel still selects its cell.
    """
    if not masks.numel():
        return memory[0].new_zeros(*masks.shape[:2], len(memory), memory[0].shape[1])
    pooled = []
    for level, cells in zip(memory, pool_levels(masks.float(), [m.shape[-2:] for m in memory], "max")):
        total = torch.einsum("bnhw,bdhw->bnd", cells, level)
        pooled.append(total / cells.sum((-2, -1))[..., None].clamp(min=1.0))
    return torch.stack(pooled, dim=2)


def _ids(batch: int, count: int, type_name: str, task: int, entity: torch.Tensor | int, part: torch.Tensor | int,
         valid: torch.Tensor | bool, device: torch.device) -> Elements:
    def full(value: torch.Tensor | int | bool, dtype: torch.dtype) -> torch.Tensor:
        if isinstance(value, torch.Tensor):
            return value.to(device=device, dtype=dtype).expand(batch, count)
        return torch.full((batch, count), value, dtype=dtype, device=device)

    return Elements(
        types=torch.full((count,), TYPE_INDEX[type_name], dtype=torch.long, device=device),
        tasks=torch.full((count,), task, dtype=torch.long, device=device),
        entity=full(entity, torch.long), part=full(part, torch.long), valid=full(valid, torch.bool))


class EmbeddingSampler(nn.Module):
    """Builds a ``Block`` per task from the batch, image memory and projected text tokens."""

    def __init__(self, config: InterfaceConfig, language_dim: int) -> None:
        super().__init__()
        dim = config.hidden_dim
        self.dim = dim
        self.object_queries = nn.Embedding(config.num_queries - 1, dim)
        self.image_query = nn.Embedding(1, dim)
        self.item_query = nn.Embedding(1, dim)
        self.type_embed = nn.Embedding(len(TYPES), dim)
        self.kind_embed = nn.Embedding(len(SPATIAL_KINDS), dim)
        self.reference_embed = nn.Parameter(torch.zeros(dim))
        # pooled image memory (pixel-decoder width) -> interface width, for spatial and visual-reference tokens
        self.visual_proj = nn.Linear(config.pixel_decoder_dim, dim)
        # LayerNorm first: LLM hidden states carry a few huge-magnitude channels.
        self.text_proj = nn.Sequential(nn.LayerNorm(language_dim), nn.Linear(language_dim, dim))

    # --- pieces -------------------------------------------------------------------------------
    def project_texts(self, texts: Mapping[str, torch.Tensor], needed: list[str]) -> dict[str, torch.Tensor]:
        """Project the frozen tokens ``(T_i, language_dim)`` of every needed string to ``(T_i, D)``."""
        missing = [s for s in needed if s not in texts]
        if missing:
            raise KeyError(f"no language tokens for {missing[:3]}; embed batch.strings() first")
        if not needed:
            return {}
        lengths = [texts[s].shape[0] for s in needed]
        weight = self.text_proj[1].weight
        projected = self.text_proj(torch.cat([texts[s] for s in needed]).to(weight.device, weight.dtype))
        return dict(zip(needed, projected.split(lengths)))

    def _pool_query(self, type_name: str, count: int) -> torch.Tensor:
        """``(count, D)`` copies from the type's pool (object queries cycle when more are needed)."""
        pool = QUERY_POOL[type_name]
        if pool == "object":
            weight = self.object_queries.weight
            base = weight[torch.arange(count, device=weight.device) % weight.shape[0]]
        else:
            base = (self.image_query if pool == "image" else self.item_query).weight.expand(count, -1)
        return base + self.type_embed.weight[TYPE_INDEX[type_name]]

    def _pack(self, stretches: list[list[Stretch]], type_name: str, task: int,
              device: torch.device) -> tuple[torch.Tensor, Elements]:
        """Pad per-image token stretches into ``(B, T, D)`` with entity / part / validity ids."""
        empty = torch.zeros(0, self.dim, device=device)
        # one concatenation per image: per-stretch copies cost ~1000 small ops a step on long entries
        rows = [torch.cat([v for v, _, _ in s]) if s else empty for s in stretches]
        tokens = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True) if rows else empty[None]
        length = tokens.shape[1]
        ids = _ids(len(stretches), length, type_name, task, -1, -1, False, device)
        ids.entity, ids.part, ids.valid = ids.entity.clone(), ids.part.clone(), ids.valid.clone()
        for b, image_stretches in enumerate(stretches):
            if not image_stretches:
                continue
            sizes = torch.tensor([v.shape[0] for v, _, _ in image_stretches], device=device)
            entity, part = torch.tensor([(e, p) for _, e, p in image_stretches], device=device).T
            end = int(sizes.sum())
            ids.entity[b, :end], ids.part[b, :end] = entity.repeat_interleave(sizes), part.repeat_interleave(sizes)
            ids.valid[b, :end] = True
        return tokens + self.type_embed.weight[TYPE_INDEX[type_name]], ids

    def _queries(self, runs: list[tuple[str, int, Elements]]) -> tuple[torch.Tensor, Elements, dict[str, slice]]:
        """Concatenate query runs ``(type, count, ids)``; returns queries ``(B, Q, D)``, ids, slots."""
        batch = runs[0][2].entity.shape[0]
        vectors, slots, cursor = [], {}, 0
        for type_name, count, _ in runs:
            vectors.append(self._pool_query(type_name, count))
            slots[type_name] = slice(cursor, cursor + count)
            cursor += count
        queries = torch.cat(vectors)[None].expand(batch, -1, -1)
        return queries, Elements.cat([ids for _, _, ids in runs]), slots

    # --- tasks --------------------------------------------------------------------------------
    def build(self, task: str, index: int, batch: FindBatch, pixels: PixelFeatures,
              references: torch.Tensor | None, texts: dict[str, torch.Tensor]) -> Block:
        """The ``Block`` of ``task`` (at position ``index`` among the forward's tasks); ``references``:
        the batch's ``reference_tokens``."""
        device = batch.images.device
        size = batch.images.shape[0]
        if task == "generic":  # class names go through ``text_block``: they never meet the image
            tokens, token_ids = self._pack([[]] * size, "p.class", index, device)
            objects = self.object_queries.num_embeddings
            runs = [("q.object", objects, _ids(size, objects, "q.object", index, -1, -1, True, device)),
                    ("q.image", 1, _ids(size, 1, "q.image", index, -1, -1, True, device))]
        elif task == "grounding":
            stretches = [[(texts[p], i, -1) for i, p in enumerate(phrases)] for phrases in batch.phrases]
            tokens, token_ids = self._pack(stretches, "p.text", index, device)
            count = batch.phrase_valid.shape[1]
            entity = torch.arange(count, device=device)
            runs = [(t, count, _ids(size, count, t, index, entity, -1, batch.phrase_valid, device))
                    for t in ("q.grounding", "q.text")]
        elif task == "retrieval":
            stretches = [[] if c is None else [(texts[c], 0, -1)] for c in batch.captions]
            tokens, token_ids = self._pack(stretches, "p.caption", index, device)
            has = torch.tensor([c is not None for c in batch.captions], device=device)[:, None]
            runs = [("q.image", 1, _ids(size, 1, "q.image", index, -1, -1, True, device)),
                    ("q.caption", 1, _ids(size, 1, "q.caption", index, 0, -1, has, device))]
        elif task == "interactive":
            tokens, token_ids = self._spatial_tokens(batch, pixels, index)
            count = batch.spatial_valid.shape[1]
            entity = torch.arange(count, device=device)
            runs = [(t, count, _ids(size, count, t, index, entity, -1, batch.spatial_valid, device))
                    for t in ("q.segment", "q.spatial")]
        elif task == "interleave_grounding":  # every entry: its entity queries read their own part
            stretches = [[s for entry, pieces in enumerate(entries)
                          for s in self._entry_stretches(pieces, entry, references, texts)]
                         for entries in batch.interleave]
            tokens, token_ids = self._pack(stretches, "p.interleave", index, device)
            count = batch.entity_valid.shape[1]
            part = torch.arange(count, device=device)
            most = max([len(entries) for entries in batch.interleave] + [1])
            has = torch.tensor([[e < len(entries) for e in range(most)] for entries in batch.interleave],
                               device=device)
            runs = [("q.entity", count, _ids(size, count, "q.entity", index, batch.entity_entry.clamp(min=0), part,
                                             batch.entity_valid, device)),
                    ("q.interleave", most, _ids(size, most, "q.interleave", index, torch.arange(most, device=device),
                                                -1, has, device))]
        elif task == "interleave_retrieval":  # the first entry: one positive per image for the contrastive loss
            stretches = [self._entry_stretches(entries[0], 0, references, texts) if entries else []
                         for entries in batch.interleave]
            tokens, token_ids = self._pack(stretches, "p.interleave", index, device)
            has = torch.tensor([bool(entries) for entries in batch.interleave], device=device)[:, None]
            runs = [("q.image", 1, _ids(size, 1, "q.image", index, -1, -1, True, device)),
                    ("q.interleave", 1, _ids(size, 1, "q.interleave", index, 0, -1, has, device))]
        else:
            raise KeyError(f"unknown task {task!r}")
        queries, query_ids, slots = self._queries(runs)
        return Block(task, tokens, token_ids, queries, query_ids, slots)

    def text_block(self, strings: list[str], texts: dict[str, torch.Tensor], query_type: str,
                   prompt_type: str) -> Block:
        """A batch-of-one block embedding each string alone: its tokens (entity i) and one query."""
        device = self.image_query.weight.device
        tokens, token_ids = self._pack([[(texts[s], i, -1) for i, s in enumerate(strings)]], prompt_type, 0, device)
        entity = torch.arange(len(strings), device=device)
        queries, query_ids, slots = self._queries(
            [(query_type, len(strings), _ids(1, len(strings), query_type, 0, entity, -1, True, device))])
        return Block("text", tokens, token_ids, queries, query_ids, slots)

    def _spatial_tokens(self, batch: FindBatch, pixels: PixelFeatures, index: int) -> tuple[torch.Tensor, Elements]:
        """One token per memory level per spatial prompt: memory pooled under the prompt + its kind."""
        pooled = self.visual_proj(pool_under_masks(pixels.memory, batch.spatial_prompts))  # (B, S, L, D)
        pooled = pooled + self.kind_embed(batch.spatial_kinds)[:, :, None]
        size, count, levels, _ = pooled.shape
        device = pooled.device
        entity = torch.arange(count, device=device).repeat_interleave(levels)
        valid = batch.spatial_valid.repeat_interleave(levels, dim=1)
        ids = _ids(size, count * levels, "p.spatial", index, entity, -1, valid, device)
        return pooled.flatten(1, 2) + self.type_embed.weight[TYPE_INDEX["p.spatial"]], ids

    def reference_tokens(self, references: PixelFeatures, batch: FindBatch) -> torch.Tensor:
        """``(N, levels, D)``: each visual entity's reference-image memory pooled under its mask, all at once."""
        memory = [level[batch.ref_image_index] for level in references.memory]
        return self.visual_proj(pool_under_masks(memory, batch.ref_masks[:, None])[:, 0]) + self.reference_embed

    def _entry_stretches(self, pieces: list[Piece], entry: int, references: torch.Tensor | None,
                         texts: dict[str, torch.Tensor]) -> list[Stretch]:
        """An interleave entry's token stretches (entity = ``entry``): text pieces, and visual entities'
        ``reference_tokens``."""
        out: list[Stretch] = []
        for piece, part in pieces:
            if isinstance(piece, str):
                out.append((texts[piece], entry, part))
            elif references is None:
                raise ValueError("the batch has visual references but no reference features were given")
            else:
                out.append((references[piece], entry, part))
        return out
