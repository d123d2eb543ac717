"""Two-stage retrieval for joint models: cheap candidates, then VTM re-ranking of the top k only.

A single-stream model (All-in-one) or a fusion model scores a (text, video) pair with one joint pass, so full
pairwise VTM retrieval costs ``N_text x N_video`` passes (All-in-one's EVAL.md: 26 h on MSR-VTT, 1 h with VTC). The
two-stage ranking keeps that cost at ``N_query x k``::

    candidates(q) = the k items of highest cheap similarity      (contrastive features, or any cheap score)
    score(q, c)   = VTM(q, c) for c in candidates(q)             (the release's match logit, ``model.vtm_score``)
    ranking(q)    = candidates by VTM score, then every other item in its cheap order

:func:`rerank` writes that ranking as a similarity matrix (candidates keep their VTM scores; the others are mapped
below the lowest VTM score, keeping their cheap order), so every retrieval metric applies unchanged. With
``k = N`` it is the full VTM ranking (tested). Videos are held in memory here ``(N_video, T, 3, H, W)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch

__all__ = [
    "PairScorer",
    "full_vtm_matrix",
    "rerank",
    "score_pairs",
    "stream_pair_scores",
    "topk_candidates",
    "two_stage_similarity",
]

#: ``(video (P, T, 3, H, W), input_ids (P, L), attention_mask (P, L)) -> scores (P,)`` of aligned pairs
PairScorer = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def topk_candidates(similarity: torch.Tensor, k: int) -> torch.Tensor:
    """``(Q, k)`` gallery indices of the highest cheap scores per query row (ties: lower index first)."""
    if not 1 <= k <= similarity.shape[1]:
        raise ValueError(f"k must be in 1..{similarity.shape[1]} (the gallery size), got {k}")
    order = torch.sort(similarity, dim=1, descending=True, stable=True).indices
    return order[:, :k]


@torch.no_grad()
def score_pairs(
    scorer: PairScorer,
    videos: torch.Tensor,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    text_index: torch.Tensor,
    video_index: torch.Tensor,
    batch_size: int = 64,
) -> torch.Tensor:
    """VTM scores ``(P,)`` of the pairs ``(text_index[p], video_index[p])``, ``batch_size`` joint passes at a time."""
    scores = []
    device = input_ids.device
    for start in range(0, len(text_index), batch_size):
        t = text_index[start : start + batch_size].to(device)
        v = video_index[start : start + batch_size]
        scores.append(scorer(videos[v.to(videos.device)].to(device), input_ids[t], attention_mask[t]).float().cpu())
    return torch.cat(scores) if scores else torch.zeros(0)


def full_vtm_matrix(
    scorer: PairScorer, videos: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor, batch_size=64
) -> torch.Tensor:
    """``(N_text, N_video)`` VTM scores of every pair (the release's ``compute_irtr_recall``)."""
    nt, nv = input_ids.shape[0], videos.shape[0]
    text_index = torch.arange(nt).repeat_interleave(nv)
    video_index = torch.arange(nv).repeat(nt)
    return score_pairs(scorer, videos, input_ids, attention_mask, text_index, video_index, batch_size).view(nt, nv)


def rerank(similarity: torch.Tensor, candidates: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """The two-stage ranking as a similarity matrix ``(Q, N)`` float64.

    Args:
        similarity: cheap scores ``(Q, N)``; candidates: ``(Q, k)`` gallery indices; scores: their VTM scores
            ``(Q, k)``.
    Returns: candidates hold their VTM scores; every other item holds ``low + (cheap - cheap.min())`` with ``low``
    chosen so that all of them stay below the lowest VTM score, in their cheap order.
    """
    cheap = similarity.double()
    scores = scores.double()
    span = float(cheap.max() - cheap.min()) if cheap.numel() else 0.0
    low = float(scores.min()) - span - 1.0 if scores.numel() else 0.0
    out = low + (cheap - cheap.min())
    return out.scatter(1, candidates, scores)


def two_stage_similarity(
    scorer: PairScorer,
    similarity: torch.Tensor,
    videos: torch.Tensor,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    k: int,
    batch_size: int = 64,
) -> torch.Tensor:
    """Text-to-video two-stage similarity ``(N_text, N_video)`` from the cheap ``similarity`` (same shape): the top
    ``k`` videos of each text re-scored with VTM (``N_text x k`` joint passes)."""
    candidates = topk_candidates(similarity, k)
    nt = candidates.shape[0]
    text_index = torch.arange(nt).repeat_interleave(k)
    scores = score_pairs(scorer, videos, input_ids, attention_mask, text_index, candidates.flatten(), batch_size)
    return rerank(similarity, candidates, scores.view(nt, k))


@torch.no_grad()
def stream_pair_scores(
    scorer: PairScorer,
    batches: Iterable[dict[str, Any]],
    wanted: dict[int, np.ndarray],
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    batch_size: int = 64,
) -> dict[tuple[int, int], float]:
    """VTM scores ``{(video index, text index): score}`` of the wanted pairs, as the videos stream past.

    Args:
        batches: loader batches with ``video (b, T, 3, H, W)`` and ``index (b,)`` (batches without ``video``, all of
            whose items were skipped, are passed over); no video is kept after its batch.
        wanted: ``{video index: text indices to score with it}``.
        input_ids, attention_mask: every text ``(N_text, L)``, on the device the scorer runs on.
    """
    device, none = input_ids.device, np.zeros(0, np.int64)
    out: dict[tuple[int, int], float] = {}
    for batch in batches:
        if "video" not in batch:
            continue
        indices = batch["index"].tolist()
        pos = torch.tensor([p for p, i in enumerate(indices) for _ in wanted.get(i, none)], dtype=torch.long)
        text = torch.from_numpy(np.concatenate([wanted.get(i, none) for i in indices]).astype(np.int64))
        video = batch["video"].to(device)
        for start in range(0, len(pos), batch_size):
            p, t = pos[start : start + batch_size], text[start : start + batch_size]
            score = scorer(video[p.to(device)], input_ids[t.to(device)], attention_mask[t.to(device)]).float().cpu()
            if not bool(torch.isfinite(score).all()):
                raise ValueError(f"VTM scores of videos {indices} are NaN or infinite (a diverged checkpoint?)")
            for i, j, value in zip(batch["index"][p].tolist(), t.tolist(), score.tolist()):
                out[(i, j)] = value
    return out
