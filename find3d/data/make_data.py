"""``find3d make-data``: render a 2D dataset in the official COCO / RefCOCOg / Karpathy / FIND-Bench formats.

Every image is drawn from its own random stream ``(seed, image_id)``, so the output is byte-identical
for a seed whatever the number of worker processes. Workers (each with its own pybullet DIRECT client)
render images and write the JPEG and panoptic PNG; the parent assembles the JSON files from small
per-image records. Layout under ``--out`` (the official names, so the official loaders find them)::

    train2017/000000000001.jpg, val2017/...           images (the last ~10% of ids are val)
    annotations/panoptic_{split}2017.json + panoptic_{split}2017/*.png   COCO panoptic (things + stuff)
    annotations/instances_{split}2017.json            COCO instances, things only, RLE masks
    annotations/captions_{split}2017.json             5 captions per image
    refcocog/refs(umd).p, refcocog/instances.json     RefCOCOg refs (ann_id = instance annotation id)
    karpathy/dataset_coco.json                        Karpathy split (val images alternate val / test)
    findbench/coco_{entity,paragraph,interleave}_{split}.json   FIND-Bench (annotation_id = panoptic id)
    dataset.json                                      manifest: generator, seed, size, clutter, splits, version
"""

from __future__ import annotations

import argparse
import json
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

# The engine modules import pybullet and pycocotools only inside the functions that use them.
from find3d import validate
from find3d.data.engine import coco, language
from find3d.data.engine.annotate import ImageJob, image_record, segment_map, write_image
from find3d.data.engine.clutter import compose_clutter
from find3d.data.engine.output import prepare_folder
from find3d.data.engine.scene import SceneBuilder, camera_facing_wall, compose_scene
from find3d.errors import InputError
from find3d.fileio import atomic_open, atomic_write_json

VERSION = "1.0"
SPLITS = ("train", "val")
# Everything make-data writes; --overwrite removes exactly these, never anything else in the folder.
OUTPUTS = ("train2017", "val2017", "annotations", "refcocog", "karpathy", "findbench", "dataset.json")

_BUILDER: SceneBuilder | None = None  # one pybullet client per worker process, created on first use


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path, help="output folder (created; must be empty)")
    parser.add_argument("--images", type=int, default=100, help="number of images (default 100)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; same seed, same files (default 0)")
    parser.add_argument("--size", type=int, default=256, help="image width and height in pixels (default 256)")
    parser.add_argument("--val-fraction", type=float, default=0.1, help="share of images in val2017 (default 0.1)")
    parser.add_argument("--workers", type=int, default=2, help="rendering processes (default 2)")
    parser.add_argument("--clutter", type=float, default=0.0, metavar="SHARE",
                        help="share of images whose objects touch each other, as make-scene --clutter lays them "
                             "out (0-1; default 0: objects apart). The other images are byte-identical to a "
                             "--clutter 0 dataset's")
    parser.add_argument("--overwrite", action="store_true", help="replace a previous make-data output in --out")


def run(args: argparse.Namespace) -> int:
    manifest = make_data(args.out, images=args.images, seed=args.seed, size=args.size,
                         val_fraction=args.val_fraction, workers=args.workers, overwrite=args.overwrite,
                         clutter=args.clutter)
    print(f"wrote {manifest['splits']['train']} train + {manifest['splits']['val']} val images to {args.out}")
    return 0


def make_data(out: str | Path, images: int = 100, seed: int = 0, size: int = 256, val_fraction: float = 0.1,
              workers: int = 2, overwrite: bool = False, clutter: float = 0.0) -> dict[str, Any]:
    """Render ``images`` tabletop images into ``out``; returns the ``dataset.json`` manifest. ``clutter``: the
    share of images composed with ``compose_clutter`` (objects in contact) instead of ``compose_scene``."""
    _check_arguments(images, size, val_fraction, workers, clutter)
    validate.integer(seed, "seed", minimum=0)  # numpy refuses negative seeds, after the folders exist
    out = Path(out)
    folders = [f"{split}2017" for split in SPLITS] + [f"annotations/panoptic_{split}2017" for split in SPLITS]
    prepare_folder(out, overwrite, OUTPUTS, folders)
    n_val = min(images, max(1, round(images * val_fraction)))
    # The last n_val ids form val, so adding images to a dataset never reshuffles the splits' heads.
    jobs = [ImageJob(i, "val" if i > images - n_val else "train", seed, size, str(out), clutter)
            for i in range(1, images + 1)]
    records: list[dict] = []
    with tqdm(total=images, desc="make-data", unit="img", disable=None) as bar:
        for record in _render_all(jobs, workers):
            records.append(record)
            bar.update()
    _write_annotations(out, records, seed)
    manifest = {"generator": "find3d make-data", "seed": seed, "size": size, "clutter": clutter,
                "splits": {split: sum(r["split"] == split for r in records) for split in SPLITS}, "version": VERSION}
    atomic_write_json(out / "dataset.json", manifest)
    return manifest


