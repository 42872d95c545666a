"""FindInterface: the trainable FIND interface on top of frozen encoder outputs, and FindModel.

``FindInterface.forward`` takes the vision pyramid (so training can feed cached features), the
frozen language tokens of every string the batch needs and a ``FindBatch``; all tasks of the batch
run in ONE pass through the layers, kept apart by the spec-built attention masks. Class names are
embedded in a separate text-only pass of batch size 1: by the specs their queries never see an
image, so their embeddings do not depend on the image and need not be repeated per image; the
same pass embeds free text for open-vocabulary / 3D queries (``encode_texts``).

``FindModel`` holds the frozen encoders beside the interface (never inside it, so an optimizer over
``model.interface.parameters()`` cannot touch them) and caches language tokens of repeated strings.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from find3d.encoders.base import LanguageEncoder, VisionEncoder
from find3d.errors import InputError
from find3d.interface.collate import FindBatch
from find3d.interface.config import InterfaceConfig
from find3d.interface.layers import InterfaceLayer
from find3d.interface.pixel_decoder import PixelDecoder, PixelFeatures, pool_levels
from find3d.interface.sampler import Block, EmbeddingSampler
from find3d.interface.spec import (
    GENERIC,
    GROUNDING,
    RETRIEVAL,
    TASKS,
    Elements,
    TaskSpec,
    attention_bias,
    condition_mask,
    content_mask,
    image_access,
    mask_restricted,
    predicted_mask_attention,
)

Outputs = dict[str, dict[str, Any]]

#: text-only passes: kind -> (query type, prompt type, the spec declaring them)
TEXT_KINDS = {"class": ("q.class", "p.class", GENERIC), "phrase": ("q.text", "p.text", GROUNDING),
              "caption": ("q.caption", "p.caption", RETRIEVAL)}


@dataclass
class Step:
    """Head outputs after one layer (or before the first) for every query of the joint sequence."""

    semantic: torch.Tensor | None  # (B, Q, P) L2-normalised; None at steps nobody reads (inference)
    masks: torch.Tensor | None  # (B, Q_pixel, H/4, W/4) logits of the pixel queries, in sequence order
    tokens: torch.Tensor | None = None  # (B, T, D) prompt-token states at head steps, when asked


class FindInterface(nn.Module):
    """Sampler + interface layers + pixel decoder + semantic / pixel projections."""

    def __init__(self, config: InterfaceConfig, vision_strides: tuple[int, ...],
                 vision_channels: tuple[int, ...], language_dim: int) -> None:
        super().__init__()
        dim = config.hidden_dim
        self.config = config
        self.pixel_decoder = PixelDecoder(vision_strides, vision_channels, config.pixel_decoder_dim, dim,
                                          tuple(config.feature_strides))
        self.sampler = EmbeddingSampler(config, language_dim)
        self.layers = nn.ModuleList(
            InterfaceLayer(dim, config.pixel_decoder_dim, config.num_heads, config.ffn_dim, config.dropout)
            for _ in range(config.num_layers))
        self.final_norm = nn.LayerNorm(dim)
        self.semantic_proj = nn.Linear(dim, config.projection_dim)
        self.pixel_proj = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim), nn.ReLU(),
                                        nn.Linear(dim, config.pixel_decoder_dim))
        self.no_object = nn.Parameter(torch.randn(config.projection_dim) * 0.02)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / config.temperature)))
        # Final-layer class embeddings per vocabulary, reused in eval mode without grad: at inference
        # the vocabulary is fixed and its text pass would cost as much as the image pass.
        self._class_cache: dict[tuple[str, ...], torch.Tensor] = {}
        self.register_load_state_dict_post_hook(lambda module, _keys: module._class_cache.clear())

    def train(self, mode: bool = True) -> FindInterface:
        self._class_cache.clear()
        return super().train(mode)

    @classmethod
    def for_encoders(cls, config: InterfaceConfig, vision: VisionEncoder, language: LanguageEncoder) -> FindInterface:
        return cls(config, tuple(vision.strides), tuple(vision.channels), language.dim)

    @property
    def scale(self) -> torch.Tensor:
        """Contrastive / class logit scale, clamped at 100 as in CLIP."""
        return self.logit_scale.exp().clamp(max=100.0)

    # --- the joint pass -----------------------------------------------------------------------
    def _run(self, blocks: list[Block], specs: list[TaskSpec], pixels: PixelFeatures | None,
             every_step: bool, token_heads: bool = False) -> list[Step]:
        """Run the layers over the concatenated blocks; one ``Step`` per layer plus the initial one.

        ``every_step``: head outputs (semantic vectors, stride-4 masks) at every step (deep
        supervision); otherwise only at the last step. Intermediate attention masks are predicted at
        the attended level's resolution either way. ``token_heads``: the prompt tokens go through the
        states are kept wherever the queries go through the heads (the interleave entities' matching loss
        projects its own block's tokens, see ``_collect``).
        """
        tokens = torch.cat([b.tokens for b in blocks], dim=1)
        queries = torch.cat([b.queries for b in blocks], dim=1)
        token_ids = Elements.cat([b.token_ids for b in blocks])
        query_ids = Elements.cat([b.query_ids for b in blocks])
        text_allowed = content_mask(specs, query_ids, token_ids)
        sees_image = image_access(specs, query_ids)
        restricted = mask_restricted(specs, query_ids)
        pixel_rows = restricted.nonzero().flatten()
        condition = condition_mask(specs, Elements.cat([token_ids, query_ids]))
        batch, dim = queries.shape[0], queries.shape[-1]
        if pixels is None:  # text-only pass: no image memory at all
            memory = [queries.new_zeros(batch, 0, self.config.pixel_decoder_dim)]
            positions = [queries.new_zeros(0, dim)]
            level_features: list[torch.Tensor | None] = [None]
            mask_features = None
        else:
            memory = [m.flatten(2).transpose(1, 2) for m in pixels.memory]
            positions = pixels.positions
            mask_features = pixels.mask_features
            # Mask logits at a level = pixel queries . mask features pooled to it (pooling is linear).
            level_features = (pool_levels(mask_features, [m.shape[-2:] for m in pixels.memory])
                              if len(pixel_rows) else [None] * len(memory))
        steps: list[Step] = []
        for index in range(len(self.layers) + 1):
            last = index == len(self.layers)
            normed = self.final_norm(queries)
            semantic = self._semantic(normed) if every_step or last else None
            pixel = self.pixel_proj(normed[:, pixel_rows]) if mask_features is not None and len(pixel_rows) else None
            masks = None
            if pixel is not None and (every_step or last):
                masks = torch.einsum("bqc,bchw->bqhw", pixel, mask_features)
            steps.append(Step(semantic, masks, tokens if token_heads and semantic is not None else None))
            if last:
                break
            level = index % len(memory)
            attend = sees_image[None, :, None].expand(batch, len(sees_image), memory[level].shape[1]).clone()
            if pixel is not None:
                logits = torch.einsum("bqc,bchw->bqhw", pixel, level_features[level])
                attend[:, pixel_rows] &= predicted_mask_attention(logits, restricted[pixel_rows])
            allowed = attention_bias(torch.cat([attend, text_allowed], dim=-1))
            queries, tokens = self.layers[index](queries, tokens, memory[level], positions[level][None], allowed,
                                                 condition)
        return steps

    def forward(self, pyramid: Mapping[int, torch.Tensor], texts: Mapping[str, torch.Tensor], batch: FindBatch,
                ref_pyramid: Mapping[int, torch.Tensor] | None = None, tasks: Sequence[str] | None = None,
                with_aux: bool | None = None) -> Outputs:
        """``{task: output}`` (see ``_collect``) plus ``valid``, ``scale`` and, when ``with_aux``, ``"aux"``:
        the same outputs after every earlier layer (and before the first), for deep supervision.

        ``pyramid``: frozen vision features of ``batch.images``; ``texts``: frozen language tokens
        ``(T_i, language_dim)`` of every string in ``batch.strings(tasks)``; ``ref_pyramid``: features of
        ``batch.ref_images`` (defaults to ``batch.ref_pyramid``); ``tasks``: subset of ``batch.tasks``.
        """
        tasks = tuple(tasks if tasks is not None else batch.tasks)
        unknown = [t for t in tasks if t not in TASKS]
        if unknown:
            raise InputError(f"unknown task(s) {unknown}; the tasks are {list(TASKS)}")
        with_aux = self.training and self.config.deep_supervision if with_aux is None else with_aux
        pixels = self.pixel_decoder(dict(pyramid))
        ref_pyramid = ref_pyramid if ref_pyramid is not None else batch.ref_pyramid
        references = None
        if len(batch.ref_images) and any(t.startswith("interleave") for t in tasks):
            if ref_pyramid is None:
                raise InputError("the batch has visual references: pass ref_pyramid (vision features of "
                                 "batch.ref_images) or collate with vision=...")
            references = self.sampler.reference_tokens(self.pixel_decoder(dict(ref_pyramid), mask_features=False),
                                                       batch)
        # Inference reuses the vocabulary's class embeddings: its class names need no projection then.
        cached = not (self.training or with_aux or torch.is_grad_enabled())
        classes_known = cached and tuple(batch.class_texts) in self._class_cache
        projected = self.sampler.project_texts(
            texts, batch.strings([t for t in tasks if t != "generic" or not classes_known]))
        blocks = [self.sampler.build(t, i, batch, pixels, references, projected) for i, t in enumerate(tasks)]
        specs = [TASKS[t] for t in tasks]
        # Only the training loss reads the entities' token embeddings (see FindCriterion).
        token_heads = self.training and "interleave_grounding" in tasks
        steps = self._run(blocks, specs, pixels, every_step=with_aux, token_heads=token_heads)
        classes: list[torch.Tensor | None] = [None] * len(steps)
        if "generic" in tasks:
            classes = self._class_embeddings(batch.class_texts, projected, cached=cached)
        query_ids = Elements.cat([b.query_ids for b in blocks])
        rank = mask_restricted(specs, query_ids).long().cumsum(0) - 1
        outputs: Outputs = {}
        offset = token_offset = 0
        for block in blocks:
            at = (offset, token_offset)
            out = self._collect(block, at, rank, steps[-1], classes[-1])
            if with_aux:
                out["aux"] = [self._collect(block, at, rank, step, cls)
                              for step, cls in zip(steps[:-1], classes[:-1])]
            out["valid"] = _validity(block.task, batch)
            out["scale"] = self.scale
            outputs[block.task] = out
            offset += block.queries.shape[1]
            token_offset += block.tokens.shape[1]
        return outputs

    def _class_embeddings(self, class_texts: list[str], projected: dict[str, torch.Tensor],
                          cached: bool) -> list[torch.Tensor | None]:
        """Per-step ``(K, P)`` class embeddings from a text-only pass (only the last one when ``cached``)."""
        key = tuple(class_texts)
        if cached and key in self._class_cache:
            return [None] * len(self.layers) + [self._class_cache[key]]
        block = self.sampler.text_block(class_texts, projected, "q.class", "p.class")
        steps = [None if step.semantic is None else step.semantic[0]
                 for step in self._run([block], [GENERIC], None, every_step=not cached)]
        if cached:
            self._class_cache[key] = steps[-1]
        return steps

    def _collect(self, block: Block, at: tuple[int, int], rank: torch.Tensor, step: Step,
                 classes: torch.Tensor | None) -> dict[str, Any]:
        """A task's view of one step: ``semantic[q.type]`` ``(B, n, P)``, ``masks`` of its pixel queries
        ``(B, n, H/4, W/4)``, for the generic task class ``logits`` ``(B, n, K+1)`` (last = no object)
        and, when the step has token heads, ``semantic["p.interleave"]`` ``(B, E, P)``: each interleave
        entity's prompt tokens averaged. ``at``: the block's first query and first token in the sequence."""
        spec = TASKS[block.task]
        offset, token_offset = at
        out: dict[str, Any] = {"semantic": {}}
        if step.tokens is not None and block.task == "interleave_grounding":
            states = step.tokens[:, token_offset: token_offset + block.tokens.shape[1]]
            tokens = self._semantic(self.final_norm(states))
            entities = block.slots["q.entity"]
            out["semantic"]["p.interleave"] = _part_means(tokens, block.token_ids, entities.stop - entities.start)
        for type_name, where in block.slots.items():
            span = slice(offset + where.start, offset + where.stop)
            out["semantic"][type_name] = step.semantic[:, span]
            if type_name in spec.pixel and step.masks is not None:
                first = int(rank[span.start])
                out["masks"] = step.masks[:, first: first + where.stop - where.start]
        if classes is not None and block.task == "generic":
            objects = out["semantic"]["q.object"]
            targets = torch.cat([classes, F.normalize(self.no_object, dim=0)[None]])
            out["logits"] = self.scale * objects @ targets.T
        return out

    def _semantic(self, normed: torch.Tensor) -> torch.Tensor:
        """The semantic head on final-normed states: L2-normalised vectors in the shared space."""
        return F.normalize(self.semantic_proj(normed), dim=-1)

    # --- text-only embeddings -----------------------------------------------------------------
    def encode_texts(self, texts: Mapping[str, torch.Tensor], strings: Sequence[str], kind: str = "class"
                     ) -> torch.Tensor:
        """``(N, P)`` semantic embeddings of free text, each string alone (no image involved).

        ``kind`` picks the text-side query the string is embedded as: "class" (matches object
        embeddings: open-vocabulary and 3D queries), "phrase" (grounding) or "caption" (matches
        retrieval image vectors: frame localisation). ``texts``: frozen language tokens of each string.
        """
        strings = list(strings)
        if not strings:
            raise InputError("encode_texts got no strings; pass at least one query text")
        if kind not in TEXT_KINDS:
            raise InputError(f"unknown text kind {kind!r}; use one of {list(TEXT_KINDS)}")
        query, prompt, spec = TEXT_KINDS[kind]
        projected = self.sampler.project_texts(texts, list(dict.fromkeys(strings)))
        block = self.sampler.text_block(strings, projected, query, prompt)
        return self._run([block], [spec], None, every_step=False)[-1].semantic[0]

    # --- inference helpers --------------------------------------------------------------------
    @staticmethod
    def mask_probabilities(output: Mapping[str, Any], size: tuple[int, int]) -> torch.Tensor:
        """``(B, n, H, W)`` mask probabilities of a task's pixel queries (grounding per phrase,
        interactive per prompt, interleave per entity, generic per object query) at image size."""
        return F.interpolate(output["masks"], size=size, mode="bilinear", align_corners=False).sigmoid()

    @staticmethod
    def pixel_embeddings(outputs: Outputs, size: tuple[int, int] | None = None, confidence: bool = True
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-pixel embeddings ``E(x) = Σ_k c_k m_k(x) s_k / Σ_k c_k m_k(x)`` over object queries, normalised,
        ``(B, P, h, w)`` (stride 4 unless ``size``), and the image-level vectors ``(B, P)``.

        ``c_k = 1 - p_k(no object)`` when the generic outputs carry class ``logits`` and ``confidence``
        (Mask2Former's semantic inference weights masks by class probability the same way): without it,
        the ~2/3 of object queries that predict "no object" still spread their diffuse masks and
        off-target embeddings over every pixel, which blurs small objects into the table (measured in
        bench/results/field.md). ``c_k = 1`` otherwise.

        ``outputs`` must hold the "generic" task (object masks and embeddings) and the "retrieval"
        task (the image query trained against captions), e.g. ``tasks=["generic", "retrieval"]``.
        """
        missing = [t for t in ("generic", "retrieval") if t not in outputs]
        if missing:
            raise InputError(f"pixel_embeddings needs the {missing} outputs: run the interface with "
                             "tasks=['generic', 'retrieval']")
        generic = outputs["generic"]
        masks = generic["masks"]
        if size is not None:
            masks = F.interpolate(masks, size=size, mode="bilinear", align_corners=False)
        weights = masks.sigmoid()
        if confidence and generic.get("logits") is not None:
            objectness = 1.0 - generic["logits"].softmax(-1)[..., -1]  # (B, K)
            weights = weights * objectness[..., None, None]
        mixed = torch.einsum("bkhw,bkp->bphw", weights, generic["semantic"]["q.object"])
        mixed = mixed / weights.sum(1, keepdim=True).clamp(min=1e-6)
        return F.normalize(mixed, dim=1), outputs["retrieval"]["semantic"]["q.image"][:, 0]

    @staticmethod
    def panoptic(generic: Mapping[str, Any], isthing: Sequence[bool], size: tuple[int, int],
                 object_threshold: float, overlap_threshold: float
                 ) -> list[tuple[torch.Tensor, list[dict[str, Any]]]]:
        """Mask2Former panoptic inference per image: ``(segment ids (H, W) long, segments_info)``.

        Queries whose best class (excluding no-object) scores above ``object_threshold`` compete per
        pixel by score x mask probability; a query keeps its pixels only when they are at least
        ``overlap_threshold`` of its own mask; stuff segments of one class are merged. Id 0 = void.
        """
        results = []
        probs = generic["logits"].softmax(-1)
        masks = F.interpolate(generic["masks"], size=size, mode="bilinear", align_corners=False).sigmoid()
        for image_probs, image_masks in zip(probs, masks):
            scores, labels = image_probs[:, :-1].max(-1)
            keep = scores > object_threshold
            results.append(_merge_segments(scores[keep], labels[keep], image_masks[keep], isthing,
                                           overlap_threshold))
        return results


