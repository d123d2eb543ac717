"""Video-text matching (VTM): hard-negative pair sampling from the gathered batch, and its cross-entropy loss.

Each rank builds ``B`` (its local batch size) pairs for the fused pass. ``floor(B / 2)`` slots keep their true pair
(label 1) and the rest are negatives (label 0); the labels are randomly permuted over the slots, as in the release.
For a negative slot of global item ``i`` a fair coin decides which side is replaced:

- **video replaced**: keep text ``i``, draw video ``j`` with probability ``softmax_j(S[i, :] / temperature)``,
- **text replaced**: keep video ``i``, draw text ``j`` with probability ``softmax_j(S[:, i] / temperature)``,

where ``S`` is the ``(N, N)`` [text, video] similarity of the all-gathered batch. Every ``j`` that is an EgoNCE
positive of ``i`` (``mask[i, j] or mask[j, i]``) and ``j == i`` itself gets weight exactly 0, so a sampled negative
is never a true or EgoNCE-positive pair. Sampling uses the Gumbel-max trick on the masked logits, which is exact and,
unlike ``torch.multinomial``, can never return a zero-weight index. If every other item is a positive of ``i``, the
draw falls back to uniform over the items ``j != i`` (logged once). With ``random_fraction = f`` each negative slot
instead draws uniformly from the admissible items with probability ``f`` (easy negatives mixed in; release: 0).

``row_convention`` -- which similarity row weights which replacement:

- ``"albef"`` (default, the semantics above, as in ALBEF's hard-negative mining): the replacement video for text ``i``
  is drawn by how similar each video is to text ``i`` (row ``S[i, :]``); the replacement text for video ``i`` by how
  similar each text is to video ``i`` (column ``S[:, i]``). Hard negatives are hard for the side that is kept.
- ``"release"``: the official EgoVLPv2 code indexes the two weight rows the other way round. It samples the
  replacement *video* index from the video-to-text row ``S[:, i]`` (video ``i`` against every text) and the
  replacement *text* index from the text-to-video row ``S[i, :]``. Because items are paired (text ``j`` belongs to
  video ``j``), this picks videos whose narration resembles video ``i``, i.e. negatives that are hard for the side
  that is replaced. Positives and self are excluded in both conventions. (The release also adds 1e-9 to every
  weight before ``torch.multinomial``, so it can draw a positive with tiny probability; we never do.)

The VTM loss is a plain mean cross-entropy over the local pairs. All ranks have the same local batch size (the gather
requires it), so the local mean averaged by DDP is exactly the gradient of the global mean; no gather of the logits
is needed. ``world_size`` / ``num_pairs_global`` mirror :func:`egovlp.losses.mlm.mlm_loss` for unequal batches.
"""

from __future__ import annotations

import enum
import logging
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ROW_CONVENTIONS", "Replaced", "VTMLoss", "VTMPairs", "sample_vtm_pairs", "vtm_loss", "vtm_negative_probs"]

logger = logging.getLogger(__name__)

RowConvention = Literal["albef", "release"]
ROW_CONVENTIONS: tuple[str, ...] = ("albef", "release")
_fallback_warned = False


class Replaced(enum.IntEnum):
    """Which side of a VTM pair was replaced by a sampled negative."""

    NONE = 0  # true pair, label 1
    VIDEO = 1  # text kept, video replaced
    TEXT = 2  # video kept, text replaced


class VTMPairs(NamedTuple):
    """Pairs for this rank's fused VTM pass; indices are GLOBAL rows of the all-gathered batch."""

    video_index: Tensor  # (B,) int64
    text_index: Tensor  # (B,) int64
    labels: Tensor  # (B,) int64, 1 = matching pair, 0 = negative
    replaced: Tensor  # (B,) int64, a Replaced code per slot


def _check_inputs(similarity: Tensor, positive_mask: Tensor, rank: int, local_batch: int, temperature: float) -> None:
    if similarity.dim() != 2 or similarity.shape[0] != similarity.shape[1]:
        raise ValueError(f"similarity must be square (N, N) [text, video]; got {tuple(similarity.shape)}")
    if positive_mask.shape != similarity.shape or positive_mask.dtype != torch.bool:
        raise ValueError(
            f"positive_mask must be a bool tensor of shape {tuple(similarity.shape)}; "
            f"got {positive_mask.dtype} {tuple(positive_mask.shape)}"
        )
    n = similarity.shape[0]
    if local_batch < 1 or rank < 0 or (rank + 1) * local_batch > n:
        raise ValueError(
            f"rank {rank} with local_batch {local_batch} needs rows up to {(rank + 1) * local_batch}; N={n}"
        )
    if n < 2:
        raise ValueError("VTM negatives need at least 2 items in the gathered batch; got N=1 (increase the batch size)")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive; got {temperature}")


