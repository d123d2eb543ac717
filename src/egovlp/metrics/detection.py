"""Ego4D moment queries (MQ): detection mAP at tIoU thresholds and retrieval Recall@kx (downstream.md §3).

Definitions (the official Ego4D ``Evaluation/ego4d/eval_detection.py``, ActivityNet-style, and
``get_retrieval_performance.py``):

- tIoU of two segments = overlap / (length_a + length_b - overlap); 0 when that union is 0 (the official code divides
  0 by 0 and gets NaN, which its detection matcher lets through as a match; only two zero-length segments at the same
  point do that).
- Classes: the labels that have at least one ground-truth segment (the official ``activity_index`` is built from the
  ground truth). Predictions with any other label are dropped (the official prints "Category ... is not in
  groundtruth set!" and skips them); :attr:`DetectionMAP.num_dropped` counts them. A class with ground truth but no
  prediction has AP 0 and is averaged in.
- Detection AP of a class at threshold t: its predictions ranked by descending score. Each one, in rank order, is a
  true positive when some ground truth of the same video and class that no better-ranked prediction has matched
  has tIoU >= t; it takes the unmatched one with the highest tIoU (each ground truth is matched at most once).
  Otherwise it is a false positive (so is a prediction in a video without ground truth of its class).
  precision(k) = TP(k) / k, recall(k) = TP(k) / number of ground truths of the class; AP = VOC-2011 interpolated
  area: sum over the true positives of (1 / #GT) * max precision at that rank or below (the monotone envelope).
- mAP(t) = mean AP over the classes; the reported average = mean of mAP over t in {0.1, 0.2, 0.3, 0.4, 0.5}.
- Retrieval Recall@rx at tIoU t: for each video and class with n ground truths, take that class's top r*n
  predictions in the video; a ground truth is retrieved when one of them has tIoU > t (strict); recall = mean over
  ALL ground truths, r in 1..5, t in {0.3, 0.5, 0.7}. The official takes the first r*n predictions in the order of
  the submission file (written ranked by score) and crashes on a video without predictions; here predictions are
  ranked by score and such a video's ground truths count as misses
  (:attr:`MomentRecall.num_videos_without_predictions` says how many videos).

Ties: equal scores rank by input order, and a prediction with several unmatched ground truths at the same tIoU takes
the one given first. The official sorts with numpy's default (unstable) argsort reversed, so its order on ties is
implementation-defined; on tie-free inputs the two agree exactly.

Speed: the greedy matching is sequential only within one (video, class) group, so it runs in rounds over all groups
at once: in each round every group's best-ranked prediction that still has an eligible unmatched ground truth takes
its best one (every prediction ranked above it in the group has none and stays a false positive). The number of
rounds is the largest number of matches in one group. :mod:`egovlp.metrics.reference_detection` holds the loop
reference the tests compare against.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ._utils import as_numpy, check_no_nan

__all__ = [
    "DETECTION_THRESHOLDS",
    "RETRIEVAL_RANKS",
    "RETRIEVAL_THRESHOLDS",
    "DetectionMAP",
    "MQMetrics",
    "MomentRecall",
    "Moments",
    "detection_map",
    "moment_recall",
    "mq_metrics",
    "segment_iou",
]

DETECTION_THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5)
RETRIEVAL_THRESHOLDS = (0.3, 0.5, 0.7)
RETRIEVAL_RANKS = (1, 2, 3, 4, 5)
_CHUNK_PAIRS = 1 << 22  # prediction x ground-truth pairs whose tIoU is computed at once


@dataclass(frozen=True, eq=False, init=False)
class Moments:
    """Labelled temporal segments: the ground truth, or the predictions (with ``score``).

    Attributes:
        video: ``(N,)`` video (clip) ids, any sortable values (str or int).
        label: ``(N,)`` class ids or names (ints are the fastest).
        segment: ``(N, 2)`` float64 ``[start, end]`` (seconds), ``end >= start``.
        score: ``(N,)`` float64 confidences (predictions only), or ``None``.
    """

    video: np.ndarray
    label: np.ndarray
    segment: np.ndarray
    score: np.ndarray | None

    def __init__(self, video: ArrayLike, label: ArrayLike, segment: ArrayLike, score: ArrayLike | None = None) -> None:
        v = as_numpy(video, "video").reshape(-1)
        lab = as_numpy(label, "label").reshape(-1)
        seg = as_numpy(segment, "segment").astype(np.float64).reshape(-1, 2)
        n = len(v)
        if len(lab) != n or len(seg) != n:
            raise ValueError(f"video ({n}), label ({len(lab)}) and segment ({len(seg)}) differ in length")
        check_no_nan(seg, "segment")
        backwards = np.flatnonzero(seg[:, 1] < seg[:, 0])
        if backwards.size:
            raise ValueError(f"{backwards.size} segments end before they start, e.g. row {int(backwards[0])}")
        s = None
        if score is not None:
            s = as_numpy(score, "score").astype(np.float64).reshape(-1)
            if len(s) != n:
                raise ValueError(f"score ({len(s)}) and segment ({n}) differ in length")
            check_no_nan(s, "score")
        for name, value in (("video", v), ("label", lab), ("segment", seg), ("score", s)):
            object.__setattr__(self, name, value)

    def __len__(self) -> int:
        return len(self.video)


@dataclass(frozen=True, eq=False)
class DetectionMAP:
    """Detection mAP (fractions in [0, 1]).

    Attributes:
        thresholds: the tIoU thresholds ``(T,)``.
        mean_ap: ``(T,)`` mAP over the classes at each threshold.
        classes: the ``C`` evaluated labels (those with ground truth), sorted.
        ap: ``(T, C)`` AP per threshold and class.
        num_ground_truth: ground-truth segments.
        num_predictions: predictions evaluated (with a label that has ground truth).
        num_dropped: predictions dropped because their label has no ground truth.
    """

    thresholds: tuple[float, ...]
    mean_ap: tuple[float, ...]
    classes: tuple[Any, ...]
    ap: np.ndarray = field(repr=False)
    num_ground_truth: int
    num_predictions: int
    num_dropped: int

    @property
    def average_map(self) -> float:
        """Mean of :attr:`mean_ap` over the thresholds (the official "Average-mAP")."""
        return float(np.mean(self.mean_ap)) if self.mean_ap else float("nan")

    def to_dict(self, percent: bool = True) -> dict[str, float]:
        """``{"mAP@0.1": ..., "mAP@0.5": ..., "average_mAP": ...}``, in percent by default."""
        scale = 100.0 if percent else 1.0
        out = {f"mAP@{t:g}": scale * m for t, m in zip(self.thresholds, self.mean_ap)}
        return {**out, "average_mAP": scale * self.average_map}


@dataclass(frozen=True)
class MomentRecall:
    """Retrieval recall ``{(r, t): fraction}`` (Recall@rx at tIoU t) over all ground truths, and the counts."""

    recall: dict[tuple[int, float], float]
    num_ground_truth: int
    num_videos_without_predictions: int

    def to_dict(self, percent: bool = True) -> dict[str, float]:
        """``{"R1x@0.3": ..., "R5x@0.7": ...}``, in percent by default."""
        scale = 100.0 if percent else 1.0
        return {f"R{r}x@{t:g}": scale * v for (r, t), v in self.recall.items()}


@dataclass(frozen=True)
class MQMetrics:
    """Both MQ metrics."""

    detection: DetectionMAP
    retrieval: MomentRecall

    def to_dict(self, percent: bool = True) -> dict[str, float]:
        return {**self.detection.to_dict(percent), **self.retrieval.to_dict(percent)}


def segment_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """tIoU of segments ``a (..., 2)`` and ``b (..., 2)`` (broadcast): overlap / true union, 0 for an empty union."""
    overlap = np.clip(np.minimum(a[..., 1], b[..., 1]) - np.maximum(a[..., 0], b[..., 0]), 0.0, None)
    union = (a[..., 1] - a[..., 0]) + (b[..., 1] - b[..., 0]) - overlap
    return np.divide(overlap, union, out=np.zeros_like(overlap), where=union > 0)


@dataclass(frozen=True)
class _Encoded:
    """Both sets as integer codes, predictions of labels without ground truth removed.

    Predictions are in order B: by (class, video) group, then descending score, then input order (``group`` is
    ``class * V + video``). Order A (by class, then descending score, then input order; the ranking of the AP) agrees
    with order B within a group; ``order_a`` lists the order-B rows in order A.
    """

    classes: tuple[Any, ...]
    gt_group: np.ndarray  # (G,) group of each ground truth, sorted (stable: input order within a group)
    gt_segment: np.ndarray  # (G, 2) in that order
    pred_group: np.ndarray  # (P,) group of each kept prediction, in order B
    pred_segment: np.ndarray  # (P, 2) in order B
    pred_class: np.ndarray  # (P,) class index in order B
    order_a: np.ndarray  # (P,) order-B rows in order A
    num_videos: int
    num_dropped: int  # predictions whose label has no ground truth
    num_silent_videos: int  # ground-truth videos without any prediction
    gt_lo: np.ndarray  # (P,) first ground truth (position in gt order) of each prediction's group
    gt_count: np.ndarray  # (P,) ground truths in each prediction's group


def _codes(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(values, return_inverse=True)``, faster when equal values come in runs (a submission lists each
    clip's segments together): only the first value of each run is sorted."""
    if len(values) < 2:
        return np.unique(values, return_inverse=True)
    starts = np.r_[0, np.flatnonzero(values[1:] != values[:-1]) + 1]
    if len(starts) > len(values) // 4:
        return np.unique(values, return_inverse=True)
    uniques, inverse = np.unique(values[starts], return_inverse=True)
    return uniques, np.repeat(inverse, np.diff(np.r_[starts, len(values)]))


