"""Charades-Ego multi-label mAP (the official ``charades_map`` definition, REFERENCE §4).

Per class: rank all videos by descending score, videos without ANY positive label pushed below all others (the
official code sets their scores to -inf); AP = sum over positives of precision at their rank / number of positives.
mAP = mean AP over the classes that have at least one positive. Classes without positives (the official code gives
NaN and takes ``nanmean``) are skipped and reported. Ties: equal scores rank by ascending video index (the official
code uses numpy's unstable quicksort, so its order on ties is implementation-defined).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._utils import Array, as_numpy, check_no_nan
from .retrieval import rank_order

__all__ = ["MultiLabelMAP", "charades_map"]


@dataclass(frozen=True, eq=False)
class MultiLabelMAP:
    """Multi-label mAP (fraction in [0, 1]) with per-class APs and what was skipped.

    Attributes:
        map: mean AP over the classes with at least one positive (NaN only if no class has one).
        per_class_ap: ``(C,)`` AP per class, NaN for skipped classes.
        skipped_classes: indices of the classes without any positive video.
        num_videos_without_labels: videos with no positive label at all (ranked last for every class).
    """

    map: float
    per_class_ap: np.ndarray
    skipped_classes: tuple[int, ...]
    num_videos_without_labels: int

    @property
    def num_classes_evaluated(self) -> int:
        return len(self.per_class_ap) - len(self.skipped_classes)

    @property
    def num_classes_skipped(self) -> int:
        return len(self.skipped_classes)


def charades_map(scores: Array, labels: Array) -> MultiLabelMAP:
    """Charades-style mAP.

    Args:
        scores: ``(N, C)`` class scores per video (numpy or torch), no NaN.
        labels: ``(N, C)`` binary multi-hot ground truth (bool or 0/1).

    Returns:
        :class:`MultiLabelMAP`.
    """
    s = as_numpy(scores, "scores", ndim=2)
    y = as_numpy(labels, "labels", ndim=2)
    if s.shape != y.shape:
        raise ValueError(f"scores {s.shape} and labels {y.shape} differ in shape")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be binary (0/1 or bool)")
    check_no_nan(s, "scores")
    positive = y.astype(bool)  # (N, C)
    empty = ~np.asarray(positive.any(axis=1))  # (N,) videos without any label
    order = rank_order(np.ascontiguousarray(s.T))  # (C, N) videos by descending score per class
    order = np.take_along_axis(order, np.argsort(empty[order], axis=1, kind="stable"), axis=1)  # empties last
    ranked = np.take_along_axis(np.ascontiguousarray(positive.T), order, axis=1)  # (C, N)
    hits = np.cumsum(ranked, axis=1)
    precision = hits / np.arange(1, s.shape[0] + 1)
    num_pos = ranked.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        ap = np.where(num_pos > 0, (precision * ranked).sum(axis=1) / num_pos, np.nan)
    skipped = tuple(int(c) for c in np.flatnonzero(num_pos == 0))
    evaluated = ap[num_pos > 0]
    return MultiLabelMAP(
        map=float(evaluated.mean()) if evaluated.size else float("nan"),
        per_class_ap=ap,
        skipped_classes=skipped,
        num_videos_without_labels=int(empty.sum()),
    )
