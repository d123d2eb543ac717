"""RoBERTa text tower with HuggingFace parameter names, so ``roberta-base`` weights load by name.

An unfused layer computes exactly what ``transformers``' ``RobertaLayer`` computes (tested). A fused layer (one of the
top ``num_fusion_layers``) also holds ``crossattention_t2i`` and a gate ``alpha_t2i``; it attends to the video only
when video states are passed::

    a = dropout(dense(self_attn(h)))           # pre-residual, pre-LayerNorm
    a = a + alpha_t2i * cross_attn(a, video)   # fusion on
    a = LayerNorm(a + h);  out = LayerNorm(ffn(a) + a)
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from egovlp.models.config import TextConfig
from egovlp.models.distilbert import DistilBertModel
from egovlp.models.fusion import TextCrossAttention
from egovlp.models.layers import additive_mask, attention, init_linear_, merge_heads, split_heads


class RobertaEmbeddings(nn.Module):
    """Word + position + token-type embeddings, LayerNorm, dropout. Positions start at ``pad_token_id + 1``."""

    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.padding_idx = cfg.pad_token_id
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.width, padding_idx=cfg.pad_token_id)
        self.position_embeddings = nn.Embedding(cfg.max_positions, cfg.width, padding_idx=cfg.pad_token_id)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.width)
        self.LayerNorm = nn.LayerNorm(cfg.width, eps=cfg.ln_eps)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """``input_ids (B, L)`` -> ``(B, L, D)``. Padding tokens keep position ``padding_idx`` (as RoBERTa)."""
        if input_ids.shape[1] > self.position_embeddings.num_embeddings - self.padding_idx - 1:
            raise ValueError(
                f"text of {input_ids.shape[1]} tokens is longer than the {self.position_embeddings.num_embeddings} "
                "position embeddings allow"
            )
        not_pad = input_ids.ne(self.padding_idx).long()
        positions = torch.cumsum(not_pad, dim=1) * not_pad + self.padding_idx
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions)
        x = x + self.token_type_embeddings.weight[0]  # token type ids are all zero
        return self.dropout(self.LayerNorm(x))


class RobertaSelfAttention(nn.Module):
    """Multi-head self-attention projections (``attention.self``)."""

    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.num_heads = cfg.num_heads
        self.query = nn.Linear(cfg.width, cfg.width)
        self.key = nn.Linear(cfg.width, cfg.width)
        self.value = nn.Linear(cfg.width, cfg.width)
        self.dropout_p = cfg.dropout
        self.attn_impl = "sdpa"

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """``x (B, L, D)``, additive key mask ``(B, 1, 1, L)`` -> context ``(B, L, D)``."""
        h = self.num_heads
        q, k, v = split_heads(self.query(x), h), split_heads(self.key(x), h), split_heads(self.value(x), h)
        p = self.dropout_p if self.training else 0.0
        return merge_heads(attention(q, k, v, mask, dropout_p=p, impl=self.attn_impl))


class RobertaSelfOutput(nn.Module):
    """``attention.output``: dense + dropout; its LayerNorm is applied by the layer after the residual."""

    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.width, cfg.width)
        self.LayerNorm = nn.LayerNorm(cfg.width, eps=cfg.ln_eps)
        self.dropout = nn.Dropout(cfg.dropout)


class RobertaAttention(nn.Module):
    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.self = RobertaSelfAttention(cfg)
        self.output = RobertaSelfOutput(cfg)


class RobertaIntermediate(nn.Module):
    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.width, cfg.ffn_dim)


class RobertaOutput(nn.Module):
    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.ffn_dim, cfg.width)
        self.LayerNorm = nn.LayerNorm(cfg.width, eps=cfg.ln_eps)
        self.dropout = nn.Dropout(cfg.dropout)


class RobertaLayer(nn.Module):
    """One RoBERTa layer; ``fused=True`` adds the gated text-to-video cross-attention."""

    def __init__(self, cfg: TextConfig, fused: bool = False, video_dim: int | None = None) -> None:
        super().__init__()
        self.attention = RobertaAttention(cfg)
        if fused:
            self.crossattention_t2i = TextCrossAttention(cfg.width, video_dim or cfg.width, cfg.num_heads, cfg.dropout)
            self.alpha_t2i = nn.Parameter(torch.zeros(1))
        self.intermediate = RobertaIntermediate(cfg)
        self.output = RobertaOutput(cfg)

    def forward(self, h: torch.Tensor, mask: torch.Tensor | None, video: torch.Tensor | None = None) -> torch.Tensor:
        """``h (B, L, D)``; ``video (B, N, Dv)`` turns the cross-attention on (fused layers only)."""
        att = self.attention
        a = att.output.dropout(att.output.dense(att.self(h, mask)))
        if video is not None:
            a = a + self.alpha_t2i * self.crossattention_t2i(a, video)
        a = att.output.LayerNorm(a + h)
        ffn = self.output.dropout(self.output.dense(F.gelu(self.intermediate.dense(a))))
        return self.output.LayerNorm(ffn + a)


class RobertaEncoder(nn.Module):
    def __init__(self, cfg: TextConfig, num_fusion_layers: int, video_dim: int) -> None:
        super().__init__()
        first_fused = cfg.depth - num_fusion_layers
        self.layer = nn.ModuleList(RobertaLayer(cfg, i >= first_fused, video_dim) for i in range(cfg.depth))


class RobertaModel(nn.Module):
    """The text tower. ``forward`` returns ``last_hidden_state (B, L, D)``; the dual feature is its ``[:, 0]``."""

    def __init__(self, cfg: TextConfig, num_fusion_layers: int = 0, video_dim: int | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.embeddings = RobertaEmbeddings(cfg)
        self.encoder = RobertaEncoder(cfg, num_fusion_layers, video_dim or cfg.width)
        self.grad_checkpointing = False
        self.reset_parameters()

    def reset_parameters(self, std: float = 0.02) -> None:
        """BERT-style init (fusion gates stay 0)."""
        self.apply(functools.partial(init_linear_, std=std))

    def run_layer(self, i: int, h: torch.Tensor, mask: torch.Tensor | None, video=None) -> torch.Tensor:
        """Layer ``i``, through gradient checkpointing when enabled and training."""
        layer = self.encoder.layer[i]
        if self.grad_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(layer, h, mask, video, use_reentrant=False)
        return layer(h, mask, video)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``input_ids (B, L)``, ``attention_mask (B, L)`` of 1/0 -> ``(B, L, D)``; cross-attention never runs."""
        h = self.embeddings(input_ids)
        mask = None if attention_mask is None else additive_mask(attention_mask, h.dtype)
        for i in range(len(self.encoder.layer)):
            h = self.run_layer(i, h, mask)
        return h


