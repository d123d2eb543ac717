"""Small building blocks shared by the towers: attention (fast and reference paths), MLP, stochastic depth.

Every attention in egovlp goes through :func:`attention`, which runs ``F.scaled_dot_product_attention`` ("sdpa",
the default) or an explicit ``softmax(q k^T * scale + mask) v`` ("reference"). Tests check the two agree; the
benchmarks compare their speed. Modules that attend carry an ``attn_impl`` attribute, switched model-wide with
:func:`set_attention_impl`.
"""

from __future__ import annotations

from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

ATTENTION_IMPLS = ("sdpa", "reference")


def attention_weights(q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``softmax(q k^T * d ** -0.5 + mask)``: the attention probabilities ``(..., Lq, Lk)`` of queries
    ``q (..., Lq, d)`` over keys ``k (..., Lk, d)``; ``mask`` additive as in :func:`reference_attention`."""
    scores = torch.matmul(q, k.transpose(-1, -2)) * (q.shape[-1] ** -0.5)
    if mask is not None:
        scores = scores + mask
    return scores.softmax(dim=-1)


def reference_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None, dropout_p: float = 0.0
) -> torch.Tensor:
    """Explicit scaled dot-product attention, the slow path the fast one is tested against.

    Args:
        q: queries ``(..., Lq, d)``; k, v: keys and values ``(..., Lk, d)``.
        mask: additive mask broadcastable to ``(..., Lq, Lk)`` (0 to keep, a large negative number to drop).
    Returns: ``(..., Lq, d)``.
    """
    probs = attention_weights(q, k, mask)
    if dropout_p > 0.0:
        probs = F.dropout(probs, p=dropout_p)
    return torch.matmul(probs, v)


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    impl: str = "sdpa",
) -> torch.Tensor:
    """Scaled dot-product attention with scale ``d ** -0.5``; ``impl`` picks SDPA or the explicit reference.

    Shapes as :func:`reference_attention`. ``dropout_p`` must already be 0 in eval mode (callers pass
    ``self.dropout_p if self.training else 0``).
    """
    if impl == "sdpa":
        if mask is not None and mask.dtype != q.dtype:
            mask = mask.to(q.dtype)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
    if impl == "reference":
        return reference_attention(q, k, v, mask, dropout_p)
    raise ValueError(f"unknown attention implementation {impl!r}; expected one of {ATTENTION_IMPLS}")


def set_attention_impl(module: nn.Module, impl: str) -> None:
    """Switch every attention inside ``module`` to ``impl`` ("sdpa" or "reference")."""
    if impl not in ATTENTION_IMPLS:
        raise ValueError(f"unknown attention implementation {impl!r}; expected one of {ATTENTION_IMPLS}")
    for m in module.modules():
        if hasattr(m, "attn_impl"):
            cast(Any, m).attn_impl = impl  # a plain attribute of the attention modules, not a parameter or buffer


def additive_mask(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Key-padding mask ``(B, L)`` of 1 (keep) / 0 (pad) -> additive ``(B, 1, 1, L)`` of 0 / ``finfo(dtype).min``.

    This is the mask HuggingFace's ``get_extended_attention_mask`` builds, so padded keys get exactly the same
    logits as in the release.
    """
    mask = attention_mask[:, None, None, :].to(dtype)
    return (1.0 - mask) * torch.finfo(dtype).min


def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """``(B, L, H*d) -> (B, H, L, d)``."""
    b, n, c = x.shape
    return x.view(b, n, num_heads, c // num_heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """``(B, H, L, d) -> (B, L, H*d)``."""
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


class Mlp(nn.Module):
    """Transformer MLP ``fc1 -> GELU -> fc2`` (timm names)."""

    def __init__(self, dim: int, hidden_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch per sample with probability ``p`` (training only)."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        return x * x.new_empty(shape).bernoulli_(keep) / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


def init_linear_(module: nn.Module, std: float = 0.02) -> None:
    """Truncated-normal weights and zero biases for Linear/Conv/Embedding, unit LayerNorm (BERT/ViT convention).

    ``std`` = 0.02 is the BERT/ViT value for width 768; narrow models train better from about ``1 / sqrt(width)``.
    """
    if isinstance(module, (nn.Linear, nn.Conv2d)):
        nn.init.trunc_normal_(module.weight, std=std, a=-2 * std, b=2 * std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.trunc_normal_(module.weight, std=std, a=-2 * std, b=2 * std)
        if module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
