"""Loaders for the official dataset files (COCO, RefCOCO-g, COCO-Karpathy, FIND-Bench).

Each loader returns typed records and reads images / masks lazily. Problems go to a ``Reporter``:
strict by default (``DataError`` naming file and entry), collecting in ``find3d check-data``.
"""

from find3d.data.formats.coco import (
    CaptionSet,
    Category,
    CategoryTable,
    ImageInfo,
    InstanceAnnotation,
    InstancesSet,
    PanopticRecord,
    PanopticSegment,
    PanopticSet,
    decode_segmentation,
    id2rgb,
    load_captions,
    load_instances,
    load_panoptic,
    rgb2id,
)
from find3d.data.formats.discover import DatasetFiles, SplitFiles, discover
from find3d.data.formats.findbench import BenchEntry, BenchFile, BenchPhrase, load_findbench, resolve_findbench
from find3d.data.formats.join import ImageRecord, JoinedSplit, Sources, join_split
from find3d.data.formats.karpathy import KarpathyImage, KarpathySet, load_karpathy
from find3d.data.formats.problems import Problem, Reporter, strict
from find3d.data.formats.refcocog import RefRecord, RefSet, load_refs, load_refs_json

__all__ = [
    "BenchEntry",
    "BenchFile",
    "BenchPhrase",
    "CaptionSet",
    "Category",
    "CategoryTable",
    "DatasetFiles",
    "ImageInfo",
    "ImageRecord",
    "InstanceAnnotation",
    "InstancesSet",
    "JoinedSplit",
    "KarpathyImage",
    "KarpathySet",
    "PanopticRecord",
    "PanopticSegment",
    "PanopticSet",
    "Problem",
    "RefRecord",
    "RefSet",
    "Reporter",
    "Sources",
    "SplitFiles",
    "decode_segmentation",
    "discover",
    "id2rgb",
    "join_split",
    "load_captions",
    "load_findbench",
    "load_instances",
    "load_karpathy",
    "load_panoptic",
    "load_refs",
    "load_refs_json",
    "resolve_findbench",
    "rgb2id",
    "strict",
]
