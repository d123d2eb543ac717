"""All-gather across data-parallel ranks, with an explicit choice of how the gradient flows back.

Contrastive losses (EgoNCE, the EK-100 max-margin loss) and the VTM hard-negative pool see the whole global batch:
every rank gathers the embeddings of all ranks, concatenated along dim 0 in rank order, and computes the same loss
over the gathered ``(W * B, ...)`` tensor. What the backward pass does with the gradient of that gathered tensor
decides the scale of the parameter gradient, and the two choices in use differ by a factor of the world size W.
:class:`GatherGrad` names them.

``GatherGrad.LOCAL`` ("release")
    Backward returns only this rank's slice of the gathered tensor's gradient; the gradients other ranks computed for
    our rows are ignored. This is what the official EgoVLP / EgoVLPv2 ``AllGather_multi`` does. Each rank computes the
    same loss ``L`` over the gathered batch, so rank ``r`` obtains ``dL/dx_r * dx_r/dtheta``: the contribution of its
    own samples to the full-batch gradient. DistributedDataParallel then *averages* over the W ranks, so the final
    parameter gradient is ``(1 / W) * dL/dtheta``: the single-process full-batch gradient divided by W. With a
    fixed optimiser this acts like a learning rate divided by W (exactly so for SGD; Adam is nearly scale-invariant,
    which is why the release trains fine).

``GatherGrad.FULL``
    Backward first sums (all-reduces) the gathered tensor's gradient over all ranks, then returns this rank's slice.
    That is the true gradient of ``sum_r L_r`` (the losses of all ranks) with respect to the local input. When every
    rank computes the same ``L``, rank ``r`` obtains ``W * dL/dx_r``, and after DDP averages over W ranks the
    parameter gradient equals ``dL/dtheta``: exactly the single-process gradient over the full batch. This is the
    default, and what ``torch.distributed.nn.functional.all_gather`` does. It costs one all-reduce of the gathered
    gradient per gather in the backward pass.

Every rank must run the backward pass of a ``FULL`` gather (it holds a collective), and the per-rank tensors must have
the same shape (pad a short last batch, or drop it, before gathering). Both gathers return ``x`` unchanged when
``torch.distributed`` is not initialised or the world size is 1, so single-process code needs no special case.
"""

from __future__ import annotations

import enum

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["GatherGrad", "all_gather", "all_gather_nograd", "world_info"]

_SHAPE_SLOTS = 8  # fixed length of the shape descriptor gathered to check that all ranks agree


class GatherGrad(str, enum.Enum):
    """How the backward pass of :func:`all_gather` treats the gradient of the gathered tensor (see module docstring)."""

    LOCAL = "local"  # official release: local slice only; DDP-averaged gradient = full-batch gradient / W
    FULL = "full"  # all-reduce then slice; DDP-averaged gradient = full-batch gradient exactly

    @classmethod
    def _missing_(cls, value: object) -> GatherGrad | None:
        # config spelling: "release" is the official code's choice, LOCAL; matching is case-insensitive
        if isinstance(value, str):
            value = value.lower()
            if value == "release":
                return cls.LOCAL
            for member in cls:
                if member.value == value:
                    return member
        return None


def world_info(group: dist.ProcessGroup | None = None) -> tuple[int, int]:
    """Return ``(rank, world_size)`` in ``group``, or ``(0, 1)`` when ``torch.distributed`` is not in use."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(group), dist.get_world_size(group)
    return 0, 1


def _check_same_shape(x: Tensor, world_size: int, group: dist.ProcessGroup | None) -> None:
    """Raise ValueError unless every rank holds a tensor of the same shape as ``x`` (one tiny all-gather)."""
    shape = list(x.shape)
    desc = [x.dim(), x.numel(), *shape[: _SHAPE_SLOTS - 2]]
    desc += [-1] * (_SHAPE_SLOTS - len(desc))
    mine = torch.tensor(desc, dtype=torch.int64, device=x.device)
    everyone = [torch.empty_like(mine) for _ in range(world_size)]
    dist.all_gather(everyone, mine, group=group)
    if any(not torch.equal(other, mine) for other in everyone):
        shapes = [tuple(d for d in t.tolist()[2:] if d >= 0) for t in everyone]
        raise ValueError(
            f"all_gather needs tensors of the same shape on every rank; got shapes {shapes} (rank order). "
            "Pad or drop the short last batch (e.g. DistributedSampler with drop_last=True) before gathering."
        )


def _gather_cat(x: Tensor, world_size: int, group: dist.ProcessGroup | None) -> Tensor:
    x = x.contiguous()
    parts = [torch.empty_like(x) for _ in range(world_size)]
    dist.all_gather(parts, x, group=group)
    return torch.cat(parts, dim=0)


class _AllGather(torch.autograd.Function):
    """Concatenating all-gather whose backward follows a :class:`GatherGrad` choice."""

    @staticmethod
    def forward(ctx, x: Tensor, grad: GatherGrad, group: dist.ProcessGroup | None, rank: int, world_size: int):
        ctx.grad, ctx.group, ctx.rank, ctx.local = grad, group, rank, x.shape[0]
        return _gather_cat(x, world_size, group)

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        grad_output = grad_output.contiguous()
        if ctx.grad is GatherGrad.FULL:
            # every rank's loss may depend on our rows: sum their gradients before taking our slice
            grad_output = grad_output.clone()
            dist.all_reduce(grad_output, op=dist.ReduceOp.SUM, group=ctx.group)
        start = ctx.rank * ctx.local
        return grad_output[start : start + ctx.local], None, None, None, None


def all_gather(
    x: Tensor,
    grad: GatherGrad | str = GatherGrad.FULL,
    group: dist.ProcessGroup | None = None,
    *,
    check_shapes: bool = True,
) -> Tensor:
    """Gather ``x`` from every rank and concatenate along dim 0 in rank order, differentiably.

    Args:
        x: this rank's tensor ``(B, ...)``; every rank must pass the same shape and dtype.
        grad: gradient semantics of the backward pass, :class:`GatherGrad` (``FULL`` by default).
        group: process group; ``None`` is the default group.
        check_shapes: gather the shapes first (one tiny extra collective) and raise ``ValueError`` if ranks differ.

    Returns:
        ``(W * B, ...)`` gathered tensor, or ``x`` itself when not distributed or ``W == 1``.
    """
    grad = GatherGrad(grad)
    rank, world_size = world_info(group)
    if world_size == 1:
        return x
    if x.dim() == 0:
        raise ValueError("all_gather concatenates along dim 0; got a 0-d tensor (use x.reshape(1))")
    if check_shapes:
        _check_same_shape(x, world_size, group)
    if not x.requires_grad:
        return _gather_cat(x, world_size, group)
    return _AllGather.apply(x, grad, group, rank, world_size)


@torch.no_grad()
def all_gather_nograd(x: Tensor, group: dist.ProcessGroup | None = None, *, check_shapes: bool = True) -> Tensor:
    """Gather ``x (B, ...)`` from every rank into ``(W * B, ...)`` without autograd (ids, labels, tags, raw inputs).

    Returns ``x`` unchanged when not distributed or ``W == 1``. Same shape rule as :func:`all_gather`.
    """
    _, world_size = world_info(group)
    if world_size == 1:
        return x
    if x.dim() == 0:
        raise ValueError("all_gather_nograd concatenates along dim 0; got a 0-d tensor (use x.reshape(1))")
    if check_shapes:
        _check_same_shape(x, world_size, group)
    return _gather_cat(x.detach(), world_size, group)
