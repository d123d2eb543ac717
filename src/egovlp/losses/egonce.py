"""EgoNCE: InfoNCE over text-video pairs where clips that share a verb and a noun count as extra positives.

For a batch of N clip-narration pairs (all-gathered over ranks), with ``S = cos(text, video) / temperature``::

    P[i, j] = (i == j) or (clips i and j share >= 1 verb AND >= 1 noun)     # positive mask, symmetric
    t2v     = -mean_i log( sum_{j in P(i)} softmax_j(S[i, :]) )               # rows of S: text -> videos
    v2t     = -mean_i log( sum_{j in P(i)} softmax_j(S[:, i]) )               # rows of S.T: video -> texts
    loss    = t2v + v2t

``log(sum_{j in P(i)} softmax_j(S[i])) = logsumexp_{j in P(i)} S[i, j] - logsumexp_j S[i, j]``; the right-hand side
is what we compute (stable for any logit size, and never log(0) because ``P[i, i]`` is always set).
``positives`` switches the mask: ``"verb"`` or ``"noun"`` alone, or ``"none"`` for plain InfoNCE (``P = I``).
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from egovlp.losses.gather import GatherGrad, all_gather, all_gather_nograd

__all__ = ["POSITIVE_MODES", "EgoNCELoss", "EgoNCEOutput", "cosine_similarity_matrix", "egonce_loss", "positive_mask"]

Positives = Literal["verb_and_noun", "verb", "noun", "none"]
POSITIVE_MODES: tuple[str, ...] = ("verb_and_noun", "verb", "noun", "none")


class EgoNCEOutput(NamedTuple):
    """Result of :func:`egonce_loss`. The mask and similarity feed the VTM hard-negative sampler."""

    loss: Tensor  # () t2v_loss + v2t_loss
    t2v_loss: Tensor  # () text -> video direction
    v2t_loss: Tensor  # () video -> text direction
    positive_mask: Tensor  # (N, N) bool, [text i, video j]; symmetric, diagonal set
    similarity: Tensor  # (N, N) cosine similarity [text i, video j], detached; the logits are similarity / temperature


def cosine_similarity_matrix(a: Tensor, b: Tensor, eps: float = 1e-8) -> Tensor:
    """Cosine similarity of every row of ``a (N, D)`` with every row of ``b (M, D)`` -> ``(N, M)``.

    Rows are divided by ``max(norm, eps)`` as in the release, so an all-zero row gives similarity 0, not NaN.
    """
    return F.normalize(a, dim=-1, eps=eps) @ F.normalize(b, dim=-1, eps=eps).transpose(0, 1)


def _shares_a_tag(tags: Tensor) -> Tensor:
    """``(N, C)`` multi-hot tags -> ``(N, N)`` bool, True where two clips have at least one tag in common."""
    if tags.dim() != 2:
        raise ValueError(f"tags must be multi-hot (N, num_classes); got shape {tuple(tags.shape)}")
    t = (tags != 0).float()
    return (t @ t.transpose(0, 1)) > 0


@torch.no_grad()
def positive_mask(
    n: int,
    verb: Tensor | None = None,
    noun: Tensor | None = None,
    positives: Positives = "verb_and_noun",
    device: torch.device | str | None = None,
) -> Tensor:
    """EgoNCE positive mask ``(N, N)`` bool from multi-hot ``verb (N, Cv)`` and ``noun (N, Cn)`` tags; diagonal set.

    ``positives``: ``"verb_and_noun"`` (share a verb AND a noun), ``"verb"``, ``"noun"``, or ``"none"`` (identity).
    """
    if positives not in POSITIVE_MODES:
        raise ValueError(f"positives must be one of {POSITIVE_MODES}; got {positives!r}")
    need_verb = positives in ("verb_and_noun", "verb")
    need_noun = positives in ("verb_and_noun", "noun")
    if need_verb and verb is None:
        raise ValueError(f"positives={positives!r} needs the multi-hot verb tags; got verb=None")
    if need_noun and noun is None:
        raise ValueError(f"positives={positives!r} needs the multi-hot noun tags; got noun=None")
    for name, tags in (("verb", verb), ("noun", noun)):
        if tags is not None and tags.shape[0] != n:
            raise ValueError(f"{name} tags have {tags.shape[0]} rows but the batch has {n} items")
    if device is None:
        device = verb.device if verb is not None else noun.device if noun is not None else "cpu"
    mask = torch.eye(n, dtype=torch.bool, device=device)
    if positives == "none":
        return mask
    shared = torch.ones(n, n, dtype=torch.bool, device=device)
    if need_verb:
        assert verb is not None  # checked above
        shared &= _shares_a_tag(verb.to(device))
    if need_noun:
        assert noun is not None
        shared &= _shares_a_tag(noun.to(device))
    return mask | shared


def egonce_loss(
    text_emb: Tensor,
    video_emb: Tensor,
    verb: Tensor | None = None,
    noun: Tensor | None = None,
    temperature: float = 0.05,
    positives: Positives = "verb_and_noun",
) -> EgoNCEOutput:
    """EgoNCE over one (already gathered) batch; see the module docstring for the formula.

    Args:
        text_emb: ``(N, D)`` text embeddings (normalised here).
        video_emb: ``(N, D)`` video embeddings of the same clips, same order.
        verb: ``(N, Cv)`` multi-hot verb classes (any dtype; non-zero = present). Needed unless positives is
            ``"noun"`` or ``"none"``.
        noun: ``(N, Cn)`` multi-hot noun classes. Needed unless positives is ``"verb"`` or ``"none"``.
        temperature: logits are ``cosine / temperature`` (release: 0.05, fixed).
        positives: ``"verb_and_noun"`` (release), ``"verb"``, ``"noun"``, ``"none"`` (plain InfoNCE).
    """
    if text_emb.dim() != 2 or video_emb.dim() != 2 or text_emb.shape != video_emb.shape:
        raise ValueError(
            f"text_emb and video_emb must both be (N, D) of the same shape; got {tuple(text_emb.shape)} "
            f"and {tuple(video_emb.shape)}"
        )
    if temperature <= 0:
        raise ValueError(f"temperature must be positive; got {temperature}")
    n = text_emb.shape[0]
    mask = positive_mask(n, verb, noun, positives, device=text_emb.device)  # (N, N) bool
    similarity = cosine_similarity_matrix(text_emb, video_emb)  # (N, N) [text, video]
    # at least float32: the loss is cheap, keep it accurate under autocast (float64 stays float64)
    logits = similarity.to(torch.promote_types(similarity.dtype, torch.float32)) / temperature

    def direction(rows: Tensor) -> Tensor:
        # -mean_i [ logsumexp over positives of row i  -  logsumexp over the whole row i ]
        positive_lse = rows.masked_fill(~mask, float("-inf")).logsumexp(dim=1)  # (N,)
        return (rows.logsumexp(dim=1) - positive_lse).mean()

    t2v = direction(logits)
    v2t = direction(logits.transpose(0, 1))  # the mask is symmetric, so the same mask serves both directions
    return EgoNCEOutput(t2v + v2t, t2v, v2t, mask, similarity.detach())


class EgoNCELoss(nn.Module):
    """All-gathers text/video embeddings and verb/noun tags over ranks, then applies :func:`egonce_loss`.

    The gradient scale follows ``gather_grad`` (see :mod:`egovlp.losses.gather`): ``FULL`` makes the DDP-averaged
    gradient equal the single-process full-batch gradient; ``LOCAL`` (the release) gives that gradient / world size.
    """

    def __init__(
        self,
        temperature: float = 0.05,
        positives: Positives = "verb_and_noun",
        gather_grad: GatherGrad | str = GatherGrad.FULL,
        group: dist.ProcessGroup | None = None,
    ) -> None:
        super().__init__()
        if positives not in POSITIVE_MODES:
            raise ValueError(f"positives must be one of {POSITIVE_MODES}; got {positives!r}")
        self.temperature = temperature
        self.positives = positives
        self.gather_grad = GatherGrad(gather_grad)
        self.group = group

    def forward(
        self, text_emb: Tensor, video_emb: Tensor, verb: Tensor | None = None, noun: Tensor | None = None
    ) -> EgoNCEOutput:
        """``text_emb, video_emb (B, D)`` local; ``verb (B, Cv)``, ``noun (B, Cn)`` multi-hot. Output is global."""
        text_all = all_gather(text_emb, self.gather_grad, self.group)  # (W*B, D)
        video_all = all_gather(video_emb, self.gather_grad, self.group)  # (W*B, D)
        verb_all = all_gather_nograd(verb, self.group) if verb is not None and self.positives != "none" else None
        noun_all = all_gather_nograd(noun, self.group) if noun is not None and self.positives != "none" else None
        return egonce_loss(text_all, video_all, verb_all, noun_all, self.temperature, self.positives)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, positives={self.positives!r}, gather_grad={self.gather_grad.value}"
