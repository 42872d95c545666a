"""``find3d eval``: every FIND task of a checkpoint on a dataset split, as FIND / X-Decoder / SEEM evaluate.

Data: ``FindDataset`` with deterministic evaluation geometry (``augment=False``, the checkpoint's
image size), every phrase / interleave entry of an image kept; metrics are computed on that canvas.

- generic: PQ/SQ/RQ (all, things, stuff) from panoptic id maps; mask AP by pycocotools over thing
  segments; semantic mIoU with GT labels derived from the panoptic segments (void = ignore). With
  class descriptions available (``descriptions.py``) the same metrics again with every class name
  replaced by its description (paper Table 3), reported as ``generic_descriptions``.
- grounding: cIoU / mIoU / precision@t over every RefCOCO-g sentence and FIND-Bench entity phrase.
- retrieval: IR@k / TR@k with every caption of every image of the split.
- interactive: NoC@{0.5,0.8,0.85,0.9} and IoU@1 over every panoptic segment, clicks from
  ``next_click``; positive clicks are rasterised as the mappers draw a point prompt (a dot of the
  mapper's stroke radius), all in one prompt of kind "point". The interface's spatial prompt has no
  negative channel, so negative clicks add nothing to the prompt (they still count as clicks).
- interleave grounding: cIoU / mIoU / AP50 (= precision@0.5) per entity of every entry.
- interleave retrieval: IR@5 / IR@10 of each entry against every image of the split, the images
  its visual references were cut from excluded (unless that is the target itself).

A task the caller names but the split lacks raises ``DataError``; with ``tasks=None`` such tasks
are listed in ``meta["skipped"]``.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from find3d import validate
from find3d.data.dataset import DataConfig, FindDataset
from find3d.data.formats.join import ImageRecord
from find3d.data.samples import Sample, SpatialPrompt
from find3d.errors import DataError, InputError
from find3d.evaluation.descriptions import class_descriptions
from find3d.evaluation.grounding import GroundingEvaluator
from find3d.evaluation.instance import InstanceEvaluator
from find3d.evaluation.interactive import DEFAULT_THRESHOLDS, Click, InteractiveEvaluator, mask_iou, next_click
from find3d.evaluation.panoptic import PanopticEvaluator, id_map_from_masks
from find3d.evaluation.predictors import GenericPrediction, ModelPredictor, Predictor
from find3d.evaluation.report import EvalReport
from find3d.evaluation.retrieval import ImageTextRetrievalEvaluator, InterleaveRetrievalEvaluator
from find3d.evaluation.semantic import SemanticEvaluator

if TYPE_CHECKING:
    from find3d.interface.api import LoadedInterface

TASKS = ("generic", "grounding", "retrieval", "interactive", "interleave_grounding", "interleave_retrieval")
IGNORE = 255  # semantic label of void pixels

#: whether an image record carries ground truth for a task (cheap: no image is decoded)
ANNOTATED: dict[str, Callable[[ImageRecord], bool]] = {
    "generic": lambda r: r.panoptic is not None or bool(r.instances),
    "grounding": lambda r: bool(r.refs) or any(kind == "entity" for kind, _ in r.bench),
    "retrieval": lambda r: bool(r.captions),
    "interactive": lambda r: r.panoptic is not None or bool(r.instances),
    "interleave_grounding": lambda r: bool(r.bench),
    "interleave_retrieval": lambda r: bool(r.bench),
}


@dataclass
class EvalOptions:
    """Knobs of one evaluation run (the CLI flags)."""

    tasks: tuple[str, ...] | None = None
    split: str = "val"
    out: Path | None = None
    max_images: int | None = None
    batch_size: int = 4
    max_clicks: int = 20
    figures: int = 4  # images with qualitative PNGs
    descriptions: Path | None = None  # JSON {"class name": "description"}; None: the catalogue table
    class_prompt: str = "a photo of a {}."


def eval_dataset(data: str | os.PathLike, split: str, image_size: int, eval_max_size: int | None) -> FindDataset:
    """The split with evaluation geometry and every phrase / entry kept (no training subsampling)."""
    config = DataConfig(image_size=image_size, eval_max_size=eval_max_size, augment=False,
                        max_phrases=1 << 30, max_interleave=1 << 30)
    return FindDataset(data, split, config)


def resolve_tasks(dataset: FindDataset, indices: Sequence[int], requested: Sequence[str] | None
                  ) -> tuple[list[str], list[str]]:
    """(tasks to run, tasks skipped for lack of annotations); a named task without annotations raises."""
    requested = None if requested is None else validate.strings(requested, "tasks", allow_empty=True)  # "generic": one
    unknown = [t for t in requested or () if t not in TASKS]
    if unknown:
        raise InputError(f"unknown task(s) {unknown}; choose from {list(TASKS)}.")
    records = [dataset.records[i] for i in indices]
    present = [t for t in TASKS if any(ANNOTATED[t](r) for r in records)]
    if requested:
        missing = [t for t in requested if t not in present]
        if missing:
            raise DataError(
                f"{dataset.root} split '{dataset.split}' has no annotations for {missing}; drop them from "
                f"--tasks (this split supports {present or 'none'}) or add the annotation files "
                "(see `find3d check-data`).")
        return [t for t in TASKS if t in requested], []
    return present, [t for t in TASKS if t not in present]


# ------------------------------------------------------------------------------------- ground truth


def panoptic_gt(sample: Sample) -> tuple[np.ndarray, list]:
    return id_map_from_masks(np.stack([s.mask for s in sample.segments]), [s.category for s in sample.segments])


def semantic_gt(sample: Sample) -> np.ndarray:
    labels = np.full(sample.image.shape[:2], IGNORE, dtype=np.int64)
    for segment in sample.segments:
        labels[segment.mask] = segment.category
    return labels


def entity_targets(sample: Sample) -> np.ndarray:
    """GT masks of the sample's (single) interleave entry, in span order as collate orders entities."""
    entities = sorted(sample.interleave[0].entities, key=lambda e: e.span[0])
    return np.stack([e.target for e in entities])


