"""From window features to VSLNet's units and back: pooling long clips, answer labels and top-k span decoding.

* :func:`pool_windows`: a clip of ``N > max_len`` windows is mean-pooled to ``max_len`` units as the release does
  (VSLNet's ``visual_feature_sampling``): bin edges ``round(arange(max_len + 1) / max_len * N)`` clipped to
  ``N - 1``; unit ``i`` is the mean of windows ``[edge_i, edge_{i+1})``, or window ``edge_i`` alone when the bin is
  empty (so the very last window only enters an empty last bin). Each unit spans its bin's windows in time.
* :func:`span_labels`: the answer's start and end unit are the pair ``s <= e`` whose span
  ``[unit_start[s], unit_end[e]]`` has the best IoU with the answer (VSLNet's ``time_to_index`` on real window
  times); the highlight labels mark units ``s - x .. e + x`` with ``x = round(extend * (e - s + 1))``.
* :func:`top_spans`: the ``k`` pairs ``s <= e`` of highest ``p_start[s] * p_end[e]`` (softmax probabilities),
  best first, ties broken by the smaller flat index ``s * N + e``; turned into seconds by the unit spans.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["highlight_labels", "pool_edges", "pool_windows", "span_labels", "top_spans"]


def pool_edges(num_windows: int, max_len: int) -> np.ndarray:
    """``(max_len + 1,)`` int bin edges of the release's pooling (see the module docstring)."""
    edges = np.round(np.arange(max_len + 1, dtype=np.float64) / max_len * num_windows).astype(np.int64)
    return np.minimum(edges, num_windows - 1)


def pool_windows(
    features: np.ndarray, start: np.ndarray, end: np.ndarray, max_len: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``features (..., N, D)`` with window times ``start, end (N,)`` -> at most ``max_len`` units and their spans."""
    n = features.shape[-2]
    if n <= max_len:
        return features, start, end
    edges = pool_edges(n, max_len)
    lo, hi = edges[:-1], np.maximum(edges[1:], edges[:-1] + 1)  # an empty bin takes its first window alone
    csum = np.concatenate([np.zeros_like(features[..., :1, :]), np.cumsum(features, axis=-2, dtype=np.float64)], -2)
    pooled = (csum[..., hi, :] - csum[..., lo, :]) / (hi - lo)[:, None]
    return pooled.astype(features.dtype), start[lo], end[hi - 1]


def span_labels(unit_start: np.ndarray, unit_end: np.ndarray, window: tuple[float, float]) -> tuple[int, int]:
    """The answer's ``(start unit, end unit)``: the pair ``s <= e`` of best IoU with ``window`` (first on ties)."""
    s, e = float(window[0]), float(window[1])
    a, b = unit_start[:, None], unit_end[None, :]  # candidate spans [unit_start[i], unit_end[j]]
    overlap = np.clip(np.minimum(b, e) - np.maximum(a, s), 0.0, None)
    hull = np.maximum(b, e) - np.minimum(a, s)
    iou = np.divide(overlap, hull, out=np.zeros_like(overlap), where=hull > 0)
    iou = np.where(np.triu(np.ones_like(iou, dtype=bool)), iou, -1.0)
    flat = int(np.argmax(iou))
    return flat // len(unit_end), flat % len(unit_end)


def highlight_labels(start: int, end: int, num_units: int, extend: float) -> np.ndarray:
    """``(num_units,)`` float32: 1 on units ``start - x .. end + x`` (clipped), ``x = round(extend * length)``."""
    x = round(extend * (end - start + 1))
    out = np.zeros(num_units, dtype=np.float32)
    out[max(0, start - x) : min(num_units - 1, end + x) + 1] = 1.0
    return out


def top_spans(start_logits: Tensor, end_logits: Tensor, mask: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """The ``k`` best spans per row: ``(start (B, k), end (B, k), score (B, k))`` with ``score = p_s * p_e``.

    Logits are ``(B, N)``; ``mask (B, N)`` marks the real windows. Only pairs ``s <= e`` of real windows are ranked;
    ``k`` is capped at the number of such pairs of the shortest row.
    """
    p_start, p_end = torch.softmax(start_logits.float(), -1), torch.softmax(end_logits.float(), -1)
    n = p_start.shape[-1]
    real = mask.bool()
    valid = torch.triu(torch.ones(n, n, dtype=torch.bool, device=mask.device)) & real[:, :, None] & real[:, None, :]
    outer = torch.where(valid, p_start[:, :, None] * p_end[:, None, :], -1.0)  # (B, N, N)
    flat = outer.flatten(1)
    shortest = int(real.sum(1).min())
    k = min(k, shortest * (shortest + 1) // 2)
    # stable ranking: descending score, then ascending flat index (torch.topk promises no order on ties)
    order = torch.sort(flat, dim=1, descending=True, stable=True).indices[:, :k]
    return order // n, order % n, torch.gather(flat, 1, order)
