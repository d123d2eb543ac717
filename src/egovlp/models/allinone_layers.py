"""Building blocks of All-in-one, under the release's parameter names (families.md §4a).

* :func:`temporal_roll`: the parameter-free Temporal Token Rolling, with :func:`temporal_roll_reference` (an explicit
  index loop) beside it for the tests.
* :class:`Block`: a pre-LN ViT block with a key-padding mask (``x += attn(norm1 x); x += mlp(norm2 x)``).
* :class:`BertEmbeddings`: word + absolute position + token type(0), LayerNorm (eps 1e-12), dropout.
* :class:`VisionTransformer`: ``transformer.*``: patch embedding, per-frame CLS (+ DeiT ``dist_token``), spatial and
  temporal embeddings, the blocks and the final norm; :meth:`VisionTransformer.visual_embed` makes the frame tokens.
* heads: :class:`Pooler` (``tanh(dense(x[:, 0]))``), :class:`MLMHead` (untied decoder), :class:`ITMHead`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from egovlp.models.allinone_config import AioTextConfig, AllInOneConfig
from egovlp.models.layers import DropPath, Mlp, attention, merge_heads, split_heads


# ------------------------------------------------------------------------------------------ temporal token rolling
def roll_fold(tokens_per_frame: int, div: int = 8) -> int:
    """How many token indices move each way: ``tokens_per_frame // div`` (24 for 197 tokens)."""
    return tokens_per_frame // div


