"""EK-100 MIR mAP / nDCG and R@K: hand-computed cases, tie rules, and the fast path against the loop reference."""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import pytest
import torch

from egovlp.metrics import retrieval
from egovlp.metrics.reference import ground_truth_ranks_reference, mir_per_query_reference
from egovlp.metrics.retrieval import epic_mir_metrics, mir_per_query, rank_order, recall_at_k

L3 = math.log2(3)  # discount of rank 2; rank 1 has discount 1, rank 3 has 1/2


def test_hand_computed_map_and_ndcg() -> None:
    sim = np.array([[0.9, 0.1, 0.8, 0.3], [0.2, 0.4, 0.6, 0.8]], dtype=np.float32)
    rel = np.array([[1.0, 1.0, 0.0, 0.5], [0.0, 0.5, 1.0, 0.0]])
    m = epic_mir_metrics(sim, rel)
    # V2T row 0: order 0,2,3,1 -> ranked relevancy 1, 0, .5, 1 (cumulative 1, 1, 1.5, 2.5): relevant at ranks 1
    # and 4 with precision 1/1 and 2.5/4 (the count of relevant items would give 2/4); K = 3 -> gains 1, 0, 0.5
    ap0, ndcg0 = (1 / 1 + 2.5 / 4) / 2, (1 + 0.5 / 2) / (1 + 1 / L3 + 0.5 / 2)
    # V2T row 1: order 3,2,1,0 -> ranked relevancy 0, 1, .5, 0: relevant at rank 2, precision 1/2; K = 2
    ap1, ndcg1 = 1 / 2, (1 / L3) / (1 + 0.5 / L3)
    assert m.map_v2t == pytest.approx((ap0 + ap1) / 2)
    assert m.ndcg_v2t == pytest.approx((ndcg0 + ndcg1) / 2)
    # T2V columns: AP 1, 1.5/2 (column 1 ranks relevancy .5 above 1), 1/2; column 3 has no relevancy-1 video
    # (skipped); nDCG 1, ..., 0, 0
    assert m.map_t2v == pytest.approx((1 + 1.5 / 2 + 1 / 2) / 3) and m.map_t2v_skipped == 1
    ndcg_col1 = (0.5 + 1 / L3) / (1 + 0.5 / L3)
    assert m.ndcg_t2v == pytest.approx((1 + ndcg_col1 + 0 + 0) / 4) and m.ndcg_t2v_skipped == 0
    assert m.map_avg == pytest.approx((m.map_v2t + m.map_t2v) / 2)
    d = m.to_dict()
    assert set(d) == {"mAP_V2T", "mAP_T2V", "mAP_AVG", "nDCG_V2T", "nDCG_T2V", "nDCG_AVG"}
    assert d["mAP_V2T"] == pytest.approx(100 * m.map_v2t)


def test_ndcg_example_of_the_official_docstring() -> None:
    sim = np.array([[1.0, 0.7, 0.4, 0.0], [0.3, 0.9, 0.6, 0.1], [0.2, 0.5, 0.8, 0.4]])
    rel = np.array([[1.0, 0.5, 0.25, 0.0], [0.0, 1.0, 0.4, 0.0], [0.5, 0.3, 1.0, 0.0]])
    _, ndcg = mir_per_query(sim, rel)
    row2 = (1 + 0.3 / L3) / (1 + 0.5 / L3 + 0.3 / 2)  # order 2,1,3: gains 1, .3, 0
    np.testing.assert_allclose(ndcg, [1.0, 1.0, row2])
    assert ndcg.mean() == pytest.approx(0.9371789900735429)


def test_ties_rank_by_gallery_index() -> None:
    rel = np.array([[0.0, 1.0, 0.5, 1.0]])
    for dtype in (np.float16, np.float32, np.float64):
        sim = np.array([[0.0, -0.0, 0.0, 0.0]], dtype=dtype)  # all tied, -0.0 included
        ap, ndcg = mir_per_query(sim, rel)
        assert ap[0] == pytest.approx((1 / 2 + 2.5 / 4) / 2)  # order 0,1,2,3: cumulative relevancy 0, 1, 1.5, 2.5
        assert ndcg[0] == pytest.approx((1 / L3 + 0.5 / 2) / (1 + 1 / L3 + 0.5 / 2))


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.int64])
def test_rank_order_is_a_stable_descending_sort(dtype: type) -> None:
    rng = np.random.default_rng(1)
    scores: np.ndarray = rng.integers(-3, 4, size=(20, 50)).astype(dtype)  # many ties
    scores[0] = rng.standard_normal(50).astype(dtype) if dtype != np.int64 else scores[0]
    expected = np.argsort(-scores.astype(np.float64), axis=1, kind="stable")
    np.testing.assert_array_equal(rank_order(scores), expected)
    np.testing.assert_array_equal(rank_order(torch.from_numpy(scores)), expected)