def _same_kind(values: np.ndarray, like: np.ndarray) -> np.ndarray:
    """An empty ``values`` (e.g. from ``[]``, float64) in the dtype of ``like``, so the two can be compared."""
    return values.astype(like.dtype) if values.size == 0 else values


def _stable_by(order: np.ndarray, key: np.ndarray) -> np.ndarray:
    """``order`` stably re-sorted by ``key[order]`` (small non-negative ints: a radix sort on 16 bits)."""
    k = key[order]
    if k.size and k.max() < 1 << 16:
        k = k.astype(np.uint16)
    return order[np.argsort(k, kind="stable")]


def _encode(ground_truth: Moments, predictions: Moments) -> _Encoded:
    if predictions.score is None:
        raise ValueError("predictions need scores")
    gt_label = _same_kind(ground_truth.label, predictions.label)
    pred_label = _same_kind(predictions.label, ground_truth.label)
    classes, gt_class = np.unique(gt_label, return_inverse=True)
    gt_videos, gt_code = _codes(_same_kind(ground_truth.video, predictions.video))
    pred_videos, pred_code = _codes(_same_kind(predictions.video, ground_truth.video))
    videos, video_code = np.unique(np.concatenate([gt_videos, pred_videos]), return_inverse=True)  # the few ids
    gt_code, pred_code = video_code[gt_code], video_code[len(gt_videos) + pred_code]
    if len(classes):
        labels, label_code = _codes(pred_label)
        pos = np.minimum(np.searchsorted(classes, labels), len(classes) - 1)
        known = (classes[pos] == labels)[label_code]
        pos = pos[label_code]
    else:
        pos, known = np.zeros(len(pred_label), np.intp), np.zeros(len(pred_label), bool)
    num_videos = len(videos)
    gt_key = gt_class.astype(np.int64) * num_videos + gt_code
    gt_order = np.argsort(gt_key, kind="stable")
    gt_group = gt_key[gt_order]

    keep = np.flatnonzero(known)
    pred_class, pred_video = pos[keep].astype(np.int64), pred_code[keep]
    by_score = np.argsort(-predictions.score[keep], kind="stable")  # ties keep input order
    order_b = _stable_by(_stable_by(by_score, pred_video), pred_class)
    order_a = _stable_by(by_score, pred_class)
    row_b = np.empty(len(keep), np.intp)
    row_b[order_b] = np.arange(len(keep))
    pred_group = (pred_class * num_videos + pred_video)[order_b]
    lo = np.searchsorted(gt_group, pred_group, side="left")
    hi = np.searchsorted(gt_group, pred_group, side="right")
    predicted = np.zeros(len(videos), bool)
    predicted[pred_code] = True
    silent = int((~predicted[np.unique(gt_code)]).sum())
    return _Encoded(
        tuple(classes.tolist()), gt_group, ground_truth.segment[gt_order], pred_group,
        predictions.segment[keep[order_b]], pred_class[order_b], row_b[order_a], num_videos,
        len(predictions) - keep.size, silent, lo, hi - lo,
    )  # fmt: skip


