"""All-in-one (Wang et al., CVPR 2023): one ViT for video and text, time modelled by Temporal Token Rolling.

The joint pass, per clip of T frames (families.md §4a)::

    text  = BertEmbeddings(ids) + type[0]                                  (B, L, D), repeated per frame -> (B*T, L, D)
    frame = [CLS_t ; patches_t + pos + temporal[t]] + type[1]              (B*T, 1 + N, D)   (one CLS per frame)
    x     = [text ; frame]                                                 (B*T, L + 1 + N, D)
    for each block: x[:, L:] = TTR(x[:, L:]);  x = block(x, key-padding mask)   (text is never rolled)
    x     = mean over the T frames of norm(x)                              (B, L + 1 + N, D)
    cls   = tanh(pooler(x[:, 0]))      vtm = itm_score(cls) (no match, match)   mlm = mlm_score(x[:, :L])

Frames meet only through TTR: in each block a fold of the frame tokens (indices 1..fold and the last fold) is
exchanged with the neighbouring frames. Text-only and video-only passes run the blocks without TTR and give the
[CLS] / mean frame-CLS features that the optional 512-d projections (``txt_proj`` / ``vid_proj``) align.

Patch order: the release puts each frame's patches in a fresh random order on every call (train and eval), so which
patches TTR exchanges is random and its inference is stochastic. Here the order is explicit: raster by default
(deterministic evaluation), or drawn from a ``torch.Generator`` (the model's, seeded by ``video.patch_seed``, when
``video.patch_order = "shuffle"``, or one passed to the call): the release's behaviour, reproducible.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from egovlp.models.allinone_config import AllInOneConfig
from egovlp.models.allinone_layers import (
    BertEmbeddings,
    ITMHead,
    MLMHead,
    Pooler,
    VisionTransformer,
    temporal_roll,
)
from egovlp.models.layers import additive_mask, init_linear_, set_attention_impl
from egovlp.models.video import resize_temporal_embed

log = logging.getLogger(__name__)


@dataclass
class JointOutput:
    """The joint pass of aligned (video, text) pairs, averaged over frames."""

    text_feats: torch.Tensor  # (B, L, D) text token states
    video_feats: torch.Tensor  # (B, prefix + N, D) frame token states (position-wise mean over frames)
    cls_feats: torch.Tensor  # (B, D) pooled text [CLS]: the input of the VTM head


class AllInOne(nn.Module):
    """The All-in-one model (release parameter names). ``video (B, T, 3, H, W)``, ``input_ids`` / ``attention_mask``
    ``(B, L)`` with ``L <= text.max_positions``."""

    def __init__(self, cfg: AllInOneConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.width
        self.text_embeddings = BertEmbeddings(cfg.text, d, cfg.dropout)
        self.token_type_embeddings = nn.Embedding(2, d)  # row 0 text, row 1 video
        self.transformer = VisionTransformer(cfg)
        self.pooler = Pooler(d)
        if cfg.mlm_head:
            self.mlm_score = MLMHead(d, cfg.text.vocab_size)
        if cfg.vtm_head:
            self.itm_score = ITMHead(d)
        if cfg.has_projections:
            self.txt_proj = nn.Linear(d, cfg.embed_dim)
            self.vid_proj = nn.Linear(d, cfg.embed_dim)
        self.patch_rng = torch.Generator(device="cpu").manual_seed(cfg.video.patch_seed)
        self.apply(lambda m: init_linear_(m, cfg.init_std))
        vt = self.transformer
        for p in (vt.cls_token, vt.pos_embed, getattr(vt, "dist_token", None)):
            if p is not None:
                nn.init.trunc_normal_(p, std=0.02, a=-0.04, b=0.04)
        self.set_attention_impl(cfg.attn_impl)

    # ------------------------------------------------------------------------------------------------- settings
    def set_attention_impl(self, impl: str) -> None:
        set_attention_impl(self, impl)

    def resize_temporal_embed(self, num_frames: int) -> None:
        """Resize the temporal embedding to ``num_frames`` rows (interpolate / truncate, as the release)."""
        vt = self.transformer
        vt.temporal_embed = nn.Parameter(resize_temporal_embed(vt.temporal_embed.detach(), num_frames))

    @contextmanager
    def frames(self, num_frames: int) -> Iterator[None]:
        """Accept ``num_frames`` frames inside the block: a temporary interpolated temporal embedding if it has
        fewer rows (the trained parameter object is put back after); fewer frames need nothing."""
        vt = self.transformer
        trained = vt.temporal_embed
        if num_frames <= trained.shape[1]:
            yield
            return
        with torch.no_grad():
            vt.temporal_embed = nn.Parameter(resize_temporal_embed(trained.detach(), num_frames), requires_grad=False)
        try:
            yield
        finally:
            vt.temporal_embed = trained

    def patch_order(self, rows: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor | None:
        """``(rows, N)`` patch permutations (one per frame) from ``generator``, or from the model's generator when
        ``video.patch_order = "shuffle"``; None (raster order) otherwise."""
        if generator is None and self.cfg.video.patch_order == "shuffle":
            generator = self.patch_rng
        if generator is None:
            return None
        n = self.cfg.video.patches_per_frame
        keys = torch.rand(rows, n, generator=generator, device=generator.device)
        return keys.argsort(dim=1).to(device)

    # --------------------------------------------------------------------------------------------- embeddings
    def embed_text(self, input_ids: torch.Tensor) -> torch.Tensor:
        """``(B, L)`` -> ``(B, L, D)``: BERT embeddings + the model's token type 0."""
        return self.text_embeddings(input_ids) + self.token_type_embeddings.weight[0]

    def embed_video(self, video: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``(B, T, 3, H, W)`` -> frame tokens ``(B*T, prefix + N, D)`` (+ token type 1)."""
        b, t = video.shape[:2]
        frames = video.flatten(0, 1)
        h, w = frames.shape[-2:]
        p = self.cfg.video.patch_size
        if h % p or w % p:
            raise ValueError(f"frames of {h}x{w} pixels are not a multiple of the patch size {p}")
        order = self.patch_order(b * t, generator, video.device)
        if order is not None and order.shape[1] != (h // p) * (w // p):
            raise ValueError(f"a shuffled patch order needs {self.cfg.video.img_size}px frames, got {h}x{w}")
        return self.transformer.visual_embed(frames, t, order) + self.token_type_embeddings.weight[1]

    def run_blocks(self, x: torch.Tensor, mask: torch.Tensor | None, text_len: int, num_frames: int | None):
        """The blocks on ``x (B*T, L', D)``; TTR on the tokens after ``text_len`` before each block when
        ``num_frames`` is given (joint pass). Returns ``norm(x)``."""
        vt, div = self.transformer, self.cfg.roll_div
        for block in vt.blocks:
            if num_frames is not None:
                x = torch.cat((x[:, :text_len], temporal_roll(x[:, text_len:], num_frames, div)), dim=1)
            x = block(x, mask)
        return vt.norm(x)

    # ------------------------------------------------------------------------------------------------- passes
    def joint(
        self,
        video: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> JointOutput:
        """The joint pass of aligned pairs ``video[i]`` / ``input_ids[i]``."""
        b, t = video.shape[:2]
        if input_ids.shape[0] != b:
            raise ValueError(f"{b} videos but {input_ids.shape[0]} texts (the joint pass takes aligned pairs)")
        text = self.embed_text(input_ids).repeat_interleave(t, dim=0)  # (B*T, L, D)
        frames = self.embed_video(video, generator)  # (B*T, l, D)
        x = torch.cat((text, frames), dim=1)
        keep = torch.cat((attention_mask, attention_mask.new_ones(b, frames.shape[1])), dim=1)
        mask = additive_mask(keep.repeat_interleave(t, dim=0), x.dtype)
        length = input_ids.shape[1]
        x = self.run_blocks(x, mask, length, t)
        x = x.view(b, t, *x.shape[1:]).mean(dim=1)  # (B, L + l, D)
        return JointOutput(text_feats=x[:, :length], video_feats=x[:, length:], cls_feats=self.pooler(x))

    def text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Text-only pass: token states ``(B, L, D)``. The release repeats the text T times and averages the T
        identical results; one pass is the same."""
        x = self.embed_text(input_ids)
        return self.run_blocks(x, additive_mask(attention_mask, x.dtype), 0, None)

    def video_features(self, video: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Video-only pass without TTR: frame token states averaged over frames ``(B, prefix + N, D)``."""
        b, t = video.shape[:2]
        x = self.run_blocks(self.embed_video(video, generator), None, 0, None)
        return x.view(b, t, *x.shape[1:]).mean(dim=1)

    def encode_text(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, normalize: bool = False
    ) -> torch.Tensor:
        """``txt_proj`` of the text-only [CLS] ``(B, E)``; without projections the [CLS] state itself ``(B, D)``
        (not aligned with the video features: only good as cheap candidates for VTM re-ranking)."""
        x = self.text_features(input_ids, attention_mask)[:, 0]
        x = self.txt_proj(x) if self.cfg.has_projections else self._unaligned(x)
        return F.normalize(x, dim=-1) if normalize else x

    def encode_video(self, video: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """``vid_proj`` of the mean frame CLS of the video-only pass ``(B, E)`` (``(B, D)`` without projections)."""
        x = self.video_features(video)[:, 0]
        x = self.vid_proj(x) if self.cfg.has_projections else self._unaligned(x)
        return F.normalize(x, dim=-1) if normalize else x

    def _unaligned(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` unchanged, saying once per model that dual scores of a model without projections mean little."""
        if not self.__dict__.get("_warned_unaligned"):
            self.__dict__["_warned_unaligned"] = True
            log.warning(
                "%s has no contrastive projections (a pre-training checkpoint: MLM + VTM only): its text-only and "
                "video-only features are not aligned, so dual / cosine scores are near chance; rank with VTM "
                "(egovlp evaluate epic_mir_vtm, the EgoMCQ fusion column) or fine-tune with VTC",
                self.cfg.arch,
            )
        return x

    # --------------------------------------------------------------------------------------------------- heads
    def _require(self, head: str) -> nn.Module:
        if not hasattr(self, head):
            raise RuntimeError(f"this {self.cfg.arch} model has no {head} head")
        return getattr(self, head)

    def vtm_logits(self, joint: JointOutput) -> torch.Tensor:
        """``(B, 2)`` (no match, match) logits of a joint pass."""
        return self._require("itm_score")(joint.cls_feats)

    def rank_output(self, cls_feats: torch.Tensor) -> torch.Tensor:
        """The release's retrieval score ``(B, 1)``: its ``rank_output`` Linear(D, 1) shares storage with the match
        row (row 1) of ``itm_score.fc``, so it is that row's logit."""
        fc = self._require("itm_score").fc
        assert isinstance(fc, nn.Linear)
        return F.linear(cls_feats, fc.weight[1:], fc.bias[1:])

    def vtm_score(self, video: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The release's ranking score (match logit) ``(B,)`` for aligned pairs."""
        return self.rank_output(self.joint(video, input_ids, attention_mask).cls_feats)[:, 0]

    def vtm_probability(
        self, video: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        """P(match) ``(B,)`` for aligned pairs."""
        return self.vtm_logits(self.joint(video, input_ids, attention_mask)).softmax(dim=-1)[:, 1]

    def mlm_logits(self, text_feats: torch.Tensor) -> torch.Tensor:
        """``(..., D)`` text states -> ``(..., vocab)`` logits."""
        return self._require("mlm_score")(text_feats)

    def forward(self, video: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> JointOutput:
        return self.joint(video, input_ids, attention_mask)

    # -------------------------------------------------------------------------------------- optimiser hooks
    @staticmethod
    def is_new_parameter(name: str) -> bool:
        """Heads a fine-tune adds to a pre-trained model (the VTC projections)."""
        return name.startswith(("txt_proj.", "vid_proj."))

    @staticmethod
    def no_weight_decay(name: str, param: torch.Tensor) -> bool:
        """Biases and norms (the release's no-decay list: every 1-D parameter)."""
        return param.ndim <= 1