class TextTower(Protocol):
    """What the fusion model needs of a text tower (every implementation in :data:`TEXT_TOWERS` provides it).

    ``forward(input_ids (B, L), attention_mask (B, L)) -> (B, L, D)`` runs every layer without cross-attention;
    ``embeddings(input_ids) -> (B, L, D)`` and ``run_layer(i, h, additive_mask, video=None)`` let the fusion model
    run the layers one by one and pass video states to the fused ones (the top ``num_fusion_layers``).
    """

    cfg: TextConfig
    grad_checkpointing: bool

    def embeddings(self, input_ids: torch.Tensor) -> torch.Tensor: ...

    def run_layer(
        self, i: int, h: torch.Tensor, mask: torch.Tensor | None, video: torch.Tensor | None = None
    ) -> torch.Tensor: ...

    def reset_parameters(self, std: float = 0.02) -> None: ...

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor: ...


#: text tower implementations by ``TextConfig.kind``: ``(cfg, num_fusion_layers, video_dim) -> module``
TEXT_TOWERS: dict[str, Callable[[TextConfig, int, int], nn.Module]] = {
    "roberta": RobertaModel,
    "distilbert": DistilBertModel,
}


def build_text_tower(cfg: TextConfig, num_fusion_layers: int, video_dim: int) -> nn.Module:
    """The text tower ``cfg.kind`` with gated cross-attention to ``video_dim``-wide states in its top layers."""
    return TEXT_TOWERS[cfg.kind](cfg, num_fusion_layers, video_dim)
