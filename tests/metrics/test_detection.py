"""Ego4D MQ metrics: hand-computed cases where a plausible wrong definition differs, and random loop checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import egovlp.metrics.detection as detection_module
from egovlp.metrics.detection import Moments, detection_map, moment_recall, mq_metrics, segment_iou
from egovlp.metrics.reference_detection import detection_ap_reference, moment_recall_reference, voc_ap


def moments(rows: list[tuple], scored: bool = True) -> Moments:
    """``[(video, label, start, end[, score]), ...]`` as :class:`Moments`."""
    video = np.array([r[0] for r in rows])
    label = np.array([r[1] for r in rows])
    segment = np.array([[r[2], r[3]] for r in rows], dtype=np.float64).reshape(-1, 2)
    score = np.array([r[4] for r in rows], dtype=np.float64) if scored else None
    return Moments(video, label, segment, score)


def differ(a: float, *others: float) -> bool:
    return all(abs(a - o) > 1e-3 for o in others)


# ------------------------------------------------------------------------------------------ hand-computed cases


def test_ap_is_the_interpolated_voc_area() -> None:
    gt = moments([("v", "a", 0, 10), ("v", "a", 20, 30)], scored=False)
    pred = moments([("v", "a", 40, 50, 0.9), ("v", "a", 0, 10, 0.8), ("v", "a", 20, 30, 0.7)])  # FP, TP, TP
    ap = detection_map(gt, pred, thresholds=(0.5,)).ap[0, 0]
    official = 0.5 * (2 / 3) + 0.5 * (2 / 3)  # envelope at rank 2 is max(1/2, 2/3)
    non_interpolated = (1 / 2 + 2 / 3) / 2  # wrong: mean precision at the true positives
    assert ap == pytest.approx(official)
    assert differ(official, non_interpolated)


def test_a_taken_ground_truth_passes_to_the_next_best_unmatched_one() -> None:
    # B overlaps g1 (7/12) better than g2 (6/13), but A took g1; at 0.3 B takes g2, at 0.5 it is a false positive
    gt = moments([("v", "a", 0, 10), ("v", "a", 6, 16)], scored=False)
    pred = moments([("v", "a", 0, 10, 0.9), ("v", "a", 30, 40, 0.8), ("v", "a", 3, 12, 0.7)])  # A, C, B
    ap = detection_map(gt, pred, thresholds=(0.3, 0.5)).ap[:, 0]
    official = [0.5 * 1 + 0.5 * (2 / 3), 0.5 * 1]  # TP, FP, TP at 0.3; TP, FP, FP at 0.5
    best_only = 0.5 * 1  # wrong at 0.3: B only tries its best ground truth (taken) and is a false positive
    np.testing.assert_allclose(ap, official)
    assert differ(official[0], best_only)


def test_each_ground_truth_is_matched_once() -> None:
    gt = moments([("v", "a", 0, 10), ("v", "a", 50, 60)], scored=False)
    pred = moments([("v", "a", 0, 10, 0.9), ("v", "a", 1, 10, 0.8), ("v", "a", 50, 60, 0.7)])  # B duplicates A
    ap = detection_map(gt, pred, thresholds=(0.5,)).ap[0, 0]
    official = 0.5 * 1 + 0.5 * (2 / 3)  # TP, FP, TP
    matched_twice = 0.5 + 0.5 + 0.5  # wrong: TP, TP, TP; recall runs to 1.5 and the VOC area to 1.5
    assert ap == pytest.approx(official)
    assert differ(official, matched_twice)
    assert voc_ap([1.0, 1.0, 1.0], [0.5, 1.0, 1.5]) == pytest.approx(matched_twice)  # the wrong number, computed


def test_detection_uses_at_least_and_retrieval_strictly_greater() -> None:
    gt = moments([("v", "a", 0, 10)], scored=False)
    half = moments([("v", "a", 0, 5, 1.0)])  # tIoU exactly 0.5
    three = moments([("v", "a", 0, 3, 1.0)])  # tIoU exactly 0.3
    assert detection_map(gt, half, thresholds=(0.5,)).ap[0, 0] == 1.0  # >= : a true positive (with > : 0)
    assert detection_map(gt, three, thresholds=(0.3,)).ap[0, 0] == 1.0
    assert detection_map(gt, half, thresholds=(0.51,)).ap[0, 0] == 0.0
    r = moment_recall(gt, half, ranks=(1,), thresholds=(0.3, 0.5))
    assert r.recall == {(1, 0.3): 1.0, (1, 0.5): 0.0}  # > : not retrieved at exactly 0.5 (with >= : 1)
    assert moment_recall(gt, three, ranks=(1,), thresholds=(0.3,)).recall[(1, 0.3)] == 0.0


def test_retrieval_takes_the_top_r_times_n_predictions_of_the_class() -> None:
    gt = moments([("v", "a", 0, 10), ("v", "a", 20, 30), ("v", "b", 0, 10)], scored=False)
    pred = moments([("v", "a", 40, 50, 0.9), ("v", "a", 0, 10, 0.8), ("v", "a", 20, 30, 0.7), ("v", "b", 0, 10, 0.1)])
    r = moment_recall(gt, pred, ranks=(1, 2), thresholds=(0.5,))
    # class a (n = 2): top 2 retrieve g1 only; top 4 retrieve both. class b (n = 1): its top 1 retrieves it.
    assert r.recall[(1, 0.5)] == pytest.approx(2 / 3)
    assert r.recall[(2, 0.5)] == 1.0
    top_r_only = 1 / 3  # wrong: the top r (not r*n) predictions -> class a retrieves nothing at r = 1
    ranked_in_video = 2 / 3  # wrong too, but equal here: b's prediction is 4th in the video, outside its top 3
    assert differ(r.recall[(1, 0.5)], top_r_only)
    assert ranked_in_video == pytest.approx(2 / 3)
    assert r.num_ground_truth == 3 and r.num_videos_without_predictions == 0


def test_classes_come_from_the_ground_truth() -> None:
    # a: perfect; b: ground truth but no prediction (AP 0, averaged in); c: predictions but no ground truth (dropped)
    gt = moments([("v", "a", 0, 10), ("v", "b", 0, 10)], scored=False)
    pred = moments([("v", "a", 0, 10, 0.5), ("v", "c", 0, 10, 0.9), ("v", "c", 20, 30, 0.8)])
    m = detection_map(gt, pred, thresholds=(0.5,))
    assert m.classes == ("a", "b")
    np.testing.assert_allclose(m.ap, [[1.0, 0.0]])
    assert m.mean_ap == (0.5,) and m.num_dropped == 2 and m.num_predictions == 1 and m.num_ground_truth == 2
    c_counted_as_zero, b_skipped = 1 / 3, 1.0  # wrong: c averaged in with AP 0; b left out for want of predictions
    assert differ(m.mean_ap[0], c_counted_as_zero, b_skipped)


def test_prediction_in_a_video_without_ground_truth_is_a_false_positive() -> None:
    gt = moments([("v1", "a", 0, 10)], scored=False)
    pred = moments([("v2", "a", 0, 10, 0.9), ("v1", "a", 0, 10, 0.5)])
    assert detection_map(gt, pred, thresholds=(0.5,)).ap[0, 0] == pytest.approx(0.5)  # FP then TP (not 1.0)


def test_tied_scores_rank_by_input_order() -> None:
    gt = moments([("v", "a", 0, 10)], scored=False)
    miss_first = moments([("v", "a", 30, 40, 0.5), ("v", "a", 0, 10, 0.5)])
    hit_first = moments([("v", "a", 0, 10, 0.5), ("v", "a", 30, 40, 0.5)])
    assert detection_map(gt, miss_first, thresholds=(0.5,)).ap[0, 0] == pytest.approx(0.5)
    assert detection_map(gt, hit_first, thresholds=(0.5,)).ap[0, 0] == pytest.approx(1.0)


def test_tied_tiou_takes_the_ground_truth_given_first() -> None:
    # A = [5, 15] overlaps g1 = [0, 10] and g2 = [10, 20] by exactly 1/3 each; B = [0, 9] only overlaps g1
    pred = moments([("v", "a", 5, 15, 0.9), ("v", "a", 0, 9, 0.8)])
    g1_first = moments([("v", "a", 0, 10), ("v", "a", 10, 20)], scored=False)
    g2_first = moments([("v", "a", 10, 20), ("v", "a", 0, 10)], scored=False)
    assert detection_map(g1_first, pred, thresholds=(0.3,)).ap[0, 0] == pytest.approx(0.5)  # A takes g1; B is FP
    assert detection_map(g2_first, pred, thresholds=(0.3,)).ap[0, 0] == pytest.approx(1.0)  # A takes g2; B gets g1


def test_missing_videos_and_empty_inputs() -> None:
    gt = moments([("v1", "a", 0, 10), ("v2", "a", 0, 10)], scored=False)
    pred = moments([("v1", "a", 0, 10, 0.9)])
    r = moment_recall(gt, pred, ranks=(1,), thresholds=(0.5,))
    assert r.recall[(1, 0.5)] == 0.5 and r.num_videos_without_predictions == 1  # v2 counts as a miss
    empty = Moments([], [], np.zeros((0, 2)), [])
    m = mq_metrics(gt, empty)
    assert m.detection.mean_ap == (0.0,) * 5 and m.detection.num_predictions == 0
    assert all(v == 0.0 for v in m.retrieval.recall.values()) and m.retrieval.num_videos_without_predictions == 2
    nothing = mq_metrics(Moments([], [], np.zeros((0, 2))), pred)
    assert np.isnan(nothing.detection.average_map) and nothing.detection.num_dropped == 1
    assert all(np.isnan(v) for v in nothing.retrieval.recall.values())


def test_to_dict_names_and_average() -> None:
    gt = moments([("v", 0, 0, 10), ("v", 1, 20, 30)], scored=False)
    pred = moments([("v", 0, 0, 4, 0.9), ("v", 1, 20, 30, 0.8)])  # class 0: tIoU 0.4
    d = mq_metrics(gt, pred).to_dict()
    assert [k for k in d if k.startswith("mAP")] == ["mAP@0.1", "mAP@0.2", "mAP@0.3", "mAP@0.4", "mAP@0.5"]
    assert d["mAP@0.4"] == pytest.approx(100.0) and d["mAP@0.5"] == pytest.approx(50.0)
    assert d["average_mAP"] == pytest.approx((4 * 100 + 50) / 5)
    assert d["R1x@0.3"] == pytest.approx(100.0) and d["R1x@0.5"] == pytest.approx(50.0) and "R5x@0.7" in d


def test_segment_iou_true_union_and_empty_union() -> None:
    a = np.array([[0.0, 10.0], [0.0, 10.0], [3.0, 3.0]])
    b = np.array([[5.0, 20.0], [20.0, 30.0], [3.0, 3.0]])
    np.testing.assert_allclose(segment_iou(a, b), [5 / 20, 0.0, 0.0])


def test_moments_validation() -> None:
    with pytest.raises(ValueError, match="end before they start, e.g. row 1"):
        Moments(["v", "v"], [0, 0], [[0, 1], [3, 2]])
    with pytest.raises(ValueError, match="differ in length"):
        Moments(["v"], [0, 1], [[0, 1]])
    with pytest.raises(ValueError, match="score contains NaN"):
        Moments(["v"], [0], [[0, 1]], [float("nan")])
    with pytest.raises(ValueError, match="predictions need scores"):
        detection_map(Moments(["v"], [0], [[0, 1]]), Moments(["v"], [0], [[0, 1]]))


# ---------------------------------------------------------------------------------------- random vs the loops


def random_case(rng: np.random.Generator, string_ids: bool) -> tuple[Moments, Moments]:
    """Integer segments and quarter scores, so tIoU ties and score ties are common; predictions may name a video
    or a class without ground truth, and either side may be empty."""
    num_gt, num_pred = int(rng.integers(0, 15)), int(rng.integers(0, 40))
    num_videos, num_classes = int(rng.integers(1, 4)), int(rng.integers(1, 4))

    def segments(n: int) -> np.ndarray:
        start = rng.integers(0, 10, n).astype(float)
        return np.stack([start, start + rng.integers(0, 6, n)], axis=1)

    def ids(n: int, k: int, prefix: str) -> np.ndarray:
        codes = rng.integers(0, k, n)
        return np.array([f"{prefix}{c}" for c in codes]) if string_ids else codes

    gt = Moments(ids(num_gt, num_videos, "v"), ids(num_gt, num_classes, "c"), segments(num_gt))
    pred = Moments(
        ids(num_pred, num_videos + 1, "v"), ids(num_pred, num_classes + 1, "c"), segments(num_pred),
        rng.integers(0, 4, num_pred) / 4,
    )  # fmt: skip
    return gt, pred


@pytest.mark.parametrize("string_ids", [False, True])
def test_random_cases_equal_the_loop_reference(string_ids: bool) -> None:
    rng = np.random.default_rng(7 + string_ids)
    for _ in range(150):
        gt, pred = random_case(rng, string_ids)
        m = mq_metrics(gt, pred)
        ref = detection_ap_reference(gt, pred)
        expected = np.array([ref[c] for c in m.detection.classes]).T.reshape(5, -1)
        np.testing.assert_allclose(m.detection.ap, expected, atol=1e-12)
        ref_recall = moment_recall_reference(gt, pred)
        assert m.retrieval.recall.keys() == ref_recall.keys()
        np.testing.assert_allclose(list(m.retrieval.recall.values()), list(ref_recall.values()), atol=1e-12)


def test_bigger_case_with_runs_chunks_and_tensors(monkeypatch: pytest.MonkeyPatch) -> None:
    """Clips listed together (the run-length path of the id coding), many matches per group (several matching
    rounds), pairs computed in small chunks, and torch inputs."""
    rng = np.random.default_rng(3)
    num_gt, num_pred = 60, 600
    g_start = rng.uniform(0, 50, num_gt)
    gt = Moments(
        np.array([f"clip{i}" for i in rng.integers(0, 4, num_gt)]), rng.integers(0, 3, num_gt),
        np.stack([g_start, g_start + rng.uniform(1, 15, num_gt)], axis=1),
    )  # fmt: skip
    source = rng.integers(0, num_gt, num_pred)
    source = source[np.argsort(gt.video[source], kind="stable")]  # each clip's predictions together
    seg = np.sort(gt.segment[source] + rng.normal(0, 2, (num_pred, 2)), axis=1)
    video = gt.video[source]
    pred = Moments(video, gt.label[source], torch.from_numpy(seg), torch.rand(num_pred, generator=torch.manual_seed(0)))
    monkeypatch.setattr(detection_module, "_CHUNK_PAIRS", 37)
    m = mq_metrics(gt, pred)
    ref = detection_ap_reference(gt, pred)
    np.testing.assert_allclose(m.detection.ap, np.array([ref[c] for c in m.detection.classes]).T, atol=1e-12)
    assert 0.0 < m.detection.average_map < 1.0
    ref_recall = moment_recall_reference(gt, pred)
    np.testing.assert_allclose(list(m.retrieval.recall.values()), list(ref_recall.values()), atol=1e-12)
