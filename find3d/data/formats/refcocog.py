"""RefCOCO-g (UMD split) loaders.

Two official forms are read:
- the REFER release: ``refcocog/refs(umd).p`` (a pickled list of refs) next to ``refcocog/instances.json``
  (COCO instances whose annotation ids the refs name);
- the X-Decoder / SEEM / FIND form ``annotations/refcocog_umd_{split}.json``: a COCO instances file whose
  annotations also carry the ref's ``sentences`` (and ``split``).

A ref's mask is its instance annotation (polygons/RLE); its image is found by COCO image id.
Note: a pickle can run code when loaded; read only refs files from a source you trust.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from find3d.data.formats.coco import InstancesSet, instances_from_payload, load_instances, load_json
from find3d.data.formats.problems import Reporter, guard, has_keys, strict

# REFER splits are train / val / test; COCO 2017 folders are train / val.
REF_KEYS = ("ref_id", "ann_id", "image_id", "split", "sentences")


@dataclass(frozen=True)
class RefRecord:
    ref_id: int
    ann_id: int  # id in the instances file: the referred object
    image_id: int
    split: str
    category_id: int | None
    sentences: tuple[str, ...]


@dataclass
class RefSet:
    file: Path
    refs: list[RefRecord]
    instances: InstancesSet

    def for_split(self, split: str) -> list[RefRecord]:
        return [ref for ref in self.refs if ref.split == split]


def _sentences(raw: Any, file: Path, where: str, reporter: Reporter) -> tuple[str, ...]:
    if not isinstance(raw, list) or not raw:
        reporter.report(file, where, "'sentences' must be a non-empty list; drop the ref or add its sentences.")
        return ()
    out = []
    for k, sent in enumerate(raw):
        text = sent.get("sent", sent.get("raw")) if isinstance(sent, dict) else None
        if not isinstance(text, str) or not text.strip():
            reporter.report(file, f"{where} sentences[{k}]", "needs a non-empty 'sent' or 'raw' string.")
            continue
        out.append(text.strip())
    return tuple(out)


def _check_ann(ref: RefRecord, instances: InstancesSet, file: Path, where: str, reporter: Reporter) -> bool:
    """The referred annotation must exist in the instances file and belong to the ref's image."""
    ann = instances.annotations.get(ref.ann_id)
    if ann is None:
        reporter.report(
            file, where, f"ann_id {ref.ann_id} not found in {instances.file.name}; use the matching instances file."
        )
        return False
    if ann.image_id != ref.image_id:
        reporter.report(file, where, f"ann_id {ref.ann_id} belongs to image {ann.image_id}, not {ref.image_id}.")
        return False
    return True


def _read_pickle(path: Path, reporter: Reporter) -> Any | None:
    if not path.is_file():
        reporter.report(path, "whole file", "file not found; check the path (or regenerate the dataset).")
        return None
    # The REFER pickles were written by Python 2: their byte strings need latin1 when ASCII fails.
    for encoding in ("ASCII", "latin1"):
        try:
            with open(path, "rb") as handle:
                return pickle.load(handle, encoding=encoding)
        except UnicodeDecodeError:
            continue
        except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, ValueError, TypeError) as err:
            reporter.report(path, "whole file", f"not a readable refs pickle ({err}); re-download refcocog.")
            return None
    reporter.report(path, "whole file", "refs pickle holds undecodable text; re-download refcocog.")
    return None


def load_refs(
    refs_path: str | os.PathLike,
    instances_path: str | os.PathLike,
    image_dir: str | os.PathLike = "",
    reporter: Reporter | None = None,
) -> RefSet:
    """Read ``refs(umd).p`` and its ``instances.json``; every ref's ``ann_id`` must resolve."""
    reporter = reporter or strict()
    file = Path(refs_path)
    instances = load_instances(instances_path, image_dir, reporter)
    payload = _read_pickle(file, reporter)
    if payload is None:
        return RefSet(file, [], instances)
    if not isinstance(payload, list):
        reporter.report(file, "whole file", f"expected a list of refs, got {type(payload).__name__}.")
        return RefSet(file, [], instances)
    refs: list[RefRecord] = []
    for i, raw in enumerate(payload):
        with guard(file, f"refs[{i}]", reporter):
            where = f"refs[{i}]"
            if not has_keys(raw, REF_KEYS, file, where, reporter):
                continue
            where = f"refs[{i}] (ref_id {raw['ref_id']})"
            sentences = _sentences(raw["sentences"], file, where, reporter)
            ref = RefRecord(int(raw["ref_id"]), int(raw["ann_id"]), int(raw["image_id"]), str(raw["split"]),
                            raw.get("category_id"), sentences)
            if sentences and _check_ann(ref, instances, file, where, reporter):
                refs.append(ref)
    return RefSet(file, refs, instances)


def load_refs_json(json_path: str | os.PathLike, image_dir: str | os.PathLike = "",
                   reporter: Reporter | None = None) -> RefSet:
    """Read the X-Decoder form ``refcocog_umd_{split}.json`` (instances with ``sentences``)."""
    reporter = reporter or strict()
    file = Path(json_path)
    payload = load_json(file, reporter)
    instances = instances_from_payload(payload, file, Path(image_dir), reporter)
    # The split is in each annotation when present, otherwise in the file name (..._val.json).
    default_split = file.stem.rsplit("_", 1)[-1]
    refs: list[RefRecord] = []
    raw_anns = payload.get("annotations", []) if isinstance(payload, dict) else []
    for i, raw in enumerate(raw_anns if isinstance(raw_anns, list) else []):
        with guard(file, f"annotations[{i}]", reporter):
            # Malformed annotations were already reported by the instances parser.
            if not isinstance(raw, dict) or "sentences" not in raw or raw.get("id") not in instances.annotations:
                continue
            where = f"annotations[{i}] (id {raw['id']})"
            sentences = _sentences(raw["sentences"], file, where, reporter)
            if sentences:
                refs.append(RefRecord(int(raw.get("ref_id", raw["id"])), int(raw["id"]), int(raw["image_id"]),
                                      str(raw.get("split", default_split)), raw.get("category_id"), sentences))
    return RefSet(file, refs, instances)
