"""TimeSformer video tower: the Frozen-in-Time space-time transformer used by EgoVLP and EgoVLPv2.

Tokens are ``(B, 1 + F*P, D)``: one CLS token, then the P patches of frame 0, of frame 1, ... (frame-major).
Each block applies divided attention, time first and then space, with the release's residual quirk::

    t  = x + time_attn(norm3(x))      # over the F tokens at each spatial position (+ CLS)
    x' = x + space_attn(norm1(t))     # over the P tokens of each frame (+ CLS); the residual is x, not t
    x''= x' + mlp(norm2(x'))

The CLS query attends to every token; a patch query attends to CLS plus its own frame (space) or its own spatial
position across frames (time). Parameter names follow the release (``blocks.{i}.attn``, ``timeattn``, ``norm3`` ...)
so that official and timm weights load by name.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import TYPE_CHECKING, cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from egovlp.models.config import VideoConfig
from egovlp.models.layers import DropPath, Mlp, attention, init_linear_, merge_heads, split_heads

if TYPE_CHECKING:
    from egovlp.models.fusion import FusedSpaceAttention


class SpaceTimeAttention(nn.Module):
    """Multi-head self-attention over either the space or the time axis of a video token sequence, with CLS."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, dropout: float = 0.0) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(dropout)
        self.attn_impl = "sdpa"

    def forward(self, x: torch.Tensor, num_frames: int, axis: str) -> torch.Tensor:
        """``x (B, 1 + F*P, D)`` -> attention output after ``proj`` (pre-residual), same shape.

        ``axis`` is "space" (patches attend within their frame) or "time" (within their spatial position).
        """
        b, n, c = x.shape
        h, f = self.num_heads, num_frames
        p = (n - 1) // f
        qkv = self.qkv(x).view(b, n, 3, h, c // h).permute(2, 0, 3, 1, 4)  # (3, B, H, N, d)
        q, k, v = qkv.unbind(0)
        cls_out = attention(q[:, :, :1], k, v, impl=self.attn_impl)  # CLS attends to all tokens: (B, H, 1, d)
        q_, k_, v_ = (_group(t[:, :, 1:], f, p, axis) for t in (q, k, v))  # (B*G, H, S, d)
        groups = q_.shape[0] // b
        cls_k, cls_v = (t[:, :, :1].repeat_interleave(groups, dim=0) for t in (k, v))  # (B*G, H, 1, d)
        out = attention(q_, torch.cat([cls_k, k_], dim=2), torch.cat([cls_v, v_], dim=2), impl=self.attn_impl)
        out = torch.cat([cls_out, _ungroup(out, b, f, p, axis)], dim=2)  # (B, H, N, d)
        return self.proj_drop(self.proj(merge_heads(out)))

    def forward_cls(self, x: torch.Tensor) -> torch.Tensor:
        """Only the CLS query's output: ``x (B, 1 + F*P, D) -> (B, 1, D)`` (keys and values from every token).

        Equals ``forward(x, ...)[:, :1]`` for either axis (the CLS query attends to all tokens in both), without
        computing the patch queries. Used where only the CLS state of a last block is read.
        """
        c = x.shape[-1]
        h = self.num_heads
        q = F.linear(x[:, :1], self.qkv.weight[:c], None if self.qkv.bias is None else self.qkv.bias[:c])
        k, v = F.linear(x, self.qkv.weight[c:], None if self.qkv.bias is None else self.qkv.bias[c:]).chunk(2, -1)
        out = attention(split_heads(q, h), split_heads(k, h), split_heads(v, h), impl=self.attn_impl)
        return self.proj_drop(self.proj(merge_heads(out)))


def _group(t: torch.Tensor, f: int, p: int, axis: str) -> torch.Tensor:
    """Patch tokens ``(B, H, F*P, d)`` -> attention groups: space ``(B*F, H, P, d)``, time ``(B*P, H, F, d)``."""
    b, h, _, d = t.shape
    t = t.reshape(b, h, f, p, d)
    if axis == "space":
        return t.permute(0, 2, 1, 3, 4).reshape(b * f, h, p, d)
    if axis == "time":
        return t.permute(0, 3, 1, 2, 4).reshape(b * p, h, f, d)
    raise ValueError(f"axis must be 'space' or 'time', got {axis!r}")


def _ungroup(t: torch.Tensor, b: int, f: int, p: int, axis: str) -> torch.Tensor:
    """Inverse of :func:`_group`: back to ``(B, H, F*P, d)``."""
    h, d = t.shape[1], t.shape[3]
    if axis == "space":
        return t.reshape(b, f, h, p, d).permute(0, 2, 1, 3, 4).reshape(b, h, f * p, d)
    return t.reshape(b, p, h, f, d).permute(0, 2, 3, 1, 4).reshape(b, h, f * p, d)


class SpaceTimeBlock(nn.Module):
    """Divided space-time block; ``attn`` may be a fused space attention (see ``egovlp.models.fusion``)."""

    def __init__(self, cfg: VideoConfig, drop_path: float = 0.0, space_attn: SpaceTimeAttention | None = None) -> None:
        super().__init__()
        dim = cfg.width
        self.norm1 = nn.LayerNorm(dim, eps=cfg.ln_eps)
        self.attn: SpaceTimeAttention = space_attn or SpaceTimeAttention(dim, cfg.num_heads, cfg.qkv_bias, cfg.dropout)
        self.timeattn = SpaceTimeAttention(dim, cfg.num_heads, cfg.qkv_bias, cfg.dropout)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=cfg.ln_eps)
        self.mlp = Mlp(dim, int(dim * cfg.mlp_ratio), cfg.dropout)
        self.norm3 = nn.LayerNorm(dim, eps=cfg.ln_eps)

    def forward(
        self,
        x: torch.Tensor,
        num_frames: int,
        text: torch.Tensor | None = None,
        text_mask: torch.Tensor | None = None,
        cls_only: bool = False,
    ) -> torch.Tensor:
        """``x (B, 1+F*P, D)``; with ``text (B, L, Dt)`` and its additive mask the space attention is fused.

        ``cls_only=True`` returns only the CLS token's new state ``(B, 1, D)`` (equal to ``forward(...)[:, :1]``),
        skipping the patch queries of the space attention, the patch cross-attention and the patch MLP.
        """
        t = x + self.timeattn(self.norm3(x), num_frames, "time")
        if cls_only:
            a = self.attn.forward_cls(self.norm1(t))
            x = x[:, :1]
        else:
            a = self.attn(self.norm1(t), num_frames, "space")
        if text is not None:
            fused = cast("FusedSpaceAttention", self.attn)  # only fused blocks are given text
            a = a + fused.alpha_i2t * fused.cross_attend(a, text, text_mask)
        x = x + self.drop_path(a)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    """Per-frame ``Conv2d(3, D, patch, stride=patch)``: ``(B, F, 3, H, W) -> (B, F*P, D)``."""

    def __init__(self, patch_size: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        b, f, c, h, w = video.shape
        x = self.proj(video.reshape(b * f, c, h, w))  # (B*F, D, h', w')
        return x.flatten(2).transpose(1, 2).reshape(b, -1, x.shape[1])


class SpaceTimeTransformer(nn.Module):
    """The video tower. ``forward`` gives the dual-encoder feature ``norm(x)[:, 0]`` of shape ``(B, D)``."""

    def __init__(self, cfg: VideoConfig, fused_space_attn: Mapping[int, SpaceTimeAttention] | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        fused_space_attn = fused_space_attn or {}
        dim = cfg.width
        self.patch_embed = PatchEmbed(cfg.patch_size, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.patches_per_frame + 1, dim))
        self.temporal_embed = nn.Parameter(torch.zeros(1, cfg.num_frames, dim))
        self.pos_drop = nn.Dropout(cfg.dropout)
        rates = [cfg.drop_path * i / max(cfg.depth - 1, 1) for i in range(cfg.depth)]  # stochastic depth decay
        self.blocks = nn.ModuleList(SpaceTimeBlock(cfg, rates[i], fused_space_attn.get(i)) for i in range(cfg.depth))
        self.norm = nn.LayerNorm(dim, eps=cfg.ln_eps)
        self.grad_checkpointing = False
        self.reset_parameters()

    def reset_parameters(self, std: float = 0.02) -> None:
        """ViT-style init; time attention starts as a zero map (qkv 0, proj weight 1, proj bias 0)."""
        self.apply(functools.partial(init_linear_, std=std))
        nn.init.trunc_normal_(self.pos_embed, std=std, a=-2 * std, b=2 * std)
        nn.init.trunc_normal_(self.cls_token, std=std, a=-2 * std, b=2 * std)
        if self.cfg.temporal_init_std > 0:  # breaks the frame-order symmetry at init (small models, short runs)
            t = self.cfg.temporal_init_std
            nn.init.trunc_normal_(self.temporal_embed, std=t, a=-2 * t, b=2 * t)
        else:
            nn.init.zeros_(self.temporal_embed)
        for blk in self.blocks:
            assert isinstance(blk, SpaceTimeBlock)
            time_attn = blk.timeattn
            nn.init.zeros_(time_attn.qkv.weight)
            if time_attn.qkv.bias is not None:
                nn.init.zeros_(time_attn.qkv.bias)
            nn.init.ones_(time_attn.proj.weight)
            nn.init.zeros_(time_attn.proj.bias)

    def embed(self, video: torch.Tensor, cls_token: torch.Tensor | None = None) -> torch.Tensor:
        """Pixels ``(B, F, 3, H, W)`` -> tokens ``(B, 1 + F*P, D)`` with positional and temporal embeddings.

        Patch (f, p) gets ``pos_embed[1 + p] + temporal_embed[f]``; the CLS token (``cls_token`` if given, e.g. the
        fusion-mode one, else the tower's) gets ``pos_embed[0]``.
        """
        b, f = video.shape[:2]
        if f > self.temporal_embed.shape[1]:
            raise ValueError(
                f"video has {f} frames but the temporal embedding holds {self.temporal_embed.shape[1]}; "
                "build the model with more frames or resize the checkpoint (resize_temporal_embed)"
            )
        x = self.patch_embed(video)
        p = x.shape[1] // f
        if p != self.pos_embed.shape[1] - 1:
            raise ValueError(f"video frames give {p} patches but pos_embed holds {self.pos_embed.shape[1] - 1}")
        pos = self.pos_embed[:, 1:].repeat(1, f, 1) + self.temporal_embed[:, :f].repeat_interleave(p, dim=1)
        cls = (self.cls_token if cls_token is None else cls_token) + self.pos_embed[:, :1]
        x = torch.cat([cls.expand(b, -1, -1), x + pos], dim=1)
        return self.pos_drop(x)

    def run_block(
        self, i: int, x: torch.Tensor, num_frames: int, text=None, text_mask=None, cls_only: bool = False
    ) -> torch.Tensor:
        """Block ``i``, through gradient checkpointing when enabled and training."""
        blk = self.blocks[i]
        if self.grad_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(blk, x, num_frames, text, text_mask, cls_only, use_reentrant=False)
        return blk(x, num_frames, text, text_mask, cls_only)

    def forward_features(self, video: torch.Tensor, cls_only: bool = False) -> torch.Tensor:
        """All blocks without fusion: ``(B, F, 3, H, W) -> (B, 1 + F*P, D)`` (before the final norm).

        ``cls_only=True`` computes only the CLS state in the last block and returns ``(B, 1, D)``.
        """
        x = self.embed(video)
        depth = len(self.blocks)
        for i in range(depth):
            x = self.run_block(i, x, video.shape[1], cls_only=cls_only and i == depth - 1)
        return x

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """The dual-encoder feature ``norm(x)[:, 0]`` ``(B, D)``; the last block computes the CLS state only."""
        return self.norm(self.forward_features(video, cls_only=True))[:, 0]


def resize_temporal_embed(embed: torch.Tensor, num_frames: int) -> torch.Tensor:
    """Temporal embedding ``(1, F, D)`` -> ``(1, num_frames, D)`` as the release does it.

    More frames: linear interpolation along time with ``align_corners=True``; fewer: truncation.
    """
    f = embed.shape[1]
    if num_frames == f:
        return embed
    if num_frames < f:
        return embed[:, :num_frames].clone()
    x = embed.transpose(1, 2)  # (1, D, F)
    return F.interpolate(x, size=num_frames, mode="linear", align_corners=True).transpose(1, 2).contiguous()
