"""Feeding frame embeddings to nerfstudio: dataset, pixel sampler and data manager of ``find-field``.

Each training image comes with its embedding map from the store (``feature``: (h, w, D) float16,
usually coarser than the image). nerfstudio's pixel sampler indexes every batch entry with the
image's pixel coordinates, which would run off a coarser map, so ``FeaturePixelSampler`` samples the
map at the ray's pixel centre scaled to the map size (nearest cell) instead.

When the scene's frames have a ``depth_file_path`` (``find3d make-scene`` writes them; so do RGB-D
captures), items also carry ``depth_image`` (H, W, 1): z-depth in nerfstudio's rescaled units, 0
where unknown — the same key and units as nerfstudio's ``DepthDataset``, read the same way, but
without its fallback of estimating missing depth with a downloaded network.

Depth is a sensor's reading, not ground truth: a reading that other frames of the same split saw
through (``find3d.field.fuse.consistent``: their surface lies behind it on the same line of sight,
the flying pixels of a depth camera at object borders) is set to 0, unknown, before any loss reads
it. Exact depth loses next to nothing to this (make-scene seed 0: 1 reading in 975k).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from nerfstudio.configs.dataparser_configs import AnnotatedDataParserUnion
from nerfstudio.data.datamanagers.base_datamanager import VanillaDataManager, VanillaDataManagerConfig
from nerfstudio.data.dataparsers.base_dataparser import DataparserOutputs
from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig
from nerfstudio.data.datasets.base_dataset import InputDataset
from nerfstudio.data.pixel_samplers import PixelSampler, PixelSamplerConfig

from find3d.errors import DataError
from find3d.field.embeddings import STORE_DIRNAME, EmbeddingStore


def scene_dir_of(data: Path) -> Path:
    """nerfstudio accepts the scene folder or its transforms.json as ``--data``."""
    return data.parent if data.suffix == ".json" else data


class FeatureDataset(InputDataset):
    """An InputDataset whose items carry the frame's embedding map as ``feature`` (h, w, D) float16."""

    # Feature maps stay on the CPU like images; the model moves the sampled rows only.
    exclude_batch_keys_from_device: list[str] = [*InputDataset.exclude_batch_keys_from_device, "feature"]  # noqa: RUF012

    def __init__(self, dataparser_outputs: DataparserOutputs, scale_factor: float = 1.0,
                 store_dir: Path | None = None, scene_dir: Path | None = None) -> None:
        super().__init__(dataparser_outputs, scale_factor)
        if store_dir is None or scene_dir is None:
            raise DataError("FeatureDataset needs the scene and embeddings folders; use find-field's data manager.")
        self.store = EmbeddingStore.open(store_dir)
        self.frame_index = [
            self.store.index_of(_relative(Path(f), scene_dir)) for f in dataparser_outputs.image_filenames
        ]
        # The pipeline passes dataset metadata to the model: it sizes its feature head from the dimension, and
        # its viewer controls (find3d.field.viewer) encode queries with the interface the store records.
        self.metadata = {**self.metadata, "feature_dim": self.store.meta.dim, "embeddings_dir": str(store_dir),
                         "checkpoint": self.store.meta.checkpoint, "model": self.store.meta.model}
        # Computed here, before the data loader's workers fork, so that they share it.
        self.trusted = self._trusted_depth() if dataparser_outputs.metadata.get("depth_filenames") else None

    def get_metadata(self, data: dict[str, Any]) -> dict[str, torch.Tensor]:
        index = data["image_idx"]
        features = self.store.frame_features(self.frame_index[index])
        metadata = {"feature": torch.from_numpy(features.astype(np.float16))}
        if self.trusted is not None:
            depth = self._depth(index)
            depth[~torch.from_numpy(self.trusted[index])] = 0.0
            metadata["depth_image"] = depth
        return metadata

    def _depth(self, index: int) -> torch.Tensor:
        """(H, W, 1) z-depth of frame ``index`` in nerfstudio units, 0 where unknown."""
        from nerfstudio.data.utils.data_utils import get_depth_image_from_path

        outputs = self._dataparser_outputs
        cameras = outputs.cameras
        # File units -> nerfstudio units: the dataparser scaled every pose by dataparser_scale.
        scale = outputs.metadata["depth_unit_scale_factor"] * outputs.dataparser_scale
        return get_depth_image_from_path(Path(outputs.metadata["depth_filenames"][index]),
                                         int(cameras.height[index]), int(cameras.width[index]), scale)

    def _trusted_depth(self) -> list[np.ndarray]:
        """Per frame, (H, W, 1) bool: False where the depth reading is one other frames saw through."""
        from find3d.field.fuse import consistent, splat

        cameras = self._dataparser_outputs.cameras
        points, readings, views = [], [], []
        for index in range(len(cameras)):
            depth = self._depth(index)[..., 0].numpy()
            bundle = cameras.generate_rays(camera_indices=index, keep_shape=True)
            found = depth > 0
            distance = depth[found] * bundle.metadata["directions_norm"][..., 0].numpy()[found]
            xyz = bundle.origins.numpy()[found] + bundle.directions.numpy()[found] * distance[:, None]
            points.append(xyz.astype(np.float64))
            readings.append(found)
            camera = cameras[index]
            views.append(splat(points[-1], camera.camera_to_worlds.numpy(), float(camera.fx), float(camera.fy),
                               float(camera.cx), float(camera.cy), depth.shape))
        trusted = []
        for found, kept in zip(readings, consistent(points, views) if len(views) > 1 else [None] * len(views)):
            mask = np.ones(found.shape, bool)
            if kept is not None:
                mask[found] = kept
            trusted.append(mask[..., None])
        return trusted