def click_prompt(clicks: Sequence[Click], target: np.ndarray) -> SpatialPrompt:
    """Positive clicks as the mappers draw a point prompt: filled dots of the mapper's stroke radius."""
    import cv2

    from find3d.data.mappers import _stroke  # the mapper's radius, so clicks look as in training

    canvas = np.zeros(target.shape, dtype=np.uint8)
    for click in clicks:
        if click.positive:
            cv2.circle(canvas, (click.x, click.y), _stroke(target.shape), 1, thickness=-1)
    return SpatialPrompt("point", canvas.astype(bool), target)


# ------------------------------------------------------------------------------------------ tasks


@dataclass
class Evaluators:
    """Every streaming evaluator of a run plus what the figures and retrieval need."""

    num_classes: int
    isthing: list[bool]
    generic: dict[str, tuple[PanopticEvaluator, InstanceEvaluator, SemanticEvaluator]] = field(default_factory=dict)
    grounding: GroundingEvaluator = field(default_factory=GroundingEvaluator)
    retrieval: ImageTextRetrievalEvaluator = field(default_factory=ImageTextRetrievalEvaluator)
    captions: list[tuple[str, int]] = field(default_factory=list)  # (caption, split index of its image)
    interactive: InteractiveEvaluator | None = None
    interleave_grounding: GroundingEvaluator = field(default_factory=GroundingEvaluator)
    interleave_retrieval: InterleaveRetrievalEvaluator = field(default_factory=InterleaveRetrievalEvaluator)

    def add_vocabulary(self, name: str) -> None:
        things = [c + 1 for c, t in enumerate(self.isthing) if t]  # COCO category ids start at 1
        self.generic[name] = (PanopticEvaluator(dict(enumerate(self.isthing))), InstanceEvaluator(things),
                              SemanticEvaluator(self.num_classes, IGNORE))


def update_generic(evaluators: tuple[PanopticEvaluator, InstanceEvaluator, SemanticEvaluator],
                   sample: Sample, pred: GenericPrediction) -> None:
    panoptic, instance, semantic = evaluators
    gt_ids, gt_segments = panoptic_gt(sample)
    panoptic.update(gt_ids, gt_segments, pred.ids, pred.segments)
    semantic.update(semantic_gt(sample), pred.semantic)
    things = [s for s in sample.segments if s.isthing]
    if things:  # images without things add nothing COCO could score
        instance.update(np.stack([s.mask for s in things]), [s.category + 1 for s in things],
                        pred.instance_masks, pred.instance_scores, pred.instance_categories + 1)


