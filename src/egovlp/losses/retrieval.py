"""Max-margin ranking losses for EK-100 multi-instance retrieval fine-tuning (EgoVLP / EgoVLPv2).

For an ``(N, N)`` cosine similarity ``s`` of a batch of paired items (``s[i, i]`` the pair's own score; the release
passes ``s = cos(text, video)``, rows texts) and a margin ``m``, every off-diagonal ``(i, j)`` contributes two hinge
terms, one per direction, and the loss is their mean over all ``2 N (N - 1)`` terms::

    relu(w[i, j] * m - (s[i, i] - s[i, j]))     # anchor i's row: item i must beat column j
    relu(w[i, j] * m - (s[i, i] - s[j, i]))     # anchor i's column: item i must beat row j

Weights (the *adaptive* part):

- Official semantics, ``relevancy_weight`` of shape ``(N,)``: ``w[i, j] = w[i]`` where ``w[i]`` is the relevancy of
  the positive pair ``i`` itself (the training sampler pairs video ``i`` with a caption ``j`` of relevancy > 0.1 and
  returns that relevancy; 1 when the clip's own narration is used). The release's ``AdaptiveMaxMarginRankingLoss``
  takes exactly this per-sample vector (all-gathered with the embeddings) and broadcasts ``w[i]`` over anchor
  ``i``'s row AND column terms. So a weakly relevant positive asks for a smaller margin; the negatives' own
  relevancy to anchor ``i`` plays no part.
- Extension, ``(N, N)``: ``w[i, j]`` scales both terms of anchor ``i`` against ``j`` (``(N,)`` is the special case
  ``w[:, None]``). A scalar scales every margin.

``max_margin_loss`` is the plain (non-adaptive) loss, ``w = 1``. Diagonal terms are dropped (the release's
``fix_norm=True`` default). The release's EK-100 config uses margin 0.2 (its class default is 0.4).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn

from egovlp.losses.egonce import cosine_similarity_matrix
from egovlp.losses.gather import GatherGrad, all_gather, all_gather_nograd

__all__ = ["AdaptiveMaxMarginLoss", "MaxMarginLoss", "adaptive_max_margin_loss", "max_margin_loss"]


def _weight_matrix(weight: Tensor | float, n: int, like: Tensor) -> Tensor:
    """Broadcast a relevancy weight (scalar, ``(N,)`` per positive pair, or ``(N, N)``) to ``(N, N)``."""
    w = torch.as_tensor(weight, device=like.device).to(like.dtype)
    if w.dim() == 0:
        return w.expand(n, n)
    if w.shape == (n,):
        return w[:, None].expand(n, n)  # official: anchor i's terms all use the relevancy of pair i
    if w.shape == (n, n):
        return w
    raise ValueError(f"relevancy_weight must be a scalar, ({n},) or ({n}, {n}); got {tuple(w.shape)}")


def adaptive_max_margin_loss(similarity: Tensor, relevancy_weight: Tensor | float, margin: float = 0.2) -> Tensor:
    """Relevancy-weighted max-margin ranking loss (see the module docstring).

    Args:
        similarity: ``(N, N)`` cosine similarity, ``[i, i]`` the positive pairs.
        relevancy_weight: ``(N,)`` relevancy of each positive pair (official), ``(N, N)`` per-term weights, or a
            scalar. Treated as a constant (no gradient flows into it).
        margin: base margin ``m`` (EK-100: 0.2).

    Returns:
        0-d mean over the ``2 N (N - 1)`` off-diagonal hinge terms (0, attached to the graph, when ``N < 2``).
    """
    if similarity.dim() != 2 or similarity.shape[0] != similarity.shape[1]:
        raise ValueError(f"similarity must be square (N, N); got {tuple(similarity.shape)}")
    n = similarity.shape[0]
    if n < 2:
        return similarity.sum() * 0.0
    s = similarity.to(torch.promote_types(similarity.dtype, torch.float32))
    w_margin = _weight_matrix(relevancy_weight, n, s).detach() * margin  # (N, N)
    positive = s.diagonal()[:, None]  # (N, 1) s[i, i]
    off_diagonal = ~torch.eye(n, dtype=torch.bool, device=s.device)
    row_terms = torch.relu(w_margin - (positive - s))  # (N, N) [i, j]: s[i, i] vs s[i, j]
    col_terms = torch.relu(w_margin - (positive - s.transpose(0, 1)))  # (N, N) [i, j]: s[i, i] vs s[j, i]
    total = (row_terms * off_diagonal).sum() + (col_terms * off_diagonal).sum()
    return total / (2 * n * (n - 1))


def max_margin_loss(similarity: Tensor, margin: float = 0.2) -> Tensor:
    """Plain max-margin ranking loss over both directions: :func:`adaptive_max_margin_loss` with weight 1."""
    return adaptive_max_margin_loss(similarity, 1.0, margin)


class AdaptiveMaxMarginLoss(nn.Module):
    """All-gathers text/video embeddings and per-pair relevancy, then :func:`adaptive_max_margin_loss` on the cosine.

    The gradient scale follows ``gather_grad`` as for :class:`egovlp.losses.egonce.EgoNCELoss`.
    """

    def __init__(
        self,
        margin: float = 0.2,
        gather_grad: GatherGrad | str = GatherGrad.FULL,
        group: dist.ProcessGroup | None = None,
    ) -> None:
        super().__init__()
        self.margin = margin
        self.gather_grad = GatherGrad(gather_grad)
        self.group = group

    def forward(self, text_emb: Tensor, video_emb: Tensor, relevancy_weight: Tensor) -> Tensor:
        """``text_emb, video_emb (B, D)`` local pairs; ``relevancy_weight (B,)`` relevancy of each pair."""
        text_all = all_gather(text_emb, self.gather_grad, self.group)  # (W*B, D)
        video_all = all_gather(video_emb, self.gather_grad, self.group)  # (W*B, D)
        weight_all = all_gather_nograd(relevancy_weight, self.group)  # (W*B,)
        return adaptive_max_margin_loss(cosine_similarity_matrix(text_all, video_all), weight_all, self.margin)

    def extra_repr(self) -> str:
        return f"margin={self.margin}, gather_grad={self.gather_grad.value}"


class MaxMarginLoss(nn.Module):
    """All-gathers text/video embeddings, then :func:`max_margin_loss` on their cosine similarity."""

    def __init__(
        self,
        margin: float = 0.2,
        gather_grad: GatherGrad | str = GatherGrad.FULL,
        group: dist.ProcessGroup | None = None,
    ) -> None:
        super().__init__()
        self.margin = margin
        self.gather_grad = GatherGrad(gather_grad)
        self.group = group

    def forward(self, text_emb: Tensor, video_emb: Tensor) -> Tensor:
        """``text_emb, video_emb (B, D)`` local pairs -> 0-d loss over the gathered batch."""
        text_all = all_gather(text_emb, self.gather_grad, self.group)
        video_all = all_gather(video_emb, self.gather_grad, self.group)
        return max_margin_loss(cosine_similarity_matrix(text_all, video_all), self.margin)

    def extra_repr(self) -> str:
        return f"margin={self.margin}, gather_grad={self.gather_grad.value}"
