"""Training targets and losses of the temporal detector (ActionFormer's assignment), and decoding detections.

Grid units: position ``p`` on the level-0 feature grid is the centre of feature window ``p``; a time ``t`` seconds
from the clip start is ``p = (t - t0) / dt`` with ``t0`` the centre of the first window and ``dt`` the feature step
(``1 / features_per_second``). :class:`Points` lists every point of every level, in level order.

Assignment of one clip (ground truth ``[s_k, e_k]`` in grid units, class ``c_k``), for a point at ``p`` on level ``l``
(stride ``S = 2**l``, regression range ``[lo_l, hi_l]``):

- centre sampling: ``p`` lies strictly inside ``[max(s_k, m_k - r S), min(e_k, m_k + r S)]``, ``m_k = (s_k + e_k)/2``,
  ``r = center_radius`` (ActionFormer 1.5);
- scale: ``lo_l <= max(p - s_k, e_k - p) <= hi_l``, ranges ``[0, 4], [4, 8], [8, 16], ...`` and the last up to inf;
- among the segments that pass both, the shortest wins; every segment of that length sets its class to 1 (a
  multi-hot target); the regression target is ``((p - s_k) / S, (e_k - p) / S)`` of the first shortest one.

Losses (sums over the valid points, divided by a normaliser the caller keeps, ActionFormer's EMA of the positives):
``sigmoid_focal_loss`` on every valid point's class scores and ``diou_loss_1d`` on the positive points' offsets.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = [
    "Points",
    "assign_targets",
    "decode_segments",
    "diou_loss_1d",
    "make_points",
    "regression_ranges",
    "sigmoid_focal_loss",
]


@dataclass(frozen=True)
class Points:
    """Every point of a pyramid, level after level (``P = sum_l T / 2**l``).

    Attributes:
        position: ``(P,)`` float, position on the level-0 grid (``i * stride``).
        stride: ``(P,)`` float, the level's stride.
        lo, hi: ``(P,)`` float, the level's regression range (in level-0 units).
    """

    position: torch.Tensor
    stride: torch.Tensor
    lo: torch.Tensor
    hi: torch.Tensor


def regression_ranges(num_levels: int) -> list[tuple[float, float]]:
    """``[(0, 4), (4, 8), (8, 16), ...]``, the last one open (``inf``): ActionFormer's, in level-0 units."""
    ranges = [(0.0 if level == 0 else 4.0 * 2 ** (level - 1), 4.0 * 2**level) for level in range(num_levels)]
    ranges[-1] = (ranges[-1][0], float("inf"))
    return ranges


def make_points(length: int, num_levels: int, device: torch.device | str = "cpu") -> Points:
    """The points of a pyramid over ``length`` level-0 steps (a multiple of ``2 ** (num_levels - 1)``)."""
    parts: dict[str, list[torch.Tensor]] = {"position": [], "stride": [], "lo": [], "hi": []}
    for level, (lo, hi) in enumerate(regression_ranges(num_levels)):
        stride = 2**level
        n = length // stride
        parts["position"].append(torch.arange(n, dtype=torch.float32, device=device) * stride)
        for key, value in (("stride", float(stride)), ("lo", lo), ("hi", hi)):
            parts[key].append(torch.full((n,), value, dtype=torch.float32, device=device))
    return Points(**{k: torch.cat(v) for k, v in parts.items()})


def assign_targets(
    points: Points, segments: torch.Tensor, labels: torch.Tensor, num_classes: int, center_radius: float = 1.5
) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets of one clip.

    Args:
        points: the pyramid's points (``P``).
        segments: ``(N, 2)`` ground truth ``[start, end]`` in level-0 grid units; labels: ``(N,)`` class ids.
        center_radius: centre sampling radius in strides (<= 0: the whole segment).

    Returns:
        ``cls_target (P, C)`` float multi-hot (all zeros for a negative point) and ``reg_target (P, 2)`` float
        distances to start and end in units of the point's stride (zeros where negative).
    """
    num_points = points.position.shape[0]
    cls_target = torch.zeros(num_points, num_classes, device=points.position.device)
    reg_target = torch.zeros(num_points, 2, device=points.position.device)
    if segments.numel() == 0:
        return cls_target, reg_target
    p, stride = points.position[:, None], points.stride[:, None]  # (P, 1)
    start, end = segments[None, :, 0], segments[None, :, 1]  # (1, N)
    left, right = p - start, end - p  # (P, N)
    if center_radius > 0:
        middle = (start + end) / 2
        inside = torch.minimum(p - torch.maximum(start, middle - center_radius * stride),
                               torch.minimum(end, middle + center_radius * stride) - p) > 0  # fmt: skip
    else:
        inside = torch.minimum(left, right) > 0
    reach = torch.maximum(left, right)
    in_range = (reach >= points.lo[:, None]) & (reach <= points.hi[:, None])
    lengths = (end - start).expand(num_points, -1).masked_fill(~(inside & in_range), float("inf"))  # (P, N)
    shortest, which = lengths.min(dim=1)  # (P,)
    positive = torch.isfinite(shortest)
    ties = (lengths <= shortest[:, None] + 1e-3) & torch.isfinite(lengths)  # (P, N)
    one_hot = torch.nn.functional.one_hot(labels.long(), num_classes).to(cls_target.dtype)  # (N, C)
    cls_target = (ties.to(one_hot.dtype) @ one_hot).clamp_(max=1.0)
    picked = torch.stack([left.gather(1, which[:, None])[:, 0], right.gather(1, which[:, None])[:, 0]], dim=1)
    reg_target = torch.where(positive[:, None], picked / stride, reg_target)
    return cls_target, reg_target


def sigmoid_focal_loss(
    logits: torch.Tensor, target: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0
) -> torch.Tensor:
    """Summed focal loss (Lin et al. 2017): ``-a_t (1 - p_t) ** gamma log p_t`` over every element.

    ``p_t = p`` where the target is 1, ``1 - p`` where 0 (``p = sigmoid(logits)``); ``a_t = alpha`` / ``1 - alpha``
    (``alpha < 0``: no weighting). Soft targets interpolate. Any shape; returns a 0-d tensor.
    """
    p = torch.sigmoid(logits)
    ce = torch.nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = p * target + (1 - p) * (1 - target)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = loss * (alpha * target + (1 - alpha) * (1 - target))
    return loss.sum()


def diou_loss_1d(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Summed 1-D distance-IoU loss of offsets ``(K, 2)`` (distances to start and end from the same point).

    ``1 - IoU + (d / c) ** 2``: ``d`` the distance between the two segments' centres, ``c`` the length of the
    smallest segment enclosing both (Zheng et al. 2020, in one dimension). Returns a 0-d tensor.
    """
    lp, rp, lg, rg = pred[:, 0], pred[:, 1], target[:, 0], target[:, 1]
    overlap = torch.minimum(lp, lg) + torch.minimum(rp, rg)
    union = lp + rp + lg + rg - overlap
    iou = overlap / union.clamp(min=eps)
    enclosing = torch.maximum(lp, lg) + torch.maximum(rp, rg)
    centre_distance = 0.5 * ((rp - lp) - (rg - lg))
    return (1 - iou + (centre_distance / enclosing.clamp(min=eps)) ** 2).sum()


def decode_segments(points: Points, offsets: torch.Tensor) -> torch.Tensor:
    """Segments ``(..., P, 2)`` in level-0 grid units from offsets ``(..., P, 2)`` in stride units."""
    start = points.position - offsets[..., 0] * points.stride
    end = points.position + offsets[..., 1] * points.stride
    return torch.stack([start, end], dim=-1)