def _part_means(tokens: torch.Tensor, token_ids: Elements, count: int) -> torch.Tensor:
    """``(B, count, P)``: the normalised mean of the valid tokens ``(B, T, P)`` of each entity part
    ``0..count-1``; a part without tokens (padding) gives a zero vector."""
    member = (token_ids.part[:, :, None] == torch.arange(count, device=tokens.device)) & token_ids.valid[:, :, None]
    return F.normalize(torch.einsum("bte,btp->bep", member.to(tokens.dtype), tokens), dim=-1)


def _merge_segments(scores: torch.Tensor, labels: torch.Tensor, masks: torch.Tensor, isthing: Sequence[bool],
                    overlap_threshold: float) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    height, width = masks.shape[-2:]
    segments = torch.zeros(height, width, dtype=torch.long, device=masks.device)
    info: list[dict[str, Any]] = []
    if not len(scores):
        return segments, info
    owner = (scores[:, None, None] * masks).argmax(0)
    stuff_ids: dict[int, int] = {}
    for k in range(len(scores)):
        label = int(labels[k])
        own = masks[k] >= 0.5
        mask = (owner == k) & own
        area, original = int(mask.sum()), int(own.sum())
        if area == 0 or original == 0 or area / original < overlap_threshold:
            continue
        if not isthing[label] and label in stuff_ids:
            segments[mask] = stuff_ids[label]
            continue
        segment_id = len(info) + 1
        segments[mask] = segment_id
        info.append({"id": segment_id, "category_id": label, "isthing": bool(isthing[label]),
                     "score": float(scores[k]), "query": k})
        if not isthing[label]:
            stuff_ids[label] = segment_id
    return segments, info


