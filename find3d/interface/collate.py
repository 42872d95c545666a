"""``list[Sample]`` -> one ``FindBatch`` that can train all six tasks jointly.

Every sample contributes to every task it has annotations for (segments -> generic, phrases ->
grounding, captions -> retrieval, spatial prompts -> interactive, interleave entries -> interleave
grounding, all of them, and interleave retrieval, the first); a task is in the batch when at least
one sample has it, and per-sample validity masks keep the others out of its losses. Images are
padded (bottom/right) to a common size; reference images of visual entities are resized to that
size so one vision-encoder call embeds them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields

import numpy as np
import torch
import torch.nn.functional as F

from find3d.data.samples import InterleaveEntry, Sample, SpatialKind, VisualRef
from find3d.encoders.base import VisionEncoder
from find3d.errors import DataError
from find3d.interface.spec import TASKS

SPATIAL_KINDS: tuple[SpatialKind, ...] = ("point", "box", "scribble", "polygon", "circle", "mask")

#: An interleave entry as ordered pieces: (text, part) or (reference-image index, part); part -1 = context
#: words, otherwise the entity's index among all entities of the image's entries (its row of ``entity_targets``).
Piece = tuple[str | int, int]


@dataclass
class PanopticTarget:
    """Ground-truth segments of one image."""

    labels: torch.Tensor  # (n,) long class index
    masks: torch.Tensor  # (n, H, W) bool
    isthing: torch.Tensor  # (n,) bool


@dataclass
class FindBatch:
    """Tensors for all tasks of a batch of ``B`` images (masks at the padded image size ``H, W``)."""

    keys: list[str]
    images: torch.Tensor  # (B, 3, H, W) float in [0, 1]
    class_texts: list[str]  # prompted class names, the vocabulary of the generic task
    panoptic: list[PanopticTarget | None]  # None: the image has no panoptic annotation
    phrases: list[list[str]]
    phrase_masks: torch.Tensor  # (B, P, H, W) bool
    phrase_valid: torch.Tensor  # (B, P) bool
    phrase_object: torch.Tensor  # (B, P) long, first phrase of the image with the identical mask (-1 = padding)
    captions: list[str | None]
    spatial_prompts: torch.Tensor  # (B, S, H, W) bool, rasterised prompts
    spatial_kinds: torch.Tensor  # (B, S) long index into SPATIAL_KINDS
    spatial_targets: torch.Tensor  # (B, S, H, W) bool
    spatial_valid: torch.Tensor  # (B, S) bool
    interleave: list[list[list[Piece]]]  # per image, its entries ([] where it has none)
    entity_targets: torch.Tensor  # (B, E, H, W) bool, one per entity of the image's entries (pieces' part index)
    entity_valid: torch.Tensor  # (B, E) bool
    entity_entry: torch.Tensor  # (B, E) long, the entry each entity belongs to (-1 = padding)
    entity_object: torch.Tensor  # (B, E) long, first entity of the image with the identical target (-1 = padding)
    ref_images: torch.Tensor  # (R, 3, H, W) float in [0, 1], each reference image once
    ref_masks: torch.Tensor  # (N, H, W) bool, one per visual entity (pieces' reference index)
    ref_image_index: torch.Tensor  # (N,) long, the row of ref_images each mask is drawn on
    ref_pyramid: dict[int, torch.Tensor] | None = field(default=None)  # vision features of ref_images

    @property
    def tasks(self) -> tuple[str, ...]:
        """Tasks with at least one annotated image, in spec order."""
        present = {
            "generic": any(t is not None for t in self.panoptic),
            "grounding": bool(self.phrase_valid.any()),
            "retrieval": any(c is not None for c in self.captions),
            "interactive": bool(self.spatial_valid.any()),
            "interleave_grounding": bool(self.entity_valid.any()),
            "interleave_retrieval": any(self.interleave),
        }
        return tuple(name for name, on in present.items() if on)

    def strings(self, tasks: Sequence[str] | None = None) -> list[str]:
        """Every string the language encoder must embed for ``tasks`` (default: all) of this batch
        (deduplicated, ordered)."""
        wanted = set(TASKS if tasks is None else tasks)
        # class names whenever generic runs: inference batches carry no annotations but still run it
        out: dict[str, None] = dict.fromkeys(self.class_texts if "generic" in wanted else ())
        if "grounding" in wanted:
            for phrases in self.phrases:
                out.update(dict.fromkeys(phrases))
        if "retrieval" in wanted:
            out.update(dict.fromkeys(c for c in self.captions if c is not None))
        if wanted & {"interleave_grounding", "interleave_retrieval"}:
            for entries in self.interleave:
                for pieces in entries:
                    out.update(dict.fromkeys(p for p, _ in pieces if isinstance(p, str)))
        return list(out)

    def to(self, device: torch.device | str) -> FindBatch:
        moved = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor):
                value = value.to(device)
            elif f.name == "panoptic":
                value = [None if t is None else PanopticTarget(t.labels.to(device), t.masks.to(device),
                                                               t.isthing.to(device)) for t in value]
            elif f.name == "ref_pyramid" and value is not None:
                value = {s: v.to(device) for s, v in value.items()}
            moved[f.name] = value
        return FindBatch(**moved)


def _pad_masks(per_sample: list[list[np.ndarray]], size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack ragged lists of ``(h, w)`` masks into ``(B, N, H, W)`` bool plus ``(B, N)`` validity."""
    count = max([len(m) for m in per_sample] + [0])
    out = torch.zeros(len(per_sample), count, *size, dtype=torch.bool)
    valid = torch.zeros(len(per_sample), count, dtype=torch.bool)
    for b, masks in enumerate(per_sample):
        for i, mask in enumerate(masks):
            out[b, i, : mask.shape[0], : mask.shape[1]] = torch.from_numpy(np.asarray(mask, dtype=bool))
            valid[b, i] = True
    return out, valid


