"""VSLNet (Zhang et al., ACL 2020), the span head of the EgoVLPv2 NLQ release (downstream §2).

Inputs are pre-extracted features: per query, the clip's window features fused with that query ``video (B, N, Dv)``
and the query's dual text token states ``query (B, L, Dt)``, with their masks. With ``d = hidden``::

    v = VisualProjection(video)                (B, N, d)   dropout + linear
    q = Linear(dropout(query))                 (B, L, d)
    v, q = FeatureEncoder(v), FeatureEncoder(q)   one shared encoder: learned positions + 4 depthwise-separable
                                               convolutions (kernel 7) + one multi-head self-attention block
    x = CQAttention(v, q)                      (B, N, d)   trilinear context-query attention: [v; c2q; v*c2q; v*q2c]
    x = CQConcatenate(x, q)                    (B, N, d)   [x; attention-pooled query] -> linear
    h = sigmoid(HighLight(x))                  (B, N)      query-guided highlighting: P(window in the answer)
    x = x * h                                  (B, N, d)
    s, e = ConditionedPredictor(x)             (B, N) each: the end encoder runs on the start encoder's output

Departure from the release: padded positions are zeroed before each convolution, so that a clip's logits do not
depend on the longer clips it is batched with (the release's convolutions read the padding of a batch).

Losses (:func:`vslnet_loss`): cross-entropy of the start and end logits against the answer's start and end unit,
plus ``highlight_weight`` (release 5.0) x the masked BCE of ``h`` against the (extended) answer windows, where
positives weigh 2 and negatives 1 (VSLNet's ``compute_highlight_loss``). Masked positions get logits -1e30.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from egovlp.config import at_least, greater_than

__all__ = ["VSLNet", "VSLNetConfig", "VSLNetOutput", "mask_logits", "vslnet_config_from_state", "vslnet_loss"]

MASK_VALUE = -1e30


@dataclass(frozen=True)
class VSLNetConfig:
    """The head's sizes (release: video and text 768-d, hidden 128, 8 heads, dropout 0.2, 256 positions)."""

    video_dim: int = at_least(0, 0)  # fused window features (release 768); 0 = the features' size
    text_dim: int = at_least(0, 0)  # query token states (release 768); 0 = the features' size
    hidden: int = at_least(1, 128)
    num_heads: int = at_least(1, 8)
    max_pos_len: int = at_least(1, 256)  # windows per clip (longer clips are pooled down to it)
    kernel_size: int = at_least(1, 7)
    num_conv_layers: int = at_least(1, 4)
    dropout: float = at_least(0.0, 0.2)
    highlight_weight: float = greater_than(0.0, 5.0)  # release "highlight_lambda"

    def check_config(self):
        if self.hidden % self.num_heads:
            yield "hidden", f"{self.hidden} is not a multiple of num_heads={self.num_heads}"
        if self.kernel_size % 2 == 0:
            yield "kernel_size", f"must be odd (same-length convolution), got {self.kernel_size}"


class VSLNetOutput(NamedTuple):
    start_logits: Tensor  # (B, N), masked windows at -1e30
    end_logits: Tensor  # (B, N)
    highlight: Tensor  # (B, N) sigmoid probabilities that a window lies in the answer


def mask_logits(x: Tensor, mask: Tensor) -> Tensor:
    """``x`` where ``mask`` is 1, -1e30 elsewhere (VSLNet's ``mask_logits``); ``mask`` broadcasts to ``x``."""
    return x + (1.0 - mask.to(x.dtype)) * MASK_VALUE


class DepthwiseSeparableConvBlock(nn.Module):
    """``num_layers`` x (LayerNorm -> dropout -> depthwise conv -> pointwise conv -> ReLU, residual); (B, N, d)."""

    def __init__(self, dim: int, kernel_size: int, num_layers: int, dropout: float) -> None:
        super().__init__()
        self.depthwise = nn.ModuleList(
            nn.Conv1d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim, bias=False)
            for _ in range(num_layers)
        )
        self.pointwise = nn.ModuleList(nn.Conv1d(dim, dim, 1) for _ in range(num_layers))
        self.norms = nn.ModuleList(nn.LayerNorm(dim, eps=1e-6) for _ in range(num_layers))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """``x (B, N, d)``, ``mask (B, N)``: padded positions are zeroed before every convolution."""
        for norm, dw, pw in zip(self.norms, self.depthwise, self.pointwise):
            y = (self.dropout(norm(x)) * mask[:, :, None]).transpose(1, 2)  # (B, d, N)
            x = x + F.relu(pw(dw(y))).transpose(1, 2)
        return x