def _pairs(enc: _Encoded, rows: np.ndarray, min_iou: float, strict: bool) -> Iterator[tuple[np.ndarray, ...]]:
    """Chunks of ``(pred_row, gt_pos, iou)`` for the predictions ``rows`` (ascending) and every ground truth of
    their group with ``iou >= min_iou`` (``> min_iou`` when ``strict``), in (row, gt_pos) order."""
    counts = enc.gt_count[rows]
    ends = np.cumsum(counts)
    start = 0
    while start < len(rows):
        stop = int(np.searchsorted(ends, (ends[start - 1] if start else 0) + _CHUNK_PAIRS, side="right"))
        stop = max(stop, start + 1)
        part, n = rows[start:stop], counts[start:stop]
        rep = np.repeat(part, n)
        offset = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
        gt_pos = enc.gt_lo[rep] + offset
        iou = segment_iou(enc.pred_segment[rep], enc.gt_segment[gt_pos])
        ok = iou > min_iou if strict else iou >= min_iou
        yield rep[ok], gt_pos[ok], iou[ok]
        start = stop


def _match(group: np.ndarray, row: np.ndarray, gt_pos: np.ndarray, num_rows: int, num_gt: int) -> np.ndarray:
    """Greedy matching in rounds; pairs sorted by (group, row, -iou, gt_pos). Returns ``(num_rows,)`` TP flags."""
    tp = np.zeros(num_rows, bool)
    matched = np.zeros(num_gt, bool)
    while row.size:
        first = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])  # each group's best remaining pair
        tp[row[first]] = True
        matched[gt_pos[first]] = True
        alive = ~(matched[gt_pos] | tp[row])
        group, row, gt_pos = group[alive], row[alive], gt_pos[alive]
    return tp


