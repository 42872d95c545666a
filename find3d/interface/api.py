"""The public Python API of a trained interface: ``find3d.Interface.from_checkpoint(path)``.

Every method takes images as a path, a PIL image or an ``(H, W, 3)`` uint8 / float array and
preprocesses them exactly as the evaluation mapper does (``eval_transform``: shorter side to
``dataset.image_size``, centred on a square ``eval_max_size`` canvas), so the model sees what it was
evaluated on. Mask logits are resampled from the canvas straight back to the ORIGINAL image (one
bilinear ``grid_sample`` through the inverse of that map), so every mask, segment map and pixel
embedding is aligned with the pixels the caller passed in.

Two semantic spaces come out of the interface (same width ``dim``): object / class embeddings
(``segment``, ``embed_pixels`` features, ``encode_query``) and image-level retrieval embeddings
(``embed_image``, ``retrieve``, ``interleave_retrieve``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from find3d import validate
from find3d.data.mappers import Affine, _stroke, eval_transform
from find3d.data.samples import InterleaveEntity, InterleaveEntry, Phrase, Sample, SpatialPrompt, VisualRef
from find3d.errors import InputError
from find3d.fileio import as_rgb_array
from find3d.interface.collate import collate
from find3d.interface.model import FindInterface, FindModel, Outputs
from find3d.interface.pixel_decoder import MASK_STRIDE
from find3d.interface.syntax import PLACEHOLDER, parse_query

#: images per forward pass when embedding many images (retrieval): bounded memory, still batched
CHUNK = 8
#: query texts whose class-space vectors ``encode_query`` keeps
TEXT_CACHE = 1024
#: a query's leading article: the class prompt supplies its own ("a photo of a {}."), and "a photo of a the
#: tabletop." puts the query off its class (table 0.76 against 0.82 for "tabletop": bench/results/phrasings.md)
LEADING_ARTICLE = re.compile(r"^(?:the|a|an)\s+(?=\S)", re.IGNORECASE)


@dataclass
class LoadedInterface:
    """A trained model with the vocabulary it was trained on."""

    model: FindModel
    class_names: list[str]
    isthing: list[bool]
    config: object  # find3d.train.config.TrainInterfaceConfig
    step: int


def load_interface(checkpoint: str | Path, device: str | torch.device = "cpu") -> LoadedInterface:
    """Rebuild encoders + interface from a checkpoint file or run folder, in eval mode on ``device``."""
    from find3d.config import from_dict
    from find3d.encoders import build_language_encoder, build_vision_encoder
    from find3d.train.checkpoint import load_checkpoint
    from find3d.train.config import TrainInterfaceConfig

    checkpoint = validate.path(checkpoint, "checkpoint")
    device = validate.device(device)
    state = load_checkpoint(checkpoint, map_location="cpu")
    config = from_dict(TrainInterfaceConfig, state["config"], where=f"checkpoint {checkpoint} config")
    names = state["encoders"]
    vision = build_vision_encoder(names["vision"])
    language = build_language_encoder(names["language"], layer=names["language_layer"])
    interface = FindInterface.for_encoders(config.interface, vision, language)
    interface.load_state_dict(state["model"])
    model = FindModel(interface, vision, language).to(device).eval()
    return LoadedInterface(model, list(state["class_names"]), list(state["isthing"]), config, int(state["step"]))


# ------------------------------------------------------------------------------------------- results


@dataclass
class PanopticResult:
    """Panoptic segmentation at the original resolution."""

    segment_ids: np.ndarray  # (H, W) int32, 0 = void, else the ``id`` of a segment
    segments: list[dict[str, Any]]  # {id, category, class_name, isthing, score, query (the object query's index)}
    class_names: list[str]  # the vocabulary ``category`` indexes
    probabilities: np.ndarray | None = None  # (K, H, W) float32 per-pixel class probabilities (sum 1 over K)


@dataclass
class GroundingResult:
    """One mask per phrase, at the original resolution."""

    masks: np.ndarray  # (N, H, W) bool
    probabilities: np.ndarray  # (N, H, W) float32
    scores: np.ndarray  # (N,) float32, cosine of each mask query with its phrase's embedding


@dataclass
class InteractiveResult:
    """The object the spatial prompts select (the union of what each prompt selects)."""

    mask: np.ndarray  # (H, W) bool
    probability: np.ndarray  # (H, W) float32
    prompt_probabilities: np.ndarray  # (P, H, W) float32, one per point / box, in the order given


@dataclass
class RetrievalResult:
    """Cosine similarities of image and text embeddings, and the rankings they imply."""

    similarity: np.ndarray  # (I, T) float32
    image_to_text: np.ndarray  # (I, T) int64: texts per image, best first
    text_to_image: np.ndarray  # (T, I) int64: images per text, best first


@dataclass
class InterleaveGroundingResult:
    """One mask per entity of an interleave entry (entities in sentence order)."""

    masks: np.ndarray  # (E, H, W) bool
    probabilities: np.ndarray  # (E, H, W) float32
    entities: list[str]  # the entity's phrase, or the source of its visual reference


@dataclass
class PixelEmbedding:
    """Per-pixel embeddings ``E(x) = Σ_k m_k(x) s_k / Σ_k m_k(x)`` (unit vectors), the image vector and the
    panoptic segment ids of the same forward pass."""

    features: torch.Tensor  # (h, w, D) float32 on the CPU
    image_vector: torch.Tensor  # (D,) float32 on the CPU, unit norm
    segments: np.ndarray  # (H, W) int32 at the original size: ``segment``'s ids (0 = void), for 3D instances


@dataclass(frozen=True)
class _Prepared:
    """An image on the model's canvas and the map that put it there."""

    canvas: np.ndarray  # (S, S, 3) uint8
    geometry: Affine
    size: tuple[int, int]  # original (H, W)