def temporal_roll(x: torch.Tensor, num_frames: int, div: int = 8) -> torch.Tensor:
    """Temporal Token Rolling of the video tokens ``x (B*T, l, C)`` (frame-major rows, l = prefix + patches).

    With ``fold = l // div``, in every frame t: index 0 (CLS) is kept; indices ``1 .. fold`` take frame t-1's tokens
    (frame 0 takes frame T-1's: cyclic); the last ``fold`` indices take frame t+1's (frame T-1 takes frame 0's);
    the others are unchanged. Returns a new tensor of the same shape.
    """
    bt, length, channels = x.shape
    fold = roll_fold(length, div)
    if num_frames == 1 or fold == 0:
        return x
    v = x.view(bt // num_frames, num_frames, length, channels)
    rolled = torch.cat(
        (
            v[:, :, :1],
            torch.roll(v[:, :, 1 : 1 + fold], 1, dims=1),
            v[:, :, 1 + fold : length - fold],
            torch.roll(v[:, :, length - fold :], -1, dims=1),
        ),
        dim=2,
    )
    return rolled.view(bt, length, channels)


def temporal_roll_reference(x: torch.Tensor, num_frames: int, div: int = 8) -> torch.Tensor:
    """:func:`temporal_roll` as an explicit loop over frames and token indices (the slow reference)."""
    bt, length, _ = x.shape
    fold = roll_fold(length, div)
    out = x.clone()
    for b in range(bt // num_frames):
        for t in range(num_frames):
            for i in range(length):
                if 1 <= i <= fold:
                    src = (t - 1) % num_frames
                elif i >= length - fold and i > fold:
                    src = (t + 1) % num_frames
                else:
                    continue
                out[b * num_frames + t, i] = x[b * num_frames + src, i]
    return out


# ------------------------------------------------------------------------------------------------------ the blocks
class Attention(nn.Module):
    """timm ``Attention``: fused ``qkv`` and ``proj``; keys where ``mask`` is 0 are not attended."""

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(dropout)
        self.dropout_p = dropout
        self.attn_impl = "sdpa"

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``x (N, L, D)``; ``mask`` additive ``(N, 1, 1, L)`` (0 keep, finfo.min drop) or None."""
        q, k, v = (split_heads(t, self.num_heads) for t in self.qkv(x).chunk(3, dim=-1))
        p = self.dropout_p if self.training else 0.0
        out = attention(q, k, v, mask, p, impl=self.attn_impl)
        return self.proj_drop(self.proj(merge_heads(out)))


class Block(nn.Module):
    """Pre-LN ViT block: ``x += drop_path(attn(norm1 x)); x += drop_path(mlp(norm2 x))``."""

    def __init__(self, cfg: AllInOneConfig, drop_path: float = 0.0) -> None:
        super().__init__()
        d = cfg.width
        self.norm1 = nn.LayerNorm(d, eps=cfg.ln_eps)
        self.attn = Attention(d, cfg.num_heads, cfg.dropout)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(d, eps=cfg.ln_eps)
        self.mlp = Mlp(d, int(d * cfg.mlp_ratio), cfg.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), mask))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class BertEmbeddings(nn.Module):
    """HF ``BertEmbeddings`` (names kept): word + position (absolute, from 0) + token type 0, LayerNorm, dropout."""

    def __init__(self, cfg: AioTextConfig, width: int, dropout: float) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, width, padding_idx=cfg.pad_token_id)
        self.position_embeddings = nn.Embedding(cfg.max_positions, width)
        self.token_type_embeddings = nn.Embedding(2, width)
        self.LayerNorm = nn.LayerNorm(width, eps=cfg.ln_eps)
        self.dropout = nn.Dropout(dropout)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """``input_ids (B, L)`` -> ``(B, L, D)``."""
        length = input_ids.shape[1]
        if length > self.position_embeddings.num_embeddings:
            raise ValueError(
                f"text of {length} tokens is longer than the {self.position_embeddings.num_embeddings} positions of "
                "the text embedding (tokenize with max_length at most model.text.max_positions)"
            )
        positions = torch.arange(length, device=input_ids.device)
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions)[None]
        x = x + self.token_type_embeddings.weight[0]
        return self.dropout(self.LayerNorm(x))


class PatchEmbed(nn.Module):
    def __init__(self, patch: int, width: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, width, kernel_size=patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` -> ``(N, D, H/p, W/p)``."""
        return self.proj(x)


class VisionTransformer(nn.Module):
    """The shared ViT (``transformer.*``); the model runs its blocks, this module owns the embeddings."""

    def __init__(self, cfg: AllInOneConfig) -> None:
        super().__init__()
        v, d = cfg.video, cfg.width
        self.cfg = cfg
        self.patch_embed = PatchEmbed(v.patch_size, d)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        if v.distilled:
            self.dist_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, v.prefix_tokens + v.patches_per_frame, d))
        self.temporal_embed = nn.Parameter(torch.zeros(1, v.num_frames, d))
        self.pos_drop = nn.Dropout(cfg.dropout)
        rates = [cfg.drop_path * i / max(cfg.depth - 1, 1) for i in range(cfg.depth)]  # linear, as timm
        self.blocks = nn.ModuleList(Block(cfg, r) for r in rates)
        self.norm = nn.LayerNorm(d, eps=cfg.ln_eps)

    def spatial_pos(self, h: int, w: int) -> torch.Tensor:
        """The patch position embedding on an ``h x w`` grid ``(h*w, D)`` (bilinear resize if the grid differs)."""
        v = self.cfg.video
        pos = self.pos_embed[0, v.prefix_tokens :]
        if (h, w) == (v.grid, v.grid):
            return pos
        grid = pos.T.reshape(1, -1, v.grid, v.grid)
        return F.interpolate(grid, size=(h, w), mode="bilinear", align_corners=True)[0].flatten(1).T

    def visual_embed(self, frames: torch.Tensor, num_frames: int, order: torch.Tensor | None = None) -> torch.Tensor:
        """Frame tokens ``(B*T, prefix + N, D)`` of ``frames (B*T, 3, H, W)`` (frame-major).

        Every frame: its patch tokens + spatial position + ``temporal_embed[t]`` (not in the distilled model), put
        in ``order`` (``(B*T, N)`` indices, each row a permutation; None = raster), after its own CLS =
        ``cls_token + pos_embed[0]`` (and ``dist_token + pos_embed[1]``). Each token's embedding travels with it.
        """
        v = self.cfg.video
        x = self.patch_embed(frames)  # (BT, D, h, w)
        h, w = x.shape[-2:]
        x = x.flatten(2).transpose(1, 2) + self.spatial_pos(h, w)  # (BT, N, D)
        if not v.distilled:
            if num_frames > self.temporal_embed.shape[1]:
                raise ValueError(
                    f"{num_frames} frames but the temporal embedding has {self.temporal_embed.shape[1]} rows "
                    "(use model.frames(n) or resize_temporal_embed)"
                )
            t = self.temporal_embed[0, :num_frames].repeat(x.shape[0] // num_frames, 1)  # (BT, D)
            x = x + t[:, None]
        if order is not None:
            x = torch.gather(x, 1, order[:, :, None].expand(-1, -1, x.shape[-1]))
        prefix = [self.cls_token + self.pos_embed[:, :1]]
        if v.distilled:
            prefix.append(self.dist_token + self.pos_embed[:, 1:2])
        prefix_tokens = torch.cat(prefix, dim=1).expand(x.shape[0], -1, -1)
        return self.pos_drop(torch.cat((prefix_tokens, x), dim=1))


# ----------------------------------------------------------------------------------------------------------- heads
class Pooler(nn.Module):
    """``tanh(dense(x[:, 0]))``: the joint [CLS] feature that the VTM (and QA) heads read."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.dense = nn.Linear(width, width)
        self.activation = nn.Tanh()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.dense(x[:, 0]))


class PredictionTransform(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.dense = nn.Linear(width, width)
        self.act = nn.GELU()
        self.LayerNorm = nn.LayerNorm(width, eps=1e-12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.act(self.dense(x)))


class MLMHead(nn.Module):
    """BERT MLM head with an untied decoder: ``decoder(transform(x)) + bias``."""

    def __init__(self, width: int, vocab_size: int) -> None:
        super().__init__()
        self.transform = PredictionTransform(width)
        self.decoder = nn.Linear(width, vocab_size, bias=False)
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.transform(x)) + self.bias


class ITMHead(nn.Module):
    """``fc``: 2 logits (no match, match) of the pooled joint feature."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.fc = nn.Linear(width, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)
