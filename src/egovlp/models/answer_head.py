"""The EgoTaskQA answer classifier of the release (downstream.md §1), with its parameter names.

``projector_1`` Linear(in_dim, n_answers) -> ReLU -> Dropout(0.2) -> ``projector_2`` Linear(n_answers, n_answers).
In fusion mode the input is the fused video CLS after the fusion-mode norm (``Dv``, 768 for base); in the dual
baseline it is the dual video CLS and text CLS concatenated (``Dv + Dt``), unprojected.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["AnswerHead"]


class AnswerHead(nn.Module):
    """``(B, in_dim) -> (B, num_answers)`` answer logits."""

    def __init__(self, in_dim: int, num_answers: int, dropout: float = 0.2) -> None:
        super().__init__()
        self.projector_1 = nn.Linear(in_dim, num_answers)
        self.act = nn.ReLU()
        self.dropout = nn.Dropout(dropout)
        self.projector_2 = nn.Linear(num_answers, num_answers)

    @property
    def in_dim(self) -> int:
        return self.projector_1.in_features

    @property
    def num_answers(self) -> int:
        return self.projector_2.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector_2(self.dropout(self.act(self.projector_1(x))))
