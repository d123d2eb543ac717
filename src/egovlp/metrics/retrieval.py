"""Retrieval metrics: EPIC-Kitchens-100 multi-instance retrieval (mAP, nDCG) and R@K / median rank for 1:1 pairs.

Definitions (REFERENCE §4, matching the official EK-100 evaluation code on tie-free scores):

- Ranking: each query row ranks its gallery by descending score.
- mAP (the official JPoSE ``calculate_mAP``): relevant = relevancy exactly 1.0; AP = mean over the relevant items
  of the "precision" at their rank r, which the official code defines as the CUMULATIVE GRADED relevancy of the
  first r ranked items divided by r (``np.cumsum`` of the ranked relevancy values), so items with 0 < relevancy < 1
  ranked above a relevant one raise its precision; mAP = mean AP. (It is not the textbook precision, the number of
  relevant items among the first r divided by r, which egovlp computed before issue 16 and which is lower.)
- nDCG: K = number of items with relevancy > 0; DCG = sum over ranks 1..K of rel / log2(rank + 1) (graded gain, no
  2^rel); IDCG = the same for the ideal order; nDCG = DCG / IDCG; reported value = mean over queries.
- V2T ranks sentences for each video (rows of the similarity matrix), T2V ranks videos for each sentence (columns).

Ties: ours are deterministic: equal scores are ranked by ascending gallery index (what a stable sort of the
descending scores gives), for mAP and nDCG alike. The official code ranks with numpy's default (unstable) quicksort,
and in opposite directions for the two metrics (mAP sorts ``-sim`` ascending, nDCG sorts ``sim`` ascending then
reverses), so on tied scores its two numbers use different, implementation-defined orders. On tie-free scores the
two implementations agree exactly.

Queries the official code would turn into NaN (no item with relevancy 1.0 for mAP, no item with relevancy > 0 for
nDCG) are left out of the mean and counted in the result instead.

The fast path ranks float32 scores by sorting packed 64-bit keys (score bits, then gallery index), chunk by chunk;
other dtypes use an unstable argsort whose tied rows are re-sorted stably. :mod:`egovlp.metrics.reference` holds the
slow loop implementations the tests compare against.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ._utils import Array, as_numpy, check_no_nan

__all__ = [
    "MIRMetrics",
    "RecallMetrics",
    "epic_mir_metrics",
    "mir_per_query",
    "rank_order",
    "recall_at_k",
]

_CHUNK_ELEMENTS = 1 << 21  # rows per chunk are chosen so that a chunk holds about this many scores


@dataclass(frozen=True)
class MIRMetrics:
    """EK-100 MIR metrics as fractions in [0, 1] (multiply by 100 for the paper's numbers).

    ``*_skipped`` count the queries left out of a mean because they have no relevant item (official code: NaN).
    """

    map_v2t: float
    map_t2v: float
    ndcg_v2t: float
    ndcg_t2v: float
    map_v2t_skipped: int = 0
    map_t2v_skipped: int = 0
    ndcg_v2t_skipped: int = 0
    ndcg_t2v_skipped: int = 0

    @property
    def map_avg(self) -> float:
        return (self.map_v2t + self.map_t2v) / 2

    @property
    def ndcg_avg(self) -> float:
        return (self.ndcg_v2t + self.ndcg_t2v) / 2

    def to_dict(self, percent: bool = True) -> dict[str, float]:
        """The official key names (``mAP_V2T`` ... ``nDCG_AVG``), in percent by default."""
        scale = 100.0 if percent else 1.0
        values = {
            "mAP_V2T": self.map_v2t, "mAP_T2V": self.map_t2v, "mAP_AVG": self.map_avg,
            "nDCG_V2T": self.ndcg_v2t, "nDCG_T2V": self.ndcg_t2v, "nDCG_AVG": self.ndcg_avg,
        }  # fmt: skip
        return {k: scale * v for k, v in values.items()}


@dataclass(frozen=True)
class RecallMetrics:
    """Recall@K (fractions in [0, 1]) and rank statistics (1-based) of the ground-truth item of each query."""

    recall: dict[int, float]
    median_rank: float
    mean_rank: float
    num_queries: int

    def to_dict(self, percent: bool = True) -> dict[str, float]:
        scale = 100.0 if percent else 1.0
        out = {f"R{k}": scale * v for k, v in self.recall.items()}
        return {**out, "MedR": self.median_rank, "MeanR": self.mean_rank}


def _order_float32(scores: np.ndarray) -> np.ndarray:
    """Descending order with ties by ascending index: sort keys ``(~ordered score bits) << 32 | index``."""
    bits = (np.ascontiguousarray(scores, dtype=np.float32) + np.float32(0)).view(np.uint32)  # + 0: -0.0 -> +0.0
    flip = (np.uint32(0) - (bits >> np.uint32(31))) | np.uint32(0x80000000)  # order-preserving float -> uint map
    key = (~(bits ^ flip)).astype(np.uint64)  # ~ reverses the order: descending scores
    key <<= np.uint64(32)
    key |= np.arange(scores.shape[1], dtype=np.uint64)
    key.sort(axis=1)
    low = key.view(np.uint32)[:, 0::2] if np.little_endian else key.view(np.uint32)[:, 1::2]
    return low.astype(np.intp)


def _order_generic(scores: np.ndarray) -> np.ndarray:
    """Unstable argsort of ``-scores``; rows that contain tied scores are re-sorted with a stable sort."""
    neg = -scores.astype(np.float64, copy=False)
    order = np.argsort(neg, axis=1)
    ranked = np.take_along_axis(neg, order, axis=1)
    tied = np.flatnonzero((ranked[:, 1:] == ranked[:, :-1]).any(axis=1))
    if tied.size:
        order[tied] = np.argsort(neg[tied], axis=1, kind="stable")
    return order


def rank_order(scores: Array) -> np.ndarray:
    """Gallery indices of each row by descending score, ties by ascending index.

    Args:
        scores: ``(Q, G)`` scores (numpy array or torch tensor), no NaN.

    Returns:
        ``(Q, G)`` int array; ``out[q, r]`` is the gallery index at rank ``r`` (0-based) for query ``q``.
    """
    s = as_numpy(scores, "scores", ndim=2)
    if s.dtype in (np.float32, np.float16) and s.shape[1] < 2**32:
        return _order_float32(s)
    return _order_generic(s)


def _chunk_metrics(scores: np.ndarray, relevancy: np.ndarray, discount: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-query AP and nDCG for a chunk of queries: ``scores, relevancy (q, G)`` -> two ``(q,)`` (NaN = skipped)."""
    q, g = scores.shape
    ranked_rel = np.take_along_axis(relevancy, rank_order(scores), axis=1)  # (q, G) relevancy in ranked order
    # mAP: a relevant item (relevancy 1.0) at rank r (1-based) has precision = (graded relevancy of ranks 1..r) / r.
    rows, ranks = np.nonzero(ranked_rel == 1.0)
    counts = np.bincount(rows, minlength=q)
    cumulative = np.cumsum(ranked_rel, axis=1, dtype=np.float64)  # (q, G) graded relevancy of the first r items
    ap_sum = np.bincount(rows, weights=cumulative[rows, ranks] / (ranks + 1), minlength=q)
    with np.errstate(invalid="ignore", divide="ignore"):
        ap = ap_sum / counts
    # nDCG: gains over the first K ranks, K = number of items with relevancy > 0.
    num_pos = (relevancy > 0).sum(axis=1)
    weights = np.where(np.arange(g) < num_pos[:, None], discount, 0.0)  # (q, G) discount of the first K ranks
    dcg = np.einsum("ij,ij->i", ranked_rel, weights)
    idcg = np.einsum("ij,ij->i", np.sort(relevancy, axis=1)[:, ::-1], weights)  # ideal order: descending
    with np.errstate(invalid="ignore", divide="ignore"):
        ndcg = np.where(num_pos > 0, dcg / idcg, np.nan)
    return ap, ndcg


def _per_query(s: np.ndarray, r: np.ndarray, columns: bool, num_threads: int | None) -> tuple[np.ndarray, np.ndarray]:
    """AP and nDCG per row of ``s`` (or per column when ``columns``), in chunks spread over a few threads."""
    num_queries, gallery = (s.shape[1], s.shape[0]) if columns else s.shape
    rows = max(1, _CHUNK_ELEMENTS // max(1, gallery))
    discount = 1.0 / np.log2(np.arange(gallery) + 2.0)

    def chunk(start: int) -> tuple[np.ndarray, np.ndarray]:
        if columns:  # transpose chunk by chunk, inside the worker threads
            part = slice(None), slice(start, start + rows)
            return _chunk_metrics(np.ascontiguousarray(s[part].T), np.ascontiguousarray(r[part].T), discount)
        return _chunk_metrics(s[start : start + rows], r[start : start + rows], discount)

    starts = range(0, num_queries, rows)
    threads = min(num_threads or min(4, os.cpu_count() or 1), len(starts))
    if threads > 1:  # numpy releases the GIL in sorts, gathers and reductions
        with ThreadPoolExecutor(threads) as pool:
            parts = list(pool.map(chunk, starts))
    else:
        parts = [chunk(i) for i in starts]
    if not parts:
        return np.zeros(0), np.zeros(0)
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _checked(similarity: Array, relevancy: Array) -> tuple[np.ndarray, np.ndarray]:
    s = as_numpy(similarity, "similarity", ndim=2)
    r = as_numpy(relevancy, "relevancy", ndim=2)
    if s.shape != r.shape:
        raise ValueError(f"similarity {s.shape} and relevancy {r.shape} differ in shape")
    check_no_nan(s, "similarity")
    check_no_nan(r, "relevancy")
    return s, r


def mir_per_query(similarity: Array, relevancy: Array, num_threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-query AP and nDCG of each ROW of ``similarity`` (transpose both inputs for the other direction).

    Args:
        similarity: ``(Q, G)`` scores, higher = more similar (numpy or torch).
        relevancy: ``(Q, G)`` graded relevancy in [0, 1].
        num_threads: worker threads (default: up to 4, the CPU count).

    Returns:
        ``ap (Q,)`` (NaN where no item has relevancy 1.0) and ``ndcg (Q,)`` (NaN where no item has relevancy > 0).
    """
    s, r = _checked(similarity, relevancy)
    return _per_query(s, r, columns=False, num_threads=num_threads)


def _mean_skipping_nan(values: np.ndarray) -> tuple[float, int]:
    valid = ~np.isnan(values)
    return (float(values[valid].mean()) if valid.any() else float("nan")), int((~valid).sum())


def epic_mir_metrics(similarity: Array, relevancy: Array, num_threads: int | None = None) -> MIRMetrics:
    """EK-100 MIR mAP and nDCG, video-to-text and text-to-video.

    Args:
        similarity: ``(V, T)`` video x sentence scores (e.g. cosine similarities; any monotonic transform of them
            gives the same metrics). Numpy array or torch tensor.
        relevancy: ``(V, T)`` graded relevancy (the official pickle, or :func:`egovlp.data.epic_mir.build_relevancy`).
        num_threads: worker threads (default: up to 4, the CPU count).

    Returns:
        :class:`MIRMetrics` with fractions in [0, 1] and the number of queries skipped per metric and direction.
    """
    s, r = _checked(similarity, relevancy)
    ap_v, ndcg_v = _per_query(s, r, columns=False, num_threads=num_threads)
    ap_t, ndcg_t = _per_query(s, r, columns=True, num_threads=num_threads)
    (map_v, skip_mv), (map_t, skip_mt) = _mean_skipping_nan(ap_v), _mean_skipping_nan(ap_t)
    (ndcg_v_mean, skip_nv), (ndcg_t_mean, skip_nt) = _mean_skipping_nan(ndcg_v), _mean_skipping_nan(ndcg_t)
    return MIRMetrics(map_v, map_t, ndcg_v_mean, ndcg_t_mean, skip_mv, skip_mt, skip_nv, skip_nt)


def recall_at_k(
    similarity: Array,
    ks: tuple[int, ...] = (1, 5, 10, 50),
    ties: Literal["index", "optimistic", "pessimistic", "mean"] = "index",
) -> RecallMetrics:
    """R@K, median and mean rank for a 1:1 similarity matrix whose ground truth is the diagonal.

    Args:
        similarity: ``(Q, G)`` with ``G >= Q``; query ``i`` matches gallery item ``i``. Transpose for the other way.
        ks: the K of R@K.
        ties: rank of the ground truth among equal scores: ``"index"`` (ours: ties by ascending gallery index, like
            the EK-100 metrics), ``"optimistic"`` (first among ties: the Frozen-in-Time ``t2v_metrics`` default),
            ``"pessimistic"`` (last) or ``"mean"`` (average over the tie).

    Returns:
        :class:`RecallMetrics` (recall as fractions; ranks 1-based).
    """
    s = as_numpy(similarity, "similarity", ndim=2)
    check_no_nan(s, "similarity")
    s = s.astype(np.float64, copy=False)
    q, g = s.shape
    if g < q:
        raise ValueError(f"need at least as many gallery items as queries, got {s.shape}")
    gt = s[np.arange(q), np.arange(q)][:, None]
    higher = (s > gt).sum(axis=1)
    equal = (s == gt).sum(axis=1) - 1  # other items tied with the ground truth
    if ties == "index":
        lower_index = np.arange(g)[None, :] < np.arange(q)[:, None]  # (Q, G) gallery items ranked first on a tie
        ranks = higher + ((s == gt) & lower_index).sum(axis=1) + 1.0
    elif ties in ("optimistic", "pessimistic", "mean"):
        ranks = higher + 1.0 + {"optimistic": 0.0, "pessimistic": 1.0, "mean": 0.5}[ties] * equal
    else:
        raise ValueError(f"unknown tie rule {ties!r}")
    recall = {k: float((ranks <= k).mean()) for k in ks}
    return RecallMetrics(recall, float(np.median(ranks)), float(ranks.mean()), q)