# -------------------------------------------------------------------------------------- validation


def _points(points: Sequence[Sequence[float]], size: tuple[int, int]) -> list[tuple[float, float]]:
    height, width = size
    out = []
    for point in points:
        if len(point) != 2:
            raise InputError(f"points: {tuple(point)} is not an (x, y) pair; pass points=[(x, y), ...] in pixels")
        x, y = float(point[0]), float(point[1])
        if not (0 <= x < width and 0 <= y < height):
            raise InputError(f"points: ({x:g}, {y:g}) lies outside the {width}x{height} image; "
                             f"use 0 <= x < {width} and 0 <= y < {height}")
        out.append((x, y))
    return out


def _boxes(boxes: Sequence[Sequence[float]], size: tuple[int, int]) -> list[tuple[float, float, float, float]]:
    height, width = size
    out = []
    for box in boxes:
        if len(box) != 4:
            raise InputError(f"boxes: {tuple(box)} is not (x0, y0, x1, y1); pass boxes=[(x0, y0, x1, y1), ...]")
        x0, y0, x1, y1 = (float(v) for v in box)
        if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
            raise InputError(f"boxes: ({x0:g}, {y0:g}, {x1:g}, {y1:g}) is outside the {width}x{height} image "
                             "or has no area; need 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height")
        out.append((x0, y0, x1, y1))
    return out


def _entry(entry: str | InterleaveEntry, base_dir: str | Path, images: Sequence[Any] | None = None,
           masks: Sequence[Any | None] | None = None) -> InterleaveEntry:
    if isinstance(entry, str):
        return parse_query(entry, base_dir, images, masks)
    if isinstance(entry, InterleaveEntry):
        return entry
    raise InputError(f"interleave entry: got {type(entry).__name__}; pass a query string such as "
                     "'the mug next to <image:keys.png#box=10,10,50,40>' or an InterleaveEntry")


def _sentence_text(entry: InterleaveEntry) -> str:
    """The entry's words with its visual references cut out (text entities stay: they are words)."""
    text, cursor = "", 0
    for entity in sorted(entry.entities, key=lambda e: e.span[0]):
        if entity.ref is not None:
            text += entry.sentence[cursor:entity.span[0]] + " "
            cursor = entity.span[1]
    text += entry.sentence[cursor:]
    return " ".join(text.replace(PLACEHOLDER, " ").split())


# ------------------------------------------------------------------------------------------ geometry


