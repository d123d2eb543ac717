"""Fusion in the backbone: the gated cross-attention that the top layers of both towers hold.

Video side (inside the SPACE attention of a fused block; names as the release: ``attn.qkv_i2t`` ...)::

    a = proj(space_self_attn(norm1(t)))                 # pre-residual space-attention output
    q = qkv_i2t(norm_i2t_i(a)); k, v = split(qkv_text_i2t(text))   # text states raw, no LayerNorm
    a = a + alpha_i2t * proj_i2t(softmax(q k^T / sqrt(d) + text_pad_mask) v)

Text side (``crossattention_t2i`` of a fused RoBERTa layer; no LayerNorm)::

    a = a + alpha_t2i * dense(attention(query=a, key/value=video_states))

The gates are scalar parameters initialised to 0 and used without tanh, so a fresh model behaves as two
independent towers. Cross-attention is only executed when the caller passes the other modality's states.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from egovlp.models.layers import attention, attention_weights, merge_heads, split_heads
from egovlp.models.video import SpaceTimeAttention


class FusedSpaceAttention(SpaceTimeAttention):
    """Space attention of a fused video block: self-attention plus a gated video-to-text cross-attention."""

    def __init__(self, dim: int, num_heads: int, text_dim: int, qkv_bias: bool = True, dropout: float = 0.0) -> None:
        super().__init__(dim, num_heads, qkv_bias, dropout)
        self.qkv_text_i2t = nn.Linear(text_dim, dim * 2, bias=qkv_bias)  # rows [0, D) -> keys, [D, 2D) -> values
        self.qkv_i2t = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj_i2t = nn.Linear(dim, dim)
        self.proj_drop_i2t = nn.Dropout(dropout)
        self.alpha_i2t = nn.Parameter(torch.zeros(1))
        self.norm_i2t_i = nn.LayerNorm(dim, eps=1e-5)
        self.attn_dropout = dropout

    def cross_attend(self, a: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor | None) -> torch.Tensor:
        """Every video token queries the text tokens of its own sample (ungated output).

        Args:
            a: space-attention output ``(B, N, D)`` (pre-residual).
            text: raw text states ``(B, L, Dt)`` entering the paired text layer.
            text_mask: additive key mask ``(B, 1, 1, L)`` or None.
        Returns: ``(B, N, D)``.
        """
        h = self.num_heads
        q = split_heads(self.qkv_i2t(self.norm_i2t_i(a)), h)  # (B, H, N, d)
        k, v = self.qkv_text_i2t(text).chunk(2, dim=-1)
        p = self.attn_dropout if self.training else 0.0
        out = attention(q, split_heads(k, h), split_heads(v, h), text_mask, dropout_p=p, impl=self.attn_impl)
        return self.proj_drop_i2t(self.proj_i2t(merge_heads(out)))


class CrossAttentionKV(nn.Module):
    """Query/key/value projections of the text-to-video cross-attention (``crossattention_t2i.self``)."""

    def __init__(self, dim: int, kv_dim: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(kv_dim, dim)
        self.value = nn.Linear(kv_dim, dim)
        self.dropout_p = dropout
        self.attn_impl = "sdpa"
        #: a list while recording (EgoVLPv2.record_cross_attention): each forward appends its probabilities
        self.recording: list[torch.Tensor] | None = None

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """``x (B, L, D)`` attends to every token of ``context (B, N, Dv)`` (no mask) -> ``(B, L, D)``.

        While recording, the output is computed through the explicit probabilities ``(B, H, L, N)``, which are kept.
        """
        h = self.num_heads
        q, k, v = split_heads(self.query(x), h), split_heads(self.key(context), h), split_heads(self.value(context), h)
        p = self.dropout_p if self.training else 0.0
        if self.recording is None:
            return merge_heads(attention(q, k, v, dropout_p=p, impl=self.attn_impl))
        probs = attention_weights(q, k)  # (B, H, L, N)
        self.recording.append(probs.detach())
        return merge_heads(torch.matmul(F.dropout(probs, p) if p > 0 else probs, v))


class CrossAttentionOutput(nn.Module):
    """Output projection of the text-to-video cross-attention: ``dense`` + dropout, no LayerNorm."""

    def __init__(self, dim: int, dropout: float) -> None:
        super().__init__()
        self.dense = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.dense(x))


class TextCrossAttention(nn.Module):
    """Text-to-video cross-attention of a fused RoBERTa layer (ungated; the layer applies ``alpha_t2i``)."""

    def __init__(self, dim: int, video_dim: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.self = CrossAttentionKV(dim, video_dim, num_heads, dropout)
        self.output = CrossAttentionOutput(dim, dropout)

    def forward(self, x: torch.Tensor, video: torch.Tensor) -> torch.Tensor:
        return self.output(self.self(x, video))