def _interpolated_ap(tp_class: np.ndarray, tp_rank: np.ndarray, num_gt: np.ndarray) -> np.ndarray:
    """VOC-2011 AP per class from its true positives: ``tp_class`` (K,) sorted, ``tp_rank`` (K,) 1-based ranks
    within the class, ascending within each class; ``num_gt`` (C,). Returns ``(C,)``."""
    num_classes = len(num_gt)
    if not tp_class.size:
        return np.zeros(num_classes)
    first = np.searchsorted(tp_class, tp_class, side="left")
    precision = (np.arange(len(tp_class)) - first + 1) / tp_rank  # TP count so far / rank
    # the envelope max_{j >= i} precision(j) is reached at a true positive (precision falls between them); a reverse
    # running max, kept within each class by offsets that grow with the class processed later (lower index)
    offset = 2.0 * (num_classes - 1 - tp_class)
    envelope = np.maximum.accumulate((precision + offset)[::-1])[::-1] - offset
    return np.bincount(tp_class, weights=envelope, minlength=num_classes) / np.maximum(num_gt, 1)


def _detection(enc: _Encoded, thresholds: tuple[float, ...], num_ground_truth: int) -> DetectionMAP:
    num_classes, num_pred = len(enc.classes), len(enc.pred_group)
    num_gt = np.bincount(enc.gt_group // enc.num_videos, minlength=num_classes) if num_classes else np.zeros(0)
    class_a = enc.pred_class[enc.order_a]  # (P,) class of each prediction in order A (sorted)
    rank_a = np.arange(num_pred) - np.searchsorted(class_a, class_a, side="left") + 1  # 1-based rank in its class
    rows_with_gt = np.flatnonzero(enc.gt_count > 0)
    parts = list(_pairs(enc, rows_with_gt, min(thresholds, default=0.0), strict=False))
    row = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, np.intp)
    gt_pos = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, np.intp)
    iou = np.concatenate([p[2] for p in parts]) if parts else np.zeros(0)
    order = np.lexsort((-iou, row))  # row is ascending already; stable: equal tIoU keeps gt order
    row, gt_pos, iou = row[order], gt_pos[order], iou[order]
    ap = np.zeros((len(thresholds), num_classes))
    for i, t in enumerate(thresholds):
        ok = iou >= t
        tp = _match(enc.pred_group[row[ok]], row[ok], gt_pos[ok], num_pred, len(enc.gt_group))
        hits = np.flatnonzero(tp[enc.order_a])  # true positives in order A (class, then rank)
        ap[i] = _interpolated_ap(class_a[hits], rank_a[hits], num_gt)
    mean_ap = tuple(float(a.mean()) if num_classes else float("nan") for a in ap)
    return DetectionMAP(tuple(thresholds), mean_ap, enc.classes, ap, num_ground_truth, num_pred, enc.num_dropped)


