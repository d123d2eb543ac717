"""Each metric on a case where a plausible wrong definition gives a different number (REFERENCE §4).

Every test computes the official value by hand, checks ours equals it, and checks that the wrong definitions named
in the test (computed by hand too) would have given something else, so a regression to any of them fails here.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from egovlp.metrics import charades_map, egomcq_accuracy, epic_mir_metrics, nlq_recall, recall_at_k
from egovlp.metrics.retrieval import mir_per_query

L3, L5 = math.log2(3), math.log2(5)  # discounts of ranks 2 and 4


def differ(a: float, *others: float, by: float = 1e-3) -> bool:
    return all(abs(a - o) > by for o in others)


def test_ek100_map_graded_precision_and_exact_relevance() -> None:
    # ranked relevancy 0.5, 1, 0.75, 1: relevant (== 1) at ranks 2 and 4
    sim = np.array([[0.9, 0.8, 0.7, 0.6, 0.5]])
    rel = np.array([[0.5, 1.0, 0.75, 1.0, 0.0]])
    ap = mir_per_query(sim, rel)[0][0]
    official = (1.5 / 2 + 3.25 / 4) / 2  # cumulative graded relevancy / rank
    counted = (1 / 2 + 2 / 4) / 2  # wrong: #relevant so far / rank
    positive = (1 / 1 + 2 / 2 + 3 / 3 + 4 / 4) / 4  # wrong: relevant = relevancy > 0 (binary precision)
    graded_over_positives = (0.5 / 1 + 1.5 / 2 + 2.25 / 3 + 3.25 / 4) / 4  # wrong: AP over all items with rel > 0
    assert ap == pytest.approx(official)
    assert differ(official, counted, positive, graded_over_positives)
    # the reported mAP averages V2T and T2V (T2V here: 5 one-video columns; columns 1 and 3 have relevancy 1)
    m = epic_mir_metrics(sim, rel)
    assert m.map_v2t == pytest.approx(official) and m.map_t2v == 1.0 and m.map_t2v_skipped == 3
    assert m.to_dict()["mAP_AVG"] == pytest.approx(100 * (official + 1.0) / 2)


def test_ek100_ndcg_graded_gain_truncated_at_k() -> None:
    sim = np.array([[0.9, 0.8, 0.7, 0.1]])
    rel = np.array([[0.5, 1.0, 0.0, 0.25]])  # ranked as given; K = 3 items with relevancy > 0
    ndcg = mir_per_query(sim, rel)[1][0]
    official = (0.5 + 1 / L3 + 0) / (1 + 0.5 / L3 + 0.25 / 2)
    exp_gain = ((2**0.5 - 1) + 1 / L3) / (1 + (2**0.5 - 1) / L3 + (2**0.25 - 1) / 2)  # wrong: 2^rel - 1
    untruncated = (0.5 + 1 / L3 + 0.25 / L5) / (1 + 0.5 / L3 + 0.25 / 2)  # wrong: DCG over the whole gallery
    ideal_of_ranked = (0.5 + 1 / L3) / (0.5 + 1 / L3)  # wrong: IDCG from the ranked (not sorted) relevancy
    assert ndcg == pytest.approx(official)
    assert differ(official, exp_gain, untruncated, ideal_of_ranked)


def test_charades_map_non_interpolated_and_skipped_classes() -> None:
    # class 0: ranked labels 1, 0, 0, 1, 1 (videos 0-4); class 1: no positive (skipped); class 2 gives videos 1, 2
    # a label, so they are not "label-less"; video 5 has no label at all and scores highest
    scores = np.array([[0.9, 0.1, 0.1], [0.8, 0.2, 0.9], [0.7, 0.3, 0.8], [0.6, 0.4, 0.2], [0.5, 0.5, 0.3],
                       [0.95, 0.6, 0.99]])  # fmt: skip
    labels = np.array([[1, 0, 0], [0, 0, 1], [0, 0, 1], [1, 0, 0], [1, 0, 0], [0, 0, 0]])
    m = charades_map(scores, labels)
    ap0 = (1 / 1 + 2 / 4 + 3 / 5) / 3  # video 5 (0.95) is pushed last
    ap2 = 1.0  # videos 1, 2 first once video 5 is pushed last
    official = (ap0 + ap2) / 2
    interpolated = ((1 / 1 + 3 / 5 + 3 / 5) / 3 + ap2) / 2  # wrong: VOC-style monotone precision envelope
    not_pushed = ((1 / 2 + 2 / 5 + 3 / 6) / 3 + (1 / 2 + 2 / 3) / 2) / 2  # wrong: video 5 keeps its top score
    skipped_as_zero = (ap0 + ap2) / 3  # wrong: a class without positives counts 0 instead of being skipped
    assert m.map == pytest.approx(official) and m.skipped_classes == (1,)
    np.testing.assert_allclose(m.per_class_ap, [ap0, np.nan, ap2])
    assert differ(official, interpolated, not_pushed, skipped_as_zero)


def test_egomcq_type_ids_and_first_index_ties() -> None:
    scores = np.array(
        [
            [0.1, 0.9, 0.0, 0.0, 0.0],  # type 1, answer 1: right
            [0.5, 0.5, 0.0, 0.0, 0.0],  # type 1, answer 1: tie -> option 0: wrong (last-index ties: right)
            [0.0, 0.0, 0.0, 0.0, 0.7],  # type 2, answer 3: wrong
        ]
    )
    acc = egomcq_accuracy(scores, np.array([1, 1, 3]), np.array([1, 1, 2]))
    assert acc.inter_video == 0.5 and acc.intra_video == 0.0  # type 1 = inter-video, 2 = intra-video
    assert differ(acc.inter_video, 1.0, acc.intra_video)  # last-index ties; swapped type labels
    assert acc.to_dict() == {"Inter-video": 50.0, "Intra-video": 0.0, "Overall": pytest.approx(100 / 3)}


def test_nlq_recall_strict_over_all_queries_and_top1_miou() -> None:
    gt = {"a": [0.0, 10.0], "b": [0.0, 10.0], "c": [0.0, 10.0], "d": [0.0, 10.0]}
    preds = {
        "a": np.array([[0.0, 3.0], [0.0, 10.0]]),  # IoU 0.3 (not > 0.3), then 1.0
        "b": np.array([[0.0, 5.0], [20.0, 30.0], [0.0, 9.0]]),  # IoU 0.5, 0, 0.9
        "c": np.array([[0.0, 8.0]]),  # IoU 0.8
    }  # d: missing
    m = nlq_recall(preds, gt, ks=(1, 5), thresholds=(0.3, 0.5))
    assert m.recall[(1, 0.3)] == pytest.approx(2 / 4)  # b, c
    assert differ(m.recall[(1, 0.3)], 3 / 4, 2 / 3)  # wrong: IoU >= 0.3; wrong: mean over predicted queries
    assert m.recall[(5, 0.5)] == pytest.approx(3 / 4)  # a (2nd), b (3rd), c; b's 1st is exactly 0.5
    assert differ(m.recall[(5, 0.5)], 2 / 4)  # wrong: only the K-th prediction... or only the first
    assert m.mean_iou == pytest.approx((0.3 + 0.5 + 0.8 + 0) / 4)
    top3 = ((0.3 + 1.0) / 2 + (0.9 + 0.5 + 0.0) / 3 + 0.8 + 0) / 4  # wrong: mean of the 3 best IoUs (egovlp's old)
    assert differ(m.mean_iou, top3, (0.3 + 0.5 + 0.8) / 3)  # ... or the mean over predicted queries only
    assert m.num_missing == 1


def test_recall_at_k_counts_rank_k() -> None:
    sim = np.array([[0.1, 0.9, 0.8], [0.9, 0.5, 0.1], [0.0, 0.0, 0.0]])  # ground truth at ranks 3, 2, 3 (ties: index)
    m = recall_at_k(sim, ks=(1, 2, 3))
    assert m.recall == {1: 0.0, 2: pytest.approx(1 / 3), 3: 1.0}  # R@K: rank <= K (wrong "< K" gives 0, 0, 1/3)
    assert m.median_rank == 3.0 and m.mean_rank == pytest.approx(8 / 3)  # 1-based (0-based would give 2, 5/3)
    assert recall_at_k(sim, ks=(1,), ties="optimistic").recall[1] == pytest.approx(1 / 3)  # Frozen-in-Time rule