def _validity(task: str, batch: FindBatch) -> torch.Tensor:
    """Which images (``(B,)``) or items (``(B, n)``) of ``task`` carry ground truth."""
    device = batch.images.device
    if task == "generic":
        return torch.tensor([t is not None for t in batch.panoptic], device=device)
    if task == "grounding":
        return batch.phrase_valid
    if task == "retrieval":
        return torch.tensor([c is not None for c in batch.captions], device=device)
    if task == "interactive":
        return batch.spatial_valid
    if task == "interleave_grounding":
        return batch.entity_valid
    return torch.tensor([bool(p) for p in batch.interleave], device=device)


class TextCache:
    """Frozen language tokens of strings, kept in memory (LRU) because class names repeat every batch."""

    def __init__(self, language: LanguageEncoder, capacity: int) -> None:
        self.language = language
        self.capacity = capacity
        self._store: OrderedDict[str, torch.Tensor] = OrderedDict()

    def __call__(self, strings: Sequence[str]) -> dict[str, torch.Tensor]:
        """``{string: (T_i, dim)}`` valid-token vectors; misses are encoded one by one."""
        missing = list(dict.fromkeys(s for s in strings if s not in self._store))
        # One string per call: padded batches change matmul shapes and so the last bits of the
        # result, and a string's tokens must not depend on what else was encoded with it (resumed
        # runs and single queries must see exactly the vectors training saw).
        with torch.no_grad():
            for text in missing:
                encoded = self.language([text])
                self._store[text] = encoded.tokens[0][encoded.mask[0]].detach()
        out = {}
        for text in strings:
            self._store.move_to_end(text)
            out[text] = self._store[text]
        while len(self._store) > max(self.capacity, len(out)):
            self._store.popitem(last=False)
        return out


