"""QFVS semantic matching: hand-computed cases, and the matching against brute force over all assignments."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest
import torch

from egovlp.metrics.summarization import concept_iou, machine_summary, qfvs_metrics, semantic_matching


def tags(*shots: set[int], k: int = 4) -> np.ndarray:
    """Concept vectors ``(len(shots), k)`` from the concept sets of the shots."""
    out = np.zeros((len(shots), k), dtype=np.uint8)
    for i, shot in enumerate(shots):
        out[i, sorted(shot)] = 1
    return out


def brute_force_weight(w: np.ndarray) -> float:
    """The best total weight of a one-to-one matching, over every assignment of the smaller side."""
    if w.shape[0] > w.shape[1]:
        w = w.T
    m, n = w.shape
    return max(sum(w[i, cols[i]] for i in range(m)) for cols in itertools.permutations(range(n), m))


def test_machine_summary_truncates_two_percent_and_breaks_ties_by_index() -> None:
    rng = np.random.default_rng(0)
    assert len(machine_summary(rng.random(2783))) == 55  # int(55.66); rounding or ceil would give 56
    assert len(machine_summary(rng.random(3692))) == 73  # int(73.84)
    assert len(machine_summary(rng.random(49))) == 0
    scores = np.array([0.1, 0.5, 0.9, 0.5, 0.2] * 20)  # 100 shots -> 2; 0.9 at 2, 7, ...
    np.testing.assert_array_equal(machine_summary(scores), [2, 7])
    np.testing.assert_array_equal(machine_summary(scores, fraction=0.05), [2, 7, 12, 17, 22])
    np.testing.assert_array_equal(machine_summary(torch.tensor([0.0, 1.0, 1.0, 0.5]), fraction=0.5), [1, 2])


def test_concept_iou_empty_union_is_zero() -> None:
    w = concept_iou(tags({0, 1}, {2}, set()), tags({0}, {1, 2}, set()))
    np.testing.assert_allclose(w, [[1 / 2, 1 / 3, 0.0], [0.0, 1 / 2, 0.0], [0.0, 0.0, 0.0]])


def test_semantic_matching_hand_computed() -> None:
    # shots 0-2 machine, 3-5 ground truth; weights [[1/2, 1/3, 0], [0, 1/2, 0], [0, 0, 0]] (see above)
    concepts = tags({0, 1}, {2}, set(), {0}, {1, 2}, set())
    s = semantic_matching([0, 1, 2], [3, 4, 5], concepts)
    official = 1 / 2 + 1 / 2  # m0-g0 + m1-g1 (the other way round: 1/3 + 0)
    assert s.precision == pytest.approx(official / 3) and s.recall == pytest.approx(official / 3)
    assert s.f1 == pytest.approx(official / 3)
    empty_union_is_one = (official + 1) / 3  # wrong: two concept-less shots matched with IoU 1
    assert abs(s.precision - empty_union_is_one) > 0.1
    # |machine| != |ground truth|: P and R differ, F1 = 2PR / (P + R)
    s = semantic_matching([0, 1], [3, 4, 5], concepts)
    assert (s.precision, s.recall) == pytest.approx((1 / 2, 1 / 3))
    assert s.f1 == pytest.approx(2 * (1 / 2) * (1 / 3) / (1 / 2 + 1 / 3))


def test_each_shot_is_matched_once() -> None:
    concepts = tags({0, 1}, {0, 1}, {0, 1}, {2})  # machine 0, 1; ground truth 2, 3
    s = semantic_matching([0, 1], [2, 3], concepts)
    assert (s.precision, s.recall, s.f1) == pytest.approx((1 / 2, 1 / 2, 1 / 2))  # only one of 0, 1 gets shot 2
    # wrong: every machine shot takes its best ground-truth shot -> weight 2, P = R = 1


def test_edge_cases_and_duplicates() -> None:
    concepts = tags({0}, {1}, {0})
    assert semantic_matching([], [0], concepts) == semantic_matching([0], [], concepts)
    assert semantic_matching([], [0], concepts).f1 == 0.0  # the release would divide by zero
    assert semantic_matching([1], [0, 2], concepts).f1 == 0.0  # P + R = 0
    assert semantic_matching([0], [2, 2], concepts).recall == 1.0  # a shot listed twice counts once
    with pytest.raises(ValueError, match="ground_truth must be 0-based shot indices below 3"):
        semantic_matching([0], [3], concepts)


def test_matching_equals_brute_force_with_ties() -> None:
    rng = np.random.default_rng(1)
    for _ in range(300):
        m, n = int(rng.integers(1, 6)), int(rng.integers(1, 6))
        concepts = (rng.random((m + n, 3)) < 0.5).astype(np.uint8)  # 3 concepts: many equal weights
        s = semantic_matching(np.arange(m), np.arange(m, m + n), concepts)
        best = brute_force_weight(concept_iou(concepts[:m], concepts[m:]))
        assert s.precision == pytest.approx(best / m) and s.recall == pytest.approx(best / n)


def test_qfvs_metrics_mean_per_video_then_over_videos() -> None:
    # shot i has the single concept i % 4, so two shots weigh 1 when i = j (mod 4), else 0
    p01 = tags(*({i % 4} for i in range(100)))
    p02 = tags(*({i % 4} for i in range(50)))
    first, second, third = np.zeros(100), np.zeros(100), np.zeros(50)
    first[[0, 1]] = 1.0  # top 2 of 100 = shots 0, 1 (concepts 0, 1)
    second[[0, 4]] = 1.0  # shots 0, 4 (both concept 0)
    third[3] = 1.0  # top 1 of 50 = shot 3 (concept 3)
    queries: list[tuple[str, Any, list[int]]] = [
        ("P01", first, [4, 9, 2]), ("P01", second, [8]), ("P02", torch.from_numpy(third), [7]),
    ]  # fmt: skip
    m = qfvs_metrics(queries, {"P01": p01, "P02": p02})
    f1_a, f1_b = 2 * 1 * (2 / 3) / (1 + 2 / 3), 2 * (1 / 2) * 1 / (1 / 2 + 1)  # 0.8 and 2/3
    p01_score = m.per_video["P01"]
    assert (p01_score.precision, p01_score.recall) == pytest.approx(((1 + 1 / 2) / 2, (2 / 3 + 1) / 2))
    assert p01_score.f1 == pytest.approx((f1_a + f1_b) / 2)
    f1_of_means = 2 * 0.75 * (5 / 6) / (0.75 + 5 / 6)  # wrong: F1 recomputed from the mean P and R
    assert abs(p01_score.f1 - f1_of_means) > 0.01
    assert m.per_video["P02"].f1 == 1.0 and m.num_queries == {"P01": 2, "P02": 1}
    assert m.mean.f1 == pytest.approx(((f1_a + f1_b) / 2 + 1) / 2)
    over_queries = (f1_a + f1_b + 1) / 3  # wrong: the mean over all queries
    assert abs(m.mean.f1 - over_queries) > 0.01
    d = m.to_dict()
    assert d["F1"] == pytest.approx(100 * m.mean.f1) and d["P02/F1"] == pytest.approx(100.0)


def test_qfvs_metrics_errors() -> None:
    concepts = {"P01": tags({0}, {1})}
    with pytest.raises(ValueError, match="no concept vectors for video 'P02'"):
        qfvs_metrics([("P02", np.zeros(2), [0])], concepts)
    with pytest.raises(ValueError, match="video 'P01': 3 shot scores for 2 shots"):
        qfvs_metrics([("P01", np.zeros(3), [0])], concepts)
    assert np.isnan(qfvs_metrics([], concepts).mean.f1)
