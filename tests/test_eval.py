"""``find3d eval`` end to end: a real tiny checkpoint on a real rendered dataset, plus an oracle
predictor proving that the plumbing (ground truth, geometry, clicks, retrieval bookkeeping) is right."""

from __future__ import annotations

import argparse
import json
import math
import shutil
from collections.abc import Sequence

import numpy as np
import pytest
import torch

from find3d.data.samples import Sample, SpatialPrompt
from find3d.errors import DataError, InputError, ModelError
from find3d.evaluation import baselines
from find3d.evaluation.predictors import GenericPrediction
from find3d.evaluation.run_eval import IGNORE, TASKS, configure, entity_targets, evaluate, load, panoptic_gt, run
from find3d.evaluation.run_eval import semantic_gt as semantic_labels

torch.set_num_threads(1)

#: every metric each task must report
EXPECTED = {
    "generic": {"PQ", "SQ", "RQ", "PQ_th", "PQ_st", "AP", "AP50", "mIoU"},
    "generic_descriptions": {"PQ", "AP", "mIoU"},
    "grounding": {"cIoU", "mIoU", "precision@0.5"},
    "retrieval": {"IR@1", "IR@5", "IR@10", "TR@1", "TR@5", "TR@10"},
    "interactive": {"NoC@0.5", "NoC@0.8", "NoC@0.85", "NoC@0.9", "IoU@1"},
    "interleave_grounding": {"cIoU", "mIoU", "AP50"},
    "interleave_retrieval": {"IR@5", "IR@10"},
}


@pytest.fixture(scope="module")
def loaded(tiny_checkpoint):
    return load(tiny_checkpoint)


@pytest.mark.slow
def test_evaluate_reports_every_task_and_writes_outputs(loaded, tiny_dataset, tmp_path):
    report = evaluate(loaded, tiny_dataset, out=tmp_path, max_clicks=5)
    assert report.meta["skipped"] == []
    for task, keys in EXPECTED.items():
        assert keys <= set(report.results[task]), task
    for task, metrics in report.results.items():
        for name, value in metrics.items():
            if name in ("APm", "APl", "APs") and math.isnan(value):
                continue  # COCO leaves an area range without objects undefined
            limit = 5 if name.startswith("NoC") else 100
            assert math.isfinite(value) and 0 <= value <= limit, (task, name, value)
    written = json.loads((tmp_path / "eval.json").read_text())
    assert set(written["results"]) == set(EXPECTED)
    figures = {p.name.split("_")[-1] for p in (tmp_path / "figures").glob("*.png")}
    assert {"panoptic.png", "grounding.png", "interleave0.png", "retrieval.png"} <= figures


def test_cli_prints_the_table(tiny_checkpoint, tiny_dataset, tmp_path, capsys):
    parser = argparse.ArgumentParser()
    configure(parser)
    args = parser.parse_args(["--checkpoint", str(tiny_checkpoint), "--data", str(tiny_dataset), "--tasks",
                              "grounding", "retrieval", "--out", str(tmp_path), "--figures", "0"])
    assert run(args) == 0
    printed = capsys.readouterr().out
    assert "| grounding | cIoU |" in printed and "| retrieval | IR@1 |" in printed
    assert (tmp_path / "eval.json").is_file()


def test_panoptic_thresholds_reach_the_predictor(loaded, tiny_dataset):
    # No class probability exceeds 1: every query is dropped, so no segment can be matched.
    report = evaluate(loaded, tiny_dataset, tasks=["generic"], figures=0, object_threshold=1.0)
    assert report.results["generic"]["PQ"] == 0.0
    assert report.meta["panoptic_thresholds"] == {"object": 1.0,
                                                  "overlap": loaded.config.interface.overlap_threshold}
    parser = argparse.ArgumentParser()
    configure(parser)
    with pytest.raises(SystemExit):
        parser.parse_args(["--checkpoint", "c.pt", "--data", "d", "--object-threshold", "1.5"])


class Oracle:
    """Answers every task with the ground truth, through the same ``Predictor`` interface as the model."""

    def __init__(self, dataset_keys: Sequence[str], num_classes: int = 19) -> None:
        self.num_classes = num_classes
        self.index = {key: i for i, key in enumerate(dataset_keys)}
        self.caption_owners: dict[str, list[str]] = {}

    def _onehot(self, keys: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(keys), len(self.index)))
        out[np.arange(len(keys)), [self.index[k] for k in keys]] = 1.0
        return out

    def generic(self, samples: Sequence[Sample], class_texts: Sequence[str]) -> list[GenericPrediction]:
        assert len(class_texts) == self.num_classes  # names or descriptions, one per class
        out = []
        for sample in samples:
            ids, segments = panoptic_gt(sample)
            semantic = semantic_labels(sample)
            things = [s for s in sample.segments if s.isthing]
            out.append(GenericPrediction(
                ids, segments, np.where(semantic == IGNORE, 0, semantic), np.stack([s.mask for s in things]),
                np.ones(len(things)), np.array([s.category for s in things])))
        return out

    def grounding(self, samples: Sequence[Sample]) -> list[np.ndarray]:
        return [np.stack([p.mask for p in s.phrases]) for s in samples]

    def embed_images(self, samples: Sequence[Sample]) -> np.ndarray:
        for sample in samples:
            for caption in sample.captions:
                self.caption_owners.setdefault(caption, []).append(sample.key)
        return self._onehot([s.key for s in samples])

    def embed_captions(self, captions: Sequence[str]) -> np.ndarray:
        # A caption several images share points at all of them (they tie at the top of its ranking).
        return np.stack([self._onehot(self.caption_owners[c]).sum(0) for c in captions])

    def interactive(self, sample: Sample, prompts: Sequence[SpatialPrompt]) -> np.ndarray:
        # Clicks arrive as drawn dots on the sample's canvas (the first click is always positive).
        assert all(p.kind == "point" and p.prompt.any() and p.prompt.shape == sample.image.shape[:2] for p in prompts)
        return np.stack([p.target for p in prompts])

    def interleave_grounding(self, samples: Sequence[Sample]) -> list[np.ndarray]:
        return [entity_targets(s) for s in samples]

    def interleave_retrieval(self, samples: Sequence[Sample]) -> tuple[np.ndarray, np.ndarray]:
        vectors = self._onehot([s.key for s in samples])
        return vectors, vectors


