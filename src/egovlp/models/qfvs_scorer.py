"""The release's QFVS shot scorer: a small transformer over the shots of each KTS segment (downstream.md §4).

A video's per-shot features ``(S, D)`` are cut into segments (KTS change points, each at most ``max_len`` shots);
every segment is scored on its own::

    x = features[a:b] + PE[:b - a]                       # (L, D), PE restarts at 0 in every segment
    h = TransformerEncoder(x)                            # num_layers post-norm layers, num_heads heads, ReLU FFN
    logit = summ_head(Dropout(ReLU(projector_1(h))))     # (L,): Linear(D, 8) -> ReLU -> Dropout -> Linear(8, 1)

The release's position table is not the usual sinusoid: for even ``i`` it uses exponent ``2 i / D`` for the sine
and ``2 (i + 1) / D`` for the cosine of column ``i + 1``::

    PE[p, i] = sin(p / 10000 ** (2 i / D)),    PE[p, i + 1] = cos(p / 10000 ** (2 (i + 1) / D))

(the standard table uses ``i / D`` for both); kept here, as are its head init (``summ_head`` weight ~ N(0, 0.1), bias
``last_bias``, by default -1.91: sigmoid = 0.13, about the share of positive shots) and the BCE losses: for one query,
the mean BCE of the concept-1 prompt's scores against the shots tagged with concept 1, the same for concept 2, and
of the query prompt's scores against the oracle summary, summed (:func:`summary_bce_losses`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["QFVSScorer", "pack_segments", "release_position_table", "summary_bce_losses"]


def release_position_table(length: int, dim: int) -> torch.Tensor:
    """The release's sinusoidal table ``(length, dim)`` (see the module docstring; ``dim`` even)."""
    if dim % 2:
        raise ValueError(f"the position table needs an even width, got {dim}")
    pos = torch.arange(length, dtype=torch.float64)[:, None]
    even = torch.arange(0, dim, 2, dtype=torch.float64)[None, :]  # i = 0, 2, 4, ...
    table = torch.empty(length, dim, dtype=torch.float64)
    table[:, 0::2] = torch.sin(pos / 10000 ** (2 * even / dim))
    table[:, 1::2] = torch.cos(pos / 10000 ** (2 * (even + 1) / dim))
    return table.float()


def pack_segments(
    features: Sequence[torch.Tensor], segments: Sequence[Sequence[tuple[int, int]]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every segment of every video as one padded batch.

    Args:
        features: per video ``(S_i, D)``.
        segments: per video its ``[start, end)`` segments covering ``0..S_i`` in order.

    Returns:
        ``(N, L, D)`` segments (zero padding; N = all segments, L = the longest) and their lengths ``(N,)``.
    """
    pieces = [f[a:b] for f, segs in zip(features, segments) for a, b in segs]
    lengths = torch.tensor([len(p) for p in pieces], dtype=torch.long)
    return nn.utils.rnn.pad_sequence(pieces, batch_first=True), lengths


class QFVSScorer(nn.Module):
    """Shot logits of packed segments: ``forward((N, L, D), lengths (N,)) -> (N, L)`` (padding positions: 0)."""

    def __init__(
        self,
        dim: int,
        num_heads: int = 2,
        num_layers: int = 2,
        ff_dim: int = 2048,
        dropout: float = 0.1,
        head_dropout: float = 0.2,
        last_bias: float = -1.91,
    ) -> None:
        super().__init__()
        self.dim = dim
        # the head count is not readable from the weights: it travels with them (a 0-d buffer in the state dict)
        self.register_buffer("num_heads", torch.tensor(num_heads), persistent=True)
        layer = nn.TransformerEncoderLayer(dim, num_heads, ff_dim, dropout, batch_first=True)
        self.transformer_encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.projector_1 = nn.Linear(dim, 8)
        self.dropout = nn.Dropout(head_dropout)
        self.summ_head = nn.Linear(8, 1)
        nn.init.normal_(self.summ_head.weight, 0.0, 0.1)
        nn.init.constant_(self.summ_head.bias, last_bias)

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> QFVSScorer:
        """A scorer shaped after ``state`` (width, layers, FFN width and head count read from it), loaded strictly."""
        layers = {int(k.split(".")[2]) for k in state if k.startswith("transformer_encoder.layers.")}
        w1 = state["transformer_encoder.layers.0.linear1.weight"]
        scorer = cls(int(w1.shape[1]), int(state["num_heads"]), len(layers), int(w1.shape[0]))
        scorer.load_state_dict(state)
        return scorer

    def forward(self, segments: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        length, dim = segments.shape[1:]
        if dim != self.dim:
            raise ValueError(f"the scorer takes {self.dim}-d shot features, got {dim}")
        x = segments + release_position_table(length, dim).to(segments)[None]  # (N, L, D)
        pad = torch.arange(length, device=segments.device)[None, :] >= lengths.to(segments.device)[:, None]
        h = self.transformer_encoder(x, src_key_padding_mask=pad)  # (N, L, D)
        logits = self.summ_head(self.dropout(F.relu(self.projector_1(h)))).squeeze(-1)  # (N, L)
        return logits.masked_fill(pad, 0.0)

    def score(
        self, features: Sequence[torch.Tensor], segments: Sequence[Sequence[tuple[int, int]]]
    ) -> list[torch.Tensor]:
        """Per video its shot logits ``(S_i,)``: every segment of every video scored in one padded batch."""
        packed, lengths = pack_segments(features, segments)
        logits = self(packed, lengths)  # (N, L)
        flat = logits[torch.arange(logits.shape[1], device=logits.device)[None] < lengths.to(logits.device)[:, None]]
        return list(flat.split([len(f) for f in features]))


def summary_bce_losses(logits: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The release's three BCE terms of one query, each the mean over the video's shots.

    Args:
        logits / targets: ``"concept1"``, ``"concept2"``, ``"oracle"`` -> ``(S,)`` (targets 0/1 floats).

    Returns:
        ``loss_concept1``, ``loss_concept2``, ``loss_oracle`` and their sum ``loss`` (0-d each).
    """
    out = {
        f"loss_{k}": F.binary_cross_entropy_with_logits(logits[k].float(), targets[k].float())
        for k in ("concept1", "concept2", "oracle")
    }
    out["loss"] = out["loss_concept1"] + out["loss_concept2"] + out["loss_oracle"]
    return out
