"""The ``find-field`` model: an RGB/density radiance field with a feature head that renders E(x).

Design (pure torch so that it trains on a CPU; the fast CUDA pieces are used when present):

- Encoding: a multi-resolution tri-plane grid (K-planes style: bilinear ``grid_sample`` on the xy,
  xz, yz planes, multiplied) — all standard torch ops, several times cheaper on a CPU than nerfstudio's
  torch hash grid.
  With CUDA and tiny-cuda-nn importable, ``encoding="auto"`` picks nerfstudio's tcnn hash grid.
- Geometry: encoding → MLP → density (trunc-exp) + a geometry code; colour: code + SH(view dir) → MLP.
- Features: a *separate*, coarser tri-plane + MLP → D channels. Object embeddings vary slowly in
  space and the 2D embeddings are blurry at object borders, so a coarse grid suffices and keeps them
  from disturbing the colour/geometry grid.
- Sampling: uniform samples inside the scene box (AABB collider), then importance (PDF) samples
  drawn from the same field's densities at those samples (queried without gradient: no proposal
  network, and nothing CUDA-only such as nerfacc's occupancy grid); both sets are rendered.
- Rendering: rgb = Σ wᵢ cᵢ (+ a random background colour in training, which forces rays that see
  something to turn opaque inside the box), depth = expected depth, feature = Σ wᵢ fᵢ.
- Loss: MSE(rgb) + λ·(1 − cos(feature, target)), λ = ``feature_loss_weight`` (default 0.5). The cosine
  loss matches how features are used (relevancy is computed on unit vectors) and ignores the scale of
  the mask-weighted mixture E(x). The rendering weights are detached for the feature head by default
  (``feature_shapes_density=False``, as LERF does): view-inconsistent 2D embeddings would otherwise
  pull density into floaters, and geometry is better learned from colour. Because the feature head
  then has its own parameters and Adam is scale-invariant, λ only matters when features may shape
  density.
"""

from __future__ import annotations

import importlib.util
import itertools
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from nerfstudio.cameras.rays import RayBundle, RaySamples
from nerfstudio.data.scene_box import SceneBox
from nerfstudio.field_components.activations import trunc_exp
from nerfstudio.field_components.encodings import HashEncoding, SHEncoding
from nerfstudio.model_components.ray_samplers import PDFSampler, UniformSampler
from nerfstudio.model_components.renderers import AccumulationRenderer, DepthRenderer, RGBRenderer
from nerfstudio.model_components.scene_colliders import AABBBoxCollider
from nerfstudio.models.base_model import Model, ModelConfig
from nerfstudio.utils import colormaps
from torch import nn
from torch.nn import Parameter

from find3d.errors import DataError


class TriPlaneEncoding(nn.Module):
    """Multi-resolution tri-plane features of positions in [0, 1]^3 (planes multiplied per level)."""

    def __init__(self, resolutions: tuple[int, ...], channels: int) -> None:
        super().__init__()
        # 4 channels per plane: CPU grid_sample is several times slower at 8. Products of three
        # planes initialised near 1 start as a smooth, non-vanishing field (K-planes).
        self.planes = nn.ParameterList(
            nn.Parameter(torch.empty(3, channels, r, r).uniform_(0.1, 0.5)) for r in resolutions
        )
        self.out_dim = channels * len(resolutions)

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        grid = positions.reshape(-1, 3) * 2.0 - 1.0
        coords = torch.stack([grid[:, [0, 1]], grid[:, [0, 2]], grid[:, [1, 2]]]).unsqueeze(2)  # (3, n, 1, 2)
        levels = [
            F.grid_sample(planes, coords, mode="bilinear", align_corners=True).squeeze(-1).prod(dim=0)  # (C, n)
            for planes in self.planes
        ]
        return torch.cat(levels, dim=0).T.reshape(*positions.shape[:-1], self.out_dim)


def _mlp(in_dim: int, hidden: int, out_dim: int, layers: int = 2) -> nn.Sequential:
    dims = [in_dim] + [hidden] * (layers - 1)
    blocks: list[nn.Module] = []
    for a, b in itertools.pairwise(dims):
        blocks += [nn.Linear(a, b), nn.ReLU(inplace=True)]
    return nn.Sequential(*blocks, nn.Linear(dims[-1], out_dim))


def use_tcnn(choice: str) -> bool:
    """Whether the tiny-cuda-nn hash grid should be used (only on CUDA with tinycudann installed)."""
    if choice == "triplane":
        return False
    available = torch.cuda.is_available() and importlib.util.find_spec("tinycudann") is not None
    return available if choice == "auto" else True