def _masked_logits(
    similarity: Tensor,
    positive_mask: Tensor,
    rows: Tensor,
    temperature: float,
    row_convention: RowConvention,
) -> tuple[Tensor, Tensor]:
    """Log-weights ``(R, N)`` over replacement videos and over replacement texts for global items ``rows``.

    Excluded candidates are ``-inf``; a row with no admissible candidate becomes uniform over ``j != i``.
    """
    global _fallback_warned
    if row_convention not in ROW_CONVENTIONS:
        raise ValueError(f"row_convention must be one of {ROW_CONVENTIONS}; got {row_convention!r}")
    s = similarity.detach().float() / temperature  # (N, N) [text, video]
    text_row = s[rows, :]  # (R, N): text i against every video
    video_row = s[:, rows].transpose(0, 1)  # (R, N): video i against every text
    if row_convention == "albef":
        video_logits, text_logits = text_row, video_row
    else:  # release: the replacement video follows video i's row, the replacement text follows text i's row
        video_logits, text_logits = video_row, text_row
    n = s.shape[0]
    is_self = torch.zeros(len(rows), n, dtype=torch.bool, device=s.device)
    is_self[torch.arange(len(rows), device=s.device), rows] = True
    excluded = (positive_mask[rows, :] | positive_mask[:, rows].transpose(0, 1)).to(s.device) | is_self  # (R, N)
    no_candidate = excluded.all(dim=1, keepdim=True)  # (R, 1)
    if bool(no_candidate.any()):
        if not _fallback_warned:
            logger.warning(
                "VTM: %d item(s) have every other item of the gathered batch as an EgoNCE positive; their negatives "
                "are drawn uniformly from the other items (this warning is shown once)",
                int(no_candidate.sum()),
            )
            _fallback_warned = True
        excluded = torch.where(no_candidate, is_self, excluded)
        uniform = torch.zeros_like(video_logits)
        video_logits = torch.where(no_candidate, uniform, video_logits)
        text_logits = torch.where(no_candidate, uniform, text_logits)
    neg_inf = float("-inf")
    return video_logits.masked_fill(excluded, neg_inf), text_logits.masked_fill(excluded, neg_inf)


@torch.no_grad()
def vtm_negative_probs(
    similarity: Tensor,
    positive_mask: Tensor,
    rows: Tensor,
    temperature: float = 0.05,
    row_convention: RowConvention = "albef",
) -> tuple[Tensor, Tensor]:
    """The sampling distributions of :func:`sample_vtm_pairs` for global items ``rows (R,)``.

    Returns ``(video_probs, text_probs)``, each ``(R, N)`` float32 summing to 1 per row: the probability of each
    video replacing item ``i``'s video (text kept), and of each text replacing its text (video kept).
    """
    video_logits, text_logits = _masked_logits(similarity, positive_mask, rows, temperature, row_convention)
    return video_logits.softmax(dim=1), text_logits.softmax(dim=1)


