"""Charades mAP, EgoMCQ accuracy and NLQ recall: hand-computed cases, ties, and random checks against loops."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from egovlp.metrics import charades_map, egomcq_accuracy, nlq_recall, temporal_iou
from egovlp.metrics.reference import charades_ap_reference

# ---------------------------------------------------------------- Charades mAP


def test_charades_map_hand_computed() -> None:
    scores = np.array([[0.9, 0.1, 0.5], [0.8, 0.7, 0.2], [0.3, 0.9, 0.4], [0.95, 0.6, 0.1]])
    labels = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 0]])  # video 3 has no label; class 2 no positive
    m = charades_map(scores, labels)
    # class 0: video 3 (0.95) is pushed last -> order 0,1,2,3; positives at ranks 1 and 3
    # (without the push it would be (1/2 + 2/4) / 2 = 0.5)
    ap0 = (1 / 1 + 2 / 3) / 2
    ap1 = (1 / 1 + 2 / 2) / 2  # class 1: order 2,1,0,3; positives at ranks 1 and 2
    np.testing.assert_allclose(m.per_class_ap, [ap0, ap1, np.nan])
    assert m.map == pytest.approx((ap0 + ap1) / 2)
    assert m.skipped_classes == (2,) and m.num_classes_skipped == 1 and m.num_classes_evaluated == 2
    assert m.num_videos_without_labels == 1


def test_charades_map_ties_by_video_index() -> None:
    labels = np.array([[0, 1], [1, 0], [0, 1], [1, 0]])
    m = charades_map(np.zeros((4, 2)), labels)  # all tied: order 0,1,2,3 for both classes
    np.testing.assert_allclose(m.per_class_ap, [(1 / 2 + 2 / 4) / 2, (1 / 1 + 2 / 3) / 2])
    # videos without any label rank last even when they score highest
    m = charades_map(np.array([[0.0], [9.0], [0.0]]), np.array([[0], [0], [1]]))
    assert m.map == 1.0 and m.num_videos_without_labels == 2


@pytest.mark.parametrize("seed", range(5))
def test_charades_map_matches_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, c = rng.integers(2, 30), rng.integers(1, 12)
    labels = (rng.random((n, c)) < 0.2).astype(np.int64)
    scores = np.round(rng.standard_normal((n, c)), 1).astype(np.float32)
    ref = charades_ap_reference(scores, labels)
    m = charades_map(torch.from_numpy(scores), torch.from_numpy(labels).bool())
    np.testing.assert_allclose(m.per_class_ap, ref, rtol=1e-12, equal_nan=True)
    assert m.num_classes_skipped == int(np.isnan(ref).sum())
    if not np.isnan(ref).all():
        assert m.map == pytest.approx(np.nanmean(ref))


def test_charades_map_input_checks() -> None:
    with pytest.raises(ValueError, match="binary"):
        charades_map(np.zeros((2, 2)), np.array([[0, 2], [1, 0]]))
    with pytest.raises(ValueError, match="shape"):
        charades_map(np.zeros((2, 2)), np.zeros((2, 3)))
    scores = np.zeros((4, 3))
    scores[1:3, 0] = np.nan
    with pytest.raises(ValueError, match=r"^scores contains NaN: 2 of 12 entries, in 2 of 4 rows$"):
        charades_map(scores, np.eye(4, 3))


# ---------------------------------------------------------------- EgoMCQ


def test_egomcq_accuracy_hand_computed() -> None:
    scores = np.array(
        [
            [0.1, 0.9, 0.2, 0.3, 0.0],  # argmax 1
            [0.5, 0.5, 0.1, 0.0, 0.0],  # tie between 0 and 1 -> 0
            [0.0, 0.1, 0.2, 0.3, 0.4],  # argmax 4
            [0.2, 0.2, 0.2, 0.2, 0.2],  # all tied -> 0
            [0.0, 0.0, 0.9, 0.0, 0.0],  # argmax 2
        ]
    )
    answers = np.array([1, 1, 4, 0, 3])
    types = np.array([1, 1, 2, 2, 2])
    acc = egomcq_accuracy(scores, answers, types)
    assert acc.inter_video == pytest.approx(1 / 2)  # type 1: right, wrong (tie goes to option 0)
    assert acc.intra_video == pytest.approx(2 / 3)  # type 2: right, right, wrong
    assert acc.overall == pytest.approx(3 / 5)
    assert acc.per_type == {1: (1, 2), 2: (2, 3)} and acc.num_questions == 5
    assert acc.to_dict() == {"Inter-video": pytest.approx(50.0), "Intra-video": pytest.approx(200 / 3), "Overall": 60.0}


def test_egomcq_missing_type_and_torch_input() -> None:
    acc = egomcq_accuracy(torch.eye(5), torch.arange(5), torch.full((5,), 2))
    assert acc.inter_video is None and acc.intra_video == 1.0 and acc.to_dict()["Inter-video"] is None
    with pytest.raises(ValueError, match="answers"):
        egomcq_accuracy(np.eye(5), np.array([0, 1, 2, 3, 5]), np.ones(5))
    scores = np.eye(5)
    scores[3] = np.nan
    with pytest.raises(ValueError, match=r"^scores contains NaN: 5 of 25 entries, in 1 of 5 rows$"):
        egomcq_accuracy(scores, np.arange(5), np.ones(5))


def test_egomcq_matches_loop() -> None:
    rng = np.random.default_rng(3)
    scores = rng.integers(0, 3, size=(200, 5)).astype(np.float32)  # many ties
    answers, types = rng.integers(0, 5, 200), rng.integers(1, 3, 200)
    acc = egomcq_accuracy(scores, answers, types)
    for type_id, value in ((1, acc.inter_video), (2, acc.intra_video)):
        picked = [next(j for j in range(5) if row[j] == row.max()) for row in scores[types == type_id]]
        assert value == pytest.approx(np.mean(np.array(picked) == answers[types == type_id]))


# ---------------------------------------------------------------- NLQ grounding


def test_temporal_iou_hand_computed() -> None:
    gt = np.array([5.0, 15.0])
    preds = np.array([[0.0, 10.0], [5.0, 15.0], [20.0, 30.0], [7.0, 9.0], [3.0, 3.0]])
    np.testing.assert_allclose(temporal_iou(preds, gt), [5 / 15, 1.0, 0.0, 2 / 10, 0.0])
    assert temporal_iou(np.array([4.0, 4.0]), np.array([4.0, 4.0])) == 0.0  # zero-length hull


def test_nlq_recall_hand_computed() -> None:
    gt = {"q1": [0.0, 5.0], "q2": [10.0, 20.0], "q3": [0.0, 1.0]}
    preds = {
        "q1": np.array([[0.0, 10.0], [0.0, 4.0]]),  # IoU 0.5 (not > 0.5), then 0.8
        "q2": np.array([[0.0, 1.0], [30.0, 40.0], [12.0, 20.0], [0, 1], [0, 1], [10.0, 20.0]]),  # 3rd: 0.8; 6th: 1.0
    }  # q3 missing
    m = nlq_recall(preds, gt)
    assert m.num_queries == 3 and m.num_missing == 1
    assert m.recall[(1, 0.3)] == pytest.approx(1 / 3)  # q1 only
    assert m.recall[(1, 0.5)] == pytest.approx(0.0)  # strict: IoU 0.5 is not > 0.5
    assert m.recall[(5, 0.3)] == pytest.approx(2 / 3) and m.recall[(5, 0.5)] == pytest.approx(2 / 3)
    # official mIoU = mean top-1 IoU: q1 0.5, q2 0.0, q3 missing -> 0 (the mean of the 3 best IoUs, egovlp's old
    # value, would be ((0.8 + 0.5) / 2 + (1.0 + 0.8 + 0) / 3 + 0) / 3 = 0.42)
    assert m.mean_iou == pytest.approx((0.5 + 0.0 + 0.0) / 3)
    assert m.to_dict()["mIoU"] == pytest.approx(100 * 0.5 / 3)
    assert m.to_dict()["R5@0.3"] == pytest.approx(200 / 3)
    with pytest.raises(ValueError, match="not in the ground truth"):
        nlq_recall({"q9": np.zeros((1, 2))}, gt)
    with pytest.raises(ValueError, match=r"prediction for query 'q2' contains NaN: 1 of 4 entries, in 1 of 2 rows"):
        nlq_recall({"q2": np.array([[0.0, 1.0], [np.nan, 2.0]])}, gt)


def test_nlq_recall_matches_loop() -> None:
    rng = np.random.default_rng(5)
    starts = rng.uniform(0, 50, 40)
    gt = np.stack([starts, starts + rng.uniform(1, 20, 40)], axis=1)
    preds: list[np.ndarray | None] = []
    for _ in range(40):
        s = rng.uniform(0, 60, 6)
        preds.append(None if rng.random() < 0.2 else np.stack([s, s + rng.uniform(0, 20, 6)], axis=1))
    m = nlq_recall(preds, gt, ks=(1, 3, 5), thresholds=(0.1, 0.3, 0.5, 0.7))
    for (k, thr), value in m.recall.items():
        hits = 0
        for p, (g0, g1) in zip(preds, gt):
            for a, b in [] if p is None else p[:k]:
                inter, hull = max(0.0, min(b, g1) - max(a, g0)), max(b, g1) - min(a, g0)
                if hull > 0 and inter / hull > thr:
                    hits += 1
                    break
        assert value == pytest.approx(hits / 40), (k, thr)
    assert m.num_missing == sum(p is None for p in preds)
    top1 = []
    for p, (g0, g1) in zip(preds, gt):
        if p is not None:
            a, b = p[0]
            top1.append(max(0.0, min(b, g1) - max(a, g0)) / (max(b, g1) - min(a, g0)))
    assert m.mean_iou == pytest.approx(sum(top1) / 40)