def generic_metrics(evaluators: tuple[PanopticEvaluator, InstanceEvaluator, SemanticEvaluator]) -> dict[str, float]:
    panoptic, instance, semantic = evaluators
    metrics = panoptic.compute()
    if instance.gt_annotations:
        metrics.update(instance.compute())
    metrics.update(semantic.compute())
    return metrics


def run_interactive(predictor: Predictor, sample: Sample, evaluator: InteractiveEvaluator) -> None:
    """The click loop for every segment of an image in lockstep: one prediction call per round."""
    targets = [s.mask for s in sample.segments]
    preds = [np.zeros_like(t) for t in targets]
    clicked = [np.zeros_like(t) for t in targets]
    clicks: list[list[Click]] = [[] for _ in targets]
    curves: list[list[float]] = [[] for _ in targets]
    done = [False] * len(targets)
    goal = max(evaluator.thresholds)
    for _ in range(evaluator.max_clicks):
        active = []
        for i, target in enumerate(targets):
            click = None if done[i] else next_click(target, preds[i], clicked[i])
            if click is None:
                done[i] = True
                continue
            clicks[i].append(click)
            clicked[i][click.y, click.x] = True
            active.append(i)
        if not active:
            break
        masks = predictor.interactive(sample, [click_prompt(clicks[i], targets[i]) for i in active])
        for i, mask in zip(active, masks):
            preds[i] = mask
            curves[i].append(mask_iou(mask, targets[i]))
            # As InteractiveEvaluator.simulate: once every metric is settled, further clicks change nothing.
            done[i] = curves[i][-1] >= goal and len(curves[i]) >= max(evaluator.iou_at)
    for curve in curves:
        evaluator.add_curve(curve)


def entry_samples(sample: Sample) -> list[Sample]:
    """One sample per interleave entry: each entry is its own query (interleave retrieval embeds a
    sample's first entry only) and gets its own figure."""
    return [replace(sample, interleave=[entry]) for entry in sample.interleave]


def reference_keys(sample: Sample, key_of_image: dict[int, str]) -> set[str]:
    """Keys of the images the entry's visual references were cut from (``source = "image_id/segment"``)."""
    keys = set()
    for entity in sample.interleave[0].entities:
        if entity.ref is not None:
            image_id = int(entity.ref.source.split("/")[0])
            keys.add(key_of_image.get(image_id, f"image {image_id}"))
    return keys - {sample.key}


