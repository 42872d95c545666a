"""Metric correctness on hand-made cases whose answers are worked out by hand in the comments."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from find3d.errors import InputError
from find3d.evaluation import (
    Click,
    EvalReport,
    GroundingEvaluator,
    ImageTextRetrievalEvaluator,
    InstanceEvaluator,
    InteractiveEvaluator,
    InterleaveRetrievalEvaluator,
    PanopticEvaluator,
    SegmentInfo,
    SemanticEvaluator,
    id_map_from_masks,
    image_text_recall,
    next_click,
    query_recall,
)

CUP, BOTTLE, WALL = 1, 2, 3
ISTHING = {CUP: True, BOTTLE: True, WALL: False}


def _box(shape: tuple[int, int], rows: slice, cols: slice) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[rows, cols] = True
    return mask


# --------------------------------------------------------------------------------------- panoptic


def test_panoptic_quality_with_stuff_fp_fn_and_void() -> None:
    # 10x10 ground truth:
    #   id 1 wall (stuff)  rows 0-4, all cols          50 px
    #   id 2 cup           rows 5-9, cols 0-3          20 px
    #   id 3 bottle        rows 5-9, cols 6-9          20 px   (never predicted -> FN)
    #   void (0)           rows 5-9, cols 4-5          10 px
    gt = np.zeros((10, 10), dtype=np.int64)
    gt[0:5, :] = 1
    gt[5:10, 0:4] = 2
    gt[5:10, 6:10] = 3
    gt_segments = [SegmentInfo(1, WALL), SegmentInfo(2, CUP), SegmentInfo(3, BOTTLE)]
    # Prediction:
    #   id 1 wall  rows 0-5, all cols (60 px): I=50 with GT wall, 2 px on void
    #              union = 60 + 50 - 50 - 2 = 58 -> IoU 50/58 (matched)
    #   id 2 cup   rows 6-9, cols 0-4 (20 px): I=16 with GT cup, 4 px on void
    #              union = 20 + 20 - 16 - 4 = 20 -> IoU 0.8 (matched; 16/24 = 0.667 if void were kept)
    #   id 3 cup   rows 6-9, cols 6-7 (8 px): on the bottle, wrong class, no void -> FP for cup
    #   id 4 cup   rows 6-9, col 5 (4 px): entirely on void -> ignored (would be a 2nd cup FP)
    pred = np.zeros((10, 10), dtype=np.int64)
    pred[0:6, :] = 1
    pred[6:10, 0:5] = 2
    pred[6:10, 6:8] = 3
    pred[6:10, 5] = 4
    pred_segments = [SegmentInfo(1, WALL), SegmentInfo(2, CUP), SegmentInfo(3, CUP), SegmentInfo(4, CUP)]
    evaluator = PanopticEvaluator(ISTHING)
    evaluator.update(gt, gt_segments, pred, pred_segments)
    # Per category:
    #   cup:    TP 1 (IoU .8), FP 1, FN 0 -> PQ = .8 / 1.5 = .5333, SQ = .8, RQ = 1 / 1.5 = .6667
    #   bottle: TP 0, FP 0, FN 1        -> PQ = SQ = RQ = 0
    #   wall:   TP 1 (IoU 50/58)        -> PQ = SQ = .862069, RQ = 1
    wall = 50 / 58
    expected = {
        "PQ": 100 * (0.8 / 1.5 + 0 + wall) / 3,
        "SQ": 100 * (0.8 + 0 + wall) / 3,
        "RQ": 100 * (1 / 1.5 + 0 + 1) / 3,
        "PQ_th": 100 * (0.8 / 1.5 + 0) / 2,
        "SQ_th": 100 * 0.8 / 2,
        "RQ_th": 100 * (1 / 1.5) / 2,
        "PQ_st": 100 * wall,
        "SQ_st": 100 * wall,
        "RQ_st": 100.0,
    }
    results = evaluator.compute()
    assert results == pytest.approx(expected)
    assert results["PQ"] == pytest.approx(46.51341, abs=1e-4)
    assert evaluator.per_category()[BOTTLE] == {"PQ": 0.0, "SQ": 0.0, "RQ": 0.0}


def test_panoptic_crowd_region_absorbs_prediction_and_is_never_fn() -> None:
    # GT 10x10: crowd cup region rows 0-4 (id 1), a cup rows 5-9 cols 0-4 (id 2), void rows 5-9 cols 5-9.
    gt, gt_segments = id_map_from_masks(
        np.stack([_box((10, 10), slice(0, 5), slice(None)), _box((10, 10), slice(5, 10), slice(0, 5))]),
        [CUP, CUP],
        iscrowd=[True, False],
    )
    # Prediction: the cup exactly, and a 30 px cup segment with 20 px on the crowd region
    # (rows 1-4, cols 0-4) and 10 px on void (rows 5-6, cols 5-9). Void alone is 10/30 < .5, void
    # plus crowd is 30/30 > .5 -> ignored. The unmatched crowd GT is no FN either, so the cup has
    # TP 1 with IoU 1 and nothing else: PQ 100 (an FP or FN would make it 66.7).
    on_crowd = _box((10, 10), slice(1, 5), slice(0, 5))
    on_void = _box((10, 10), slice(5, 7), slice(5, 10))
    pred, pred_segments = id_map_from_masks(
        np.stack([_box((10, 10), slice(5, 10), slice(0, 5)), on_crowd | on_void]), [CUP, CUP]
    )
    evaluator = PanopticEvaluator(ISTHING)
    evaluator.update(gt, gt_segments, pred, pred_segments)
    results = evaluator.compute()
    assert results["PQ"] == pytest.approx(100.0)
    assert math.isnan(results["PQ_st"])  # no stuff category seen


def test_panoptic_rejects_unlisted_segment_ids() -> None:
    evaluator = PanopticEvaluator(ISTHING)
    with pytest.raises(InputError, match="without a SegmentInfo"):
        evaluator.update(np.ones((4, 4), int), [SegmentInfo(1, CUP)], np.full((4, 4), 7), [SegmentInfo(1, CUP)])


# --------------------------------------------------------------------------------------- instance


def _two_object_image() -> tuple[np.ndarray, np.ndarray]:
    a = _box((40, 40), slice(0, 10), slice(0, 10))
    b = _box((40, 40), slice(20, 30), slice(20, 30))
    return a, b


def test_instance_ap_perfect_predictions_is_100() -> None:
    a, b = _two_object_image()
    evaluator = InstanceEvaluator(categories=[CUP, BOTTLE])
    evaluator.update(np.stack([a, b]), [CUP, BOTTLE], np.stack([a, b]), [0.9, 0.8], [CUP, BOTTLE])
    results = evaluator.compute()
    assert results["AP"] == pytest.approx(100.0)
    assert results["AP50"] == pytest.approx(100.0)
    assert results["AP75"] == pytest.approx(100.0)


def test_instance_ap_with_a_duplicate_detection() -> None:
    # Two cups A and B. Detections by score: A (0.9, TP), A again (0.8, duplicate -> FP), B (0.7, TP).
    # Precision/recall: (1, .5), (.5, .5), (2/3, 1). COCO's interpolated precision is 1 for the 51
    # recall thresholds 0.00..0.50 and 2/3 for the 50 thresholds 0.51..1.00:
    # AP = (51 + 50 * 2/3) / 101 = 253/303 = 83.498% at every IoU threshold (masks are exact).
    a, b = _two_object_image()
    evaluator = InstanceEvaluator(categories=[CUP, BOTTLE])
    evaluator.update(np.stack([a, b]), [CUP, CUP], np.stack([a, a, b]), [0.9, 0.8, 0.7], [CUP, CUP, CUP])
    results = evaluator.compute()
    expected = 100 * 253 / 303
    assert results["AP"] == pytest.approx(expected)
    assert results["AP50"] == pytest.approx(expected)
    assert results["AP75"] == pytest.approx(expected)
    assert results["APs"] == pytest.approx(expected)  # 100 px masks are "small" (< 32^2)
    assert math.isnan(results["APl"])  # no large object: COCO's -1


def test_instance_ap_at_chosen_thresholds_with_a_crowd_region() -> None:
    """ScanNet-style AP25 / AP50: a detection covering a cup with IoU 0.4 is a hit at 0.25 and a false alarm
    at 0.5; a detection lying on a crowd region (the table) is neither."""
    a, b = _two_object_image()
    wide = _box((40, 40), slice(0, 10), slice(0, 25))  # all of cup a's 100 pixels in 250: IoU 0.4
    evaluator = InstanceEvaluator(categories=[CUP], iou_thresholds=(0.25, 0.5))
    evaluator.update(np.stack([a, b]), [CUP, CUP], np.stack([b, wide, b]), [0.9, 0.8, 0.1], [CUP, CUP, CUP],
                     gt_iscrowd=[False, True])
    by_threshold = evaluator.at_thresholds()
    assert by_threshold[0.25]["mean"] == pytest.approx(100.0)  # the crowd-matched detections are ignored
    assert by_threshold[0.5]["mean"] == pytest.approx(0.0) and by_threshold[0.5]["per_category"] == {CUP: 0.0}
    with pytest.raises(InputError, match="iou_thresholds"):
        InstanceEvaluator(categories=[CUP]).at_thresholds()


def test_instance_without_detections_scores_zero() -> None:
    a, _ = _two_object_image()
    evaluator = InstanceEvaluator(categories=[CUP])
    evaluator.update(a[None], [CUP], np.zeros((0, 40, 40), bool), [], [])
    assert evaluator.compute()["AP"] == 0.0


# --------------------------------------------------------------------------------------- semantic


def test_semantic_miou_excludes_absent_class_and_ignore_pixels() -> None:
    gt = np.array([[0, 0, 1, 1], [0, 0, 1, 255]])
    pred = np.array([[0, 1, 1, 1], [0, 2, 1, 2]])
    # Valid pixels (7; the 255 one and its prediction are dropped):
    #   class 0: TP 2, GT 4, pred 2 -> union 4 -> IoU .5
    #   class 1: TP 3, GT 3, pred 4 -> union 4 -> IoU .75
    #   class 2: only predicted once -> IoU 0 (counts)
    #   class 3: absent from GT and prediction -> excluded (including it would give 31.25)
    # mIoU = (.5 + .75 + 0) / 3 = 41.667; pACC = 5/7; mACC = (2/4 + 3/3) / 2; fwIoU = 4/7*.5 + 3/7*.75
    evaluator = SemanticEvaluator(num_classes=4)
    evaluator.update(gt, pred)
    results = evaluator.compute()
    assert results["mIoU"] == pytest.approx(100 * 1.25 / 3)
    assert results["pACC"] == pytest.approx(100 * 5 / 7)
    assert results["mACC"] == pytest.approx(75.0)
    assert results["fwIoU"] == pytest.approx(100 * (4 / 7 * 0.5 + 3 / 7 * 0.75))
    assert math.isnan(evaluator.per_class_iou()[3])


# -------------------------------------------------------------------------------------- grounding


def test_grounding_ciou_differs_from_miou_on_unequal_sizes() -> None:
    # Phrase A (large): GT rows 0-4 (50 px), prediction rows 0-3 (40 px): I 40, U 50, IoU .8
    # Phrase B (small): GT 2x2 block (4 px), prediction 2 of those + 2 outside: I 2, U 6, IoU 1/3
    # cIoU = (40 + 2) / (50 + 6) = 75%; mIoU = (.8 + 1/3) / 2 = 56.667%
    # precision@t: A passes up to .8 (IoU >= t), B never -> 50 for t <= .8, 0 at .9
    gt_a = _box((10, 10), slice(0, 5), slice(None))
    pred_a = _box((10, 10), slice(0, 4), slice(None))
    gt_b = _box((10, 10), slice(7, 9), slice(7, 9))
    pred_b = _box((10, 10), slice(8, 9), slice(7, 9)) | _box((10, 10), slice(9, 10), slice(7, 9))
    evaluator = GroundingEvaluator()
    evaluator.update(pred_a, gt_a)  # streamed one phrase at a time
    evaluator.update(pred_b[None], gt_b[None])
    results = evaluator.compute()
    assert results["cIoU"] == pytest.approx(75.0)
    assert results["mIoU"] == pytest.approx(100 * (0.8 + 1 / 3) / 2)
    assert [results[f"precision@{t}"] for t in (0.5, 0.6, 0.7, 0.8, 0.9)] == [50.0, 50.0, 50.0, 50.0, 0.0]


# -------------------------------------------------------------------------------------- retrieval


def test_retrieval_identity_similarity_is_perfect() -> None:
    results = image_text_recall(np.eye(4), np.arange(4))
    assert results == {f"{d}@{k}": 100.0 for d in ("IR", "TR") for k in (1, 5, 10)}


def test_retrieval_shuffled_case_with_two_captions_per_image() -> None:
    # Rows: images 0-2; columns: captions c0..c5 with image_of_caption = [0, 0, 1, 1, 2, 2].
    similarity = np.array(
        [
            [0.9, 0.1, 0.8, 0.2, 0.30, 0.0],
            [0.5, 0.4, 0.1, 0.3, 0.15, 0.6],
            [0.2, 0.7, 0.6, 0.0, 0.25, 0.9],
        ]
    )
    # IR (rank of a caption's image in its column): c0 0, c1 2, c2 2, c3 0, c4 1, c5 0
    #   -> IR@1 = 3/6, IR@2 = 4/6, IR@4 = 6/6
    # TR (best rank of an image's own captions in its row):
    #   image 0: c0 first -> 0; image 1: order c5 c0 c1 c3 c4 c2 -> c3 at 3; image 2: c5 first -> 0
    #   -> TR@1 = TR@2 = 2/3, TR@4 = 3/3
    results = image_text_recall(similarity, np.array([0, 0, 1, 1, 2, 2]), ks=(1, 2, 4))
    assert results == pytest.approx(
        {
            "IR@1": 50.0,
            "IR@2": 100 * 4 / 6,
            "IR@4": 100.0,
            "TR@1": 100 * 2 / 3,
            "TR@2": 100 * 2 / 3,
            "TR@4": 100.0,
        }
    )


def test_retrieval_evaluator_offsets_batches() -> None:
    # Two batches of two images, one caption each equal to its image: perfect only if the second
    # batch's caption indices are offset past the first batch's images.
    eye = np.eye(4)
    evaluator = ImageTextRetrievalEvaluator(ks=(1,))
    evaluator.update(eye[:2], eye[:2], [0, 1])
    evaluator.update(eye[2:], eye[2:], [0, 1])
    assert evaluator.compute() == {"IR@1": 100.0, "TR@1": 100.0}


def test_interleave_recall_excludes_the_query_source() -> None:
    # q0 -> image 1, its visual reference was cut from image 0 (scored highest) -> excluded.
    # q1 -> image 3, reference from image 2 -> excluded.
    similarity = np.array([[0.9, 0.8, 0.1, 0.0], [0.2, 0.7, 0.9, 0.5]])
    exclude = np.array([[True, False, False, False], [False, False, True, False]])
    target = np.array([1, 3])
    # With exclusion: q0 rank 0, q1 rank 1 (after image 1) -> IR@1 = 50, IR@2 = 100.
    assert query_recall(similarity, target, exclude, ks=(1, 2)) == {1: 50.0, 2: 100.0}
    # Without: q0 rank 1, q1 rank 2 -> IR@1 = 0, IR@2 = 50.
    assert query_recall(similarity, target, ks=(1, 2)) == {1: 0.0, 2: 50.0}
    with pytest.raises(InputError, match="own target is excluded"):
        query_recall(similarity, target, ~exclude)


def test_interleave_evaluator_by_keys() -> None:
    # The query embedding is closest to image "a" (cos .8) then "b" (cos .6); target "b".
    evaluator = InterleaveRetrievalEvaluator(ks=(1,))
    evaluator.update(["a", "b", "c"], np.eye(3), np.array([[0.8, 0.6, 0.0]]), ["b"], [{"a"}])
    assert evaluator.compute() == {"IR@1": 100.0}
    unexcluded = InterleaveRetrievalEvaluator(ks=(1,))
    unexcluded.update(["a", "b", "c"], np.eye(3), np.array([[0.8, 0.6, 0.0]]), ["b"])
    assert unexcluded.compute() == {"IR@1": 0.0}


# ------------------------------------------------------------------------------------ interactive


def test_first_click_is_the_object_interior() -> None:
    # 6x6 object at rows/cols 2-7: the four centre pixels are 3 px from the boundary; the first in
    # row-major order is (4, 4).
    gt = _box((10, 10), slice(2, 8), slice(2, 8))
    assert next_click(gt, np.zeros_like(gt)) == Click(4, 4, True)
    assert next_click(gt, gt) is None


def test_equally_deep_errors_give_a_negative_click() -> None:
    # A missed 3x3 object at the top-left corner and a 3x3 false positive at cols 5-7: both centres
    # are 2 px from the (padded) border, a tie, which RITM resolves as a negative click -> (1, 6).
    gt = _box((10, 10), slice(0, 3), slice(0, 3))
    pred = _box((10, 10), slice(0, 3), slice(5, 8))
    assert next_click(gt, pred) == Click(1, 6, False)


def test_noc_with_a_scripted_model() -> None:
    gt = _box((10, 10), slice(2, 8), slice(2, 8))  # 36 px
    fp_row8 = _box((10, 10), slice(8, 9), slice(2, 8))  # 6 px below the object
    script = [
        # click 1 at (4, 4): left half of the object, 18/36 -> IoU .5
        _box((10, 10), slice(2, 8), slice(2, 5)),
        # click 2: missing cols 5-7 are 2 px deep at col 6, first at row 3 -> (3, 6) positive.
        # Object plus a 12 px FP band rows 8-9 -> 36/48 = .75
        gt | _box((10, 10), slice(8, 10), slice(2, 8)),
        # click 3: only FP is left (1 px deep everywhere) -> (8, 2) negative. 9 FP px -> 36/45 = .8
        gt | fp_row8 | _box((10, 10), slice(9, 10), slice(2, 5)),
        # click 4: (8, 2) is clicked already -> (8, 3) negative. From here on 36/42 = .857 forever
        gt | fp_row8,
    ]
    seen: list[list[Click]] = []

    def predict(clicks: list[Click]) -> np.ndarray:
        seen.append(clicks)
        return script[min(len(clicks), len(script)) - 1]

    evaluator = InteractiveEvaluator()
    ious = evaluator.update(gt, predict)
    assert seen[3] == [Click(4, 4, True), Click(3, 6, True), Click(8, 2, False), Click(8, 3, False)]
    # Clicks 5-8 land on the remaining FP pixels (8, 4)..(8, 7); then every error pixel has been
    # clicked and the simulation stops (the curve is held flat up to 20 clicks).
    assert len(ious) == 8
    assert ious[:4] == pytest.approx([0.5, 0.75, 0.8, 36 / 42])
    # NoC: .5 at click 1, .8 at click 3, .85 at click 4, .9 never -> 20.
    assert evaluator.compute() == pytest.approx(
        {
            "NoC@0.5": 1.0,
            "NoC@0.8": 3.0,
            "NoC@0.85": 4.0,
            "NoC@0.9": 20.0,
            "failed@0.5": 0.0,
            "failed@0.8": 0.0,
            "failed@0.85": 0.0,
            "failed@0.9": 100.0,
            "IoU@1": 50.0,
        }
    )
    # A second object segmented perfectly by the first click: NoC 1 everywhere, IoU@1 100.
    assert evaluator.update(gt, lambda _clicks: gt) == [1.0]
    results = evaluator.compute()
    assert results["NoC@0.85"] == pytest.approx(2.5)
    assert results["NoC@0.9"] == pytest.approx(10.5)
    assert results["IoU@1"] == pytest.approx(75.0)


# ----------------------------------------------------------------------------------------- report


def test_report_markdown_and_json(tmp_path) -> None:
    report = EvalReport(meta={"model": "tiny"})
    report.add("panoptic", {"PQ": 46.51341, "PQ_st": float("nan")})
    report.add("grounding", {"cIoU": 75.0})
    table = report.to_markdown()
    assert "| panoptic | PQ | 46.51 |" in table
    assert "| panoptic | PQ_st | n/a |" in table
    assert "| grounding | cIoU | 75.00 |" in table
    path = tmp_path / "out" / "metrics.json"
    report.write_json(path)
    loaded = json.loads(path.read_text())
    assert loaded == {
        "meta": {"model": "tiny"},
        "results": {"panoptic": {"PQ": 46.51341, "PQ_st": None}, "grounding": {"cIoU": 75.0}},
    }
    assert not list(path.parent.glob(".*.tmp"))  # the atomic write left no temporary behind
