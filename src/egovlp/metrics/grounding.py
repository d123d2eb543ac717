"""Ego4D NLQ temporal grounding: Recall@K at temporal IoU thresholds (REFERENCE §4, official NLQ evaluation).

- IoU of two windows = overlap / hull span (``max(ends) - min(starts)``), as the official code computes its
  "union"; for disjoint windows this is smaller than the true union, but then the overlap is 0 anyway.
  A zero-length hull gives IoU 0 (the official code divides 0 by 0).
- A query is a hit at (K, threshold) when any of its first K predictions has IoU > threshold (strict).
- Recall = mean over ALL ground-truth queries; a query without predictions counts as a miss. The official script
  averages over the predicted queries only; ``num_missing`` says how many were missing, so both are recoverable.
- mean IoU (the official ``evaluate_ego4d_nlq.py`` value): mean over queries of the IoU of the TOP-1 prediction.
  The official script writes ``np.mean(np.sort(overlap[0])[-3:])``, but ``overlap[0]`` is the top-1 prediction's
  single IoU, so the expression is that IoU (egovlp averaged the 3 best IoUs before issue 16, which is higher).
  Missing queries count 0 (``num_missing`` says how many), as for recall.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._utils import Array, as_numpy, check_no_nan

__all__ = ["GroundingRecall", "nlq_recall", "temporal_iou"]


@dataclass(frozen=True)
class GroundingRecall:
    """Recall per (K, IoU threshold) as fractions in [0, 1], mean top-1 IoU and the query counts.

    Attributes:
        recall: ``{(K, threshold): fraction}`` over all ``num_queries`` ground-truth queries.
        mean_iou: mean over all queries of the top-1 prediction's IoU (0 for a missing query).
        num_queries: ground-truth queries.
        num_missing: queries without any prediction (counted as misses and as IoU 0).
    """

    recall: dict[tuple[int, float], float]
    mean_iou: float
    num_queries: int
    num_missing: int

    def to_dict(self, percent: bool = True) -> dict[str, float]:
        """``{"R1@0.3": ..., "R5@0.5": ..., "mIoU": ...}``, in percent by default."""
        scale = 100.0 if percent else 1.0
        out = {f"R{k}@{thr:g}": scale * v for (k, thr), v in self.recall.items()}
        return {**out, "mIoU": scale * self.mean_iou}


def temporal_iou(pred: Array, gt: Array) -> np.ndarray:
    """IoU (overlap / hull span) of windows ``pred (..., 2)`` with ``gt (..., 2)`` (broadcast); ``[start, end]``."""
    p = as_numpy(pred, "pred").astype(np.float64)
    g = as_numpy(gt, "gt").astype(np.float64)
    overlap = np.clip(np.minimum(p[..., 1], g[..., 1]) - np.maximum(p[..., 0], g[..., 0]), 0.0, None)
    hull = np.maximum(p[..., 1], g[..., 1]) - np.minimum(p[..., 0], g[..., 0])
    return np.divide(overlap, hull, out=np.zeros_like(overlap), where=hull > 0)


def _aligned(
    predictions: Mapping[Any, Any] | Sequence[Any], ground_truth: Mapping[Any, Any] | Array
) -> tuple[list[Any], np.ndarray]:
    """Predictions as a list aligned with the ground-truth windows ``(Q, 2)``; missing ones are ``None``."""
    if isinstance(ground_truth, Mapping):
        if not isinstance(predictions, Mapping):
            raise TypeError("with ground truth keyed by query id, predictions must be a mapping too")
        unknown = [k for k in predictions if k not in ground_truth]
        if unknown:
            raise ValueError(f"{len(unknown)} predicted queries are not in the ground truth, e.g. {unknown[:3]}")
        keys = list(ground_truth)
        windows = np.array([as_numpy(ground_truth[k], "ground truth window") for k in keys], dtype=np.float64)
        return [predictions.get(k) for k in keys], windows.reshape(len(keys), 2)
    windows = as_numpy(ground_truth, "ground_truth", ndim=2).astype(np.float64)
    preds = list(predictions)
    if len(preds) != len(windows):
        raise ValueError(f"{len(preds)} predictions for {len(windows)} ground-truth queries (use None for missing)")
    return preds, windows


def nlq_recall(
    predictions: Mapping[Any, Any] | Sequence[Any],
    ground_truth: Mapping[Any, Any] | Array,
    ks: tuple[int, ...] = (1, 5),
    thresholds: tuple[float, ...] = (0.3, 0.5),
) -> GroundingRecall:
    """Recall@K at IoU thresholds over all ground-truth queries.

    Args:
        predictions: per query a ranked ``(P, 2)`` array of predicted ``[start, end]`` windows (best first), or
            ``None``/empty when the model predicted nothing; a sequence aligned with ``ground_truth`` or a mapping
            keyed like it.
        ground_truth: ``(Q, 2)`` windows, or a mapping query id -> ``[start, end]``.
        ks, thresholds: the K and IoU thresholds to report.

    Returns:
        :class:`GroundingRecall`: recall over all ground-truth queries and the mean top-1 IoU.

    Raises:
        ValueError: a prediction contains NaN, or predictions and ground truth do not line up.
    """
    preds, windows = _aligned(predictions, ground_truth)
    hits = {(k, thr): 0 for k in ks for thr in thresholds}
    iou_sum, missing = 0.0, 0
    check_no_nan(windows, "ground truth")
    names = list(ground_truth) if isinstance(ground_truth, Mapping) else list(range(len(windows)))
    for name, pred, gt in zip(names, preds, windows):
        p = np.zeros((0, 2)) if pred is None else as_numpy(pred, "prediction").reshape(-1, 2)
        if len(p) == 0:
            missing += 1
            continue
        check_no_nan(p.astype(np.float64), f"prediction for query {name!r}")
        iou = temporal_iou(p, gt)  # (P,) IoU of each ranked prediction
        iou_sum += float(iou[0])  # top-1 IoU (official mIoU)
        for k, thr in hits:
            hits[(k, thr)] += bool((iou[:k] > thr).any())
    n = len(windows)
    recall = {key: (count / n if n else float("nan")) for key, count in hits.items()}
    return GroundingRecall(recall, iou_sum / n if n else float("nan"), n, missing)
