"""Configuration of the FIND interface: architecture, query pools and loss weights.

Defaults are sized for CPU training on ~256 px images. The paper's GPU/COCO setting is
``hidden_dim=512, num_layers=9, num_heads=8, ffn_dim=2048, projection_dim=512, num_queries=101``.
"""

from __future__ import annotations

from dataclasses import dataclass

from find3d.config import doc
from find3d.errors import ConfigError


@dataclass
class InterfaceConfig:
    """The FIND interface (sampler, layers, pixel decoder, heads) and its multi-task criterion."""

    hidden_dim: int = doc("Width of queries and prompt tokens inside the interface (paper: 512).", 256, minimum=1)
    num_layers: int = doc("Number of interface layers (paper: 9).", 6, minimum=1)
    num_heads: int = doc("Attention heads in content and condition attention (paper: 8).", 8, minimum=1)
    ffn_dim: int = doc("Hidden width of each layer's feed-forward network (paper: 2048).", 1024, minimum=1)
    dropout: float = doc("Dropout inside attention outputs and FFN (paper: 0.0).", 0.0, minimum=0, maximum=1)
    projection_dim: int = doc(
        "Width of the shared semantic space (semantic projection output; paper: 512).", 256, minimum=1)
    num_queries: int = doc(
        "Learnable queries: num_queries - 1 object queries plus 1 image-level query (paper: 101).", 51, minimum=2)
    feature_strides: tuple[int, ...] = doc(
        "Strides of the pixel-decoder levels the content attention reads, one level per layer round-robin, "
        "coarsest first as in Mask2Former (paper: 3 levels); a level may repeat.", (32, 16, 8))
    pixel_decoder_dim: int = doc(
        "Channels of the light FPN pixel decoder and of the per-pixel mask features at stride 4.", 64, minimum=1)
    max_spatial_prompts: int = doc(
        "Spatial memory size: interactive prompts kept per image (paper: 32).", 32, minimum=1)
    class_prompt: str = doc(
        "Template turning a class name into the text the language encoder embeds; '{}' is the name.",
        "a photo of a {}.")
    text_cache_size: int = doc(
        "Strings whose frozen language-encoder tokens are kept in memory (class names repeat every batch).",
        4096, minimum=0)
    # --- losses -------------------------------------------------------------------------------
    class_weight: float = doc("Weight of the matched class cross-entropy (panoptic).", 2.0)
    mask_weight: float = doc("Weight of the point-sampled mask BCE.", 5.0)
    dice_weight: float = doc("Weight of the dice loss.", 5.0)
    no_object_weight: float = doc("Cross-entropy weight of the no-object class for unmatched queries.", 0.1)
    retrieval_weight: float = doc("Weight of the image-caption contrastive loss.", 8.0)
    interleave_contrastive_weight: float = doc("Weight of the image-interleave contrastive loss.", 8.0)
    grounding_weight: float = doc("Multiplier of the grounding mask BCE + dice terms.", 0.4)
    spatial_weight: float = doc("Multiplier of the interactive (spatial) mask BCE + dice terms.", 0.4)
    interleave_weight: float = doc("Multiplier of the interleave-grounding mask BCE + dice terms.", 0.4)
    num_points: int = doc(
        "Points sampled per mask for the mask losses and matching costs (Mask2Former: 12544 at 1024 px).",
        4096, minimum=1)
    oversample_ratio: float = doc(
        "Candidate points per kept point for uncertainty-based point sampling.", 3.0, minimum=1)
    importance_ratio: float = doc(
        "Share of kept points chosen among the most uncertain candidates.", 0.75, minimum=0, maximum=1)
    temperature: float = doc("Initial temperature of the learnable contrastive / class logit scale.", 0.07, minimum=0)
    deep_supervision: bool = doc("Add the losses of every layer's (auxiliary) predictions.", True)
    # --- inference (not architecture: may change when a run is resumed) -----------------------
    object_threshold: float = doc(
        "Panoptic inference: least best-class probability for a query to become a segment (Mask2Former: 0.8). "
        "It reflects how calibrated the trained classifier is, so tune it per schedule.", 0.8, minimum=0, maximum=1)
    overlap_threshold: float = doc(
        "Panoptic inference: share of its own mask a query must keep after pixels go to the most confident "
        "query (Mask2Former: 0.8).", 0.8, minimum=0, maximum=1)

    def __post_init__(self) -> None:
        if self.hidden_dim % self.num_heads:
            divisors = [h for h in range(1, min(self.hidden_dim, 16) + 1) if self.hidden_dim % h == 0]
            raise ConfigError(f"num_heads {self.num_heads} does not divide hidden_dim {self.hidden_dim} (each "
                              f"head gets hidden_dim / num_heads channels); use num_heads in {divisors} or change "
                              "hidden_dim")