def _object_ids(per_sample: list[list[np.ndarray]], count: int) -> torch.Tensor:
    """``(B, count)``: for each mask, the index of the first mask of its image that is identical (-1 =
    padding). Phrases or entities naming one object ("a brown mug ... the brown mug") share an id."""
    out = torch.full((len(per_sample), count), -1, dtype=torch.long)
    for b, masks in enumerate(per_sample):
        first: dict[bytes, int] = {}
        for i, mask in enumerate(masks):
            out[b, i] = first.setdefault(np.packbits(np.asarray(mask, dtype=bool)).tobytes(), i)
    return out


def _image_tensor(image: np.ndarray, size: tuple[int, int] | None = None) -> torch.Tensor:
    """``(h, w, 3)`` uint8 -> ``(3, H, W)`` float in [0, 1], zero-padded (or resized when ``size`` is given)."""
    # torch.tensor copies: images decoded by the loaders may be read-only numpy views.
    tensor = torch.tensor(image).permute(2, 0, 1).float() / 255.0
    if size is not None and tuple(tensor.shape[-2:]) != size:
        tensor = F.interpolate(tensor[None], size=size, mode="bilinear", align_corners=False)[0]
    return tensor


def _interleave_pieces(entry: InterleaveEntry, refs: list[VisualRef], first_part: int = 0
                       ) -> tuple[list[Piece], list[np.ndarray]]:
    """Split an entry into context / entity pieces, its entities numbered from ``first_part`` in span
    order; visual entities point into ``refs`` (appended to)."""
    pieces: list[Piece] = []
    targets = []
    cursor = 0
    for part, entity in enumerate(sorted(entry.entities, key=lambda e: e.span[0]), start=first_part):
        start, end = entity.span
        context = entry.sentence[cursor:start].strip()
        if context:
            pieces.append((context, -1))
        if entity.ref is None:
            pieces.append((entity.text, part))
        else:
            pieces.append((len(refs), part))
            refs.append(entity.ref)
        targets.append(entity.target)
        cursor = end
    tail = entry.sentence[cursor:].strip()
    if tail:
        pieces.append((tail, -1))
    return pieces, targets


def _sample_entries(sample: Sample, refs: list[VisualRef]) -> list[tuple[list[Piece], list[np.ndarray]]]:
    """Pieces and entity targets of each of the sample's entries, parts numbered across its entries."""
    out: list[tuple[list[Piece], list[np.ndarray]]] = []
    for entry in sample.interleave:
        out.append(_interleave_pieces(entry, refs, sum(len(masks) for _, masks in out)))
    return out


def _check_masks(sample: Sample) -> None:
    height, width = sample.image.shape[:2]
    masks = [s.mask for s in sample.segments] + [p.mask for p in sample.phrases]
    masks += [m for s in sample.spatial for m in (s.prompt, s.target)]
    masks += [e.target for entry in sample.interleave for e in entry.entities]
    for entry in sample.interleave:
        for entity in entry.entities:
            if entity.ref is not None and entity.ref.mask.shape != entity.ref.image.shape[:2]:
                raise DataError(f"sample {sample.key}: visual reference {entity.ref.source!r} has a mask of shape "
                                f"{entity.ref.mask.shape} for an image of shape {entity.ref.image.shape[:2]}; "
                                "the mapper must resize the reference mask with its image")
    for mask in masks:
        if mask.shape != (height, width):
            raise DataError(f"sample {sample.key}: a mask of shape {mask.shape} does not match its image "
                            f"({height}, {width}); the mapper must resize masks with the image")


