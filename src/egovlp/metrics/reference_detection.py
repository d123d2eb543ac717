"""Slow loop references of the Ego4D MQ metrics (:mod:`egovlp.metrics.detection` is tested against these).

They follow the definitions in the :mod:`~egovlp.metrics.detection` docstring one prediction at a time, with the
same tie rules written as explicit sort keys: predictions by ``(-score, input row)``, ground truths of a prediction
by ``(-tIoU, input row)``. The AP is the VOC-2011 area computed the long way (precision and recall after every
prediction, the envelope from the right, then the area where recall changes). Use small inputs only.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from .detection import DETECTION_THRESHOLDS, RETRIEVAL_RANKS, RETRIEVAL_THRESHOLDS, Moments

__all__ = ["detection_ap_reference", "moment_recall_reference", "voc_ap"]


def _py(x: Any) -> Any:
    """A numpy scalar as the Python value (so ``"a" == np.str_("a")`` style comparisons and hashing agree)."""
    return x.item() if hasattr(x, "item") else x


def _iou(a: tuple[float, float], b: tuple[float, float]) -> float:
    overlap = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = (a[1] - a[0]) + (b[1] - b[0]) - overlap
    return overlap / union if union > 0 else 0.0


def voc_ap(precision: list[float], recall: list[float]) -> float:
    """VOC-2011 interpolated AP from the precision and recall after each ranked prediction."""
    p = [0.0, *precision, 0.0]
    r = [0.0, *recall, 1.0]
    for i in range(len(p) - 2, -1, -1):  # monotone envelope from the right
        p[i] = max(p[i], p[i + 1])
    return sum((r[i] - r[i - 1]) * p[i] for i in range(1, len(r)) if r[i] != r[i - 1])


def detection_ap_reference(
    ground_truth: Moments, predictions: Moments, thresholds: tuple[float, ...] = DETECTION_THRESHOLDS
) -> dict[Any, list[float]]:
    """AP per class (the labels with ground truth) and threshold: ``{label: [AP at each threshold]}``."""
    assert predictions.score is not None
    score = predictions.score
    gts: dict[Any, list[tuple[Any, tuple[float, float], int]]] = defaultdict(list)
    for j in range(len(ground_truth)):
        seg = (float(ground_truth.segment[j, 0]), float(ground_truth.segment[j, 1]))
        gts[_py(ground_truth.label[j])].append((_py(ground_truth.video[j]), seg, j))
    out = {}
    for label, class_gts in gts.items():
        rows = [i for i in range(len(predictions)) if _py(predictions.label[i]) == label]
        rows.sort(key=lambda i: (-float(score[i]), i))
        aps = []
        for t in thresholds:
            matched: set[int] = set()
            tp = 0
            precision, recall = [], []
            for k, i in enumerate(rows, start=1):
                pred = (float(predictions.segment[i, 0]), float(predictions.segment[i, 1]))
                video = _py(predictions.video[i])
                candidates = [(-_iou(pred, seg), j) for v, seg, j in class_gts if v == video]
                for neg_iou, j in sorted(candidates):
                    if -neg_iou < t:
                        break  # the rest are lower
                    if j not in matched:
                        matched.add(j)
                        tp += 1
                        break
                precision.append(tp / k)
                recall.append(tp / len(class_gts))
            aps.append(voc_ap(precision, recall) if rows else 0.0)
        out[label] = aps
    return out


def moment_recall_reference(
    ground_truth: Moments,
    predictions: Moments,
    ranks: tuple[int, ...] = RETRIEVAL_RANKS,
    thresholds: tuple[float, ...] = RETRIEVAL_THRESHOLDS,
) -> dict[tuple[int, float], float]:
    """Recall@rx at each tIoU threshold over all ground truths (a ground truth is retrieved by tIoU > t)."""
    assert predictions.score is not None
    score = predictions.score
    groups: dict[tuple[Any, Any], list[tuple[float, float]]] = defaultdict(list)
    for j in range(len(ground_truth)):
        key = (_py(ground_truth.video[j]), _py(ground_truth.label[j]))
        groups[key].append((float(ground_truth.segment[j, 0]), float(ground_truth.segment[j, 1])))
    hits = {(r, t): 0 for r in ranks for t in thresholds}
    for (video, label), segs in groups.items():
        rows = [
            i
            for i in range(len(predictions))
            if _py(predictions.video[i]) == video and _py(predictions.label[i]) == label
        ]
        rows.sort(key=lambda i: (-float(score[i]), i))
        for r in ranks:
            top = [(float(predictions.segment[i, 0]), float(predictions.segment[i, 1])) for i in rows[: r * len(segs)]]
            for t in thresholds:
                hits[(r, t)] += sum(any(_iou(p, g) > t for p in top) for g in segs)
    n = len(ground_truth)
    return {key: (count / n if n else float("nan")) for key, count in hits.items()}
