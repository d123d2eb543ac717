"""DistilBERT text tower with HuggingFace parameter names, so ``distilbert-base-uncased`` weights load by name.

The text tower of Frozen-in-Time, EgoVLP (v1) and OA-Trans. A layer is post-LN (LayerNorm eps 1e-12), with exact
GELU; positions are learned and start at 0 (no padding offset, unlike RoBERTa); there are no token-type embeddings::

    h = dropout(LayerNorm(word(ids) + position(arange(L))))
    a = sa_layer_norm(h + out_lin(self_attn(h)))
    out = output_layer_norm(a + dropout(lin2(gelu(lin1(a)))))

It computes what ``transformers``' ``DistilBertModel`` computes (tested on the same random weights). It has no
cross-attention: the families that use it are dual encoders, so asking for fusion layers is a :class:`ConfigError`.
The dual-encoder text feature is the first (``[CLS]``) state, ``forward(...)[:, 0]``.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from egovlp.errors import ConfigError
from egovlp.models.config import TextConfig
from egovlp.models.layers import additive_mask, attention, init_linear_, merge_heads, split_heads

log = logging.getLogger(__name__)

__all__ = ["DistilBertModel", "distilbert_state_dict", "load_distilbert"]


class DistilBertEmbeddings(nn.Module):
    """Word + learned position embeddings (positions ``0 .. L-1``), LayerNorm, dropout."""

    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.width, padding_idx=cfg.pad_token_id)
        self.position_embeddings = nn.Embedding(cfg.max_positions, cfg.width)
        self.LayerNorm = nn.LayerNorm(cfg.width, eps=cfg.ln_eps)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """``input_ids (B, L)`` -> ``(B, L, D)``; padding tokens get positions like any other (as DistilBERT)."""
        length = input_ids.shape[1]
        if length > self.position_embeddings.num_embeddings:
            raise ValueError(
                f"text of {length} tokens is longer than the {self.position_embeddings.num_embeddings} "
                "position embeddings allow"
            )
        positions = torch.arange(length, device=input_ids.device)
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions)[None]
        return self.dropout(self.LayerNorm(x))


class DistilBertSelfAttention(nn.Module):
    """Multi-head self-attention (``attention.{q_lin,k_lin,v_lin,out_lin}``); dropout on the attention weights."""

    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.num_heads = cfg.num_heads
        self.q_lin = nn.Linear(cfg.width, cfg.width)
        self.k_lin = nn.Linear(cfg.width, cfg.width)
        self.v_lin = nn.Linear(cfg.width, cfg.width)
        self.out_lin = nn.Linear(cfg.width, cfg.width)
        self.dropout_p = cfg.dropout
        self.attn_impl = "sdpa"

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """``x (B, L, D)``, additive key mask ``(B, 1, 1, L)`` -> ``out_lin(context)`` ``(B, L, D)``."""
        h = self.num_heads
        q, k, v = split_heads(self.q_lin(x), h), split_heads(self.k_lin(x), h), split_heads(self.v_lin(x), h)
        p = self.dropout_p if self.training else 0.0
        return self.out_lin(merge_heads(attention(q, k, v, mask, dropout_p=p, impl=self.attn_impl)))


class DistilBertFFN(nn.Module):
    """``dropout(lin2(gelu(lin1(x))))``."""

    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.lin1 = nn.Linear(cfg.width, cfg.ffn_dim)
        self.lin2 = nn.Linear(cfg.ffn_dim, cfg.width)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.lin2(F.gelu(self.lin1(x))))


class DistilBertLayer(nn.Module):
    """One post-LN DistilBERT layer (``transformer.layer.{i}``)."""

    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.attention = DistilBertSelfAttention(cfg)
        self.sa_layer_norm = nn.LayerNorm(cfg.width, eps=cfg.ln_eps)
        self.ffn = DistilBertFFN(cfg)
        self.output_layer_norm = nn.LayerNorm(cfg.width, eps=cfg.ln_eps)

    def forward(self, h: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """``h (B, L, D)``, additive key mask ``(B, 1, 1, L)`` or None -> ``(B, L, D)``."""
        a = self.sa_layer_norm(h + self.attention(h, mask))
        return self.output_layer_norm(a + self.ffn(a))


class DistilBertTransformer(nn.Module):
    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(DistilBertLayer(cfg) for _ in range(cfg.depth))


class DistilBertModel(nn.Module):
    """The text tower (:class:`egovlp.models.text.TextTower`). ``forward`` returns ``last_hidden_state (B, L, D)``.

    Args:
        cfg: the text config (``kind="distilbert"``; ``type_vocab_size`` is unused: DistilBERT has no token types).
        num_fusion_layers: must be 0 (DistilBERT towers have no cross-attention).
        video_dim: unused; accepted for the :data:`egovlp.models.text.TEXT_TOWERS` signature.
    """

    def __init__(self, cfg: TextConfig, num_fusion_layers: int = 0, video_dim: int | None = None) -> None:
        super().__init__()
        if num_fusion_layers:
            raise ConfigError(
                f"the DistilBERT text tower has no fusion layers: model.num_fusion_layers must be 0, "
                f"got {num_fusion_layers}"
            )
        self.cfg = cfg
        self.embeddings = DistilBertEmbeddings(cfg)
        self.transformer = DistilBertTransformer(cfg)
        self.grad_checkpointing = False
        self.reset_parameters()

    def reset_parameters(self, std: float = 0.02) -> None:
        """BERT-style init: truncated normal ``std`` weights, zero biases, unit LayerNorms, zero padding row."""
        self.apply(functools.partial(init_linear_, std=std))

    def run_layer(
        self, i: int, h: torch.Tensor, mask: torch.Tensor | None, video: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Layer ``i`` on ``h (B, L, D)`` with an additive mask ``(B, 1, 1, L)``; checkpointed when enabled."""
        if video is not None:
            raise ValueError("the DistilBERT text tower has no cross-attention; it cannot attend to video states")
        layer = self.transformer.layer[i]
        if self.grad_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(layer, h, mask, use_reentrant=False)
        return layer(h, mask)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``input_ids (B, L)``, ``attention_mask (B, L)`` of 1 (token) / 0 (padding) -> ``(B, L, D)``."""
        h = self.embeddings(input_ids)
        mask = None if attention_mask is None else additive_mask(attention_mask, h.dtype)
        for i in range(len(self.transformer.layer)):
            h = self.run_layer(i, h, mask)
        return h


# ------------------------------------------------------------------------------------ HuggingFace weights
_HF_HEADS = ("vocab_transform.", "vocab_layer_norm.", "vocab_projector.", "pre_classifier.", "classifier.", "qa_")


def distilbert_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """HuggingFace DistilBERT weights (a directory such as ``distilbert-base-uncased``, or its weight file) in the
    tower's names: the ``distilbert.`` prefix of task models removed, their heads and ``position_ids`` dropped."""
    from egovlp.models.pretrained import _find_file, _read_tensors

    file = _find_file(path, ("model.safetensors", "pytorch_model.bin"))
    out = {}
    for k, v in _read_tensors(file).items():
        k = k.removeprefix("distilbert.")
        if k.startswith(_HF_HEADS) or k.endswith("position_ids"):
            continue
        out[k] = v
    return out


def load_distilbert(tower: nn.Module, path: str | Path) -> None:
    """Load HuggingFace DistilBERT weights (see :func:`distilbert_state_dict`) into a DistilBERT ``tower`` strictly.

    Missing, unexpected and mis-shaped keys are a :class:`CheckpointError` naming them and ``path``.
    """
    from egovlp.models.pretrained import _load_partial

    state = distilbert_state_dict(path)
    _load_partial(tower, state, f"{path} (DistilBERT tower)", keep_init=())  # nothing may stay at its init
    log.info("text tower initialised from %s (%d tensors)", path, len(state))