def collate(
    samples: Sequence[Sample],
    class_names: Sequence[str],
    class_prompt: str = "a photo of a {}.",
    max_spatial: int = 32,
    vision: VisionEncoder | None = None,
) -> FindBatch:
    """Batch ``samples`` for joint multi-task training.

    Every interleave entry of a sample is kept (mappers pick and shuffle them; ``DataConfig.max_interleave``
    caps them): each trains interleave grounding, the first also interleave retrieval.
    Captions: the first one is paired with the image (mappers shuffle them per epoch).
    ``vision``: when given, reference images are embedded here (frozen, no grad) so the batch carries
    ``ref_pyramid``; otherwise the model wrapper embeds them.
    """
    if not samples:
        raise DataError("collate got no samples; check the dataset is not empty")
    for sample in samples:
        _check_masks(sample)
    size = (max(s.image.shape[0] for s in samples), max(s.image.shape[1] for s in samples))
    images = torch.zeros(len(samples), 3, *size)
    for b, sample in enumerate(samples):
        tensor = _image_tensor(sample.image)
        images[b, :, : tensor.shape[1], : tensor.shape[2]] = tensor

    panoptic: list[PanopticTarget | None] = []
    for sample in samples:
        if not sample.segments:
            panoptic.append(None)
            continue
        masks, _ = _pad_masks([[s.mask for s in sample.segments]], size)
        panoptic.append(PanopticTarget(
            labels=torch.tensor([s.category for s in sample.segments], dtype=torch.long),
            masks=masks[0],
            isthing=torch.tensor([s.isthing for s in sample.segments], dtype=torch.bool)))

    phrase_list = [[p.mask for p in s.phrases] for s in samples]
    phrase_masks, phrase_valid = _pad_masks(phrase_list, size)
    spatial = [s.spatial[:max_spatial] for s in samples]
    prompts, spatial_valid = _pad_masks([[p.prompt for p in sp] for sp in spatial], size)
    targets, _ = _pad_masks([[p.target for p in sp] for sp in spatial], size)
    kinds = torch.zeros(spatial_valid.shape, dtype=torch.long)
    for b, sp in enumerate(spatial):
        for i, prompt in enumerate(sp):
            kinds[b, i] = SPATIAL_KINDS.index(prompt.kind)

    refs: list[VisualRef] = []
    entries = [_sample_entries(sample, refs) for sample in samples]
    entity_list = [[m for _, masks in own for m in masks] for own in entries]
    entity_targets, entity_valid = _pad_masks(entity_list, size)
    entity_entry = torch.full(entity_valid.shape, -1, dtype=torch.long)
    for b, own in enumerate(entries):
        owners = [index for index, (_, masks) in enumerate(own) for _ in masks]
        entity_entry[b, : len(owners)] = torch.tensor(owners, dtype=torch.long)
    # Entities drawn on one image (its own, for shapes drawn on the segment) share its features.
    rows: dict[int, int] = {}
    ref_image_index = torch.tensor([rows.setdefault(id(r.image), len(rows)) for r in refs], dtype=torch.long)
    unique = {id(r.image): r.image for r in refs}
    ref_images = (torch.stack([_image_tensor(image, size) for image in unique.values()]) if refs
                  else torch.zeros(0, 3, *size))
    ref_masks = torch.zeros(len(refs), *size, dtype=torch.bool)
    for i, ref in enumerate(refs):
        mask = torch.from_numpy(np.asarray(ref.mask, dtype=np.float32))[None, None]
        ref_masks[i] = F.interpolate(mask, size=size, mode="nearest")[0, 0] > 0.5

    batch = FindBatch(
        keys=[s.key for s in samples], images=images,
        class_texts=[class_prompt.format(name) for name in class_names], panoptic=panoptic,
        phrases=[[p.text for p in s.phrases] for s in samples], phrase_masks=phrase_masks,
        phrase_valid=phrase_valid, phrase_object=_object_ids(phrase_list, phrase_valid.shape[1]),
        captions=[s.captions[0] if s.captions else None for s in samples],
        spatial_prompts=prompts, spatial_kinds=kinds, spatial_targets=targets, spatial_valid=spatial_valid,
        interleave=[[pieces for pieces, _ in own] for own in entries], entity_targets=entity_targets,
        entity_valid=entity_valid, entity_entry=entity_entry,
        entity_object=_object_ids(entity_list, entity_valid.shape[1]), ref_images=ref_images, ref_masks=ref_masks,
        ref_image_index=ref_image_index)
    if vision is not None and len(refs):
        with torch.no_grad():
            batch.ref_pyramid = vision(ref_images)
    return batch
