"""Baselines FIND is compared with, measured on the same data as ``evaluate``.

1. Interleave retrieval by ensemble (the paper's protocol for ImageBind / BLIP-2): the entry's
   sentence (its text with the visual entities cut out) and each visual reference are embedded
   separately and their cosine scores against a candidate image are summed. The encoders are the
   SAME frozen ones FIND uses, with no interface: images and references are mean-pooled vision
   features (every pyramid level, pooled over the whole image or under the reference mask,
   concatenated), sentences mean-pooled language tokens. Two linear projections into a shared space
   are trained with symmetric InfoNCE on the train split's image-caption pairs (every caption; the
   reference side reuses the image projection, as an ensemble reuses its image tower).
2. Interleave grounding, SEEM-style: text entities go through the grounding task, visual entities
   through the interactive task, separately, with the same checkpoint. The reference is drawn in
   another image, so (as SEEM turns a visual prompt into an embedding) the interactive task's
   spatial tokens are built exactly as ``EmbeddingSampler._spatial_tokens`` builds them, but from the
   *reference image's* pixel-decoder memory pooled under the reference mask (kind "mask"); the
   interactive queries then attend the target image as usual.
3. Joint vs single-task training (``joint_vs_single``): the same interface trained with
   ``tasks=[generic, grounding]`` and with each task alone, then evaluated on the tasks it learned.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from find3d.data.dataset import FindDataset
from find3d.data.samples import Phrase, Sample, SpatialPrompt, VisualRef
from find3d.evaluation.grounding import GroundingEvaluator
from find3d.evaluation.report import EvalReport
from find3d.evaluation.retrieval import InterleaveRetrievalEvaluator
from find3d.evaluation.run_eval import entity_targets, entry_samples, eval_dataset, evaluate, reference_keys

if TYPE_CHECKING:
    import torch

    from find3d.evaluation.predictors import ModelPredictor
    from find3d.interface.api import LoadedInterface
    from find3d.interface.model import FindModel
    from find3d.train.config import TrainInterfaceConfig


# ------------------------------------------------------------------------- 1. ensemble retrieval


def _pooled_vision(model: FindModel, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """``(B, sum C)``: every frozen pyramid level mean-pooled under ``masks`` ``(B, H, W)``, concatenated."""
    import torch

    from find3d.interface.pixel_decoder import pool_levels

    with torch.no_grad():
        pyramid = model.vision(images)
        # Max-pool the mask so a thin reference stroke still selects its cells.
        levels = list(pyramid.values())
        cells = pool_levels(masks[:, None].float(), [level.shape[-2:] for level in levels], "max")
        pooled = [(level * cell).sum((-2, -1)) / cell.sum((-2, -1)).clamp(min=1.0)
                  for level, cell in zip(levels, cells)]
        return torch.cat(pooled, dim=1)


def _pooled_text(model: FindModel, texts: Sequence[str]) -> torch.Tensor:
    import torch

    with torch.no_grad():
        encoded = model.language(list(texts))
        weights = encoded.mask.float()[..., None]
        return (encoded.tokens * weights).sum(1) / weights.sum(1).clamp(min=1.0)


def _image_tensor(image: np.ndarray, size: int) -> torch.Tensor:
    import cv2
    import torch

    resized = cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)
    return torch.from_numpy(resized).permute(2, 0, 1).float() / 255.0


def _mask_tensor(mask: np.ndarray, size: int) -> torch.Tensor:
    import cv2
    import torch

    return torch.from_numpy(cv2.resize(mask.astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST) > 0)


def _image_features(model: FindModel, samples: Sequence[Sample]) -> torch.Tensor:
    import torch

    images = torch.stack([_image_tensor(s.image, s.image.shape[0]) for s in samples])
    return _pooled_vision(model, images, torch.ones(images.shape[0], *images.shape[-2:], dtype=torch.bool))


def _reference_features(model: FindModel, refs: Sequence[VisualRef], size: int) -> torch.Tensor:
    import torch

    images = torch.stack([_image_tensor(r.image, size) for r in refs])
    return _pooled_vision(model, images, torch.stack([_mask_tensor(r.mask, size) for r in refs]))


def train_projections(model: FindModel, dataset: FindDataset, dim: int = 128, steps: int = 300,
                      max_images: int | None = 512, seed: int = 0) -> tuple[torch.nn.Linear, torch.nn.Linear]:
    """(image projection, text projection) trained with InfoNCE on the split's image-caption pairs."""
    import torch
    import torch.nn.functional as F

    generator = torch.Generator().manual_seed(seed)
    images, texts, owners = [], [], []
    for index in range(min(len(dataset), max_images or len(dataset))):
        sample = dataset[index]
        if sample.captions:
            images.append(_image_features(model, [sample])[0])
            texts.extend(sample.captions)
            owners.extend([len(images) - 1] * len(sample.captions))
    if not images:
        from find3d.errors import DataError

        raise DataError(f"{dataset.root} split '{dataset.split}' has no captions to train the ensemble baseline on; "
                        "give a dataset with a captioned train split.")
    image_feats, text_feats = torch.stack(images), _pooled_text(model, texts)
    owner = torch.tensor(owners)
    torch.manual_seed(seed)
    image_proj = torch.nn.Linear(image_feats.shape[1], dim)
    text_proj = torch.nn.Linear(text_feats.shape[1], dim)
    # Standardise the frozen features: pooled activations have very different scales per channel.
    image_norm = torch.nn.LayerNorm(image_feats.shape[1], elementwise_affine=False)
    text_norm = torch.nn.LayerNorm(text_feats.shape[1], elementwise_affine=False)
    image_feats, text_feats = image_norm(image_feats), text_norm(text_feats)
    optimizer = torch.optim.Adam([*image_proj.parameters(), *text_proj.parameters()], lr=1e-3)
    batch = min(64, len(texts))
    for _ in range(steps):
        pick = torch.randperm(len(texts), generator=generator)[:batch]
        captions = F.normalize(text_proj(text_feats[pick]), dim=-1)
        # Each caption's own image is its positive; the other captions' images are negatives.
        own_images, target = torch.unique(owner[pick], return_inverse=True)
        pictures = F.normalize(image_proj(image_feats[own_images]), dim=-1)
        logits = captions @ pictures.T / 0.07
        loss = F.cross_entropy(logits, target)
        loss = loss + F.cross_entropy(logits.T, _first_caption(target, len(own_images)))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return (torch.nn.Sequential(image_norm, image_proj).eval(), torch.nn.Sequential(text_norm, text_proj).eval())


