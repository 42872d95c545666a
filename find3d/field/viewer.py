"""Asking the field in nerfstudio's viewer and ``ns-render``: find3d's query controls and two render outputs.

Controls (nerfstudio's own viewer elements, on ``FindFieldModel.find3d``; the viewer lists them under
Custom Elements > model > find3d, in the order of their attribute names):

- **Query**: find3d's one syntax, as ``find3d query`` takes it: text, ``<image:PATH>`` (optionally
  ``#MASK.png`` or ``#box=x0,y0,x1,y1``; a relative PATH is resolved from the folder the viewer was
  started in) and both interleaved ("the mug next to <image:keys.png>").
- **Negatives**: comma-separated phrases; empty: the interface's vocabulary minus the query's class
  (``find3d query``'s default).
- **Threshold**, **Whole objects** (on: the export's 3D segments answer, ``Field.query(objects=True)`` through
  ``find3d.query.answer.answer``, relations included; off: each pixel on its own), **Export folder** (the
  ``find3d export-field`` output whole objects need; empty: the newest export of this run, found through
  the run's folder), a read-only **Status** line (what was answered, or why not), **Go to best view** (moves
  the viewer's camera to the training frame that sees most of the answer: FIND's frame localisation) and
  **Write answer** (``mask.ply``, ``query.npz``, ``frames.json`` and relevancy PNGs exactly as ``find3d query``
  writes them, into ``RUN/find3d_queries/<query>/``).

Outputs (added to ``get_outputs_for_camera``, the whole-image render of the viewer and ``ns-render``, so they
appear in the viewer's "Output type" and in ``ns-render --rendered-output-names``):

- ``relevancy`` (H, W, 1): LERF relevancy of each pixel's rendered feature against the query and the
  negatives, as ``Field.relevancy`` scores points; one channel, so the viewer's colormap controls apply.
- ``composited`` (H, W, 3): the RGB render with the answer drawn over it as the query PNGs draw it
  (``find3d.query.render.relevancy_image``: turbo colour of the relevancy at alpha 0.6). With whole objects,
  the answer's own exported points (the selected segments) are splatted into the view where no other
  exported point lies in front of them (``Splatter``), tinted and outlined. Otherwise, the pixels at or
  above the threshold. An answer that selects nothing highlights nothing (the Status says so).

Cost: the query is encoded once per change, never per ray batch, on a worker thread that holds no lock
(the text box sends every keystroke, so it waits ``DEBOUNCE_S`` for typing to pause; the newest settings
win), so training never waits for it. Per frame the outputs cost one (1 + K) x D product per pixel on the
feature image the model renders anyway, and with whole objects one projection of the export's points (its
z-buffer) and a splat of the selected ones (``bench/viewer.py`` measures both against the RGB frame).

``ns-render`` and ``ns-viewer`` start the controls from environment variables: ``FIND3D_QUERY``,
``FIND3D_NEGATIVES``, ``FIND3D_THRESHOLD``, ``FIND3D_FIELD`` (the export folder: whole objects need it here,
as ns-render has no run folder to search). Environment variables, not command-line flags, because
``ns-render`` is nerfstudio's own command: it parses a fixed set of flags and loads the run's config.yml
as saved, so a plugin has no way to add options to it; the environment reaches the model unchanged,
without a wrapper command or an edited config.yml. Without a viewer the answer is computed on the first
frame, before rendering.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import numpy as np
import torch
import torch.nn.functional as F
from nerfstudio.cameras.cameras import CameraType
from nerfstudio.utils.colormaps import ColormapOptions, apply_colormap
from nerfstudio.viewer.viewer_elements import (
    ViewerButton,
    ViewerCheckbox,
    ViewerControl,
    ViewerSlider,
    ViewerText,
)
from torch import nn

from find3d.errors import DataError, Find3dError, InputError

if TYPE_CHECKING:
    from nerfstudio.cameras.cameras import Cameras

    from find3d.query.field import Field, QueryResult

ENV_QUERY, ENV_NEGATIVES, ENV_THRESHOLD = "FIND3D_QUERY", "FIND3D_NEGATIVES", "FIND3D_THRESHOLD"
ENV_FIELD = "FIND3D_FIELD"
MIN_ACCUMULATION = 0.5  # rays less opaque than this saw no surface in the box: never highlighted
DEBOUNCE_S = 0.3  # the viewer's text box sends every keystroke: encode once typing pauses this long
EXPORT_SEARCH_DEPTH = 4  # ancestors of the run folder whose subfolders may hold its export (outputs/x/RUN/...)
MAX_SPLAT_RADIUS = 8  # px: a point nearer than its spacing allows draws no bigger square than this
ROW_CHUNK = 64  # feature-image rows scored at a time: bounds the normalised copy of the (H, W, D) features
QUERIES_DIRNAME = "find3d_queries"  # Write answer's folder inside the run
LOADING = "Loading the FIND interface (once) ..."
NO_QUERY = "Type a query: text, <image:PATH>, or both (\"the mug next to <image:keys.png>\")."


@dataclass(frozen=True)
class Settings:
    """What the controls say: one immutable snapshot per answer."""

    query: str = ""
    negatives: str = ""  # comma-separated phrases; empty: the interface's default negatives
    threshold: float = 0.5
    objects: bool = True
    export: str = ""  # export folder; empty: found through the run folder

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> Settings:
        """The controls' starting values from ``FIND3D_*`` variables (module docstring); a bad one is an InputError."""
        threshold = environ.get(ENV_THRESHOLD, "").strip()
        value = 0.5
        if threshold:
            try:
                value = float(threshold)
            except ValueError:
                value = math.nan
            if not 0.0 <= value <= 1.0:
                raise InputError(f"{ENV_THRESHOLD}={threshold!r}: not a number in [0, 1]; set it to e.g. 0.5 "
                                 "or unset it.")
        return cls(query=environ.get(ENV_QUERY, "").strip(), negatives=environ.get(ENV_NEGATIVES, "").strip(),
                   threshold=value, export=environ.get(ENV_FIELD, "").strip())

    def negative_phrases(self) -> list[str] | None:
        """The negatives as phrases; None (empty text) means the interface's default negatives."""
        phrases = [phrase.strip() for phrase in self.negatives.split(",") if phrase.strip()]
        return phrases or None


