"""From ranked windows to moments, and re-ranking within the top K.

Merging (:func:`merge_windows`) goes down the ranked windows once. A window joins the first (best) moment of its
video that it overlaps or comes within ``gap`` seconds of, provided the moment then lasts at most ``max_seconds``::

    joins(w, m)  <=>  video(w) = video(m)  and  start(w) <= end(m) + gap  and  end(w) >= start(m) - gap
                      and  max(end(m), end(w)) - min(start(m), start(w)) <= max_seconds

otherwise it starts a new moment. A moment keeps the score of its first window (its best), so moments come out in
the order of their best windows; the cap stops a chain of overlapping windows from swallowing a whole video.

Re-ranking (:func:`rerank_order`) re-orders the first ``K`` positions by a new score and leaves the rest as they were.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from egovlp.search.config import MergeConfig

__all__ = ["Group", "merge_windows", "rerank_order"]


@dataclass
class Group:
    """Windows merged into one moment: ``windows`` are ranks into the input, best first."""

    video: int
    start: float
    end: float
    windows: list[int] = field(default_factory=list)


def merge_windows(video: np.ndarray, start: np.ndarray, end: np.ndarray, cfg: MergeConfig) -> list[Group]:
    """Moments of ranked windows (``video``, ``start``, ``end`` ``(N,)``, best first); see the module docstring.

    With ``cfg.enabled`` False every window is its own moment.
    """
    groups: list[Group] = []
    by_video: dict[int, list[Group]] = {}
    for r in range(len(video)):
        v, s, e = int(video[r]), float(start[r]), float(end[r])
        target = None
        if cfg.enabled:
            for g in by_video.get(v, []):
                near = s <= g.end + cfg.gap and e >= g.start - cfg.gap
                if near and max(g.end, e) - min(g.start, s) <= cfg.max_seconds + 1e-9:
                    target = g
                    break
        if target is None:
            target = Group(v, s, e)
            groups.append(target)
            by_video.setdefault(v, []).append(target)
        else:
            target.start, target.end = min(target.start, s), max(target.end, e)
        target.windows.append(r)
    return groups


def rerank_order(ranked: np.ndarray, new_scores: np.ndarray) -> np.ndarray:
    """``ranked`` ``(N,)`` (ids, best first) with its first ``K = len(new_scores)`` re-ordered by ``new_scores``
    ``(K,)`` (descending; ties keep their old order) and positions ``K..N-1`` unchanged."""
    ranked = np.asarray(ranked)
    scores = np.asarray(new_scores, dtype=np.float64)
    k = scores.shape[0]
    if scores.ndim != 1 or k > ranked.shape[0]:
        raise ValueError(f"rerank_order: {k} new scores for {ranked.shape[0]} ranked items")
    return np.concatenate([ranked[:k][np.argsort(-scores, kind="stable")], ranked[k:]])
