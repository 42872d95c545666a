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
  something to turn opaque inside the box), depth = expected depth, feature = Σ wᵢ fᵢ. Rays whose
  known depth lies beyond the box (floor / wall outside it) instead see a learned environment colour
  (SH(direction) → MLP), which is also the background at evaluation: they cross the box empty.
- Depth (when the dataset has ``depth_image``, i.e. transforms.json frames carry ``depth_file_path``):
  colour alone leaves a fog in front of surfaces that few views constrain, and exported points then
  sit in that fog. Two terms on rays whose known surface lies inside the box, with z* the surface
  distance along the ray (z-depth × the ray's direction norm, as depth-nerfacto): an expected-depth
  L1, |Σ wᵢ tᵢ − z*| (weight ``depth_loss_weight``), and a line-of-sight free-space term (URF's
  "empty" loss), the rendering weight in front of z* − ``depth_margin`` (weight
  ``free_space_loss_weight``), which removes floaters directly instead of only moving the mean. The
  free-space term also applies to rays whose surface lies beyond the box (all their weight is
  penalised): without it the random background paints a fog in front of every far surface.
- Surface features (with depth): the export reads the feature head at the depth maps' surface points,
  so the head is also supervised there directly: 1 − cos(head(o + z*·d), target) on rays whose
  surface lies in the box (``surface_feature_loss_weight``). Through the rendering weights alone,
  which are still a fog early in training, a short run spreads each embedding along its ray and
  the head at the surface is a blur of its neighbours (measured in ``bench/results/field.md``).
- Without depth (phone / COLMAP captures): colour alone shapes the geometry, helped by mip-NeRF
  360's distortion loss (``distortion_loss_weight``), which pulls each ray's rendering weight into one
  surface instead of a fog; the surface feature term then reads the field's own median surface
  (detached, on rays whose accumulation reached 0.5) in place of the known one, so the head is still
  supervised where the export reads it. Depth, where present, has already been cleaned of readings
  other frames saw through (``find3d.field.data``).
- Loss: MSE(rgb) + λ·(1 − cos(feature, target)) (+ the depth terms), λ = ``feature_loss_weight``
  (default 0.5). The cosine loss matches how features are used (relevancy is computed on unit
  vectors) and ignores the scale of the mask-weighted mixture E(x). The rendering weights are
  detached for the feature head by default (``feature_shapes_density=False``, as LERF does):
  view-inconsistent 2D embeddings would otherwise pull density into floaters, and geometry is better
  learned from colour and depth. Because the feature head then has its own parameters and Adam is
  scale-invariant, λ only sets the rendered term's share against the surface term (and on its own
  matters only when features may shape density).