@dataclass
class ViewAnswer:
    """An answered ``Settings``: what the outputs draw (CPU tensors; moved to the render device once)."""

    settings: Settings
    message: str
    vectors: torch.Tensor | None = None  # (1 + K, D) unit: the query, then the negatives; None: nothing to draw
    negatives: bool = False
    export: Field | None = None  # the export, when whole objects answer
    result: QueryResult | None = None
    splatter: Splatter | None = None  # the export's points in nerfstudio's frame

    def on(self, device: torch.device) -> torch.Tensor | None:
        """``vectors`` on ``device`` (copied once)."""
        if self.vectors is not None and self.vectors.device != device:
            self.vectors = self.vectors.to(device)
        return self.vectors


class Splatter:
    """Draws an export's selected points into any pinhole view, as the query PNGs draw them.

    The points are ``find3d export-field``'s (here in nerfstudio's frame), on the frames' depth surfaces.
    Occlusion comes from the export itself, as ``Field.visible`` decides it for the PNGs: a z-buffer of all
    its points over cells of about one splat, a selected point showing when it is no farther than
    ``OCCLUSION_TOLERANCE`` behind its cell's nearest point; not from the field's rendered depth, which a
    short training leaves foggy. Each shown point is a square about its footprint (the points' median
    spacing at its depth, at most ``MAX_SPLAT_RADIUS`` px); the nearest point wins a pixel.
    """

    def __init__(self, points: np.ndarray) -> None:
        from scipy.spatial import cKDTree

        self.points = np.asarray(points, dtype=np.float32)
        sample = self.points[np.random.default_rng(0).permutation(len(self.points))[:20_000]]
        spacing = np.median(cKDTree(self.points).query(sample, k=2)[0][:, 1]) if len(self.points) > 1 else 0.0
        self.spacing = float(spacing)

    def draw(self, selected: np.ndarray, relevancy: np.ndarray, camera: Cameras, height: int, width: int,
             device: torch.device) -> torch.Tensor:
        """(H, W) float on ``device``: the ``relevancy`` (one per exported point) of the ``selected`` points
        drawn, -1 where none is."""
        from find3d.query.field import OCCLUSION_TOLERANCE
        from find3d.query.render import project_points

        out = torch.full((height * width,), -1.0)
        c2w = np.eye(4)
        c2w[:3] = camera.camera_to_worlds[0].detach().cpu().numpy()
        fx, fy, cx, cy = (float(getattr(camera, name).reshape(-1)[0]) for name in ("fx", "fy", "cx", "cy"))
        uv, z = project_points(self.points, c2w, fx, fy, cx, cy)
        inside = (z > 1e-6) & (uv[:, 0] >= 0) & (uv[:, 0] < width) & (uv[:, 1] >= 0) & (uv[:, 1] < height)
        shown = np.asarray(selected, np.int64)[inside[selected]]
        if len(shown) == 0:
            return out.reshape(height, width).to(device)
        radius = np.clip(np.ceil(0.5 * self.spacing * fx / np.maximum(z, 1e-6)), 0, MAX_SPLAT_RADIUS).astype(np.int64)
        stride = int(2 * np.median(radius[inside]) + 1)  # z-buffer cells of about one splat
        cols = -(-width // stride)
        cell = torch.from_numpy((np.floor(uv[:, 1] / stride) * cols + np.floor(uv[:, 0] / stride)).astype(np.int64))
        depth = torch.from_numpy(z.astype(np.float32))
        visible_rows = torch.from_numpy(np.flatnonzero(inside))
        zbuffer = torch.full((-(-height // stride) * cols,), math.inf).scatter_reduce(
            0, cell[visible_rows], depth[visible_rows], "amin")
        order = torch.from_numpy(shown)
        front = depth[order] <= zbuffer[cell[order]] * (1.0 + OCCLUSION_TOLERANCE)
        shown = shown[front.numpy()]
        column, row = np.floor(uv[shown, 0]).astype(np.int64), np.floor(uv[shown, 1]).astype(np.int64)
        values_shown = np.asarray(relevancy, np.float32)[shown]
        pixels, depths, drawn = [], [], []
        for r in np.unique(radius[shown]):  # one square size at a time: every offset of that square
            group = np.flatnonzero(radius[shown] == r)
            for dy in range(-r, r + 1):
                for dx in range(-r, r + 1):
                    y, x = row[group] + dy, column[group] + dx
                    keep = (y >= 0) & (y < height) & (x >= 0) & (x < width)
                    pixels.append(y[keep] * width + x[keep])
                    depths.append(z[shown][group][keep])
                    drawn.append(values_shown[group][keep])
        pixel = torch.from_numpy(np.concatenate(pixels))
        near = torch.from_numpy(np.concatenate(depths).astype(np.float32))
        nearest = torch.full((height * width,), math.inf).scatter_reduce(0, pixel, near, "amin")
        winner = near == nearest[pixel]
        out[pixel[winner]] = torch.from_numpy(np.concatenate(drawn))[winner]
        return out.reshape(height, width).to(device)


def find_export(run_config: Path) -> Path | None:
    """The newest export (``find3d export-field`` folder) whose meta.json names this run's config.yml, among
    the subfolders of the run folder and of its ``EXPORT_SEARCH_DEPTH`` ancestors (exports usually sit beside
    the runs folder, as the demo's ``outputs/demo/field`` beside ``outputs/demo/field_runs/...``)."""
    from find3d.fileio import read_json
    from find3d.query.field import FORMAT

    target = run_config.resolve()
    found = []
    for folder in [run_config.parent, *list(run_config.parent.parents)[:EXPORT_SEARCH_DEPTH]]:
        for meta in folder.glob("*/meta.json"):
            if meta.parent.name.startswith("."):  # hidden: a staging folder, not (yet) an export
                continue
            with contextlib.suppress(Find3dError, OSError):
                data = read_json(meta)
                if isinstance(data, dict) and data.get("format") == FORMAT and \
                        Path(str(data.get("config", ""))).resolve() == target:
                    found.append(meta)
    return max(found, key=lambda meta: meta.stat().st_mtime).parent if found else None


def pose_to_nerfstudio(c2w: np.ndarray, transform: np.ndarray, scale: float) -> np.ndarray:
    """(3, 4) camera-to-world in nerfstudio's frame of an original-world OpenGL ``c2w``, as its dataparser does."""
    from find3d.field.export import to_nerfstudio

    rotation = transform[:3, :3] @ np.asarray(c2w, dtype=np.float64)[:3, :3]
    position = to_nerfstudio(np.asarray(c2w, dtype=np.float64)[None, :3, 3], transform, scale)[0]
    return np.concatenate([rotation, position[:, None].astype(np.float64)], axis=1)


@dataclass
class _Source:
    """What ``run_query.load_interface`` checks a checkpoint against: here the run's embeddings store."""

    root: Path
    dim: int
    meta: dict[str, Any]


class Asker:
    """Answers ``Settings`` for one run: the interface (loaded once), exports (opened once per folder)."""

    _exports: dict[Path, tuple[Field, Splatter]]

    def __init__(self, metadata: Mapping[str, Any], dim: int) -> None:
        self.source = _Source(Path(str(metadata.get("embeddings_dir", "the run's embeddings store"))), dim,
                              {"checkpoint": metadata.get("checkpoint"), "model": metadata.get("model")})
        self._interface: Any = None
        self._exports = {}

    @property
    def interface_loaded(self) -> bool:
        return self._interface is not None

    def interface(self) -> Any:
        """The FIND interface that embedded the run's frames (the checkpoint its embeddings store records)."""
        if self._interface is None:
            from find3d.query.run_query import load_interface

            recorded = self.source.meta.get("checkpoint")
            if not recorded or not Path(recorded).exists():
                gone = f" ({recorded} is gone)" if recorded else ""
                raise InputError(f"{self.source.root}: no interface checkpoint recorded{gone}; queries are encoded "
                                 "with the one `find3d embed-frames` used for this run: put it back there, or re-run "
                                 "embed-frames with one and retrain.")
            # its checks: the checkpoint embeds into this run's width, and is the model the store records
            self._interface = load_interface(self.source, Path(recorded))
        return self._interface

    def export_folder(self, settings: Settings, run_config: Path | None) -> Path | None:
        if settings.export:
            return Path(settings.export).expanduser()
        return find_export(run_config) if run_config is not None else None

    def open_export(self, folder: Path) -> tuple[Field, Splatter]:
        """The export at ``folder`` and its points in nerfstudio's frame (cached)."""
        from find3d.field.export import to_nerfstudio
        from find3d.query.field import Field

        folder = folder.resolve()
        if folder not in self._exports:
            export = Field.load(folder)
            recorded = export.meta.get("model")
            expected = self.source.meta.get("model")
            if export.dim != self.source.dim or (recorded and expected and recorded != expected):
                raise InputError(f"export {folder}: made from other embeddings than this run's (model {recorded}, "
                                 f"{export.dim}-d; this run: {expected}, {self.source.dim}-d); give this run's "
                                 "export in 'Export folder', or clear it to find one.")
            world = export.meta.get("world") or {}
            try:
                transform = np.asarray(world["dataparser_transform"], dtype=np.float64)
                scale = float(world["dataparser_scale"])
            except (KeyError, TypeError, ValueError) as err:
                raise DataError(f"export {folder}: meta.json has no world transform ({err}); re-run `find3d "
                                "export-field` for this run.") from err
            self._exports[folder] = (export, Splatter(to_nerfstudio(export.points, transform, scale)))
        return self._exports[folder]

    def ask(self, settings: Settings, run_config: Path | None, base_dir: Path) -> ViewAnswer:
        """Encode and answer ``settings`` (Find3dErrors propagate: the caller shows them)."""
        from find3d.query.field import encode, encode_negatives
        from find3d.query.relations import split_relation

        if not settings.query:
            return ViewAnswer(settings, NO_QUERY)
        interface = self.interface()
        # A spatial relation ("the mug next to <image:keys.png>") is the head entity's relevancy per pixel, as in
        # ``answer``; only whole objects can then pick the instance the relation names.
        relation = split_relation(settings.query)
        vector = encode(interface, relation.head if relation else settings.query, base_dir)
        negatives = encode_negatives(interface, settings.negative_phrases(), base_dir, query_vector=vector)
        stacked = vector[None] if negatives is None else np.concatenate([vector[None], negatives])
        vectors = F.normalize(torch.from_numpy(np.asarray(stacked, dtype=np.float32)), dim=-1)
        answer = ViewAnswer(settings, "", vectors, negatives is not None)
        if not settings.objects:
            answer.message = f"{settings.query!r}: pixels at relevancy >= {settings.threshold:.2f}."
            return answer
        folder = self.export_folder(settings, run_config)
        if folder is None:
            config = run_config or "RUN/config.yml"
            answer.message = (f"{settings.query!r}: per-pixel answer. No export of this run found: whole objects, "
                              f"best view and Write answer need one: `find3d export-field --config {config} --out "
                              "DIR` (give DIR in 'Export folder' if it is not next to the run).")
            return answer
        export, splatter = self.open_export(folder)
        result = self._answer(settings, export, base_dir, top_k=0).result
        answer.export, answer.result, answer.splatter = export, result, splatter
        answer.message = (f"{settings.query!r}: {len(result.indices)} of {len(export)} points of {folder.name}"
                          if result.found else f"{result.describe(settings.query)}; nothing is highlighted.")
        return answer

    def _answer(self, settings: Settings, export: Field, base_dir: Path, top_k: int) -> Any:
        from find3d.query.answer import answer

        return answer(export, self.interface(), settings.query, negatives=settings.negative_phrases(),
                      threshold=settings.threshold, top_k=top_k, base_dir=base_dir, objects=settings.objects)

    def write(self, settings: Settings, run_config: Path, base_dir: Path) -> tuple[Path, int]:
        """``find3d query``'s files for ``settings`` in ``RUN/find3d_queries/<query>/``; (folder, points)."""
        from find3d.query.run_query import write_result

        folder = self.export_folder(settings, run_config)
        if not settings.query:
            raise InputError("Write answer: no query; type one first.")
        if folder is None:
            raise InputError(f"Write answer needs an export of this run: `find3d export-field --config {run_config} "
                             "--out DIR`, then give DIR in 'Export folder' if it is not next to the run.")
        export, _ = self.open_export(folder)
        result = self._answer(settings, export, base_dir, top_k=3).result
        out = run_config.parent / QUERIES_DIRNAME / slug(settings.query)
        write_result(export, result, out, settings.query)
        return out, len(result.indices)


def slug(text: str, limit: int = 60) -> str:
    """A folder name for a query: its letters and digits, lower case, joined by '-'."""
    return "-".join(re.findall(r"[a-z0-9]+", text.lower()))[:limit].strip("-") or "query"


class FieldViewer(nn.Module):
    """find3d's viewer controls and render outputs (module docstring). An ``nn.Module`` without parameters:
    nerfstudio's viewer finds viewer elements only on modules the pipeline owns; checkpoints are unchanged.

    Attribute names set the order in the viewer (it lists elements sorted by name)."""

    def __init__(self, metadata: Mapping[str, Any], dim: int) -> None:
        super().__init__()
        try:
            start = Settings.from_environment(os.environ)
        except Find3dError as err:
            fail(err)
        changed = self._on_change
        self.c1_query = ViewerText("Query", start.query, cb_hook=changed,
                                   hint="text, <image:PATH>, or both: the mug next to <image:keys.png>")
        self.c2_negatives = ViewerText("Negatives", start.negatives, cb_hook=changed,
                                       hint="comma-separated phrases; empty: every other class the interface knows")
        self.c3_threshold = ViewerSlider("Threshold", start.threshold, 0.0, 1.0, 0.01, cb_hook=changed,
                                         hint="least relevancy of a selected object (or pixel)")
        self.c4_whole_objects = ViewerCheckbox("Whole objects", start.objects, cb_hook=changed,
                                               hint="answer with the export's 3D segments (off: single pixels)")
        self.c5_export = ViewerText("Export folder", start.export, cb_hook=changed,
                                    hint="`find3d export-field` output; empty: this run's newest")
        self.c6_status = ViewerText("Status", NO_QUERY, disabled=True)
        self.c7_best_view = ViewerButton("Go to best view", cb_hook=lambda _: self._request("view"))
        self.c8_write = ViewerButton("Write answer", cb_hook=lambda _: self._request("write"))
        self.control = ViewerControl()  # nerfstudio hands it the viewer: clients' cameras, the run folder
        self._asker = Asker(metadata, dim)
        self._answer: ViewAnswer | None = None
        self._base_dir = Path.cwd()  # where relative <image:PATH> references are resolved, as in `find3d query`
        self._pending: set[str] = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._worker: threading.Thread | None = None
        self._started = False  # the worker has been asked to load the interface (first viewer frame)

    # ------------------------------------------------------------------------------------ settings
    def settings(self) -> Settings:
        return Settings(query=str(self.c1_query.value).strip(), negatives=str(self.c2_negatives.value).strip(),
                        threshold=float(self.c3_threshold.value), objects=bool(self.c4_whole_objects.value),
                        export=str(self.c5_export.value).strip())

    def set(self, **values: Any) -> None:
        """Set controls by ``Settings`` field name (for code and tests; a viewer's user types into them)."""
        elements = {"query": self.c1_query, "negatives": self.c2_negatives, "threshold": self.c3_threshold,
                    "objects": self.c4_whole_objects, "export": self.c5_export}
        for name, value in values.items():
            elements[name].value = value

    @property
    def _viewer(self) -> Any:
        return getattr(self.control, "viewer", None)  # set by nerfstudio's viewer when it starts

    def _run_config(self) -> Path | None:
        viewer = self._viewer
        # nerfstudio's viewer log sits in the run folder (its render tab finds config.yml the same way)
        return None if viewer is None else Path(viewer.log_filename).parent / "config.yml"

    # -------------------------------------------------------------------------------------- worker
    def _on_change(self, _: Any) -> None:
        self._request("answer")

    def _request(self, job: str) -> None:
        """Called by the viewer's callbacks (under the trainer's lock): only queues the job for the worker."""
        with self._lock:
            self._pending.add(job)
            if self._worker is None:
                self._worker = threading.Thread(target=self._work, name="find3d-viewer", daemon=True)
                self._worker.start()
        self._wake.set()

    def _work(self) -> None:
        # One torch thread for this thread only (OpenMP's count is per thread): beside training or rendering on
        # a busy CPU, two threads' hand-offs stall (measured on 2 cores at load 6: a new text encodes in
        # 0.1-0.2 s with one thread, 0.3-1.4 s with two), and training keeps its cores.
        torch.set_num_threads(1)
        while True:
            self._wake.wait()
            if "answer" in self._pending:
                time.sleep(DEBOUNCE_S)
            with self._lock:
                jobs, self._pending = self._pending, set()
                self._wake.clear()
            if "load" in jobs:
                self._report(self._load)
            if "answer" in jobs:
                self._report(self._answer_now)
            if "view" in jobs:
                self._report(self._go_to_best_view)
            if "write" in jobs:
                self._report(self._write)

    def _report(self, job: Any) -> None:
        """Run a job and show its message in Status: errors never end the worker (nor the training)."""
        try:
            message = job()
        except Find3dError as err:
            message = f"error: {err}"
        except Exception as err:  # a viewer must outlive any one bad query
            message = f"error: {type(err).__name__}: {err}"
        # Setting the value also makes nerfstudio re-render (its hook on every element), with the new answer.
        self.c6_status.value = message

    def _load(self) -> str:
        before = self.c6_status.value
        self.c6_status.value = LOADING
        self._asker.interface()
        return before

    def _answer_now(self) -> str:
        settings = self.settings()
        if settings.query and not self._asker.interface_loaded:
            self.c6_status.value = LOADING
        try:
            self._answer = self._asker.ask(settings, self._run_config(), self._base_dir)
        except Find3dError:
            self._answer = None  # a failed query draws nothing rather than the previous answer
            raise
        return self._answer.message

    def _go_to_best_view(self) -> str:
        import viser.transforms as vtf
        from nerfstudio.viewer.viewer import VISER_NERFSTUDIO_SCALE_RATIO

        answer = self._answer
        if answer is None or answer.export is None or answer.result is None:
            return "Go to best view: needs a whole-object answer on an export (see Status after a query)."
        export, result = answer.export, answer.result
        [best] = export.rank_frames(result.relevancy, result.indices, 1)
        world = export.meta["world"]
        c2w = pose_to_nerfstudio(best.c2w, np.asarray(world["dataparser_transform"]), world["dataparser_scale"])
        # As nerfstudio's viewer moves to a clicked training camera, plus that camera's vertical field of view.
        rotation = vtf.SO3.from_matrix(c2w[:3, :3]) @ vtf.SO3.from_x_radians(np.pi)
        for client in self.control.viser_server.get_clients().values():
            with client.atomic():
                client.camera.fov = 2.0 * math.atan(best.height / (2.0 * best.fy))
                client.camera.position = c2w[:3, 3] * VISER_NERFSTUDIO_SCALE_RATIO
                client.camera.wxyz = rotation.wxyz
        return f"{answer.message}; best view: {best.file_path} ({best.score:.2f} of the answer in view)"

    def _write(self) -> str:
        run_config = self._run_config()
        if run_config is None:
            raise InputError("Write answer: no run folder (not in nerfstudio's viewer).")
        out, points = self._asker.write(self.settings(), run_config, self._base_dir)
        return f"wrote {points} points' answer (mask.ply, query.npz, frames.json, relevancy PNGs) to {out}"

    # ------------------------------------------------------------------------------------- outputs
    def current(self) -> ViewAnswer | None:
        """The answer the outputs draw. Without a viewer (ns-render, code) the controls' settings are answered
        here, at once; in the viewer the worker answers them and this never waits."""
        if self._viewer is not None:
            return self._answer
        settings = self.settings()
        if settings.query and (self._answer is None or self._answer.settings != settings):
            self._answer = self._asker.ask(settings, None, self._base_dir)
        return self._answer if settings.query else None

    def add_outputs(self, outputs: dict[str, torch.Tensor], camera: Cameras) -> dict[str, torch.Tensor]:
        """``relevancy`` and ``composited`` for the image of ``camera`` (module docstring): whenever a query is
        set, and always in the viewer (so that they are listed in Output type before the first query)."""
        try:
            answer = self.current()
        except Find3dError as err:  # only without a viewer: a FIND3D_* setting or a query set from code
            fail(err)
        if answer is None and self._viewer is None:
            return outputs
        if self._viewer is not None and not self._started:
            # The interface takes seconds to load: start when the viewer first renders, not at the first query;
            # and answer a query the controls started with (FIND3D_QUERY).
            self._started = True
            self._request("load")
            if self.settings().query:
                self._request("answer")
        rgb = outputs["rgb"].clamp(0.0, 1.0)
        vectors = None if answer is None else answer.on(rgb.device)
        if answer is None or vectors is None:
            outputs["relevancy"] = torch.zeros_like(rgb[..., :1])
            outputs["composited"] = rgb
            return outputs
        relevancy = pixel_relevancy(outputs["feature"], vectors, answer.negatives)
        # Splatting needs a pinhole camera; a fisheye or panorama ns-render falls back to the pixel answer.
        objects = answer.splatter is not None and answer.result is not None and \
            int(camera.camera_type.reshape(-1)[0]) == CameraType.PERSPECTIVE.value
        if objects:
            height, width = rgb.shape[:2]
            value = answer.splatter.draw(answer.result.indices, answer.result.relevancy, camera, height, width,
                                         rgb.device)
            mask = value >= 0
        else:
            value = torch.where(relevancy[..., 0] >= answer.settings.threshold, relevancy[..., 0], -1.0)
            mask = (value >= 0) & (outputs["accumulation"][..., 0] >= MIN_ACCUMULATION)
        outputs["relevancy"] = relevancy
        outputs["composited"] = composite(rgb, value.clamp(0.0, 1.0), mask, outline=objects)
        return outputs


def pixel_relevancy(feature: torch.Tensor, vectors: torch.Tensor, negatives: bool) -> torch.Tensor:
    """(H, W, 1) LERF relevancy of rendered features (H, W, D) against unit ``vectors`` (query, then negatives),
    as ``Field.relevancy`` scores points: sigmoid(T (s+ - max s-)), or (1 + s+) / 2 without negatives."""
    from find3d.query.field import TEMPERATURE

    out = torch.empty(*feature.shape[:-1], 1, device=feature.device)
    for start in range(0, feature.shape[0], ROW_CHUNK):
        rows = slice(start, start + ROW_CHUNK)
        sims = F.normalize(feature[rows].float(), dim=-1) @ vectors.T
        if negatives:
            out[rows, ..., 0] = torch.sigmoid(TEMPERATURE * (sims[..., 0] - sims[..., 1:].amax(dim=-1)))
        else:
            out[rows, ..., 0] = (1.0 + sims[..., 0]) / 2
    return out


def composite(rgb: torch.Tensor, value: torch.Tensor, mask: torch.Tensor, outline: bool) -> torch.Tensor:
    """``rgb`` (H, W, 3) with turbo(``value``) over the ``mask`` pixels at ``HIGHLIGHT_ALPHA`` (relevancy_image's
    look); ``outline``: the mask's border pixels in ``OUTLINE_RGB``."""
    from find3d.query.render import HIGHLIGHT_ALPHA, OUTLINE_RGB  # not at start-up: it loads find3d.query

    colour = apply_colormap(value[..., None], ColormapOptions(colormap="turbo"))
    out = torch.where(mask[..., None], (1.0 - HIGHLIGHT_ALPHA) * rgb + HIGHLIGHT_ALPHA * colour, rgb)
    if outline and mask.any():
        outside = (~mask).float()[None, None]
        border = mask & (F.max_pool2d(outside, 3, stride=1, padding=1)[0, 0] > 0)
        out = torch.where(border[..., None], torch.tensor(OUTLINE_RGB, device=rgb.device), out)
    return out


def fail(err: Find3dError) -> NoReturn:
    """ns-render / ns-eval: a bad FIND3D_* setting ends the command with its message, not a traceback."""
    print(f"find3d: error: {err}", file=sys.stderr)
    raise SystemExit(2)
