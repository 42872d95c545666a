"""Metrics and evaluators: streaming (``update`` / ``compute``) accumulators over numpy arrays.

Each evaluator is defined the way the FIND / X-Decoder / SEEM / detectron2 evaluators define it
(see the module docstrings for what is identical and what is simplified). ``compute`` returns a
flat ``dict[str, float]`` in percent, as those evaluators report.
"""

from find3d.evaluation.grounding import GroundingEvaluator
from find3d.evaluation.instance import InstanceEvaluator
from find3d.evaluation.interactive import Click, InteractiveEvaluator, next_click
from find3d.evaluation.panoptic import PanopticEvaluator, SegmentInfo, id_map_from_masks
from find3d.evaluation.report import EvalReport
from find3d.evaluation.retrieval import (
    ImageTextRetrievalEvaluator,
    InterleaveRetrievalEvaluator,
    image_text_recall,
    query_recall,
)
from find3d.evaluation.semantic import SemanticEvaluator

__all__ = [
    "Click",
    "EvalReport",
    "GroundingEvaluator",
    "ImageTextRetrievalEvaluator",
    "InstanceEvaluator",
    "InteractiveEvaluator",
    "InterleaveRetrievalEvaluator",
    "PanopticEvaluator",
    "SegmentInfo",
    "SemanticEvaluator",
    "id_map_from_masks",
    "image_text_recall",
    "next_click",
    "query_recall",
]
