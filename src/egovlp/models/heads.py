"""Heads on top of the towers: contrastive projectors, video-text matching (VTM) and masked language modelling (MLM)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def build_projector(kind: str, in_dim: int, embed_dim: int, modality: str) -> nn.Module:
    """Projector of the dual-encoder CLS feature into the joint space (release layouts and parameter indices).

    - ``"mlp"`` (pre-training checkpoint): ``Linear(in, E, bias=False) -> ReLU -> Linear(E, E) -> ReLU -> Linear(E, E)``
      (indices 0, 2, 4) for both modalities.
    - ``"small"`` (EK-100 / Charades checkpoints): text ``ReLU -> Linear(in, E)`` (index 1: the ReLU comes first),
      video ``Linear(in, E)`` (index 0).
    - ``"none"``: identity.
    """
    if kind == "mlp":
        return nn.Sequential(
            nn.Linear(in_dim, embed_dim, bias=False),
            nn.ReLU(),
            nn.Linear(embed_dim, embed_dim),
            nn.ReLU(),
            nn.Linear(embed_dim, embed_dim),
        )
    if kind == "small":
        if modality == "text":
            return nn.Sequential(nn.ReLU(), nn.Linear(in_dim, embed_dim))
        return nn.Sequential(nn.Linear(in_dim, embed_dim))
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown projector {kind!r}")


class Pooler(nn.Module):
    """``tanh(dense(x))`` on a CLS feature ``(B, D)``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dense = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(x))


class VTMHead(nn.Module):
    """Match classifier ``fc: Linear(2D, 2)`` on ``cat([pooled_text, pooled_video])``; P(match) = softmax[:, 1]."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.fc = nn.Linear(dim, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


class MLMTransform(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dense = nn.Linear(dim, dim)
        self.LayerNorm = nn.LayerNorm(dim, eps=1e-12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(F.gelu(self.dense(x)))


class MLMHead(nn.Module):
    """``transform (dense -> GELU -> LayerNorm 1e-12) -> decoder (no bias) + bias``; NOT tied to word embeddings."""

    def __init__(self, dim: int, vocab_size: int) -> None:
        super().__init__()
        self.transform = MLMTransform(dim)
        self.decoder = nn.Linear(dim, vocab_size, bias=False)
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, L, D) -> (B, L, V)`` logits."""
        return self.decoder(self.transform(x)) + self.bias