@pytest.mark.parametrize("seed", range(4))
def test_fast_path_matches_loop_reference(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retrieval, "_CHUNK_ELEMENTS", 64)  # many chunks, several threads
    rng = np.random.default_rng(seed)
    v, t = rng.integers(1, 25), rng.integers(1, 25)
    rel = rng.choice([0.0, 0.25, 0.5, 0.75, 1.0], size=(v, t), p=[0.5, 0.1, 0.15, 0.1, 0.15])
    sim = rng.standard_normal((v, t)).astype(np.float32)
    if seed % 2:
        sim = np.round(sim, 1)  # ties
    for s, r in ((sim, rel), (sim.T, rel.T), (sim.astype(np.float64), rel)):
        ap, ndcg = mir_per_query(s, r, num_threads=3)
        ap_ref, ndcg_ref = mir_per_query_reference(s, r)
        np.testing.assert_allclose(ap, ap_ref, rtol=1e-12, equal_nan=True)
        np.testing.assert_allclose(ndcg, ndcg_ref, rtol=1e-12, equal_nan=True)
    m = epic_mir_metrics(torch.from_numpy(sim), torch.from_numpy(rel), num_threads=1)
    ap_t, _ = mir_per_query_reference(sim.T, rel.T)
    assert m.map_t2v_skipped == int(np.isnan(ap_t).sum())
    if not np.isnan(ap_t).all():
        assert m.map_t2v == pytest.approx(np.nanmean(ap_t))


def test_partially_relevant_items_count_in_the_precision() -> None:
    """The official precision at rank r is the cumulative GRADED relevancy / r, not (#relevant so far) / r."""
    sim = np.array([[0.9, 0.8, 0.7, 0.1]], dtype=np.float32)
    rel = np.array([[0.5, 1.0, 0.99, 1.0]], dtype=np.float32)  # 0.99 is partially relevant, not relevant
    ap, _ = mir_per_query(sim, rel)
    official = (1.5 / 2 + 3.49 / 4) / 2  # relevant at ranks 2 and 4; cumulative relevancy 1.5 and 3.49
    counted = (1 / 2 + 2 / 4) / 2  # the textbook precision egovlp used before: 0.5
    assert ap[0] == pytest.approx(official, rel=1e-6) and abs(official - counted) > 0.3
    ap_ref, _ = mir_per_query_reference(sim, rel)
    assert ap_ref[0] == pytest.approx(official, rel=1e-6)
    # a relevant item ranked first is not helped by partial items below it
    assert mir_per_query(np.array([[0.9, 0.1]]), np.array([[1.0, 0.5]]))[0][0] == 1.0


def test_map_exceeds_the_count_based_value_on_random_scores() -> None:
    """On random scores with many partially relevant items the two definitions differ by a lot (issue 16)."""
    rng = np.random.default_rng(0)
    rel = rng.choice([0.0, 0.5, 1.0], size=(60, 200), p=[0.6, 0.38, 0.02])
    rel[:, 0] = 1.0  # every row has a relevant item
    sim = rng.standard_normal(rel.shape)
    ap, _ = mir_per_query(sim, rel)
    counted = []
    for row_s, row_r in zip(sim, rel):
        ranked = row_r[np.argsort(-row_s, kind="stable")] == 1.0
        hits = np.cumsum(ranked)
        counted.append(np.mean(hits[ranked] / (np.flatnonzero(ranked) + 1)))
    assert ap.mean() > 3 * np.mean(counted)  # about 0.2 against 0.04


def test_input_checks() -> None:
    with pytest.raises(ValueError, match="differ in shape"):
        epic_mir_metrics(np.zeros((2, 3)), np.zeros((3, 2)))
    sim = np.zeros((3, 4), dtype=np.float32)
    sim[0, 1] = sim[0, 2] = sim[2, 0] = np.nan
    with pytest.raises(ValueError, match=r"^similarity contains NaN: 3 of 12 entries, in 2 of 3 rows$"):
        epic_mir_metrics(sim, np.ones((3, 4)))
    with pytest.raises(ValueError, match="relevancy contains NaN: 1 of 2 entries"):
        epic_mir_metrics(np.zeros((1, 2)), np.array([[np.nan, 1.0]]))
    with pytest.raises(ValueError, match="similarity contains NaN: 1 of 4 entries, in 1 of 2 rows"):
        recall_at_k(np.array([[1.0, np.nan], [0.0, 1.0]]))


def test_recall_at_k_hand_computed() -> None:
    sim = np.array(
        [
            [0.9, 0.1, 0.2],  # gt rank 1
            [0.5, 0.4, 0.6],  # gt rank 3
            [0.3, 0.3, 0.3],  # all tied: index rule -> rank 3, optimistic 1, pessimistic 3, mean 2
        ]
    )
    m = recall_at_k(sim, ks=(1, 2))
    assert m.recall == {1: pytest.approx(1 / 3), 2: pytest.approx(1 / 3)}
    assert m.median_rank == 3 and m.mean_rank == pytest.approx(7 / 3) and m.num_queries == 3
    assert recall_at_k(sim, ks=(1,), ties="optimistic").recall[1] == pytest.approx(2 / 3)
    assert recall_at_k(sim, ties="mean").mean_rank == pytest.approx((1 + 3 + 2) / 3)
    assert recall_at_k(sim, ties="pessimistic").mean_rank == pytest.approx(7 / 3)
    assert recall_at_k(sim).to_dict()["R1"] == pytest.approx(100 / 3)


@pytest.mark.parametrize("ties", ["index", "optimistic", "pessimistic", "mean"])
def test_recall_ranks_match_reference(ties: Literal["index", "optimistic", "pessimistic", "mean"]) -> None:
    rng = np.random.default_rng(7)
    sim = np.round(rng.standard_normal((15, 18)), 1)
    ranks = ground_truth_ranks_reference(sim, ties)
    m = recall_at_k(sim, ks=(1, 5, 10), ties=ties)
    assert m.mean_rank == pytest.approx(ranks.mean()) and m.median_rank == pytest.approx(np.median(ranks))
    assert m.recall == {k: pytest.approx((ranks <= k).mean()) for k in (1, 5, 10)}