"""

from __future__ import annotations

import importlib.util
import itertools
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.cameras.rays import RayBundle, RaySamples
from nerfstudio.data.scene_box import OrientedBox, SceneBox
from nerfstudio.field_components.activations import trunc_exp
from nerfstudio.field_components.encodings import HashEncoding, SHEncoding
from nerfstudio.model_components.losses import distortion_loss
from nerfstudio.model_components.ray_samplers import PDFSampler, UniformSampler
from nerfstudio.model_components.renderers import AccumulationRenderer, DepthRenderer, RGBRenderer
from nerfstudio.model_components.scene_colliders import AABBBoxCollider
from nerfstudio.models.base_model import Model, ModelConfig
from nerfstudio.utils import colormaps
from torch import nn
from torch.nn import Parameter

from find3d.errors import DataError
from find3d.field.viewer import FieldViewer


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
                 hidden: int = 64, sh_levels: int = 2, feature_resolutions: tuple[int, ...] = (16, 32, 64)) -> None:
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
        self.feature_encoding = TriPlaneEncoding(tuple(feature_resolutions), channels=4)
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
        return {"density": density, "rgb": rgb, "feature": self.features_at(positions)}

    def features_at(self, positions: torch.Tensor) -> torch.Tensor:
        """Semantic features (..., D), not normalised, at ``positions`` (..., 3) in nerfstudio's frame
        (positions outside the box read the box's border)."""
        return self.feature_mlp(self.feature_encoding(self._normalized(positions)))


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
    feature_resolutions: tuple[int, ...] = (16, 32, 64)
    """Cells per side of each level of the feature head's tri-plane over the scene box. A 128 level on top
    measured no better (make-scene seed 0, 800 iterations: 3D mIoU 0.694 either way)."""
    sh_levels: int = 2
    """Spherical-harmonic levels of the view-dependent colour (1: Lambertian). Kept low: with few views,
    strong view dependence lets a floater in front of each camera paint that camera's image."""
    depth_loss_weight: float = 0.1
    """Weight of the expected-depth L1 (nerfstudio units ≈ metres for make-scene orbits); used only when
    the frames have depth_file_path. 0 turns all depth supervision off (both terms, environment routing).
    Measured (make-scene, 16 views at 64 px, 150 iterations): exported points 1.0 cm median from the GT
    surfaces, against 27 cm from colour alone after 200 iterations."""
    free_space_loss_weight: float = 1.0
    """Weight of the line-of-sight term: rendering weight in front of the known surface (minus the margin)."""
    surface_feature_loss_weight: float = 1.0
    """Weight of 1 − cos(feature head at the known surface point, target), on rays whose depth lies in the
    box (0: off). The export reads the head at depth points; supervising it there directly, not only
    through rendering weights that are still a fog early in training, is what makes a short run's
    features match the frames' (see the module docstring)."""
    distortion_loss_weight: float = 0.002
    """Weight of mip-NeRF 360's distortion loss (rendering weight spread along each ray), applied only to
    scenes without depth, where colour alone must shape the geometry: it pulls each ray's weight into
    one surface instead of a fog (nerfacto's default weight)."""
    depth_margin: float = 0.05
    """Half-width (nerfstudio units) of the band around the known surface where weight is not penalised."""
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
                               sh_levels=self.config.sh_levels, feature_resolutions=self.config.feature_resolutions)
        self.collider = AABBBoxCollider(self.scene_box, near_plane=self.config.near_plane)
        self.uniform_sampler = UniformSampler(num_samples=self.config.num_coarse_samples)
        self.pdf_sampler = PDFSampler(num_samples=self.config.num_importance_samples, include_original=True)
        self.renderer_rgb = RGBRenderer(background_color=self.config.background_color)
        # Colour beyond the box by direction (an environment map); see the module docstring.
        self.environment_sh = SHEncoding(levels=4)
        self.environment = _mlp(self.environment_sh.get_out_dim(), 32, 3)
        self.renderer_depth = DepthRenderer(method="expected")
        self.renderer_accumulation = AccumulationRenderer()
        self.renderer_median = DepthRenderer(method="median")
        # Query controls in nerfstudio's viewer and the relevancy / composited outputs (find3d.field.viewer).
        self.find3d = FieldViewer(metadata, self.feature_dim)

    def get_param_groups(self) -> dict[str, list[Parameter]]:
        return {"fields": [*self.field.parameters(), *self.environment.parameters()]}

    def _samples(self, ray_bundle: RayBundle) -> RaySamples:
        samples = self.uniform_sampler(ray_bundle)
        if self.config.num_importance_samples <= 0:
            return samples
        with torch.no_grad():
            density, _ = self.field.density(samples.frustums.get_positions())
            weights = samples.get_weights(density)
        return self.pdf_sampler(ray_bundle, samples, weights)

    @torch.no_grad()
    def surface(self, ray_bundle: RayBundle) -> tuple[torch.Tensor, torch.Tensor]:
        """(median depth (R, 1): distance along the unit ray where the rendering weight reaches one half,
        accumulation (R, 1)) of flat rays, from the density alone: the geometry an export reads, without
        the colour and feature heads at every sample. The median, not the expected depth: a ray that
        grazes a faint floater before the surface has its expected depth in the empty space between."""
        ray_bundle = self.collider(ray_bundle)
        samples = self._samples(ray_bundle)
        density, _ = self.field.density(samples.frustums.get_positions())
        weights = samples.get_weights(density)
        return self.renderer_median(weights=weights, ray_samples=samples), self.renderer_accumulation(weights=weights)

    def get_outputs(self, ray_bundle: RayBundle) -> dict[str, torch.Tensor]:  # type: ignore[override]
        samples = self._samples(ray_bundle)
        field_out = self.field(samples)
        weights = samples.get_weights(field_out["density"])
        feature_weights = weights if self.config.feature_shapes_density else weights.detach()
        outputs = {
            "rgb": self.renderer_rgb(rgb=field_out["rgb"], weights=weights),
            "depth": self.renderer_depth(weights=weights, ray_samples=samples),
            "accumulation": self.renderer_accumulation(weights=weights),
            "feature": torch.sum(feature_weights * field_out["feature"], dim=-2),
            "background": torch.sigmoid(self.environment(self.environment_sh(ray_bundle.directions))),
        }
        if not self.training and self.config.background_color == "random":
            outputs["rgb"] = outputs["rgb"] + outputs["background"] * (1.0 - outputs["accumulation"])
        if self.training:
            # What the depth losses need besides the batch; never built for rendering whole images.
            metadata = ray_bundle.metadata or {}
            outputs["weights"] = weights
            outputs["steps"] = (samples.frustums.starts + samples.frustums.ends) / 2
            outputs["directions_norm"] = metadata.get("directions_norm", torch.ones_like(outputs["depth"]))
            outputs["origins"], outputs["directions"] = ray_bundle.origins, ray_bundle.directions
            outputs["fars"] = ray_bundle.fars if ray_bundle.fars is not None else torch.full_like(
                outputs["depth"], float("inf"))
            # Without depth: the field's own surface stands in for the known one (``get_loss_dict``).
            outputs["median"] = self.renderer_median(weights=weights.detach(), ray_samples=samples)
            if self.config.distortion_loss_weight > 0:
                outputs["distortion"] = distortion_loss([weights], [samples])
        return outputs

    @torch.no_grad()
    def get_outputs_for_camera(self, camera: Cameras, obb_box: OrientedBox | None = None) -> dict[str, torch.Tensor]:
        """nerfstudio's whole-image render (viewer, ns-render) plus find3d's query outputs (find3d.field.viewer)."""
        return self.find3d.add_outputs(super().get_outputs_for_camera(camera, obb_box=obb_box), camera)

    def _rgb_pair(self, outputs: dict[str, torch.Tensor], batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        image = batch["image"].to(self.device)[..., :3]
        rgb = outputs["rgb"]
        if self.training and self.config.background_color == "random":
            # The renderer leaves the background black for "random"; a fresh random colour behind every
            # ray during training can only be matched by making the ray opaque. Rays known to cross the
            # box empty see the environment instead.
            background = torch.rand_like(rgb)
            depth = self._depth_image(outputs, batch)
            if depth is not None:
                background = torch.where(self._exits_empty(outputs, depth) > 0, outputs["background"], background)
            rgb = rgb + background * (1.0 - outputs["accumulation"])
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
        depth = self._depth_image(outputs, batch)
        if depth is not None:
            losses.update(self._depth_losses(outputs, depth))
        elif "weights" in outputs:
            # No depth (a phone / COLMAP capture): depth-free regularisation of the geometry, and the
            # field's own (detached) median surface where the ray turned opaque stands in for the known one.
            if "distortion" in outputs:
                losses["distortion_loss"] = self.config.distortion_loss_weight * outputs["distortion"]
            opaque = (outputs["accumulation"].detach() >= 0.5).float()
            depth = outputs["median"] * opaque / outputs["directions_norm"]  # as z-depth, 0 = none
        if depth is not None and "feature" in batch and self.config.surface_feature_loss_weight > 0:
            losses["surface_feature_loss"] = self._surface_feature_loss(outputs, depth, batch["feature"])
        return losses

    def _surface_feature_loss(self, outputs: dict[str, torch.Tensor], z_depth: torch.Tensor,
                              target: torch.Tensor) -> torch.Tensor:
        """1 − cos(feature head at each ray's known surface point, the ray's target), over rays whose
        surface lies inside the box (weighted by ``surface_feature_loss_weight``)."""
        surface = ((z_depth > 0).float() - self._exits_empty(outputs, z_depth))[:, 0] > 0
        if not surface.any():
            return outputs["feature"].sum() * 0.0  # keeps the graph (and the loss dict) the same every step
        distance = (z_depth * outputs["directions_norm"])[surface]
        positions = outputs["origins"][surface] + outputs["directions"][surface] * distance
        cosine = F.cosine_similarity(self.field.features_at(positions), target.to(self.device).float()[surface],
                                     dim=-1, eps=1e-6)
        return self.config.surface_feature_loss_weight * (1.0 - cosine).mean()

    def _depth_image(self, outputs: dict[str, torch.Tensor], batch: dict[str, Any]) -> torch.Tensor | None:
        """(R, 1) known z-depth per ray (0 = unknown) when depth supervision applies to this batch."""
        if "depth_image" not in batch or "weights" not in outputs or self.config.depth_loss_weight <= 0:
            return None
        return batch["depth_image"].to(self.device).float().reshape(-1, 1)

    def _exits_empty(self, outputs: dict[str, torch.Tensor], z_depth: torch.Tensor) -> torch.Tensor:
        """(R, 1) 1.0 for rays whose known surface lies beyond the box exit (minus the margin)."""
        target = z_depth * outputs["directions_norm"]
        return ((z_depth > 0) & (target >= outputs["fars"] - self.config.depth_margin)).float()

    def _depth_losses(self, outputs: dict[str, torch.Tensor], z_depth: torch.Tensor) -> dict[str, torch.Tensor]:
        """Expected-depth L1 on rays whose surface is inside the box; free space on every ray with depth."""
        margin = self.config.depth_margin
        target = z_depth * outputs["directions_norm"]  # distance along the unit ray
        known = (z_depth > 0).float()  # 0 = no depth measured
        surface = known - self._exits_empty(outputs, z_depth)
        depth_l1 = (torch.abs(outputs["depth"] - target) * surface).sum() / surface.sum().clamp_min(1.0)
        in_front = (outputs["steps"] < (target - margin)[:, None, :]).float()
        free = (outputs["weights"] * in_front).sum(dim=-2)
        free_space = (free * known).sum() / known.sum().clamp_min(1.0)
        return {"depth_loss": self.config.depth_loss_weight * depth_l1,
                "free_space_loss": self.config.free_space_loss_weight * free_space}

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