class MultiHeadAttentionBlock(nn.Module):
    """Pre-norm self-attention with a residual, then norm -> linear with a second residual (VSLNet's block)."""

    def __init__(self, dim: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.query, self.key, self.value = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.norm1, self.norm2 = nn.LayerNorm(dim, eps=1e-6), nn.LayerNorm(dim, eps=1e-6)
        self.out = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)

    def _heads(self, x: Tensor) -> Tensor:  # (B, N, d) -> (B, H, N, d / H)
        b, n, d = x.shape
        return x.view(b, n, self.num_heads, d // self.num_heads).transpose(1, 2)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """``x (B, N, d)``, ``mask (B, N)`` (1 = real position) -> ``(B, N, d)``."""
        y = self.dropout(self.norm1(x))
        q, k, v = self._heads(self.query(y)), self._heads(self.key(y)), self._heads(self.value(y))
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])  # (B, H, N, N)
        attn = self.dropout(torch.softmax(mask_logits(scores, mask[:, None, None, :]), dim=-1))
        y = (attn @ v).transpose(1, 2).reshape(x.shape)  # (B, N, d)
        residual = self.dropout(y) + x
        y = self.out(self.dropout(self.norm2(residual)))
        return self.dropout(y) + residual


class FeatureEncoder(nn.Module):
    """Learned positions + convolutions + self-attention (shared by the video and the query); (B, N, d)."""

    def __init__(self, cfg: VSLNetConfig) -> None:
        super().__init__()
        self.position = nn.Embedding(cfg.max_pos_len, cfg.hidden)
        self.conv = DepthwiseSeparableConvBlock(cfg.hidden, cfg.kernel_size, cfg.num_conv_layers, cfg.dropout)
        self.attention = MultiHeadAttentionBlock(cfg.hidden, cfg.num_heads, cfg.dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        positions = torch.arange(x.shape[1], device=x.device)
        return self.attention(self.conv(x + self.position(positions)[None], mask), mask)


class CQAttention(nn.Module):
    """Context-query attention (QANet / VSLNet): ``[c; c2q; c * c2q; c * q2c] -> linear``, (B, N, d)."""

    def __init__(self, dim: int, dropout: float) -> None:
        super().__init__()
        self.w_context = nn.Parameter(nn.init.xavier_uniform_(torch.empty(dim, 1)))
        self.w_query = nn.Parameter(nn.init.xavier_uniform_(torch.empty(dim, 1)))
        self.w_product = nn.Parameter(nn.init.xavier_uniform_(torch.empty(1, 1, dim)))
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(4 * dim, dim)

    def forward(self, context: Tensor, query: Tensor, c_mask: Tensor, q_mask: Tensor) -> Tensor:
        c, q = self.dropout(context), self.dropout(query)
        # trilinear score S[i, j] = w_c . c_i + w_q . q_j + w_p . (c_i * q_j): (B, N, L)
        score = c @ self.w_context + (q @ self.w_query).transpose(1, 2) + (c * self.w_product) @ q.transpose(1, 2)
        over_query = torch.softmax(mask_logits(score, q_mask[:, None, :]), dim=2)  # (B, N, L)
        over_context = torch.softmax(mask_logits(score, c_mask[:, :, None]), dim=1)  # (B, N, L)
        c2q = over_query @ query  # (B, N, d)
        q2c = over_query @ over_context.transpose(1, 2) @ context  # (B, N, d)
        return self.out(torch.cat([context, c2q, context * c2q, context * q2c], dim=2))


class CQConcatenate(nn.Module):
    """Each window concatenated with the attention-pooled query, then a linear layer; (B, N, d)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.pool = nn.Parameter(nn.init.xavier_uniform_(torch.empty(dim, 1)))
        self.out = nn.Linear(2 * dim, dim)

    def forward(self, context: Tensor, query: Tensor, q_mask: Tensor) -> Tensor:
        alpha = torch.softmax(mask_logits((query @ self.pool).squeeze(2), q_mask), dim=1)  # (B, L)
        pooled = (alpha[:, :, None] * query).sum(1)  # (B, d)
        return self.out(torch.cat([context, pooled[:, None].expand_as(context)], dim=2))


class ConditionedPredictor(nn.Module):
    """Start and end logits; the end encoder reads the start encoder's output (the shared encoder, run twice)."""

    def __init__(self, cfg: VSLNetConfig) -> None:
        super().__init__()
        d = cfg.hidden
        self.encoder = FeatureEncoder(cfg)
        self.start_norm, self.end_norm = nn.LayerNorm(d, eps=1e-6), nn.LayerNorm(d, eps=1e-6)
        self.start_block = nn.Sequential(nn.Linear(2 * d, d), nn.ReLU(), nn.Linear(d, 1))
        self.end_block = nn.Sequential(nn.Linear(2 * d, d), nn.ReLU(), nn.Linear(d, 1))

    def forward(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        start = self.encoder(x, mask)
        end = self.encoder(start, mask)
        start_logits = self.start_block(torch.cat([self.start_norm(start), x], dim=2)).squeeze(2)
        end_logits = self.end_block(torch.cat([self.end_norm(end), x], dim=2)).squeeze(2)
        return mask_logits(start_logits, mask), mask_logits(end_logits, mask)


class VSLNet(nn.Module):
    """The span head (see the module docstring). Parameter names follow the modules above."""

    def __init__(self, cfg: VSLNetConfig) -> None:
        super().__init__()
        if cfg.video_dim < 1 or cfg.text_dim < 1:
            raise ValueError(f"VSLNet needs video_dim and text_dim >= 1 (the features' sizes), got {cfg}")
        self.cfg = cfg
        self.video_dropout, self.text_dropout = nn.Dropout(cfg.dropout), nn.Dropout(cfg.dropout)
        self.video_proj = nn.Linear(cfg.video_dim, cfg.hidden)
        self.text_proj = nn.Linear(cfg.text_dim, cfg.hidden)
        self.encoder = FeatureEncoder(cfg)
        self.cq_attention = CQAttention(cfg.hidden, cfg.dropout)
        self.cq_concat = CQConcatenate(cfg.hidden)
        self.highlight = nn.Linear(cfg.hidden, 1)
        self.predictor = ConditionedPredictor(cfg)

    def forward(self, video: Tensor, video_mask: Tensor, query: Tensor, query_mask: Tensor) -> VSLNetOutput:
        """``video (B, N, Dv)``, ``video_mask (B, N)``, ``query (B, L, Dt)``, ``query_mask (B, L)`` (1 = real)."""
        if video.shape[1] > self.cfg.max_pos_len or query.shape[1] > self.cfg.max_pos_len:
            raise ValueError(f"sequences of {video.shape[1]} windows / {query.shape[1]} tokens exceed max_pos_len="
                             f"{self.cfg.max_pos_len}: pool the clip first")  # fmt: skip
        v_mask, q_mask = video_mask.to(video.dtype), query_mask.to(video.dtype)
        v = self.encoder(self.video_proj(self.video_dropout(video)), v_mask)
        q = self.encoder(self.text_proj(self.text_dropout(query)), q_mask)
        x = self.cq_concat(self.cq_attention(v, q, v_mask, q_mask), q, q_mask)
        highlight = torch.sigmoid(mask_logits(self.highlight(x).squeeze(2), v_mask))  # (B, N)
        start_logits, end_logits = self.predictor(x * highlight[:, :, None], v_mask)
        return VSLNetOutput(start_logits, end_logits, highlight)


def vslnet_config_from_state(state: dict[str, Tensor], num_heads: int, dropout: float = 0.2) -> VSLNetConfig:
    """The config of a saved head from its tensor shapes (``num_heads`` and ``dropout`` are not visible in them)."""
    try:
        hidden, video_dim = state["video_proj.weight"].shape
        layers = sum(1 for k in state if k.startswith("encoder.conv.depthwise.") and k.endswith(".weight"))
        return VSLNetConfig(
            video_dim=int(video_dim), text_dim=int(state["text_proj.weight"].shape[1]), hidden=int(hidden),
            num_heads=num_heads, max_pos_len=int(state["encoder.position.weight"].shape[0]),
            kernel_size=int(state["encoder.conv.depthwise.0.weight"].shape[-1]), num_conv_layers=layers,
            dropout=dropout,
        )  # fmt: skip
    except KeyError as e:
        raise ValueError(f"not a VSLNet state dict: no {e}") from None


def vslnet_loss(
    out: VSLNetOutput, start: Tensor, end: Tensor, highlight: Tensor, video_mask: Tensor, highlight_weight: float
) -> dict[str, Tensor]:
    """``{"loss", "span_loss", "highlight_loss"}``.

    ``start``, ``end``: ``(B,)`` answer units; ``highlight``: ``(B, N)`` 0/1 answer (extended) windows;
    ``video_mask``: ``(B, N)``. ``loss = CE(start) + CE(end) + highlight_weight * highlight_loss``.
    """
    span = F.cross_entropy(out.start_logits, start) + F.cross_entropy(out.end_logits, end)
    labels, mask = highlight.to(out.highlight.dtype), video_mask.to(out.highlight.dtype)
    weights = torch.where(labels > 0, 2.0, 1.0)
    per_window = F.binary_cross_entropy(out.highlight.clamp(1e-7, 1 - 1e-7), labels, reduction="none") * weights
    highlight_loss = (per_window * mask).sum() / (mask.sum() + 1e-12)
    return {"loss": span + highlight_weight * highlight_loss, "span_loss": span, "highlight_loss": highlight_loss}
