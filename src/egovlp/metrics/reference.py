"""Slow, obviously-correct loop implementations of the metrics; the vectorised ones are tested against these.

They follow REFERENCE §4 line by line with Python loops and sorted() on explicit ``(key, index)`` tuples, so the
tie rule (equal scores ranked by ascending index) is visible. Use small inputs only.
"""

from __future__ import annotations

import math

import numpy as np

from ._utils import as_numpy


def ranked_indices(row: np.ndarray) -> list[int]:
    """Gallery indices by descending score, ties by ascending index."""
    return sorted(range(len(row)), key=lambda j: (-float(row[j]), j))


def average_precision(ranked_relevant: list[bool]) -> float:
    """Binary AP (Charades): mean over relevant items of (relevant items so far) / rank; NaN without relevant items."""
    found, total = 0, 0.0
    for rank, relevant in enumerate(ranked_relevant, start=1):
        if relevant:
            found += 1
            total += found / rank
    return total / found if found else float("nan")


def graded_average_precision(ranked_relevancy: list[float]) -> float:
    """EK-100 AP (the official JPoSE ``calculate_mAP``): mean over the items with relevancy exactly 1.0 of
    (sum of the graded relevancy of ranks 1..r) / r at their rank r; NaN without such items."""
    found, cumulative, total = 0, 0.0, 0.0
    for rank, relevancy in enumerate(ranked_relevancy, start=1):
        cumulative += relevancy  # partially relevant items count by their relevancy
        if relevancy == 1.0:
            found += 1
            total += cumulative / rank
    return total / found if found else float("nan")


def mir_per_query_reference(similarity: np.ndarray, relevancy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row AP (relevant = relevancy 1.0, precision = cumulative graded relevancy / rank) and nDCG (top K =
    #relevancy > 0, gain rel / log2(rank + 1)); ``(Q, G)`` inputs, two ``(Q,)`` outputs (NaN = no relevant item)."""
    s, r = as_numpy(similarity, "similarity", 2), as_numpy(relevancy, "relevancy", 2)
    aps, ndcgs = [], []
    for i in range(s.shape[0]):
        order = ranked_indices(s[i])
        aps.append(graded_average_precision([float(r[i, j]) for j in order]))
        k = sum(1 for v in r[i] if v > 0)
        dcg = sum(r[i, order[rank]] / math.log2(rank + 2) for rank in range(k))
        ideal = sorted((float(v) for v in r[i]), reverse=True)
        idcg = sum(ideal[rank] / math.log2(rank + 2) for rank in range(k))
        ndcgs.append(dcg / idcg if k else float("nan"))
    return np.array(aps), np.array(ndcgs)


def charades_ap_reference(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-class AP; videos without any positive label rank below all others; NaN for classes without positives."""
    s, y = as_numpy(scores, "scores", 2), as_numpy(labels, "labels", 2)
    empty = [not any(y[i] == 1) for i in range(s.shape[0])]
    aps = []
    for c in range(s.shape[1]):
        order = sorted(range(s.shape[0]), key=lambda i: (empty[i], -float(s[i, c]), i))
        aps.append(average_precision([y[i, c] == 1 for i in order]))
    return np.array(aps)


def ground_truth_ranks_reference(similarity: np.ndarray, ties: str = "index") -> np.ndarray:
    """1-based rank of item ``i`` in row ``i`` under the given tie rule (see ``recall_at_k``)."""
    s = as_numpy(similarity, "similarity", 2)
    ranks = []
    for i in range(s.shape[0]):
        higher = sum(1 for j in range(s.shape[1]) if s[i, j] > s[i, i])
        tied = [j for j in range(s.shape[1]) if j != i and s[i, j] == s[i, i]]
        extra = {
            "index": sum(1 for j in tied if j < i), "optimistic": 0, "pessimistic": len(tied), "mean": len(tied) / 2
        }[ties]  # fmt: skip
        ranks.append(1 + higher + extra)
    return np.array(ranks, dtype=np.float64)