@torch.no_grad()
def sample_vtm_pairs(
    similarity: Tensor,
    positive_mask: Tensor,
    rank: int,
    local_batch: int,
    temperature: float = 0.05,
    generator: torch.Generator | None = None,
    row_convention: RowConvention = "albef",
    random_fraction: float = 0.0,
) -> VTMPairs:
    """Sample this rank's VTM pairs: half true pairs, half hard negatives (see the module docstring).

    Args:
        similarity: ``(N, N)`` [text, video] similarity of the gathered batch, e.g. ``EgoNCEOutput.similarity``
            (cosine; use ``temperature=0.05``). Logits already divided by a temperature work with ``temperature=1``.
        positive_mask: ``(N, N)`` bool EgoNCE positives (``EgoNCEOutput.positive_mask``); never drawn as negatives.
        rank: this rank; its items are the global rows ``rank * local_batch ... rank * local_batch + local_batch - 1``.
        local_batch: B, the per-rank batch size.
        temperature: the sampling weights are ``softmax(similarity / temperature)`` in float32.
        generator: makes the draw deterministic; sampling runs on the generator's device. ``None``: global RNG on
            the similarity's device.
        row_convention: ``"albef"`` (default) or ``"release"``; see the module docstring.
        random_fraction: the probability that a negative slot ignores the similarity and draws its replacement
            uniformly from the admissible items (not ``i``, not an EgoNCE positive). 0 (default, the release): every
            negative is a hard one.

    Returns:
        :class:`VTMPairs` of ``(B,)`` tensors on the similarity's device.
    """
    _check_inputs(similarity, positive_mask, rank, local_batch, temperature)
    if not 0.0 <= random_fraction <= 1.0:
        raise ValueError(f"random_fraction must be in [0, 1]; got {random_fraction}")
    device = similarity.device
    rng_device = generator.device if generator is not None else device
    rows = torch.arange(rank * local_batch, (rank + 1) * local_batch, device=device)  # (B,) global items
    video_logits, text_logits = _masked_logits(similarity, positive_mask, rows, temperature, row_convention)

    num_pos = local_batch // 2
    labels = torch.cat([torch.ones(num_pos, dtype=torch.int64), torch.zeros(local_batch - num_pos, dtype=torch.int64)])
    labels = labels.to(rng_device)[torch.randperm(local_batch, generator=generator, device=rng_device)]
    replace_video = torch.rand(local_batch, generator=generator, device=rng_device) < 0.5  # (B,) fair coin per slot
    # Gumbel-max: argmax(logits + Gumbel noise) is an exact draw from softmax(logits); -inf entries can never win
    u = torch.rand(video_logits.shape, generator=generator, device=rng_device)
    gumbel = -torch.log(-torch.log(u.clamp_(min=torch.finfo(torch.float32).tiny)))  # (B, N)
    logits = torch.where(replace_video[:, None], video_logits.to(rng_device), text_logits.to(rng_device))
    if random_fraction > 0:  # easy slots: uniform over the admissible items (the -inf entries stay excluded)
        easy = torch.rand(local_batch, generator=generator, device=rng_device) < random_fraction  # (B,)
        logits = torch.where(easy[:, None] & logits.isfinite(), torch.zeros_like(logits), logits)
    drawn = (logits + gumbel).argmax(dim=1)  # (B,)

    rows_r = rows.to(rng_device)
    negative = labels == 0
    video_index = torch.where(negative & replace_video, drawn, rows_r)
    text_index = torch.where(negative & ~replace_video, drawn, rows_r)
    replaced = torch.where(negative, torch.where(replace_video, int(Replaced.VIDEO), int(Replaced.TEXT)), 0)
    return VTMPairs(video_index.to(device), text_index.to(device), labels.to(device), replaced.to(device))


def vtm_loss(
    logits: Tensor, labels: Tensor, world_size: int = 1, num_pairs_global: int | Tensor | None = None
) -> Tensor:
    """Mean cross-entropy of the VTM head: ``logits (B, 2)`` (index 1 = match), ``labels (B,)`` in {0, 1}.

    ``num_pairs_global=None`` (equal local batches, the normal case) gives the local mean, whose DDP average is the
    global-mean gradient. Otherwise returns ``local_sum * world_size / num_pairs_global``, exact for unequal batches.
    """
    if logits.dim() != 2 or logits.shape[1] != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(f"expected logits (B, 2) and labels (B,); got {tuple(logits.shape)}, {tuple(labels.shape)}")
    local_sum = F.cross_entropy(
        logits.to(torch.promote_types(logits.dtype, torch.float32)), labels.long(), reduction="sum"
    )
    if num_pairs_global is None:
        num_pairs_global = logits.shape[0] * world_size
    count = torch.as_tensor(num_pairs_global, device=logits.device).to(local_sum.dtype)
    return local_sum * world_size / count.clamp(min=1)


class VTMLoss(nn.Module):
    """Thin module around :func:`vtm_loss` (local mean; equal per-rank batch sizes)."""

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        """``logits (B, 2)``, ``labels (B,)`` -> 0-d loss."""
        return vtm_loss(logits, labels)