def _relative(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return path.name


@dataclass
class FeaturePixelSamplerConfig(PixelSamplerConfig):
    _target: type = field(default_factory=lambda: FeaturePixelSampler)


class FeaturePixelSampler(PixelSampler):
    """Samples rays like PixelSampler and adds each ray's target embedding (float32) as ``feature``."""

    def collate_image_dataset_batch(self, batch: dict, num_rays_per_batch: int,
                                    keep_full_image: bool = False) -> dict:
        features = batch.get("feature")
        rest = {key: value for key, value in batch.items() if key != "feature"}
        collated = super().collate_image_dataset_batch(rest, num_rays_per_batch, keep_full_image)
        if features is not None:
            collated["feature"] = sample_feature_map(
                features, batch["image_idx"], collated["indices"], batch["image"].shape[1:3]
            )
        return collated


def sample_feature_map(features: torch.Tensor, image_idx: torch.Tensor, indices: torch.Tensor,
                       image_size: tuple[int, int]) -> torch.Tensor:
    """Nearest embedding-map cell under each ray's pixel centre.

    ``indices`` holds (camera index, y, x) per ray with *absolute* camera indices, while
    ``features`` is stacked in the batch order given by ``image_idx``.
    """
    lookup = torch.full((int(image_idx.max()) + 1,), -1, dtype=torch.long)
    lookup[image_idx.long().cpu()] = torch.arange(len(image_idx))
    indices = indices.cpu()
    local = lookup[indices[:, 0].long()]
    height, width = image_size
    map_h, map_w = features.shape[1:3]
    fy = ((indices[:, 1].float() + 0.5) * map_h / height).long().clamp_(max=map_h - 1)
    fx = ((indices[:, 2].float() + 0.5) * map_w / width).long().clamp_(max=map_w - 1)
    return features[local, fy, fx].float()


@dataclass
class FindDataManagerConfig(VanillaDataManagerConfig):
    _target: type = field(default_factory=lambda: FindDataManager)
    # Orbit captures: centre the box on the point the cameras look at, not on the cameras.
    dataparser: AnnotatedDataParserUnion = field(
        default_factory=lambda: NerfstudioDataParserConfig(center_method="focus"))
    embeddings: Path | None = None
    """Embeddings store folder written by `find3d embed-frames`; default DATA/find_embeddings."""
    pixel_sampler: PixelSamplerConfig = field(default_factory=FeaturePixelSamplerConfig)

    def store_dir(self) -> Path:
        """The embeddings store: ``embeddings``, else SCENE/find_embeddings (``--data`` sets ``data`` first)."""
        if self.embeddings is not None:
            return Path(self.embeddings)
        return scene_dir_of(Path(self.data if self.data is not None else self.dataparser.data)) / STORE_DIRNAME


class FindDataManager(VanillaDataManager[FeatureDataset]):
    """VanillaDataManager whose datasets read the scene's embeddings store."""

    config: FindDataManagerConfig

    def _dataset(self, outputs: DataparserOutputs) -> FeatureDataset:
        scene_dir = scene_dir_of(Path(self.config.dataparser.data))
        return FeatureDataset(outputs, self.config.camera_res_scale_factor, self.config.store_dir(), scene_dir)

    def create_train_dataset(self) -> FeatureDataset:
        return self._dataset(self.train_dataparser_outputs)

    def setup_train(self) -> None:
        with _loader_workers_capped():
            super().setup_train()

    def setup_eval(self) -> None:
        with _loader_workers_capped():
            super().setup_eval()

    def create_eval_dataset(self) -> FeatureDataset:
        return self._dataset(self.dataparser.get_dataparser_outputs(split=self.test_split))


@contextlib.contextmanager
def _loader_workers_capped() -> Iterator[None]:
    """Inside the block, nerfstudio's data managers get at most one loader worker per usable core.

    ``VanillaDataManager.setup_train`` / ``setup_eval`` hard-code ``num_workers=4 * world_size``, which
    on a small machine only queues processes (and makes torch warn about it); there is no setting for it,
    so the loader classes they construct are swapped for ones that cap the count.
    """
    from nerfstudio.data.datamanagers import base_datamanager

    from find3d.compat.quiet import loader_workers

    names = ("CacheDataloader", "FixedIndicesEvalDataloader", "RandIndicesEvalDataloader")
    saved = {name: getattr(base_datamanager, name) for name in names}

    def capped(cls: type) -> Any:
        def build(*args: Any, num_workers: int = 0, **kwargs: Any) -> Any:
            return cls(*args, num_workers=loader_workers(num_workers), **kwargs)
        return build

    try:
        for name, cls in saved.items():
            setattr(base_datamanager, name, capped(cls))
        yield
    finally:
        for name, cls in saved.items():
            setattr(base_datamanager, name, cls)