def _retrieval(enc: _Encoded, ranks: tuple[int, ...], thresholds: tuple[float, ...]) -> MomentRecall:
    num_gt = len(enc.gt_group)
    # rank of each prediction within its group (order B is grouped and ranked), 0-based
    group_start = np.searchsorted(enc.pred_group, enc.pred_group, side="left")
    rank = np.arange(len(enc.pred_group)) - group_start
    rows = np.flatnonzero(rank < max(ranks, default=0) * enc.gt_count)  # only the top r*n can count
    first_hit = np.full((len(thresholds), num_gt), np.iinfo(np.int64).max)  # best rank with tIoU > t, per GT
    for row, gt_pos, iou in _pairs(enc, rows, min(thresholds, default=0.0), strict=True):
        for i, t in enumerate(thresholds):
            ok = iou > t
            np.minimum.at(first_hit[i], gt_pos[ok], rank[row[ok]])
    group_start_gt = np.searchsorted(enc.gt_group, enc.gt_group, side="left")
    gt_per_group = np.searchsorted(enc.gt_group, enc.gt_group, side="right") - group_start_gt
    recall = {}
    for r in ranks:
        for i, t in enumerate(thresholds):
            hit = first_hit[i] < r * gt_per_group
            recall[(r, t)] = float(hit.mean()) if num_gt else float("nan")
    return MomentRecall(recall, num_gt, enc.num_silent_videos)


def detection_map(
    ground_truth: Moments, predictions: Moments, thresholds: tuple[float, ...] = DETECTION_THRESHOLDS
) -> DetectionMAP:
    """Per-class detection AP and mAP at each tIoU threshold (the official ``eval_detection.py``).

    Args:
        ground_truth: ground-truth segments (no scores needed).
        predictions: predicted segments with scores; any number per video and class, in any order.
        thresholds: tIoU thresholds (a true positive needs tIoU >= t).

    Returns:
        :class:`DetectionMAP` over the labels that have ground truth.
    """
    return _detection(_encode(ground_truth, predictions), tuple(thresholds), len(ground_truth))


def moment_recall(
    ground_truth: Moments,
    predictions: Moments,
    ranks: tuple[int, ...] = RETRIEVAL_RANKS,
    thresholds: tuple[float, ...] = RETRIEVAL_THRESHOLDS,
) -> MomentRecall:
    """Retrieval Recall@rx at tIoU thresholds (the official ``get_retrieval_performance.py``, strict ``>``).

    Args:
        ground_truth, predictions: as for :func:`detection_map`.
        ranks: the multipliers r (the top ``r * n`` predictions of a video and class with n ground truths count).
        thresholds: tIoU thresholds (retrieved needs tIoU > t).
    """
    return _retrieval(_encode(ground_truth, predictions), tuple(ranks), tuple(thresholds))


def mq_metrics(ground_truth: Moments, predictions: Moments) -> MQMetrics:
    """The official MQ numbers: detection mAP at {0.1..0.5} and average, Recall@{1..5}x at tIoU {0.3, 0.5, 0.7}."""
    enc = _encode(ground_truth, predictions)
    detection = _detection(enc, DETECTION_THRESHOLDS, len(ground_truth))
    return MQMetrics(detection, _retrieval(enc, RETRIEVAL_RANKS, RETRIEVAL_THRESHOLDS))