def _check_arguments(images: int, size: int, val_fraction: float, workers: int, clutter: float) -> None:
    if images < 1:
        raise InputError(f"--images {images}: need at least 1 image; pass e.g. --images 100.")
    if size < 32:
        raise InputError(f"--size {size}: images must be at least 32 px; pass e.g. --size 256.")
    if not 0.0 <= val_fraction < 1.0:
        raise InputError(f"--val-fraction {val_fraction}: must lie in [0, 1); pass e.g. 0.1.")
    if workers < 1:
        raise InputError(f"--workers {workers}: need at least 1 process; pass --workers 1 or 2.")
    if not 0.0 <= clutter <= 1.0:
        raise InputError(f"--clutter {clutter}: a share of the images, in [0, 1]; pass e.g. 0.5.")


def _render_all(jobs: list[ImageJob], workers: int) -> Iterator[dict[str, Any]]:
    """Yield records in job order; a spawn pool keeps pybullet out of the parent process."""
    if workers == 1 or len(jobs) < 4:
        builder = SceneBuilder()
        try:
            yield from (render_job(job, builder) for job in jobs)
        finally:
            builder.close()
        return
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        yield from pool.imap(_render_in_worker, jobs, chunksize=4)


def _render_in_worker(job: ImageJob) -> dict[str, Any]:
    """Pool entry point: one pybullet client per worker process, kept for all of its jobs."""
    global _BUILDER
    if _BUILDER is None:
        _BUILDER = SceneBuilder()
    return render_job(job, _BUILDER)


def render_job(job: ImageJob, builder: SceneBuilder) -> dict[str, Any]:
    """Render one image from its own random stream and write its JPEG and panoptic PNG."""
    rng = np.random.default_rng([job.seed, job.image_id])
    # The choice draws from a stream of its own, so a mixed dataset's other images equal a --clutter 0 one's.
    cluttered = job.clutter > 0 and np.random.default_rng([job.seed, job.image_id, 4]).random() < job.clutter
    spec = compose_clutter(rng) if cluttered else compose_scene(rng)
    bodies = builder.build(spec)
    rendered = builder.render(camera_facing_wall(rng, spec), spec.light, job.size, job.size)
    ids, segments = segment_map(rendered, spec, bodies)
    write_image(job, rendered, ids)
    return image_record(job, ids, segments)


def _write_annotations(out: Path, records: list[dict], seed: int) -> None:
    texts = {r["image_id"]: language.captions(r, np.random.default_rng([seed, r["image_id"], 1])) for r in records}
    for split in SPLITS:
        chosen = [r for r in records if r["split"] == split]
        notes = out / "annotations"
        atomic_write_json(notes / f"panoptic_{split}2017.json", coco.panoptic(chosen))
        atomic_write_json(notes / f"instances_{split}2017.json", coco.instances(chosen))
        atomic_write_json(notes / f"captions_{split}2017.json", coco.captions(chosen, texts))
        entity = {r["image_id"]: language.entity_entry(r, np.random.default_rng([seed, r["image_id"], 2]))
                  for r in chosen}
        paragraph = {r["image_id"]: language.paragraph_entry(r, np.random.default_rng([seed, r["image_id"], 4]))
                     for r in chosen}
        atomic_write_json(out / "findbench" / f"coco_entity_{split}.json", coco.findbench(chosen, entity))
        atomic_write_json(out / "findbench" / f"coco_paragraph_{split}.json", coco.findbench(chosen, paragraph))
        atomic_write_json(out / "findbench" / f"coco_interleave_{split}.json", coco.interleave(chosen, entity, seed))
    # Pickle memoises by object identity, and records that came back from workers share fewer objects
    # than records made in-process; a JSON round trip gives equal objects equal sharing, hence equal bytes.
    refs = json.loads(json.dumps(coco.refs(records)))
    with atomic_open(out / "refcocog" / "refs(umd).p", "wb") as handle:
        pickle.dump(refs, handle, protocol=4)
    referenced = {ref["image_id"] for ref in refs}
    atomic_write_json(out / "refcocog" / "instances.json",
                      coco.instances([r for r in records if r["image_id"] in referenced]))
    atomic_write_json(out / "karpathy" / "dataset_coco.json", coco.karpathy(records, texts))