class FindField(nn.Module):
    """Density, colour and D-dimensional semantic features at 3D positions inside ``aabb``."""

    def __init__(self, aabb: torch.Tensor, feature_dim: int, encoding: str = "auto", geo_dim: int = 15,
                 hidden: int = 64, sh_levels: int = 2) -> None:
        super().__init__()
        self.register_buffer("aabb", aabb.clone().float())
        self.encoding: nn.Module
        if use_tcnn(encoding):
            impl = "tcnn" if torch.cuda.is_available() else "torch"
            self.encoding = HashEncoding(num_levels=16, log2_hashmap_size=19, implementation=impl)
            enc_dim = self.encoding.get_out_dim()
        else:
            self.encoding = TriPlaneEncoding((16, 32, 64, 128), channels=4)
            enc_dim = self.encoding.out_dim
        self.feature_encoding = TriPlaneEncoding((16, 32, 64), channels=4)
        self.direction_encoding = SHEncoding(levels=sh_levels)
        self.geo_dim = geo_dim
        self.density_mlp = _mlp(enc_dim, hidden, 1 + geo_dim)
        self.color_mlp = _mlp(geo_dim + self.direction_encoding.get_out_dim(), hidden, 3)
        self.feature_mlp = _mlp(self.feature_encoding.out_dim, 128, feature_dim)

    def _normalized(self, positions: torch.Tensor) -> torch.Tensor:
        return SceneBox.get_normalized_positions(positions, self.aabb).clamp(0.0, 1.0)

    def density(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(density (..., 1), geometry code (..., geo_dim)); zero density outside the box."""
        unit = self._normalized(positions)
        out = self.density_mlp(self.encoding(unit.reshape(-1, 3)).float()).reshape(*positions.shape[:-1], -1)
        inside = ((positions >= self.aabb[0]) & (positions <= self.aabb[1])).all(dim=-1, keepdim=True)
        # Shifted trunc-exp: a freshly initialised field is nearly transparent, not a fog.
        density = trunc_exp(out[..., :1] - 1.0) * inside
        return density, out[..., 1:]

    def forward(self, ray_samples: RaySamples) -> dict[str, torch.Tensor]:
        positions = ray_samples.frustums.get_positions()
        density, geo = self.density(positions)
        directions = self.direction_encoding(ray_samples.frustums.directions)  # torch SH takes unit vectors
        rgb = torch.sigmoid(self.color_mlp(torch.cat([geo, directions], dim=-1)))
        feature = self.feature_mlp(self.feature_encoding(self._normalized(positions)))
        return {"density": density, "rgb": rgb, "feature": feature}


@dataclass
class FindFieldModelConfig(ModelConfig):
    _target: type = field(default_factory=lambda: FindFieldModel)
    enable_collider: bool = False
    """Rays are clipped to the scene box by the model's own AABB collider instead."""
    near_plane: float = 0.05
    """Closest distance (scene units after nerfstudio's rescaling) a sample may lie from the camera."""
    num_coarse_samples: int = 32
    """Uniform samples per ray inside the scene box."""
    num_importance_samples: int = 16
    """Extra samples per ray drawn from the coarse densities (0: uniform sampling only)."""
    encoding: Literal["auto", "triplane", "hash"] = "auto"
    """auto: tiny-cuda-nn hash grid on CUDA when installed, else the pure-torch tri-plane grid."""
    feature_dim: int | None = None
    """Semantic dimension D; None takes it from the embeddings store (a different value is an error)."""
    feature_loss_weight: float = 0.5
    """λ in loss = MSE(rgb) + λ·(1 − cos(rendered feature, target embedding))."""
    feature_shapes_density: bool = False
    """Let the feature loss move density (off: rendering weights are detached for the feature head)."""
    sh_levels: int = 2
    """Spherical-harmonic levels of the view-dependent colour (1: Lambertian). Kept low: with few views,
    strong view dependence lets a floater in front of each camera paint that camera's image."""
    background_color: Literal["random", "last_sample", "black", "white"] = "random"
    """Colour behind the scene box. random (black at eval) makes every seen pixel opaque inside the box;
    last_sample lets the field explain pixels with a transparent scene and its last sample's colour."""


class FindFieldModel(Model):
    """RGB + density + feature field rendered along rays (see the module docstring)."""

    config: FindFieldModelConfig

    def populate_modules(self) -> None:
        super().populate_modules()
        metadata: dict[str, Any] = self.kwargs.get("metadata") or {}
        store_dim = metadata.get("feature_dim")
        dim = self.config.feature_dim or store_dim
        if dim is None:
            raise DataError("find-field: no feature dimension; train on a scene with an embeddings store.")
        if store_dim is not None and dim != store_dim:
            raise DataError(f"find-field: --pipeline.model.feature-dim {dim} but the embeddings store holds "
                            f"D={store_dim}; drop the option or re-run `find3d embed-frames`.")
        self.feature_dim = int(dim)
        self.field = FindField(self.scene_box.aabb, self.feature_dim, self.config.encoding,
                               sh_levels=self.config.sh_levels)
        self.collider = AABBBoxCollider(self.scene_box, near_plane=self.config.near_plane)
        self.uniform_sampler = UniformSampler(num_samples=self.config.num_coarse_samples)
        self.pdf_sampler = PDFSampler(num_samples=self.config.num_importance_samples, include_original=True)
        self.renderer_rgb = RGBRenderer(background_color=self.config.background_color)
        self.renderer_depth = DepthRenderer(method="expected")
        self.renderer_accumulation = AccumulationRenderer()

    def get_param_groups(self) -> dict[str, list[Parameter]]:
        return {"fields": list(self.field.parameters())}

    def _samples(self, ray_bundle: RayBundle) -> RaySamples:
        samples = self.uniform_sampler(ray_bundle)
        if self.config.num_importance_samples <= 0:
            return samples
        with torch.no_grad():
            density, _ = self.field.density(samples.frustums.get_positions())
            weights = samples.get_weights(density)
        return self.pdf_sampler(ray_bundle, samples, weights)

    def get_outputs(self, ray_bundle: RayBundle) -> dict[str, torch.Tensor]:  # type: ignore[override]
        samples = self._samples(ray_bundle)
        field_out = self.field(samples)
        weights = samples.get_weights(field_out["density"])
        feature_weights = weights if self.config.feature_shapes_density else weights.detach()
        return {
            "rgb": self.renderer_rgb(rgb=field_out["rgb"], weights=weights),
            "depth": self.renderer_depth(weights=weights, ray_samples=samples),
            "accumulation": self.renderer_accumulation(weights=weights),
            "feature": torch.sum(feature_weights * field_out["feature"], dim=-2),
        }

    def _rgb_pair(self, outputs: dict[str, torch.Tensor], batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        image = batch["image"].to(self.device)[..., :3]
        rgb = outputs["rgb"]
        if self.training and self.config.background_color == "random":
            # The renderer leaves the background black for "random"; a fresh random colour behind every
            # ray during training can only be matched by making the ray opaque.
            rgb = rgb + torch.rand_like(rgb) * (1.0 - outputs["accumulation"])
        return rgb, image

    def get_metrics_dict(self, outputs: dict[str, torch.Tensor], batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        rgb, image = self._rgb_pair(outputs, batch)
        metrics = {"psnr": -10.0 * torch.log10(F.mse_loss(rgb, image).clamp_min(1e-10))}
        if "feature" in batch:
            target = batch["feature"].to(self.device).float()
            metrics["feature_cosine"] = F.cosine_similarity(outputs["feature"], target, dim=-1).mean()
        return metrics

    def get_loss_dict(self, outputs: dict[str, torch.Tensor], batch: dict[str, Any],
                      metrics_dict: dict[str, torch.Tensor] | None = None,  # noqa: ARG002 (nerfstudio API)
                      ) -> dict[str, torch.Tensor]:
        rgb, image = self._rgb_pair(outputs, batch)
        losses = {"rgb_loss": F.mse_loss(rgb, image)}
        if "feature" in batch:
            target = batch["feature"].to(self.device).float()
            cosine = F.cosine_similarity(outputs["feature"], target, dim=-1, eps=1e-6)
            losses["feature_loss"] = self.config.feature_loss_weight * (1.0 - cosine).mean()
        return losses

    def get_image_metrics_and_images(self, outputs: dict[str, torch.Tensor], batch: dict[str, Any],
                                     ) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
        rgb, image = self._rgb_pair(outputs, batch)
        metrics = {"psnr": float(-10.0 * torch.log10(F.mse_loss(rgb, image).clamp_min(1e-10)))}
        if "feature" in batch:
            metrics["feature_cosine"] = float(_feature_map_cosine(outputs["feature"], batch["feature"]))
        images = {
            "img": torch.cat([image, rgb], dim=1),
            "accumulation": colormaps.apply_colormap(outputs["accumulation"]),
            "depth": colormaps.apply_depth_colormap(outputs["depth"], accumulation=outputs["accumulation"]),
        }
        return metrics, images


def _feature_map_cosine(rendered: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean cosine between a rendered (H, W, D) feature image and the coarser (h, w, D) target map."""
    height, width = rendered.shape[:2]
    map_h, map_w = target.shape[:2]
    ys = ((torch.arange(map_h) + 0.5) * height / map_h).long().clamp_(max=height - 1)
    xs = ((torch.arange(map_w) + 0.5) * width / map_w).long().clamp_(max=width - 1)
    sampled = rendered[ys][:, xs]
    return F.cosine_similarity(sampled, target.to(rendered.device).float(), dim=-1).mean()
