"""What the evaluator asks of a model, and the FIND model's answers (batch level, through ``collate``).

``evaluate`` talks to a ``Predictor`` only, so the metric plumbing (ground truth extraction, canvas
geometry, click simulation, retrieval bookkeeping) can be checked with a predictor that answers with
the ground truth. ``ModelPredictor`` drives a trained ``FindModel`` through exactly the data path
training uses (``Sample`` -> ``collate`` -> ``FindBatch`` -> one forward per task), in eval mode.

Inference follows Mask2Former / X-Decoder: panoptic by ``FindInterface.panoptic``; semantic as the
argmax of ``sum_q softmax(class_q) * sigmoid(mask_q)``; instance as the top-``Q`` (query, thing
class) pairs scored ``class prob x mean mask prob inside the mask``; grounding, interactive and
interleave masks are ``sigmoid > 0.5`` of the task's pixel queries.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

from find3d.data.samples import Sample, SpatialPrompt
from find3d.evaluation.panoptic import SegmentInfo

if TYPE_CHECKING:
    import torch

    from find3d.interface.api import LoadedInterface
    from find3d.interface.collate import FindBatch


@dataclass
class GenericPrediction:
    """One image's panoptic, semantic and instance predictions at the sample's canvas size."""

    ids: np.ndarray  # (H, W) int64 segment ids, 0 = void
    segments: list[SegmentInfo]
    semantic: np.ndarray  # (H, W) int64 class index
    instance_masks: np.ndarray  # (M, H, W) bool
    instance_scores: np.ndarray  # (M,) float
    instance_categories: np.ndarray  # (M,) int class index (things only)


class Predictor(Protocol):
    """Batch-level answers for every task; masks are ``(N, H, W)`` bool at each sample's image size."""

    def generic(self, samples: Sequence[Sample], class_texts: Sequence[str]) -> list[GenericPrediction]:
        """Panoptic / semantic / instance output with ``class_texts`` (prompts, one per class) as vocabulary."""
        ...

    def grounding(self, samples: Sequence[Sample]) -> list[np.ndarray]:
        """One mask per ``sample.phrases`` entry."""
        ...

    def embed_images(self, samples: Sequence[Sample]) -> np.ndarray:
        """``(B, D)`` image vectors of the image-text retrieval task."""
        ...

    def embed_captions(self, captions: Sequence[str]) -> np.ndarray:
        """``(C, D)`` caption vectors of the image-text retrieval task."""
        ...

    def interactive(self, sample: Sample, prompts: Sequence[SpatialPrompt]) -> np.ndarray:
        """One mask per prompt (rasterised clicks); ``prompt.target`` is ground truth: never read it."""
        ...

    def interleave_grounding(self, samples: Sequence[Sample]) -> list[np.ndarray]:
        """Samples carry exactly one interleave entry: one mask per entity, in span order."""
        ...

    def interleave_retrieval(self, samples: Sequence[Sample]) -> tuple[np.ndarray, np.ndarray]:
        """``(B, D)`` image vectors and ``(B, D)`` vectors of each sample's first (at most one) interleave
        entry; rows of samples without an entry are ignored."""
        ...


def _crop(masks: torch.Tensor, sample: Sample) -> np.ndarray:
    """``(n, H, W)`` probabilities on the padded batch canvas -> this sample's boolean masks."""
    height, width = sample.image.shape[:2]
    return (masks[:, :height, :width] > 0.5).cpu().numpy()


