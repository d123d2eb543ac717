"""Kernel Temporal Segmentation (KTS, Potapov et al., ECCV 2014) of a sequence of shot features.

Given ``n`` shot features with a kernel ``K`` (``(n, n)``; by default ``K = X X^T`` of L2-normalised features, so
``K_ii = 1``), the within-segment scatter of a segment ``[a, b)`` is the squared distance of its points to their
mean in the kernel's feature space::

    v(a, b) = sum_{i in [a, b)} K_ii  -  1 / (b - a) * sum_{i, j in [a, b)} K_ij

computed in O(1) from the diagonal's cumulative sum ``D`` and the 2-D cumulative sum ``S`` of ``K``
(``S[i, j] = sum K[:i, :j]``). For a fixed number of change points ``m`` dynamic programming finds the ``m + 1``
segments that minimise ``L_m = sum of v`` over the segments::

    J[0, t] = v(0, t),     J[k, t] = min_{s < t} J[k - 1, s] + v(s, t),     L_m = J[m, n]

(``s`` ranges over starts that keep every segment at most ``max_segment_len`` long when a limit is given). The
number of change points is chosen by the paper's penalised objective; we use exactly the form of the KTS
authors' released code (which video-summarisation pipelines call with ``vmax = 1`` on unit-norm features)::

    m* = argmin_m  L_m / n  +  vmax * m / (2 n) * (log(n / m) + 1)        (penalty 0 for m = 0)

``L_m / n`` is the mean scatter per shot (in ``[0, vmax]`` when every ``K_ii <= vmax``), and the penalty is the
paper's ``C * m * (log(n / m) + 1)`` with ``C = vmax / (2 n)``; the factor 1/2 only rescales ``vmax`` relative to
``vmax * m / n * (log(n / m) + 1)``.

Change points are returned as the sorted start indices of every segment but the first, ``0 < c_1 < ... < c_m <
n``; :func:`segments` turns them into ``[start, end)`` pairs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["KTSResult", "kts", "kts_from_kernel", "normalized_kernel", "segment_scatter", "segments"]


def _as_array(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def normalized_kernel(features: Any) -> np.ndarray:
    """``K = X X^T`` of the L2-normalised rows of ``features (n, d)``; ``(n, n)`` float64 (zero rows stay zero)."""
    x = _as_array(features)
    if x.ndim != 2:
        raise ValueError(f"KTS features must be (n, d), got shape {x.shape}")
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    x = x / np.where(norm > 0, norm, 1.0)
    return x @ x.T


def segment_scatter(kernel: np.ndarray, start: int, end: int) -> float:
    """The scatter ``v(start, end)`` of one segment computed directly from ``kernel (n, n)`` (slow reference)."""
    block = kernel[start:end, start:end]
    return float(np.trace(block) - block.sum() / (end - start))


@dataclass(frozen=True)
class KTSResult:
    """Every fixed-``m`` solution and the penalised choice.

    ``costs``: ``(max_changes + 1,)`` float64, ``L_m`` (inf where no segmentation with ``m`` change points fits
    the length limit); ``change_points[m]``: the optimal change points for ``m``; ``objective``: ``(max_changes +
    1,)`` the penalised objective; ``best``: the chosen ``m``.
    """

    costs: np.ndarray
    change_points: tuple[tuple[int, ...], ...]
    objective: np.ndarray
    best: int

    @property
    def best_change_points(self) -> tuple[int, ...]:
        return self.change_points[self.best]


def _dynamic_program(kernel: np.ndarray, max_changes: int, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """``J (M + 1, n + 1)`` optimal costs of ``[0, t)`` in ``k + 1`` segments and ``P`` the last segment's start."""
    n = kernel.shape[0]
    diag = np.concatenate([[0.0], np.cumsum(np.diag(kernel))])  # (n + 1,)
    cum = np.zeros((n + 1, n + 1))
    cum[1:, 1:] = kernel.cumsum(0).cumsum(1)  # cum[i, j] = K[:i, :j].sum()
    jcost = np.full((max_changes + 1, n + 1), np.inf)
    back = np.zeros((max_changes + 1, n + 1), dtype=np.int64)
    for t in range(1, n + 1):
        lo = max(0, t - max_len)
        s = np.arange(lo, t)
        block = cum[t, t] - cum[s, t] - cum[t, s] + cum[s, s]
        scatter = (diag[t] - diag[s]) - block / (t - s)  # (t - lo,) v(s, t)
        if lo == 0:
            jcost[0, t] = scatter[0]
        if max_changes:
            total = jcost[:-1, lo:t] + scatter[None, :]  # (M, t - lo): previous k segments end at s
            arg = np.argmin(total, axis=1)
            jcost[1:, t] = total[np.arange(max_changes), arg]
            back[1:, t] = lo + arg
    return jcost, back


def kts_from_kernel(kernel: Any, max_changes: int, max_segment_len: int | None = None, vmax: float = 1.0) -> KTSResult:
    """KTS on a precomputed ``kernel (n, n)``: optimal segmentations for ``m = 0..max_changes`` and the choice.

    ``max_segment_len``: no segment longer than this many shots (``None``: no limit). Raises ``ValueError`` when
    even ``max_changes + 1`` segments of the maximal length cannot cover the ``n`` shots.
    """
    k = _as_array(kernel)
    if k.ndim != 2 or k.shape[0] != k.shape[1] or k.shape[0] == 0:
        raise ValueError(f"KTS kernel must be a non-empty square matrix, got shape {k.shape}")
    n = k.shape[0]
    if max_changes < 0:
        raise ValueError(f"max_changes must be >= 0, got {max_changes}")
    max_changes = min(max_changes, n - 1)  # at most one segment per shot
    max_len = n if max_segment_len is None else int(max_segment_len)
    if max_len < 1 or (max_changes + 1) * max_len < n:
        raise ValueError(f"{n} shots do not fit in {max_changes + 1} segments of at most {max_segment_len} shots")
    jcost, back = _dynamic_program(k, max_changes, max_len)
    costs = jcost[:, n].copy()
    change_points = []
    for m in range(max_changes + 1):
        cps: list[int] = []
        if np.isfinite(costs[m]):
            t = n
            for level in range(m, 0, -1):
                t = int(back[level, t])
                cps.append(t)
        change_points.append(tuple(reversed(cps)))
    penalty = np.array([0.0] + [vmax * m / (2 * n) * (math.log(n / m) + 1) for m in range(1, max_changes + 1)])
    objective = costs / n + penalty
    return KTSResult(costs, tuple(change_points), objective, int(np.argmin(objective)))


def kts(features: Any, max_changes: int, max_segment_len: int | None = None, vmax: float = 1.0) -> tuple[int, ...]:
    """Change points of ``features (n, d)`` (rows L2-normalised, linear kernel) by penalised KTS.

    Returns the sorted segment starts after the first, each in ``(0, n)``, at most ``max_changes`` of them.
    """
    return kts_from_kernel(normalized_kernel(features), max_changes, max_segment_len, vmax).best_change_points


def segments(change_points: tuple[int, ...] | list[int], n: int) -> list[tuple[int, int]]:
    """``[start, end)`` pairs covering ``0..n`` cut at ``change_points``."""
    bounds = [0, *change_points, n]
    return [(bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]