class FindModel(nn.Module):
    """Frozen encoders beside a trainable ``FindInterface``: batch in, per-task outputs out.

    The encoders are attributes of this wrapper, not of ``interface``; optimise
    ``model.interface.parameters()`` (the encoders have ``requires_grad=False`` anyway).
    """

    def __init__(self, interface: FindInterface, vision: VisionEncoder, language: LanguageEncoder) -> None:
        super().__init__()
        self.interface = interface
        self.vision = vision.freeze()
        self.language = language.freeze()
        self.texts = TextCache(self.language, interface.config.text_cache_size)

    def encode(self, batch: FindBatch, pyramid: Mapping[int, torch.Tensor] | None = None
               ) -> tuple[Mapping[int, torch.Tensor], dict[str, torch.Tensor], Mapping[int, torch.Tensor] | None]:
        """Frozen features of the batch: vision pyramid (unless given, e.g. from a feature cache),
        language tokens of its strings, and the reference-image pyramid."""
        with torch.no_grad():
            if pyramid is None:
                pyramid = self.vision(batch.images)
            refs = batch.ref_pyramid
            if refs is None and len(batch.ref_images):
                refs = self.vision(batch.ref_images)
        return pyramid, self.texts(batch.strings()), refs

    def forward(self, batch: FindBatch, pyramid: Mapping[int, torch.Tensor] | None = None,
                tasks: Sequence[str] | None = None, with_aux: bool | None = None) -> Outputs:
        pyramid, texts, refs = self.encode(batch, pyramid)
        return self.interface(pyramid, texts, batch, refs, tasks=tasks, with_aux=with_aux)

    def encode_texts(self, strings: Sequence[str], kind: str = "class") -> torch.Tensor:
        """``(N, P)`` semantic embeddings of free-text queries (see ``FindInterface.encode_texts``)."""
        return self.interface.encode_texts(self.texts(list(strings)), strings, kind)
