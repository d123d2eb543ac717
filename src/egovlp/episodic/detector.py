"""A multi-scale temporal action detector in the style of ActionFormer (the Ego4D MQ head, downstream.md §3).

The input is one clip's feature sequence ``x (B, T, D)`` (dense dual video features, 1.875 per second in the release)
with a validity mask ``(B, T)``; ``T`` must be a multiple of ``2 ** (num_levels - 1)`` (:func:`padded_length`).

::

    h = ReLU(LN(Conv1d_3(x)))  x num_embed_convs             # (B, T, E) feature projection
    h = Block(h)               x num_stem_blocks             # local-window self-attention, stride 1
    level 0 = h;  level l = Block(MaxPool_{3, 2}(level l-1))  # a pyramid of strides 1, 2, 4, ..., 2 ** (L-1)
    cls_l = ClsHead(LN(level l))            (B, T / 2**l, C)  # shared over levels; logits of sigmoid scores
    off_l = ReLU(s_l * RegHead(LN(level l)))  (B, T / 2**l, 2) # distances to start / end, in units of the stride

A ``Block`` is a pre-norm transformer block whose attention sees only the ``window_size`` neighbours of each step
(a banded mask; the padded steps are masked as keys). Attention runs through :func:`egovlp.models.layers.attention`,
so ``set_attention_impl(detector, "reference")`` switches to the explicit softmax the SDPA path is tested against.

Points: step ``i`` of level ``l`` sits at position ``p = i * 2**l`` on the level-0 grid; a detection there is the
segment ``[p - off_0 * 2**l, p + off_1 * 2**l]`` (level-0 units; :mod:`egovlp.episodic.targets` turns grid units into
seconds). The classification bias starts at ``-log((1 - prior) / prior)``, so every score starts near ``prior``.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import NamedTuple, cast

import torch
import torch.nn.functional as F
from torch import nn

from egovlp.config import at_least, greater_than, rule
from egovlp.models.layers import DropPath, Mlp, attention, merge_heads, split_heads

__all__ = ["DetectorConfig", "DetectorOutput", "TemporalDetector", "local_window_mask", "padded_length"]


@dataclass(frozen=True)
class DetectorConfig:
    """Architecture of :class:`TemporalDetector` (ActionFormer's Ego4D settings, narrower by default)."""

    embed_dim: int = at_least(8, 256)  # E (ActionFormer: 512)
    num_levels: int = at_least(1, 6)  # pyramid levels, strides 1..2 ** (L-1) (ActionFormer: 6)
    num_embed_convs: int = at_least(1, 2)  # projection convolutions (kernel 3)
    num_stem_blocks: int = at_least(0, 2)  # transformer blocks at stride 1 before the pyramid
    num_heads: int = at_least(1, 4)
    window_size: int = rule(9, "must be an odd number >= 1", lambda v: v >= 1 and v % 2 == 1)  # local attention
    mlp_ratio: float = greater_than(0, 4.0)
    dropout: float = rule(0.0, "must be in [0, 1)", lambda v: 0 <= v < 1)  # attention/MLP output dropout
    path_drop: float = rule(0.1, "must be in [0, 1)", lambda v: 0 <= v < 1)  # stochastic depth of the blocks
    input_dropout: float = rule(0.0, "must be in [0, 1)", lambda v: 0 <= v < 1)  # on the input features
    head_layers: int = at_least(1, 3)  # convolutions per head (the last one predicts)
    prior_prob: float = rule(0.01, "must be in (0, 1)", lambda v: 0 < v < 1)

    def check_config(self):
        if self.embed_dim % self.num_heads:
            yield "embed_dim", f"{self.embed_dim} is not divisible by num_heads={self.num_heads}"


class DetectorOutput(NamedTuple):
    """Per level ``l`` (``T_l = T / 2**l``): ``cls_logits[l] (B, T_l, C)``, ``offsets[l] (B, T_l, 2)`` (>= 0, in units
    of the level's stride), ``masks[l] (B, T_l)`` bool (True = a real step)."""

    cls_logits: list[torch.Tensor]
    offsets: list[torch.Tensor]
    masks: list[torch.Tensor]


def padded_length(length: int, num_levels: int) -> int:
    """The smallest multiple of ``2 ** (num_levels - 1)`` that is ``>= max(length, 1)``."""
    unit = 2 ** (num_levels - 1)
    return max(1, math.ceil(length / unit)) * unit


def local_window_mask(mask: torch.Tensor, window_size: int, dtype: torch.dtype) -> torch.Tensor:
    """Additive attention mask ``(B, 1, T, T)``: step i sees the valid steps j with ``|i - j| <= window_size // 2``.

    A row that would see nothing (a padded step far from any valid one) keeps its own step, so no softmax row is
    empty. ``mask (B, T)`` bool, True = valid.
    """
    t = mask.shape[1]
    idx = torch.arange(t, device=mask.device)
    band = (idx[:, None] - idx[None, :]).abs() <= window_size // 2  # (T, T)
    keep = band[None] & mask[:, None, :]  # (B, T, T)
    keep = keep | torch.eye(t, dtype=torch.bool, device=mask.device)[None]
    out = torch.zeros(keep.shape, dtype=dtype, device=mask.device)
    return out.masked_fill_(~keep, torch.finfo(dtype).min)[:, None]


class LocalAttention(nn.Module):
    """Multi-head self-attention over a local window (banded mask); ``attn_impl`` picks SDPA or the reference."""

    def __init__(self, dim: int, num_heads: int, window_size: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.num_heads, self.window_size = num_heads, window_size
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)
        self.attn_impl = "sdpa"

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``x (B, T, E)``, ``mask (B, T)`` bool -> ``(B, T, E)``."""
        q, k, v = (split_heads(part, self.num_heads) for part in self.qkv(x).chunk(3, dim=-1))  # (B, H, T, d)
        bias = local_window_mask(mask, self.window_size, q.dtype)
        return self.drop(self.proj(merge_heads(attention(q, k, v, bias, impl=self.attn_impl))))


class Block(nn.Module):
    """Pre-norm transformer block on a masked sequence; padded steps are zeroed after each residual."""

    def __init__(self, cfg: DetectorConfig, path_drop: float) -> None:
        super().__init__()
        e = cfg.embed_dim
        self.norm1, self.norm2 = nn.LayerNorm(e), nn.LayerNorm(e)
        self.attn = LocalAttention(e, cfg.num_heads, cfg.window_size, cfg.dropout)
        self.mlp = Mlp(e, int(e * cfg.mlp_ratio), cfg.dropout)
        self.drop_path = DropPath(path_drop)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        keep = mask[..., None].to(x.dtype)
        x = (x + self.drop_path(self.attn(self.norm1(x), mask))) * keep
        return (x + self.drop_path(self.mlp(self.norm2(x)))) * keep


class ConvHead(nn.Module):
    """``head_layers - 1`` x (Conv1d_3 -> LayerNorm -> ReLU) -> Conv1d_3 to ``out_dim``, on ``(B, T, E)``."""

    def __init__(self, dim: int, out_dim: int, num_layers: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv1d(dim, dim, 3, padding=1) for _ in range(num_layers - 1))
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(num_layers - 1))
        self.out = nn.Conv1d(dim, out_dim, 3, padding=1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        keep = mask[..., None].to(x.dtype)
        for conv, norm in zip(self.convs, self.norms):
            x = F.relu(norm(conv(x.transpose(1, 2)).transpose(1, 2))) * keep
        return self.out(x.transpose(1, 2)).transpose(1, 2) * keep


class TemporalDetector(nn.Module):
    """The detector of the module docstring: ``forward(x (B, T, D), mask (B, T)) -> DetectorOutput``."""

    def __init__(self, cfg: DetectorConfig, input_dim: int, num_classes: int) -> None:
        super().__init__()
        if input_dim < 1 or num_classes < 1:
            raise ValueError(f"input_dim ({input_dim}) and num_classes ({num_classes}) must be >= 1")
        self.cfg, self.input_dim, self.num_classes = cfg, input_dim, num_classes
        e = cfg.embed_dim
        dims = [input_dim] + [e] * cfg.num_embed_convs
        self.embed = nn.ModuleList(nn.Conv1d(a, b, 3, padding=1) for a, b in itertools.pairwise(dims))
        self.embed_norms = nn.ModuleList(nn.LayerNorm(e) for _ in range(cfg.num_embed_convs))
        num_blocks = cfg.num_stem_blocks + cfg.num_levels - 1
        rates = [cfg.path_drop * i / max(num_blocks - 1, 1) for i in range(num_blocks)]
        self.stem = nn.ModuleList(Block(cfg, rates[i]) for i in range(cfg.num_stem_blocks))
        self.branch = nn.ModuleList(Block(cfg, rates[cfg.num_stem_blocks + i]) for i in range(cfg.num_levels - 1))
        self.level_norms = nn.ModuleList(nn.LayerNorm(e) for _ in range(cfg.num_levels))
        self.cls_head = ConvHead(e, num_classes, cfg.head_layers)
        self.reg_head = ConvHead(e, 2, cfg.head_layers)
        self.scales = nn.Parameter(torch.ones(cfg.num_levels))  # per-level scale of the regression output
        self.input_drop = nn.Dropout(cfg.input_dropout)
        nn.init.constant_(cast(torch.Tensor, self.cls_head.out.bias), -math.log((1 - cfg.prior_prob) / cfg.prior_prob))

    @property
    def strides(self) -> list[int]:
        return [2**level for level in range(self.cfg.num_levels)]

    def _embed(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        keep = mask[..., None].to(x.dtype)
        h = self.input_drop(x) * keep
        for conv, norm in zip(self.embed, self.embed_norms):
            h = F.relu(norm(conv(h.transpose(1, 2)).transpose(1, 2))) * keep
        return h

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> DetectorOutput:
        """``x (B, T, D)`` features, ``mask (B, T)`` bool; ``T`` a multiple of ``2 ** (num_levels - 1)``."""
        unit = 2 ** (self.cfg.num_levels - 1)
        if x.shape[1] % unit or x.shape[1] == 0:
            raise ValueError(f"sequence length {x.shape[1]} is not a positive multiple of {unit} (padded_length)")
        h = self._embed(x, mask)
        for block in self.stem:
            h = block(h, mask)
        levels, masks = [h], [mask]
        for block in self.branch:
            h = F.max_pool1d(h.transpose(1, 2), 3, stride=2, padding=1).transpose(1, 2)
            mask = mask[:, ::2]
            h = block(h * mask[..., None].to(h.dtype), mask)
            levels.append(h)
            masks.append(mask)
        cls, off = [], []
        for level, (feat, m) in enumerate(zip(levels, masks)):
            feat = self.level_norms[level](feat) * m[..., None].to(feat.dtype)
            cls.append(self.cls_head(feat, m))
            off.append(F.relu(self.scales[level] * self.reg_head(feat, m)))
        return DetectorOutput(cls, off, masks)