class ModelPredictor:
    """A trained FIND model as a ``Predictor`` (CPU or GPU, eval mode, no gradients).

    ``isthing`` describes the evaluated dataset's classes (the vocabulary that is prompted), which
    need not be the vocabulary the model was trained on.
    """

    def __init__(self, loaded: LoadedInterface, isthing: Sequence[bool], object_threshold: float | None = None,
                 overlap_threshold: float | None = None) -> None:
        self.model = loaded.model.eval()
        self.isthing = [bool(t) for t in isthing]
        self.config = loaded.config
        # Panoptic thresholds: the checkpoint's config unless overridden (``find3d eval --object-threshold``).
        interface = loaded.config.interface
        self.thresholds = (interface.object_threshold if object_threshold is None else object_threshold,
                           interface.overlap_threshold if overlap_threshold is None else overlap_threshold)
        self.device = next(self.model.interface.parameters()).device
        self._pyramid: tuple[str, dict[int, torch.Tensor]] | None = None  # interactive rounds reuse one image

    # --- plumbing ------------------------------------------------------------------------------
    def _batch(self, samples: Sequence[Sample], class_texts: Sequence[str] = ()) -> FindBatch:
        from find3d.interface.collate import collate

        # Classes are given as full prompts here, so the template is the identity.
        batch = collate(samples, list(class_texts), "{}", self.config.interface.max_spatial_prompts,
                        vision=self.model.vision if any(s.interleave for s in samples) else None)
        return batch.to(self.device)

    def _run(self, batch: FindBatch, task: str, pyramid: dict[int, torch.Tensor] | None = None) -> dict:
        import torch

        with torch.no_grad():
            return self.model(batch, pyramid=pyramid, tasks=[task], with_aux=False)[task]

    def _masks(self, output: dict, batch: FindBatch) -> torch.Tensor:
        from find3d.interface.model import FindInterface

        return FindInterface.mask_probabilities(output, tuple(batch.images.shape[-2:]))

    # --- tasks ---------------------------------------------------------------------------------
    def generic(self, samples: Sequence[Sample], class_texts: Sequence[str]) -> list[GenericPrediction]:
        from find3d.interface.model import FindInterface

        batch = self._batch(samples, class_texts)
        output = self._run(batch, "generic")
        size = tuple(batch.images.shape[-2:])
        panoptic = FindInterface.panoptic(output, self.isthing, size, *self.thresholds)
        probs = output["logits"].softmax(-1)[..., :-1]
        masks = self._masks(output, batch)
        out = []
        for b, sample in enumerate(samples):
            height, width = sample.image.shape[:2]
            ids, info = panoptic[b]
            segments = [SegmentInfo(s["id"], s["category_id"]) for s in info]
            semantic = probs[b].T @ masks[b].flatten(1)  # (K, H*W): class-weighted mask mixture
            semantic = semantic.argmax(0).reshape(size)[:height, :width]
            inst = _instances(probs[b], masks[b], self.isthing)
            out.append(GenericPrediction(ids[:height, :width].cpu().numpy(), segments, semantic.cpu().numpy(),
                                         _crop(inst[0], sample), inst[1].cpu().numpy(), inst[2].cpu().numpy()))
        return out

    def grounding(self, samples: Sequence[Sample]) -> list[np.ndarray]:
        batch = self._batch(samples)
        masks = self._masks(self._run(batch, "grounding"), batch)
        return [_crop(masks[b, : len(s.phrases)], s) for b, s in enumerate(samples)]

    def embed_images(self, samples: Sequence[Sample]) -> np.ndarray:
        # Image vectors never see a caption (spec), so captions are dropped from the batch.
        batch = self._batch([_without_text(s) for s in samples])
        return self._run(batch, "retrieval")["semantic"]["q.image"][:, 0].cpu().numpy()

    def embed_captions(self, captions: Sequence[str]) -> np.ndarray:
        import torch

        with torch.no_grad():
            return self.model.encode_texts(list(captions), kind="caption").cpu().numpy()

    def interactive(self, sample: Sample, prompts: Sequence[SpatialPrompt]) -> np.ndarray:
        from dataclasses import replace

        import torch

        # The spatial memory holds max_spatial_prompts prompts: larger sets go in chunks.
        chunk = self.config.interface.max_spatial_prompts
        out = []
        for start in range(0, len(prompts), chunk):
            part = list(prompts[start: start + chunk])
            batch = self._batch([replace(sample, spatial=part)])
            if self._pyramid is None or self._pyramid[0] != sample.key:
                with torch.no_grad():
                    self._pyramid = (sample.key, self.model.vision(batch.images))
            masks = self._masks(self._run(batch, "interactive", self._pyramid[1]), batch)
            out.append(_crop(masks[0, : len(part)], sample))
        return np.concatenate(out)

    def interleave_grounding(self, samples: Sequence[Sample]) -> list[np.ndarray]:
        batch = self._batch(samples)
        masks = self._masks(self._run(batch, "interleave_grounding"), batch)
        return [_crop(masks[b, : len(s.interleave[0].entities)], s) for b, s in enumerate(samples)]

    def interleave_retrieval(self, samples: Sequence[Sample]) -> tuple[np.ndarray, np.ndarray]:
        semantic = self._run(self._batch(samples), "interleave_retrieval")["semantic"]
        return semantic["q.image"][:, 0].cpu().numpy(), semantic["q.interleave"][:, 0].cpu().numpy()


def _without_text(sample: Sample) -> Sample:
    from dataclasses import replace

    return replace(sample, captions=[], phrases=[], spatial=[], interleave=[])


def _instances(probs: torch.Tensor, masks: torch.Tensor, isthing: Sequence[bool]
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mask2Former instance inference for one image: top-``Q`` (query, thing class) pairs.

    ``probs`` ``(Q, K)`` class probabilities without no-object, ``masks`` ``(Q, H, W)`` probabilities.
    Returns masks ``(M, H, W)`` probabilities, scores ``(M,)`` and class indices ``(M,)``.
    """
    import torch

    things = torch.tensor(isthing, device=probs.device)
    scores = probs.masked_fill(~things[None], 0.0).flatten()
    top = scores.topk(min(len(probs), len(scores)))
    query, label = top.indices // probs.shape[1], top.indices % probs.shape[1]
    keep = top.values > 0
    query, label, class_score = query[keep], label[keep], top.values[keep]
    chosen = masks[query]
    binary = (chosen > 0.5).float()
    # Mask score: mean probability inside the predicted mask, so confident masks rank first.
    mask_score = (chosen * binary).flatten(1).sum(1) / binary.flatten(1).sum(1).clamp(min=1e-6)
    return chosen, class_score * mask_score, label