def test_perfect_predictor_scores_perfectly(tiny_dataset):
    from find3d.evaluation.run_eval import eval_dataset

    # The train split has 10 images: enough for retrieval ranks and panoptic matching to mean something.
    keys = [r.key for r in eval_dataset(tiny_dataset, "train", 128, None).records]
    report = evaluate(None, tiny_dataset, split="train", predictor=Oracle(keys), image_size=128, figures=0)
    results = report.results
    assert results["generic"]["PQ"] == pytest.approx(100.0)
    assert results["generic"]["AP"] == pytest.approx(100.0)
    assert results["generic"]["mIoU"] == pytest.approx(100.0)
    assert results["grounding"]["cIoU"] == pytest.approx(100.0)
    assert results["interleave_grounding"]["cIoU"] == pytest.approx(100.0)
    assert results["interactive"]["NoC@0.9"] == 1.0 and results["interactive"]["IoU@1"] == pytest.approx(100.0)
    # A few generated captions are shared by two images, so text -> image cannot be exact at rank 1.
    assert results["retrieval"]["TR@1"] == pytest.approx(100.0) and results["retrieval"]["IR@5"] == 100.0
    assert results["interleave_retrieval"]["IR@5"] == pytest.approx(100.0)


def test_baselines_return_scores(loaded, tiny_dataset):
    retrieval = baselines.ensemble_interleave_retrieval(loaded, tiny_dataset, steps=20)
    grounding = baselines.seem_interleave_grounding(loaded, tiny_dataset)
    assert set(retrieval) == {"IR@5", "IR@10"} and set(grounding) == {"cIoU", "mIoU", "AP50"}
    for value in (*retrieval.values(), *grounding.values()):
        assert 0.0 <= value <= 100.0


def test_sentence_text_cuts_visual_entities(tiny_dataset):
    from find3d.evaluation.run_eval import entry_samples, eval_dataset

    sample = eval_dataset(tiny_dataset, "val", 128, None)[0]
    for entry in entry_samples(sample):
        text = baselines.sentence_text(entry)
        for entity in entry.interleave[0].entities:
            if entity.ref is not None and entity.text not in text:
                return
    pytest.fail("no visual entity was cut from any sentence")


def test_bad_inputs_raise_with_the_fix(tiny_checkpoint, tiny_dataset, tmp_path):
    with pytest.raises(ModelError, match="not found"):
        evaluate(tmp_path / "missing.pt", tiny_dataset)
    with pytest.raises(InputError, match="unknown task"):
        evaluate(None, tiny_dataset, tasks=["panoptic"], predictor=Oracle([]), image_size=128)
    no_captions = tmp_path / "no_captions"
    shutil.copytree(tiny_dataset, no_captions)
    shutil.rmtree(no_captions / "karpathy")
    for path in (no_captions / "annotations").glob("captions_*.json"):
        path.unlink()
    with pytest.raises(DataError, match="no annotations for \\['retrieval'\\]"):
        evaluate(tiny_checkpoint, no_captions, tasks=["retrieval"])
    report = evaluate(None, no_captions, tasks=None, predictor=Oracle(["coco/val2017/000000000012"]),
                      image_size=128, figures=0)
    assert "retrieval" in report.meta["skipped"] and "retrieval" not in report.results
    assert set(report.meta["tasks"]) == set(TASKS) - {"retrieval"}


def test_class_descriptions_cover_the_catalogue_or_skip(tmp_path):
    from find3d.data.engine.catalog import STUFF, THINGS
    from find3d.evaluation.descriptions import class_descriptions

    names = [c.name for c in (*THINGS, *STUFF)]
    described = class_descriptions(names)
    assert described is not None and len(set(described)) == len(names)
    assert not any(name in text for name, text in zip(names, described))  # a description never names its class
    assert class_descriptions([*names, "zebra"]) is None  # a partial vocabulary is skipped, not half-used
    table = tmp_path / "descriptions.json"
    table.write_text(json.dumps({"zebra": "a striped horse"}))
    assert class_descriptions(["zebra"], table) == ["a striped horse"]


@pytest.mark.slow
def test_joint_vs_single_trains_each_variant(loaded, tmp_path):
    from dataclasses import replace

    # The checkpoint's own config (tiny data, 3 steps); loader settings are not stored in checkpoints.
    config = replace(loaded.config, num_workers=0, torch_threads=1)
    reports = baselines.joint_vs_single(config, tmp_path)
    assert set(reports) == set(baselines.VARIANTS)
    assert "PQ" in reports["generic only"].results["generic"] and "grounding" not in reports["generic only"].results
    assert "cIoU" in reports["joint (generic+grounding)"].results["grounding"]