def batches(indices: Sequence[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(indices), size):
        yield list(indices[start: start + size])


# ----------------------------------------------------------------------------------------- figures


def _slug(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", key)


def save_sample_figures(folder: Path, sample: Sample, class_names: Sequence[str], generic: GenericPrediction | None,
                        grounding: np.ndarray | None, interleave: list[tuple[Sample, np.ndarray]]) -> None:
    from find3d.evaluation import visualize

    slug = _slug(sample.key)
    if generic is not None:
        masks = np.stack([generic.ids == s.id for s in generic.segments]) if generic.segments else np.zeros(
            (0, *sample.image.shape[:2]), dtype=bool)
        visualize.save_panoptic(folder / f"{slug}_panoptic.png", sample.image, masks,
                                [s.category for s in generic.segments], class_names)
    if grounding is not None and len(grounding):
        shown = min(4, len(grounding))
        visualize.save_grounding(folder / f"{slug}_grounding.png", sample.image, grounding[:shown],
                                 [p.text for p in sample.phrases[:shown]])
    for n, (entry_sample, masks) in enumerate(interleave[:2]):
        entities = sorted(entry_sample.interleave[0].entities, key=lambda e: e.span[0])
        labels = [e.text if e.ref is None else f"[visual: {e.text}]" for e in entities]
        visualize.save_grounding(folder / f"{slug}_interleave{n}.png", sample.image, masks, labels)


def save_retrieval_figures(folder: Path, dataset: FindDataset, indices: Sequence[int],
                           evaluators: Evaluators, count: int) -> None:
    """Top-5 images for the first caption of the first ``count`` images (text -> image)."""
    from find3d.evaluation import visualize

    images = np.concatenate(evaluators.retrieval.image_embeds)
    captions = np.concatenate(evaluators.retrieval.caption_embeds)
    first_caption: dict[int, int] = {}
    for row, (_, owner) in enumerate(evaluators.captions):
        first_caption.setdefault(owner, row)
    for position, row in list(first_caption.items())[:count]:
        scores = images @ captions[row]
        top = np.argsort(-scores, kind="stable")[:5]
        visualize.save_retrieval_strip(
            folder / f"{_slug(dataset.records[indices[position]].key)}_retrieval.png", evaluators.captions[row][0],
            [dataset[indices[t]].image for t in top], scores[top].tolist(), [t == position for t in top])


# -------------------------------------------------------------------------------------- the run


def load(checkpoint_or_loaded: str | os.PathLike | LoadedInterface, device: str = "cpu") -> LoadedInterface:
    from find3d.interface.api import LoadedInterface, load_interface

    if isinstance(checkpoint_or_loaded, LoadedInterface):
        return checkpoint_or_loaded
    return load_interface(checkpoint_or_loaded, device=device)


def evaluate(checkpoint_or_loaded: str | os.PathLike | LoadedInterface | None, data: str | os.PathLike,
             split: str = "val", tasks: Sequence[str] | None = None, out: str | os.PathLike | None = None,
             max_images: int | None = None, batch_size: int = 4, max_clicks: int = 20, figures: int = 4,
             descriptions: str | os.PathLike | None = None, predictor: Predictor | None = None,
             image_size: int | None = None, device: str = "cpu", object_threshold: float | None = None,
             overlap_threshold: float | None = None) -> EvalReport:
    """Evaluate a checkpoint (path, run folder or ``LoadedInterface``) on ``data``/``split``.

    ``predictor`` replaces the model (then ``checkpoint_or_loaded`` may be ``None`` and
    ``image_size`` must be given): the same plumbing scores any predictor. Writes ``eval.json`` and
    PNGs under ``out`` when given. ``object_threshold`` / ``overlap_threshold`` override the
    checkpoint's panoptic inference thresholds.
    """
    options = EvalOptions(tuple(tasks) if tasks else None, split, Path(out) if out else None, max_images,
                          batch_size, max_clicks, figures, Path(descriptions) if descriptions else None)
    if batch_size < 1 or (max_images is not None and max_images < 1) or max_clicks < 1:
        raise InputError("batch_size, max_images and max_clicks must be >= 1.")
    meta: dict[str, Any] = {"data": str(data), "split": split}
    if predictor is None:
        if checkpoint_or_loaded is None:
            raise InputError("evaluate: pass a checkpoint (or a LoadedInterface), or a predictor.")
        loaded = load(checkpoint_or_loaded, device)
        image_size = loaded.config.dataset.image_size
        eval_max_size = loaded.config.dataset.eval_max_size
        options.class_prompt = loaded.config.interface.class_prompt
        named = isinstance(checkpoint_or_loaded, (str, os.PathLike))
        meta.update(checkpoint=str(checkpoint_or_loaded) if named else "in memory", step=loaded.step)
    elif image_size is None:
        raise InputError("evaluate: with a custom predictor, give image_size (the evaluation canvas).")
    else:
        eval_max_size = None
    dataset = eval_dataset(data, split, image_size, eval_max_size)
    if predictor is None:
        predictor = ModelPredictor(loaded, dataset.isthing, object_threshold, overlap_threshold)
        meta["panoptic_thresholds"] = {"object": predictor.thresholds[0], "overlap": predictor.thresholds[1]}
    return run_evaluation(predictor, dataset, options, meta)


def run_evaluation(predictor: Predictor, dataset: FindDataset, options: EvalOptions,
                   meta: dict[str, Any]) -> EvalReport:
    """The evaluation loop proper (``evaluate`` minus loading)."""
    from tqdm import tqdm

    indices = list(range(len(dataset)))[: options.max_images]
    tasks, skipped = resolve_tasks(dataset, indices, options.tasks)
    evaluators = Evaluators(len(dataset.class_names), list(dataset.isthing))
    vocabularies = {}
    if "generic" in tasks:
        vocabularies["generic"] = [options.class_prompt.format(n) for n in dataset.class_names]
        described = class_descriptions(dataset.class_names, options.descriptions)
        if described is None:
            skipped.append("generic_descriptions")
        else:
            vocabularies["generic_descriptions"] = described
        for name in vocabularies:
            evaluators.add_vocabulary(name)
    if "interactive" in tasks:
        evaluators.interactive = InteractiveEvaluator(DEFAULT_THRESHOLDS, options.max_clicks, (1,))
    key_of_image = {r.image_id: r.key for r in dataset.records}
    figure_dir = options.out / "figures" if options.out and options.figures else None
    if figure_dir is not None:
        figure_dir.mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=len(indices), desc="eval", unit="img", disable=None, dynamic_ncols=True)
    for chunk in batches(indices, options.batch_size):
        samples = [dataset[i] for i in chunk]
        position = chunk[0]
        step_batch(predictor, samples, tasks, vocabularies, evaluators, key_of_image,
                   figure_dir if position < options.figures else None, dataset.class_names, options.figures - position)
        bar.update(len(chunk))
    bar.close()
    report = EvalReport(meta={**meta, "images": len(indices), "tasks": tasks, "skipped": skipped})
    collect(report, tasks, vocabularies, evaluators)
    if figure_dir is not None and "retrieval" in tasks:
        save_retrieval_figures(figure_dir, dataset, indices, evaluators, options.figures)
    if options.out is not None:
        options.out.mkdir(parents=True, exist_ok=True)
        report.write_json(options.out / "eval.json")
    return report


def step_batch(predictor: Predictor, samples: list[Sample], tasks: Sequence[str], vocabularies: dict[str, list[str]],
               evaluators: Evaluators, key_of_image: dict[int, str], figure_dir: Path | None,
               class_names: Sequence[str], figures_left: int) -> None:
    """Every requested task on one batch of images."""
    generic_preds: list[GenericPrediction | None] = [None] * len(samples)
    segmented = [i for i, s in enumerate(samples) if s.segments]
    for name, texts in vocabularies.items():
        preds = predictor.generic([samples[i] for i in segmented], texts) if segmented else []
        for i, pred in zip(segmented, preds):
            update_generic(evaluators.generic[name], samples[i], pred)
            if name == "generic":
                generic_preds[i] = pred
    grounding_preds: list[np.ndarray | None] = [None] * len(samples)
    if "grounding" in tasks:
        phrased = [i for i, s in enumerate(samples) if s.phrases]
        for i, masks in zip(phrased, predictor.grounding([samples[i] for i in phrased]) if phrased else []):
            evaluators.grounding.update(masks, np.stack([p.mask for p in samples[i].phrases]))
            grounding_preds[i] = masks
    if "retrieval" in tasks:
        captioned = [s for s in samples if s.captions]
        if captioned:
            owners = [i for i, s in enumerate(captioned) for _ in s.captions]
            texts = [c for s in captioned for c in s.captions]
            evaluators.retrieval.update(predictor.embed_images(captioned), predictor.embed_captions(texts), owners)
            base = evaluators.retrieval.num_images - len(captioned)
            evaluators.captions.extend((t, base + o) for t, o in zip(texts, owners))
    if "interactive" in tasks and evaluators.interactive is not None:
        for sample in samples:
            if sample.segments:
                run_interactive(predictor, sample, evaluators.interactive)
    interleave_preds = interleave_step(predictor, samples, tasks, evaluators, key_of_image)
    if figure_dir is not None:
        for i, sample in enumerate(samples[: max(figures_left, 0)]):
            save_sample_figures(figure_dir, sample, class_names, generic_preds[i], grounding_preds[i],
                                interleave_preds.get(sample.key, []))


def interleave_step(predictor: Predictor, samples: list[Sample], tasks: Sequence[str], evaluators: Evaluators,
                    key_of_image: dict[int, str]) -> dict[str, list[tuple[Sample, np.ndarray]]]:
    """Both interleave tasks; returns each image's (entry sample, entity masks) for the figures."""
    entries = [e for s in samples for e in entry_samples(s)]
    out: dict[str, list[tuple[Sample, np.ndarray]]] = {}
    if "interleave_grounding" in tasks and entries:
        for entry, masks in zip(entries, predictor.interleave_grounding(entries)):
            evaluators.interleave_grounding.update(masks, entity_targets(entry))
            out.setdefault(entry.key, []).append((entry, masks))
    if "interleave_retrieval" in tasks:
        # Every image is a candidate, annotated or not; image vectors do not depend on the entry.
        image_vectors = predictor.interleave_retrieval([replace(s, interleave=s.interleave[:1]) for s in samples])[0]
        queries = predictor.interleave_retrieval(entries)[1] if entries else np.zeros((0, image_vectors.shape[1]))
        evaluators.interleave_retrieval.update(
            [s.key for s in samples], image_vectors, queries, [e.key for e in entries],
            [reference_keys(e, key_of_image) for e in entries])
    return out


def collect(report: EvalReport, tasks: Sequence[str], vocabularies: dict[str, list[str]],
            evaluators: Evaluators) -> None:
    for name in vocabularies:
        report.add(name, generic_metrics(evaluators.generic[name]))
    if "grounding" in tasks:
        report.add("grounding", evaluators.grounding.compute())
    if "retrieval" in tasks:
        report.add("retrieval", evaluators.retrieval.compute())
    if "interactive" in tasks and evaluators.interactive is not None:
        report.add("interactive", evaluators.interactive.compute())
    if "interleave_grounding" in tasks:
        metrics = evaluators.interleave_grounding.compute()
        report.add("interleave_grounding", {"cIoU": metrics["cIoU"], "mIoU": metrics["mIoU"],
                                            "AP50": metrics["precision@0.5"]})
    if "interleave_retrieval" in tasks:
        report.add("interleave_retrieval", evaluators.interleave_retrieval.compute())


# ----------------------------------------------------------------------------------------- the CLI


_PROBABILITY = validate.cli(validate.number, low=0.0, high=1.0)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="Checkpoint .pt file or training run folder.")
    parser.add_argument("--data", required=True, help="Dataset root (official files or `find3d make-data` output).")
    parser.add_argument("--split", default="val", help="Split to evaluate (default: val).")
    parser.add_argument("--tasks", nargs="+", choices=TASKS, metavar="TASK",
                        help=f"Tasks to evaluate (default: every task annotated in the split): {', '.join(TASKS)}.")
    parser.add_argument("--out", type=Path, help="Folder for eval.json and qualitative PNGs (figures/).")
    parser.add_argument("--max-images", type=validate.cli(validate.integer, minimum=1),
                        help="Evaluate only the first N images of the split.")
    parser.add_argument("--batch-size", type=validate.cli(validate.integer, minimum=1), default=4,
                        help="Images per forward pass (default: 4).")
    parser.add_argument("--max-clicks", type=validate.cli(validate.integer, minimum=1), default=20,
                        help="Click budget of interactive NoC (default: 20).")
    parser.add_argument("--figures", type=validate.cli(validate.integer, minimum=0), default=4,
                        help="Images with qualitative PNGs (default: 4).")
    parser.add_argument("--descriptions", type=Path,
                        help="JSON {class name: description} for the class-description run (default: catalogue).")
    parser.add_argument("--device", default="cpu", help="Torch device (default: cpu).")
    parser.add_argument("--object-threshold", type=_PROBABILITY, metavar="P",
                        help="Panoptic: least class probability of a kept segment (default: the checkpoint's "
                             "interface.object_threshold).")
    parser.add_argument("--overlap-threshold", type=_PROBABILITY, metavar="P",
                        help="Panoptic: share of its mask a segment must keep (default: the checkpoint's "
                             "interface.overlap_threshold).")


def run(args: argparse.Namespace) -> int:
    report = evaluate(args.checkpoint, args.data, split=args.split, tasks=args.tasks, out=args.out,
                      max_images=args.max_images, batch_size=args.batch_size, max_clicks=args.max_clicks,
                      figures=args.figures, descriptions=args.descriptions, device=args.device,
                      object_threshold=args.object_threshold, overlap_threshold=args.overlap_threshold)
    print(report.to_markdown())
    if report.meta["skipped"]:
        print(f"\nskipped (no annotations / descriptions in this split): {', '.join(report.meta['skipped'])}")
    if args.out is not None:
        print(f"\nwrote {args.out / 'eval.json'}")
    return 0