def _first_caption(target: torch.Tensor, images: int) -> torch.Tensor:
    """For image -> caption CE: each image's positive is its first caption in the batch."""
    import torch

    first = torch.full((images,), -1, dtype=torch.long)
    for row in range(len(target) - 1, -1, -1):
        first[target[row]] = row
    return first


def sentence_text(sample: Sample) -> str:
    """The entry's words with its visual entities cut out (what a text tower of an ensemble reads)."""
    return " ".join(p.strip() for p in sample.interleave[0].parts() if isinstance(p, str)).strip()


def ensemble_interleave_retrieval(loaded: LoadedInterface, data: str | os.PathLike, split: str = "val",
                                  train_split: str = "train", max_images: int | None = None,
                                  steps: int = 300) -> dict[str, float]:
    """IR@5 / IR@10 of the ensemble baseline on ``split`` (same exclusions as ``evaluate``)."""
    import torch
    import torch.nn.functional as F

    size = loaded.config.dataset.image_size
    model = loaded.model
    image_proj, text_proj = train_projections(model, eval_dataset(data, train_split, size, None), steps=steps)
    dataset = eval_dataset(data, split, size, None)
    key_of_image = {r.image_id: r.key for r in dataset.records}
    evaluator = InterleaveRetrievalEvaluator()
    with torch.no_grad():
        for index in range(min(len(dataset), max_images or len(dataset))):
            sample = dataset[index]
            image = F.normalize(image_proj(_image_features(model, [sample])), dim=-1)
            queries = []
            for entry in entry_samples(sample):
                query = F.normalize(text_proj(_pooled_text(model, [sentence_text(entry) or "."])), dim=-1)[0]
                refs = [e.ref for e in entry.interleave[0].entities if e.ref is not None]
                if refs:
                    query = query + F.normalize(image_proj(_reference_features(model, refs, size)), dim=-1).sum(0)
                queries.append(query)
            entries = entry_samples(sample)
            evaluator.update([sample.key], image.numpy(),
                             torch.stack(queries).numpy() if queries else np.zeros((0, image.shape[1])),
                             [e.key for e in entries], [reference_keys(e, key_of_image) for e in entries])
    return evaluator.compute()


# ------------------------------------------------------------------ 2. SEEM-style interleave grounding


