"""Soft-NMS of temporal segments, per class (Bodla et al. 2017, as ActionFormer's inference uses it).

Within one class, repeatedly: take the remaining segment with the highest (decayed) score, keep it, and decay every
other remaining segment ``j`` of the class by its tIoU ``u`` with the kept one:

- ``gaussian``: ``score_j *= exp(-u ** 2 / sigma)`` (every segment);
- ``linear``: ``score_j *= 1 - u`` where ``u > iou_threshold``;
- ``hard`` (classic NMS): ``score_j = 0`` where ``u > iou_threshold``;

a segment whose score falls below ``min_score`` is dropped. Segments of different classes never suppress each
other. The kept segments of all classes are then ranked by their final score and cut to ``max_num``.

:func:`soft_nms` runs all classes at once on a padded ``(classes, segments)`` array, one round per kept segment of
the largest class; :func:`soft_nms_reference` is the plain loop it is tested against. Ties: the first segment in
input order wins (``argmax``), and the final ranking breaks equal scores by input row.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

__all__ = ["NMS_METHODS", "NMSResult", "soft_nms", "soft_nms_reference"]

NMS_METHODS = ("gaussian", "linear", "hard")


class NMSResult(NamedTuple):
    """Kept segments ranked by descending score: ``segments (K, 2)``, ``scores (K,)``, ``labels (K,)``, ``index (K,)``
    (the row of each in the input)."""

    segments: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    index: np.ndarray  # type: ignore[assignment]  # the field shadows tuple.index


def _check(segments: np.ndarray, scores: np.ndarray, labels: np.ndarray, method: str) -> None:
    if method not in NMS_METHODS:
        raise ValueError(f"unknown NMS method {method!r}; expected one of {NMS_METHODS}")
    n = len(scores)
    if segments.shape != (n, 2) or labels.shape != (n,):
        raise ValueError(f"segments {segments.shape}, scores {scores.shape} and labels {labels.shape} do not match")


def _decay(iou: np.ndarray, method: str, iou_threshold: float, sigma: float) -> np.ndarray:
    if method == "gaussian":
        return np.exp(-(iou * iou) / sigma)
    if method == "linear":
        return np.where(iou > iou_threshold, 1.0 - iou, 1.0)
    return np.where(iou > iou_threshold, 0.0, 1.0)


def _ranked(segments, scores, labels, index, max_num: int) -> NMSResult:
    order = np.lexsort((index, -scores))[: max_num if max_num > 0 else None]  # score, then input row
    return NMSResult(segments[index[order]], scores[order], labels[index[order]], index[order])


def soft_nms(
    segments: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    method: str = "gaussian",
    sigma: float = 0.5,
    iou_threshold: float = 0.1,
    min_score: float = 0.001,
    max_num: int = 0,
) -> NMSResult:
    """Per-class Soft-NMS (module docstring), all classes in parallel.

    Args:
        segments: ``(N, 2)`` ``[start, end]``; scores: ``(N,)``; labels: ``(N,)`` int class ids.
        method, sigma, iou_threshold: the decay (gaussian uses ``sigma``, the others ``iou_threshold``).
        min_score: segments whose score falls below it are dropped.
        max_num: keep at most this many over all classes (0: all).
    """
    segments = np.asarray(segments, np.float64).reshape(-1, 2)
    scores, labels = np.asarray(scores, np.float64).reshape(-1), np.asarray(labels).reshape(-1)
    _check(segments, scores, labels, method)
    alive_in = scores >= min_score
    rows = np.flatnonzero(alive_in)
    if not rows.size:
        empty = np.zeros(0, np.intp)
        return NMSResult(np.zeros((0, 2)), np.zeros(0), labels[empty], empty)
    classes, code = np.unique(labels[rows], return_inverse=True)
    order = np.argsort(code, kind="stable")  # rows of each class together, input order within a class
    counts = np.bincount(code, minlength=len(classes))
    width = int(counts.max())
    slot = np.arange(len(order)) - np.repeat(np.cumsum(counts) - counts, counts)
    idx = np.full((len(classes), width), -1, np.intp)  # (C, M) input rows, -1 = padding
    idx[code[order], slot] = rows[order]
    score = np.where(idx >= 0, scores[np.maximum(idx, 0)], -np.inf)  # (C, M)
    seg = segments[np.maximum(idx, 0)]  # (C, M, 2)
    length = seg[..., 1] - seg[..., 0]
    kept_rows, kept_scores = [], []
    arange = np.arange(len(classes))
    for _ in range(width):
        best = np.argmax(score, axis=1)  # (C,) first maximum: input order on ties
        best_score = score[arange, best]
        live = np.isfinite(best_score)
        if not live.any():
            break
        kept_rows.append(idx[arange[live], best[live]])
        kept_scores.append(best_score[live])
        score[arange, best] = -np.inf  # taken
        pick = seg[arange, best][:, None, :]  # (C, 1, 2)
        overlap = np.clip(np.minimum(pick[..., 1], seg[..., 1]) - np.maximum(pick[..., 0], seg[..., 0]), 0.0, None)
        union = (pick[..., 1] - pick[..., 0]) + length - overlap
        iou = np.divide(overlap, union, out=np.zeros_like(overlap), where=union > 0)
        with np.errstate(invalid="ignore"):  # -inf * 1 stays -inf; -inf * 0 (hard) is NaN, reset below
            score = score * _decay(iou, method, iou_threshold, sigma)
        score[~(score >= min_score)] = -np.inf
    index = np.concatenate(kept_rows)
    return _ranked(segments, np.concatenate(kept_scores), labels, index, max_num)


def _iou(a: tuple[float, float], b: tuple[float, float]) -> float:
    overlap = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = (a[1] - a[0]) + (b[1] - b[0]) - overlap
    return overlap / union if union > 0 else 0.0


def soft_nms_reference(
    segments: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    method: str = "gaussian",
    sigma: float = 0.5,
    iou_threshold: float = 0.1,
    min_score: float = 0.001,
    max_num: int = 0,
) -> NMSResult:
    """The loop reference of :func:`soft_nms`: one class at a time, one segment at a time, in Python floats."""
    segments = np.asarray(segments, np.float64).reshape(-1, 2)
    scores, labels = np.asarray(scores, np.float64).reshape(-1), np.asarray(labels).reshape(-1)
    _check(segments, scores, labels, method)
    kept: list[tuple[int, float]] = []
    for c in dict.fromkeys(labels.tolist()):
        pool = {i: float(scores[i]) for i in range(len(scores)) if labels[i] == c and scores[i] >= min_score}
        while pool:
            best = max(pool, key=lambda i: (pool[i], -i))  # the highest score, the first row on ties
            kept.append((best, pool.pop(best)))
            for j in list(pool):
                u = _iou(tuple(segments[best]), tuple(segments[j]))
                if method == "gaussian":
                    pool[j] *= math.exp(-(u * u) / sigma)
                elif u > iou_threshold:
                    pool[j] = pool[j] * (1.0 - u) if method == "linear" else 0.0
                if pool[j] < min_score:
                    del pool[j]
    index = np.array([i for i, _ in kept], np.intp)
    return _ranked(segments, np.array([s for _, s in kept], np.float64), labels, index, max_num)
