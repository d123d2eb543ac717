"""Query-focused video summarisation (QFVS, UT-Egocentric): the release's semantic matching (downstream.md §4).

Definitions (the release's ``semantic_evaluation.py`` and the evaluation in ``runner_train.py``):

- Machine summary of a video with S shots: the ``k = int(S * fraction)`` shots with the highest predicted scores,
  ``fraction = 0.02`` (the release's ``top_percent``). ``int`` truncates: 2783 shots give 55 (not 56), computed in
  float64 as the release does (``int(score.shape[0] * top_percent)``). Ties: equal scores rank by ascending shot
  index (the release's ``torch.topk`` leaves the order of ties unspecified).
- Weights: ``w[i, j]`` = IoU of the concept vectors (the 48-concept 0/1 rows of ``Tags.mat``) of machine shot i and
  ground-truth shot j: |both| / |either|, 0 when neither shot has a concept. A nonzero entry counts as present.
- A maximum-weight bipartite matching between the machine and the ground-truth shots (each shot matched at most
  once). The release uses ``networkx.max_weight_matching``; here ``scipy.optimize.linear_sum_assignment(w,
  maximize=True)``: with weights >= 0 the best assignment of min(|machine|, |GT|) pairs has the same total weight
  as the best matching of any size (extra zero-weight pairs add nothing).
- P = matched weight / |machine|, R = matched weight / |ground truth|, F1 = 2PR / (P + R). Edge cases the release
  leaves to a division by zero: an empty machine summary (fewer than 1 / fraction shots) gives P = 0, an empty
  ground truth R = 0, and P + R = 0 gives F1 = 0. A ground-truth shot listed twice counts once (the release turns
  the oracle file into a 0/1 vector per shot).
- Per video: the mean of P, R and F1 over its queries (F1 is averaged, not recomputed from the mean P and R);
  reported: those per video and their mean over the videos (the paper's "Avg" over P01-P04).

Shot indices here are 0-based (the oracle files are 1-based; the reader converts them).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy.optimize import linear_sum_assignment

from ._utils import as_numpy, check_no_nan

__all__ = [
    "QFVSMetrics",
    "SummaryScore",
    "concept_iou",
    "machine_summary",
    "qfvs_metrics",
    "semantic_matching",
]

TOP_FRACTION = 0.02


@dataclass(frozen=True)
class SummaryScore:
    """Precision, recall and F1 of a summary (fractions in [0, 1])."""

    precision: float
    recall: float
    f1: float

    def to_dict(self, percent: bool = True) -> dict[str, float]:
        scale = 100.0 if percent else 1.0
        return {"P": scale * self.precision, "R": scale * self.recall, "F1": scale * self.f1}


@dataclass(frozen=True)
class QFVSMetrics:
    """Per-video means over the queries, and the mean over the videos.

    Attributes:
        per_video: ``{video: SummaryScore}`` (means over that video's queries), in the order first seen.
        mean: the mean over the videos of each per-video value.
        num_queries: ``{video: number of queries}``.
    """

    per_video: dict[Hashable, SummaryScore]
    mean: SummaryScore
    num_queries: dict[Hashable, int]

    def to_dict(self, percent: bool = True) -> dict[str, float]:
        """``{"P": ..., "R": ..., "F1": ..., "<video>/F1": ...}``, in percent by default."""
        out = self.mean.to_dict(percent)
        for video, score in self.per_video.items():
            out.update({f"{video}/{k}": v for k, v in score.to_dict(percent).items()})
        return out


def machine_summary(scores: ArrayLike, fraction: float = TOP_FRACTION) -> np.ndarray:
    """The ``int(S * fraction)`` best shots: ``scores (S,)`` -> ``(k,)`` 0-based shot indices, best first.

    Ties rank by ascending shot index.
    """
    s = as_numpy(scores, "scores", ndim=1).astype(np.float64)
    check_no_nan(s, "scores")
    k = int(len(s) * fraction)
    return np.argsort(-s, kind="stable")[:k]


def concept_iou(machine_concepts: ArrayLike, gt_concepts: ArrayLike) -> np.ndarray:
    """IoU of concept vectors: ``(M, K)`` and ``(N, K)`` (nonzero = present) -> ``(M, N)``, 0 for an empty union."""
    a = as_numpy(machine_concepts, "machine_concepts", ndim=2) != 0
    b = as_numpy(gt_concepts, "gt_concepts", ndim=2) != 0
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"concept vectors differ in length: {a.shape[1]} and {b.shape[1]}")
    both = a.astype(np.float64) @ b.T.astype(np.float64)  # (M, N) concepts in both shots
    either = a.sum(axis=1)[:, None] + b.sum(axis=1)[None, :] - both
    return np.divide(both, either, out=np.zeros_like(both), where=either > 0)


def _shots(indices: ArrayLike, num_shots: int, name: str) -> np.ndarray:
    idx = as_numpy(indices, name).reshape(-1)
    if idx.size and (idx.dtype.kind not in "iu" or idx.min() < 0 or idx.max() >= num_shots):
        raise ValueError(f"{name} must be 0-based shot indices below {num_shots}, got {idx[:5].tolist()}...")
    return idx.astype(np.intp)


def semantic_matching(machine: ArrayLike, ground_truth: ArrayLike, concepts: ArrayLike) -> SummaryScore:
    """P, R and F1 of one summary by maximum-weight matching of concept IoUs.

    Args:
        machine: ``(k,)`` 0-based indices of the machine-summary shots (e.g. :func:`machine_summary`).
        ground_truth: ``(n,)`` 0-based indices of the oracle-summary shots (duplicates count once).
        concepts: ``(S, K)`` concept vectors of the video's shots (``Tags.mat``: K = 48, 0/1).
    """
    tags = as_numpy(concepts, "concepts", ndim=2)
    m = _shots(machine, len(tags), "machine")
    g = np.unique(_shots(ground_truth, len(tags), "ground_truth"))
    weight = 0.0
    if m.size and g.size:
        w = concept_iou(tags[m], tags[g])
        rows, cols = linear_sum_assignment(w, maximize=True)
        weight = float(w[rows, cols].sum())
    precision = weight / m.size if m.size else 0.0
    recall = weight / g.size if g.size else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return SummaryScore(precision, recall, f1)


def qfvs_metrics(
    queries: Iterable[tuple[Hashable, ArrayLike, ArrayLike]],
    concepts: Mapping[Any, ArrayLike],
    fraction: float = TOP_FRACTION,
) -> QFVSMetrics:
    """QFVS semantic P / R / F1 per video and averaged over the videos.

    Args:
        queries: ``(video, scores, ground_truth)`` per query: ``scores (S,)`` the predicted score of every shot of
            the video, ``ground_truth (n,)`` the 0-based oracle shots of the query.
        concepts: ``{video: (S, K) concept vectors}``.
        fraction: the share of shots in the machine summary.

    Raises:
        ValueError: a video without concept vectors, or scores whose length is not the video's shot count.
    """
    sums: dict[Hashable, np.ndarray] = {}
    counts: dict[Hashable, int] = {}
    for video, scores, ground_truth in queries:
        if video not in concepts:
            raise ValueError(f"no concept vectors for video {video!r}")
        tags = as_numpy(concepts[video], f"concepts of {video!r}", ndim=2)
        s = as_numpy(scores, "scores", ndim=1)
        if len(s) != len(tags):
            raise ValueError(f"video {video!r}: {len(s)} shot scores for {len(tags)} shots")
        score = semantic_matching(machine_summary(s, fraction), ground_truth, tags)
        values = np.array([score.precision, score.recall, score.f1])
        sums[video] = sums.get(video, np.zeros(3)) + values
        counts[video] = counts.get(video, 0) + 1
    per_video = {v: SummaryScore(*(float(x) for x in sums[v] / counts[v])) for v in sums}
    if per_video:
        mean = SummaryScore(*(float(x) for x in np.mean([sums[v] / counts[v] for v in sums], axis=0)))
    else:
        mean = SummaryScore(float("nan"), float("nan"), float("nan"))
    return QFVSMetrics(per_video, mean, counts)