def _resample(maps: torch.Tensor, geometry: Affine, size: tuple[int, int], out: tuple[int, int]) -> torch.Tensor:
    """Sample stride-4 canvas maps ``(B, C, h, w)`` on an ``out`` grid spanning the original ``size`` image.

    Original pixel-index coordinates go through the eval affine to canvas pixels, then to the
    ``align_corners=False`` frame of the stride-4 map (cell ``j`` covers canvas pixels ``[4j, 4j+4)``).
    """
    (height, width), (rows, cols) = size, out
    scale, tx, ty = geometry.matrix[0, 0], geometry.matrix[0, 2], geometry.matrix[1, 2]
    xs = (torch.arange(cols, dtype=torch.float64) + 0.5) * (width / cols) - 0.5
    ys = (torch.arange(rows, dtype=torch.float64) + 0.5) * (height / rows) - 0.5
    gx = ((scale * xs + tx) + 0.5) / (MASK_STRIDE * maps.shape[-1]) * 2 - 1
    gy = ((scale * ys + ty) + 0.5) / (MASK_STRIDE * maps.shape[-2]) * 2 - 1
    grid = torch.stack([gx[None, :].expand(rows, cols), gy[:, None].expand(rows, cols)], dim=-1)
    grid = grid.to(maps.device, maps.dtype)[None].expand(maps.shape[0], -1, -1, -1)
    return F.grid_sample(maps, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _fit_ref(ref: VisualRef, image_size: int, max_size: int) -> VisualRef:
    """A visual reference on the model's canvas (as the mapper puts images there); a mask too small to
    survive the downscale keeps the canvas pixel of its centroid, so the reference never vanishes."""
    image = as_rgb_array(ref.image, "visual reference image")
    mask = np.asarray(ref.mask, dtype=bool)
    if mask.shape != image.shape[:2] or not mask.any():
        raise InputError(f"visual reference {ref.source!r}: needs a non-empty (H, W) mask of its image's size "
                         f"{image.shape[:2]}, got {mask.shape}")
    geometry = eval_transform(image.shape[0], image.shape[1], image_size, max_size)
    fitted = geometry.mask(mask)
    if not fitted.any():
        ys, xs = np.nonzero(mask)
        x, y = geometry.matrix @ np.array([xs.mean(), ys.mean(), 1.0])
        fitted[min(max(round(y), 0), max_size - 1), min(max(round(x), 0), max_size - 1)] = True
    return VisualRef(geometry.image(image), fitted, ref.source)


# ------------------------------------------------------------------------------------------ interface


class Interface:
    """A trained FIND interface with its frozen encoders: 2D tasks and embeddings for 3D queries."""

    def __init__(self, loaded: LoadedInterface) -> None:
        self.loaded = loaded
        dataset = loaded.config.dataset  # type: ignore[attr-defined]
        self._image_size = int(dataset.image_size)
        self._canvas = int(dataset.eval_max_size or dataset.image_size)
        self._class_prompt = loaded.model.interface.config.class_prompt
        self._text_cache: dict[str, torch.Tensor] = {}
        self._vocabulary_vectors: np.ndarray | None = None  # see ``vocabulary_vectors``

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "auto") -> Interface:
        """Load a checkpoint file or run folder; ``device``: 'auto' (CUDA when available), 'cpu', 'cuda[:i]'."""
        return cls(load_interface(path, device))

    @property
    def model(self) -> FindModel:
        return self.loaded.model

    @property
    def class_names(self) -> list[str]:
        """The trained vocabulary (``segment``'s default)."""
        return list(self.loaded.class_names)

    def vocabulary_vectors(self) -> np.ndarray:
        """(C, D) float32: the trained class names as ``encode_query`` embeds them, computed once
        (every 3D query's default negatives are drawn from them)."""
        if self._vocabulary_vectors is None:
            self._vocabulary_vectors = np.stack([self.encode_query(name).numpy() for name in self.class_names])
        return self._vocabulary_vectors

    @property
    def isthing(self) -> list[bool]:
        return list(self.loaded.isthing)

    @property
    def device(self) -> torch.device:
        return self.model.interface.no_object.device

    @property
    def dim(self) -> int:
        """Width of the semantic space (embeddings, queries)."""
        return int(self.model.interface.config.projection_dim)

    @functools.cached_property
    def fingerprint(self) -> str:
        """Content hash of what decides this model's outputs: the interface weights, the frozen encoders'
        names and layer, and the input geometry. Two checkpoints with equal weights share it, whatever
        their paths; a retrained ``last.pt`` at the same path does not (``embed-frames`` resumes by it)."""
        model = self.model
        digest = hashlib.sha256(json.dumps({
            "vision": model.vision.name, "language": model.language.name, "layer": model.language.layer,
            "image_size": self._image_size, "canvas": self._canvas, "class_prompt": self._class_prompt,
            "pixel_mix": "objectness",  # embed_pixels' mix changed: stores written by the old one are stale
            "segments": "panoptic",  # embed_pixels returns the frames' panoptic ids: older stores lack them
        }, sort_keys=True).encode())
        for name, tensor in sorted(model.interface.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()[:16]

    @property
    def canvas_size(self) -> int:
        """Side of the square canvas images are resized and padded onto."""
        return self._canvas

    # --- plumbing -----------------------------------------------------------------------------
    def _prepare(self, image: Any, name: str = "image") -> _Prepared:
        array = as_rgb_array(image, name)
        geometry = eval_transform(array.shape[0], array.shape[1], self._image_size, self._canvas)
        return _Prepared(geometry.image(array), geometry, (array.shape[0], array.shape[1]))

    def _blank(self) -> np.ndarray:
        return np.zeros((self._canvas, self._canvas), dtype=bool)

    def _run(self, samples: list[Sample], tasks: list[str], class_names: Sequence[str] | None = None,
             pyramid: dict[int, torch.Tensor] | None = None) -> Outputs:
        """One no-grad forward of ``tasks`` on ``samples`` (spatial prompts are never truncated)."""
        batch = collate(samples, self.class_names if class_names is None else class_names, self._class_prompt,
                        max_spatial=max([len(s.spatial) for s in samples] + [1]))
        with torch.no_grad():
            return self.model(batch.to(self.device), pyramid=pyramid, tasks=tasks)

    def _original(self, logits: torch.Tensor, prepared: _Prepared) -> torch.Tensor:
        """``(n, H, W)`` float32 probabilities at the original size from ``(1, n, h, w)`` canvas logits."""
        return _resample(logits, prepared.geometry, prepared.size, prepared.size)[0].float().sigmoid()

    def _native_size(self, prepared: _Prepared) -> tuple[int, int]:
        """The original image's extent on the stride-4 map: pixel embeddings at no upsampling."""
        scale, (height, width) = prepared.geometry.matrix[0, 0], prepared.size
        return max(1, round(height * scale / MASK_STRIDE)), max(1, round(width * scale / MASK_STRIDE))

    def _vocabulary(self, classes: Sequence[str] | None, isthing: Sequence[bool] | None
                    ) -> tuple[list[str], list[bool]]:
        if classes is None:
            return self.class_names, self.isthing if isthing is None else list(isthing)
        names = validate.strings(classes, "classes")
        if isthing is None:  # known names keep their trained flag; new ones are countable things
            known = dict(zip(self.loaded.class_names, self.loaded.isthing))
            return names, [known.get(n, True) for n in names]
        if len(isthing) != len(names):
            raise InputError(f"isthing has {len(isthing)} flags for {len(names)} classes; pass one flag per class")
        return names, list(isthing)

    # --- generic segmentation -----------------------------------------------------------------
    def segment(self, image: Any, classes: Sequence[str] | None = None, isthing: Sequence[bool] | None = None,
                threshold: float | None = None, probabilities: bool = False) -> PanopticResult:
        """Panoptic segmentation over ``classes`` (open vocabulary: any names or descriptions; default:
        the trained vocabulary). ``threshold``: least class score of a kept segment (default: the
        checkpoint's ``interface.object_threshold``); ``probabilities``: also return per-pixel class
        probabilities (Mask2Former semantic inference, normalised)."""
        names, things = self._vocabulary(classes, isthing)
        threshold = None if threshold is None else validate.number(threshold, "threshold", 0, 1)
        prepared = self._prepare(image)
        out = self._run([Sample("query", prepared.canvas)], ["generic"], names)["generic"]
        result = self._panoptic(out, prepared, names, things, threshold)
        if probabilities:
            class_probs = out["logits"][0].softmax(-1)[:, :-1]  # (Q, K) without no-object
            semantic = torch.einsum("qk,qhw->khw", class_probs, self._original(out["masks"], prepared))
            result.probabilities = (semantic / semantic.sum(0, keepdim=True).clamp(min=1e-6)).cpu().numpy()
        return result

    def _panoptic(self, generic: dict[str, Any], prepared: _Prepared, names: list[str], things: list[bool],
                  threshold: float | None = None) -> PanopticResult:
        """Mask2Former panoptic inference of one image's generic outputs, at its original size."""
        inference = self.loaded.config.interface
        threshold = inference.object_threshold if threshold is None else threshold
        class_probs = generic["logits"][0].softmax(-1)[:, :-1]  # (Q, K) without no-object
        keep = class_probs.max(-1).values > threshold
        ids, segments = np.zeros(prepared.size, dtype=np.int32), []
        if keep.any():
            # only the kept queries are resampled: full-resolution masks of all queries are the memory peak
            masks = _resample(generic["masks"][:, keep], prepared.geometry, prepared.size, prepared.size)
            kept = {"logits": generic["logits"][:, keep], "masks": masks}
            [(merged, info)] = FindInterface.panoptic(kept, things, prepared.size, threshold,
                                                      inference.overlap_threshold)
            ids = merged.cpu().numpy().astype(np.int32)
            queries = torch.nonzero(keep).flatten().tolist()  # info's "query" indexes the kept queries
            segments = [{"id": s["id"], "category": s["category_id"], "class_name": names[s["category_id"]],
                         "isthing": s["isthing"], "score": s["score"], "query": queries[s["query"]]} for s in info]
        return PanopticResult(ids, segments, names)

    # --- grounding ----------------------------------------------------------------------------
    def ground(self, image: Any, texts: str | Sequence[str]) -> GroundingResult:
        """One mask per phrase (referring expressions, entity phrases)."""
        phrases = validate.strings(texts, "texts")
        prepared = self._prepare(image)
        sample = Sample("query", prepared.canvas, phrases=[Phrase(t, self._blank()) for t in phrases])
        out = self._run([sample], ["grounding"])["grounding"]
        probs = self._original(out["masks"], prepared)
        scores = (out["semantic"]["q.grounding"][0] * out["semantic"]["q.text"][0]).sum(-1)
        return GroundingResult((probs >= 0.5).cpu().numpy(), probs.cpu().numpy(), scores.float().cpu().numpy())

    # --- interactive --------------------------------------------------------------------------
    def interact(self, image: Any, points: Sequence[Sequence[float]] = (),
                 boxes: Sequence[Sequence[float]] = ()) -> InteractiveResult:
        """Segment what the clicks ``points`` ``[(x, y)]`` and ``boxes`` ``[(x0, y0, x1, y1)]`` (pixels of
        the original image; box corners are edges, x1/y1 exclusive) select. Each prompt is rasterised
        on the canvas as the data mappers draw it and segmented on its own; the result is their union."""
        prepared = self._prepare(image)
        clicks, rects = _points(points, prepared.size), _boxes(boxes, prepared.size)
        if not clicks and not rects:
            raise InputError("interact needs at least one prompt: pass points=[(x, y)] and/or boxes=[(x0, y0, x1, y1)]")
        prompts = [self._point_prompt(p, prepared) for p in clicks] + [self._box_prompt(b, prepared) for b in rects]
        out = self._run([Sample("query", prepared.canvas, spatial=prompts)], ["interactive"])["interactive"]
        probs = self._original(out["masks"], prepared)
        union = probs.max(0).values
        return InteractiveResult((union >= 0.5).cpu().numpy(), union.cpu().numpy(), probs.cpu().numpy())

    def _point_prompt(self, point: tuple[float, float], prepared: _Prepared) -> SpatialPrompt:
        x, y = prepared.geometry.matrix @ np.array([point[0], point[1], 1.0])
        canvas = np.zeros((self._canvas, self._canvas), dtype=np.uint8)
        cv2.circle(canvas, (round(x), round(y)), _stroke(canvas.shape), 1, thickness=-1)
        return SpatialPrompt("point", canvas.astype(bool), self._blank())

    def _box_prompt(self, box: tuple[float, float, float, float], prepared: _Prepared) -> SpatialPrompt:
        # Pixel edges map as e -> scale * e + pad (the affine is written for pixel centres).
        scale = prepared.geometry.matrix[0, 0]
        pad_x = prepared.geometry.matrix[0, 2] - 0.5 * scale + 0.5
        pad_y = prepared.geometry.matrix[1, 2] - 0.5 * scale + 0.5
        x0, x1 = (round(scale * v + pad_x) for v in (box[0], box[2]))
        y0, y1 = (round(scale * v + pad_y) for v in (box[1], box[3]))
        canvas = np.zeros((self._canvas, self._canvas), dtype=np.uint8)
        # an outline of the box, inclusive corners, one pixel thick: what ``draw_prompt("box")`` draws
        cv2.rectangle(canvas, (x0, y0), (max(x0, x1 - 1), max(y0, y1 - 1)), 1, thickness=1)
        return SpatialPrompt("box", canvas.astype(bool), self._blank(), (float(x0), float(y0), float(x1), float(y1)))

    # --- retrieval ----------------------------------------------------------------------------
    def _image_vectors(self, images: Sequence[Any]) -> torch.Tensor:
        """``(I, D)`` retrieval image vectors, ``CHUNK`` images per forward, with a bar for long lists."""
        from tqdm import tqdm

        items = list(images)
        if not items:
            raise InputError("images: got an empty list; pass at least one image (path, PIL image or array)")
        vectors = []
        with tqdm(total=len(items), desc="embed images", unit="image",
                  disable=None if len(items) > CHUNK else True) as bar:
            for start in range(0, len(items), CHUNK):
                chunk = items[start:start + CHUNK]
                samples = [Sample(f"image{start + i}", self._prepare(im, f"images[{start + i}]").canvas)
                           for i, im in enumerate(chunk)]
                vectors.append(self._run(samples, ["retrieval"])["retrieval"]["semantic"]["q.image"][:, 0])
                bar.update(len(chunk))
        return torch.cat(vectors).float().cpu()

    def retrieve(self, images: Sequence[Any], texts: str | Sequence[str]) -> RetrievalResult:
        """Image-text similarity (cosine of image and caption embeddings) and rankings both ways."""
        captions = validate.strings(texts, "texts")
        image_vectors = self._image_vectors(images)
        with torch.no_grad():
            text_vectors = self.model.encode_texts(captions, kind="caption").float().cpu()
        return _ranked((image_vectors @ text_vectors.T).numpy())

    # --- interleave ---------------------------------------------------------------------------
    def _fit_entry(self, entry: InterleaveEntry) -> InterleaveEntry:
        """The entry with references on the canvas and placeholder targets (collate needs canvas-size masks)."""
        entities = [InterleaveEntity(e.text, e.span, self._blank(),
                                     None if e.ref is None else _fit_ref(e.ref, self._image_size, self._canvas))
                    for e in entry.entities]
        return InterleaveEntry(entry.sentence, entities)

    def interleave_ground(self, image: Any, entry: str | InterleaveEntry,
                          base_dir: str | Path = ".") -> InterleaveGroundingResult:
        """One mask per entity of ``entry`` (a query string in the ``<image:...>`` syntax, paths relative to
        ``base_dir``, or an ``InterleaveEntry``); in the string syntax the entities are the references."""
        parsed = _entry(entry, base_dir)
        if not parsed.entities:
            raise InputError("interleave_ground: the entry has no entities; add an <image:path[#mask|#box=...]> "
                             "reference, or use ground() for plain text")
        prepared = self._prepare(image)
        sample = Sample("query", prepared.canvas, interleave=[self._fit_entry(parsed)])
        out = self._run([sample], ["interleave_grounding"])["interleave_grounding"]
        probs = self._original(out["masks"], prepared)
        names = [e.text if e.ref is None else e.ref.source for e in sorted(parsed.entities, key=lambda e: e.span[0])]
        return InterleaveGroundingResult((probs >= 0.5).cpu().numpy(), probs.cpu().numpy(), names)

    def interleave_retrieve(self, entries: Sequence[str | InterleaveEntry], images: Sequence[Any],
                            base_dir: str | Path = ".") -> np.ndarray:
        """``(E, I)`` cosine similarity of interleave-entry embeddings with image embeddings."""
        parsed = [_entry(e, base_dir) for e in ([entries] if isinstance(entries, str) else entries)]
        if not parsed:
            raise InputError("entries: got an empty list; pass at least one interleave query")
        image_vectors = self._image_vectors(images)
        # The entry query reads only the entry's tokens (spec INTERLEAVE_RETRIEVAL), never the image:
        # one encoder pass on a blank canvas stands in for the image of every entry.
        blank = np.zeros((self._canvas, self._canvas, 3), dtype=np.uint8)
        with torch.no_grad():
            pyramid = self.model.vision(torch.zeros(1, 3, self._canvas, self._canvas, device=self.device))
        vectors = []
        for start in range(0, len(parsed), CHUNK):
            chunk = parsed[start:start + CHUNK]
            samples = [Sample(f"entry{start + i}", blank, interleave=[self._fit_entry(e)]) for i, e in enumerate(chunk)]
            expanded = {s: f.expand(len(chunk), -1, -1, -1) for s, f in pyramid.items()}
            out = self._run(samples, ["interleave_retrieval"], pyramid=expanded)["interleave_retrieval"]
            vectors.append(out["semantic"]["q.interleave"][:, 0])
        return (torch.cat(vectors).float().cpu() @ image_vectors.T).numpy()

    def encode_retrieval(self, query: str | InterleaveEntry, base_dir: str | Path = ".",
                         images: Sequence[Any] | None = None, masks: Sequence[Any | None] | None = None,
                         ) -> torch.Tensor:
        """``(D,)`` unit vector of a query in the *retrieval* space of ``embed_image`` / frame vectors:
        plain text as a caption (``retrieve``), an entry with visual references as an interleave entry
        (``interleave_retrieve``). What FIND's interleave video localisation ranks frames with."""
        parsed = _entry(query, base_dir, images, masks)
        if not any(e.ref is not None for e in parsed.entities):
            text = " ".join(parsed.sentence.replace(PLACEHOLDER, " ").split())
            if not text:
                raise InputError(f"query {query!r}: nothing to embed; pass words or an <image:...> reference")
            with torch.no_grad():
                return F.normalize(self.model.encode_texts([text], kind="caption")[0].float().cpu(), dim=0)
        blank = np.zeros((self._canvas, self._canvas, 3), dtype=np.uint8)
        with torch.no_grad():
            pyramid = self.model.vision(torch.zeros(1, 3, self._canvas, self._canvas, device=self.device))
        out = self._run([Sample("entry", blank, interleave=[self._fit_entry(parsed)])], ["interleave_retrieval"],
                        pyramid=pyramid)["interleave_retrieval"]
        return F.normalize(out["semantic"]["q.interleave"][0, 0].float().cpu(), dim=0)

    # --- embeddings for 3D --------------------------------------------------------------------
    def embed_pixels(self, image: Any, size: tuple[int, int] | None = None, confidence: bool = True
                     ) -> PixelEmbedding:
        """Per-pixel embeddings over the original image: at stride 4 of the model's input (no upsampling)
        unless ``size=(h, w)``; plus the image-level (retrieval) vector and the panoptic segment ids of
        the same forward pass (``segment``'s, over the trained vocabulary: what 3D instances are lifted
        from). ``confidence``: weight each object query's mask by its objectness
        (``FindInterface.pixel_embeddings``)."""
        prepared = self._prepare(image)
        if size is not None and (len(size) != 2 or min(size) < 1):
            raise InputError(f"size: got {size}; pass (height, width) in pixels, both >= 1")
        out = self._run([Sample("query", prepared.canvas)], ["generic", "retrieval"])
        masks = _resample(out["generic"]["masks"], prepared.geometry, prepared.size,
                          tuple(size) if size is not None else self._native_size(prepared))
        at_original = {"generic": {"masks": masks, "semantic": out["generic"]["semantic"],
                                   "logits": out["generic"].get("logits")},
                       "retrieval": out["retrieval"]}
        pixels, vector = FindInterface.pixel_embeddings(at_original, confidence=confidence)
        segments = self._panoptic(out["generic"], prepared, self.class_names, self.isthing).segment_ids
        return PixelEmbedding(pixels[0].permute(1, 2, 0).float().cpu().contiguous(), vector[0].float().cpu(),
                              segments)

    def embed_image(self, image: Any) -> torch.Tensor:
        """``(D,)`` image-level vector (retrieval space: frame localisation)."""
        return self._image_vectors([image])[0]

    def encode_query(self, query: str | InterleaveEntry | Any, base_dir: str | Path = ".",
                     images: Sequence[Any] | None = None, masks: Sequence[Any | None] | None = None) -> torch.Tensor:
        """``(D,)`` unit vector in the per-pixel space of ``embed_pixels``, for scoring a 3D field.

        Text is embedded like a class name (through ``class_prompt``, without a leading article: "the mug" is
        "mug", the class's own vector); an image crop (array, PIL, or
        ``Path``; or a query string that is only ``<image:...>``) is the mean per-pixel embedding under
        the crop / its mask; an interleave entry is the normalised mean of its entities' vectors
        (``encode_entities``), so an entry without references is exactly its text. ``images`` /
        ``masks``: what ``<image:N>`` names (see ``find3d.interface.syntax``).
        """
        if isinstance(query, (str, InterleaveEntry)):
            vectors = [vector for _, vector in self.encode_entities(query, base_dir, images, masks)]
            return F.normalize(torch.stack(vectors).mean(0), dim=0)
        return self._region_vector(query, None)

    def encode_entities(self, query: str | InterleaveEntry, base_dir: str | Path = ".",
                        images: Sequence[Any] | None = None, masks: Sequence[Any | None] | None = None,
                        ) -> list[tuple[str, torch.Tensor]]:
        """``(label, (D,) unit vector)`` per entity of a query: its words (if any), then each visual reference
        in sentence order (label: the reference's file, or ``<image:N>``)."""
        entry = _entry(query, base_dir, images, masks)
        parts = [(e.ref.source, self._region_vector(e.ref.image, e.ref.mask)) for e in entry.entities
                 if e.ref is not None]
        words = _sentence_text(entry)
        if words:
            noun_phrase = LEADING_ARTICLE.sub("", words)
            parts.insert(0, (words, self._text_vector(self._class_prompt.format(noun_phrase))))
        if not parts:
            raise InputError(f"query {query!r}: nothing to embed; pass words or an <image:...> reference")
        return parts

    def _text_vector(self, text: str) -> torch.Tensor:
        """The class-space vector of ``text``, cached: the model is frozen, and robots ask the same things again."""
        vector = self._text_cache.get(text)
        if vector is None:
            with torch.no_grad():
                vector = self.model.encode_texts([text], kind="class")[0].float().cpu()
            if len(self._text_cache) >= TEXT_CACHE:
                self._text_cache.pop(next(iter(self._text_cache)))  # oldest first: dicts keep insertion order
            self._text_cache[text] = vector
        return vector

    def _region_vector(self, image: Any, mask: np.ndarray | None) -> torch.Tensor:
        """Mean per-pixel embedding of ``image`` under ``mask`` (whole image when None), normalised."""
        array = as_rgb_array(image, "query image")
        features = self.embed_pixels(array).features  # (h, w, D)
        if mask is None:
            return F.normalize(features.mean((0, 1)), dim=0)
        mask = np.asarray(mask, dtype=np.float32)
        if mask.shape != array.shape[:2] or not mask.any():
            raise InputError(f"query reference: needs a non-empty mask of its image's size {array.shape[:2]}, "
                             f"got shape {mask.shape}")
        weights = torch.from_numpy(mask)[None, None]
        # area resampling keeps a tiny (even one-pixel) region's weight above zero
        weights = F.interpolate(weights, size=features.shape[:2], mode="area")[0, 0]
        return F.normalize((features * weights[..., None]).sum((0, 1)), dim=0)


def _ranked(similarity: np.ndarray) -> RetrievalResult:
    similarity = similarity.astype(np.float32)
    return RetrievalResult(similarity, np.argsort(-similarity, axis=1, kind="stable"),
                           np.argsort(-similarity.T, axis=1, kind="stable"))
