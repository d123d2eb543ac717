"""Masked language modelling loss, averaged over the labelled tokens of the GLOBAL batch without gathering logits.

The target is the single-process full-batch mean ``sum_all_tokens CE / count_all`` (what the release gets by
all-gathering the ``(B*L, 50265)`` logits, which costs W times the logit memory). Each rank instead returns::

    loss_r = local_sum_r / global_count * W

DDP averages the gradients over the W ranks, so the final gradient is ``sum_r grad(local_sum_r) / global_count``:
exactly the full-batch mean gradient, even when ranks hold different numbers of labelled tokens. The value of
``loss_r`` is rank-local; the mean of ``loss_r`` over ranks is the global mean (log that, or log the local mean).
``global_count`` costs one all-reduce of a single integer: :func:`global_label_count`.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from egovlp.losses.gather import world_info

__all__ = ["IGNORE_INDEX", "MLMLoss", "global_label_count", "mlm_loss"]

IGNORE_INDEX = -100


def _upcast(x: Tensor) -> Tensor:
    """Half/bfloat16 -> float32 for the log-softmax; float32/float64 unchanged."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def global_label_count(
    labels: Tensor, ignore_index: int = IGNORE_INDEX, group: dist.ProcessGroup | None = None
) -> Tensor:
    """Number of labelled tokens (``labels != ignore_index``) summed over all ranks; a 0-d int64 tensor.

    Works without ``torch.distributed`` (returns the local count). Every rank must call it (one all-reduce).
    """
    count = (labels != ignore_index).sum().to(torch.int64)
    _, world_size = world_info(group)
    if world_size > 1:
        count = count.clone()
        dist.all_reduce(count, op=dist.ReduceOp.SUM, group=group)
    return count


def mlm_loss(
    logits: Tensor,
    labels: Tensor,
    world_size: int = 1,
    num_labels_global: int | Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> Tensor:
    """Cross-entropy over the labelled tokens, scaled so DDP-averaged gradients equal the global-batch mean.

    Args:
        logits: ``(B, L, V)`` vocabulary logits (half precision is upcast to float32 for the loss).
        labels: ``(B, L)`` target token ids, ``ignore_index`` (-100) where no loss is taken.
        world_size: number of data-parallel ranks W.
        num_labels_global: labelled tokens over ALL ranks (:func:`global_label_count`). ``None`` assumes every rank
            has as many as this one, which makes the result the plain local mean.

    Returns:
        0-d loss ``local_sum / num_labels_global * world_size``; 0 (still attached to the graph) when nothing is
        labelled.
    """
    if logits.dim() != 3 or labels.shape != logits.shape[:2]:
        raise ValueError(
            f"expected logits (B, L, V) and labels (B, L); got {tuple(logits.shape)}, {tuple(labels.shape)}"
        )
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1; got {world_size}")
    keep = labels != ignore_index  # (B, L)
    # only the ~15 % labelled positions go through log-softmax over the vocabulary
    # () and exactly 0, still attached to the graph through the indexing, when nothing is labelled
    local_sum = F.cross_entropy(_upcast(logits[keep]), labels[keep], reduction="sum")
    if num_labels_global is None:
        num_labels_global = keep.sum() * world_size
    count = torch.as_tensor(num_labels_global, device=logits.device).to(local_sum.dtype)
    return local_sum * world_size / count.clamp(min=1)


class MLMLoss(nn.Module):
    """:func:`mlm_loss` with the global label count obtained by an all-reduce over ``group`` (or locally)."""

    def __init__(self, ignore_index: int = IGNORE_INDEX, group: dist.ProcessGroup | None = None) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.group = group

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        """``logits (B, L, V)``, ``labels (B, L)`` on this rank -> 0-d loss (see :func:`mlm_loss`)."""
        _, world_size = world_info(self.group)
        count = global_label_count(labels, self.ignore_index, self.group) if world_size > 1 else None
        return mlm_loss(logits, labels, world_size, count, self.ignore_index)