def _visual_entity_masks(loaded: LoadedInterface, sample: Sample, refs: Sequence[VisualRef]) -> np.ndarray:
    """Interactive task on ``sample``'s image with spatial tokens pooled from each reference image."""
    import torch
    import torch.nn.functional as F

    from find3d.interface.collate import SPATIAL_KINDS, collate
    from find3d.interface.sampler import pool_under_masks
    from find3d.interface.spec import INTERACTIVE, TYPE_INDEX

    model, interface = loaded.model, loaded.model.interface
    size = sample.image.shape[0]
    # The prompts only size the block (one query pair per entity); its tokens are replaced below.
    placeholder = [SpatialPrompt("mask", np.ones(sample.image.shape[:2], bool), e) for e in
                   [np.zeros(sample.image.shape[:2], bool)] * len(refs)]
    batch = collate([replace(sample, spatial=placeholder, interleave=[])], [], max_spatial=len(refs))
    with torch.no_grad():
        pixels = interface.pixel_decoder(dict(model.vision(batch.images)))
        ref_images = torch.stack([_image_tensor(r.image, size) for r in refs])
        ref_pixels = interface.pixel_decoder(dict(model.vision(ref_images)))
        ref_masks = torch.stack([_mask_tensor(r.mask, size) for r in refs])[:, None]
        pooled = interface.sampler.visual_proj(pool_under_masks(ref_pixels.memory, ref_masks))  # (R, 1, L, D)
        pooled = pooled.transpose(0, 1)  # one image, R prompts
        kind = torch.full((1, len(refs)), SPATIAL_KINDS.index("mask"))
        pooled = pooled + interface.sampler.kind_embed(kind)[:, :, None]
        block = interface.sampler.build("interactive", 0, batch, pixels, None, {})
        block.tokens = pooled.flatten(1, 2) + interface.sampler.type_embed.weight[TYPE_INDEX["p.spatial"]]
        logits = interface._run([block], [INTERACTIVE], pixels, every_step=False)[-1].masks[:, : len(refs)]
        probs = F.interpolate(logits, size=batch.images.shape[-2:], mode="bilinear", align_corners=False).sigmoid()
    return (probs[0] > 0.5).numpy()


def seem_entry_masks(loaded: LoadedInterface, predictor: ModelPredictor, entry: Sample) -> np.ndarray:
    """SEEM-style masks of a one-entry sample's entities (span order): text entities grounded together
    as phrases, visual ones segmented together as interactive prompts pooled from their references."""
    entities = sorted(entry.interleave[0].entities, key=lambda e: e.span[0])
    masks = np.zeros(entity_targets(entry).shape, dtype=bool)
    texts = [i for i, e in enumerate(entities) if e.ref is None]
    visuals = [i for i, e in enumerate(entities) if e.ref is not None]
    if texts:
        phrases = [Phrase(entities[i].text, entities[i].target) for i in texts]
        masks[texts] = predictor.grounding([replace(entry, phrases=phrases, interleave=[])])[0]
    if visuals:
        masks[visuals] = _visual_entity_masks(loaded, entry, [entities[i].ref for i in visuals])
    return masks


def seem_interleave_grounding(loaded: LoadedInterface, data: str | os.PathLike, split: str = "val",
                              max_images: int | None = None) -> dict[str, float]:
    """cIoU / mIoU / AP50 of the SEEM-style protocol on every interleave entry of ``split``."""
    from find3d.evaluation.predictors import ModelPredictor

    dataset = eval_dataset(data, split, loaded.config.dataset.image_size, None)
    predictor = ModelPredictor(loaded, dataset.isthing)
    evaluator = GroundingEvaluator()
    for index in range(min(len(dataset), max_images or len(dataset))):
        for entry in entry_samples(dataset[index]):
            evaluator.update(seem_entry_masks(loaded, predictor, entry), entity_targets(entry))
    metrics = evaluator.compute()
    return {"cIoU": metrics["cIoU"], "mIoU": metrics["mIoU"], "AP50": metrics["precision@0.5"]}


# ------------------------------------------------------------------------- 3. joint vs single task

VARIANTS: dict[str, list[str]] = {
    "joint (generic+grounding)": ["generic", "grounding"],
    "generic only": ["generic"],
    "grounding only": ["grounding"],
}


def joint_vs_single(config: TrainInterfaceConfig, output_dir: str | os.PathLike, max_images: int | None = None
                    ) -> dict[str, EvalReport]:
    """Train ``config`` once per ``VARIANTS`` entry (only ``tasks`` and the run folder differ) and
    evaluate each variant on the tasks it trained, on ``config.val_split``."""
    from find3d.train.loop import train_interface

    reports = {}
    for index, (name, tasks) in enumerate(VARIANTS.items()):
        variant = replace(config, tasks=list(tasks), output_dir=Path(output_dir) / f"variant{index}")
        run = train_interface(variant)
        reports[name] = evaluate(run, variant.data, split=variant.val_split or "val", tasks=tasks,
                                 max_images=max_images, figures=0)
    return reports
