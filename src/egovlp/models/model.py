"""EgoVLPv2: one model that is a dual encoder (cross-attention off) or a fusion encoder (cross-attention on).

Dual mode::

    video feature = vid_proj(video_model.norm(x)[:, 0]);  text feature = txt_proj(text_model(ids)[:, 0])

Fusion mode replaces the tower's video CLS token with its own ``cls_token``, runs the lower (unfused) layers of both
towers independently, then co-attends in the top ``num_fusion_layers``: at each fused depth both streams attend to
the OTHER stream's INPUT at that depth, and both new states are computed before advancing. The fused video states
go through the fusion-mode ``norm``. With all gates at 0 and equal CLS tokens, fused states equal dual states.

The fused pass is split into ``video_lower`` / ``text_lower`` / ``fuse_upper`` so that training can compute the
unfused lower layers once and reuse them for several fused passes (MLM and VTM).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple, cast

import torch
import torch.nn.functional as F
from torch import nn

from egovlp.models.config import ModelConfig
from egovlp.models.fusion import FusedSpaceAttention
from egovlp.models.heads import MLMHead, Pooler, VTMHead, build_projector
from egovlp.models.layers import additive_mask, init_linear_, set_attention_impl
from egovlp.models.text import TextTower, build_text_tower
from egovlp.models.video import SpaceTimeTransformer, resize_temporal_embed

# Parameters that are new relative to the ImageNet ViT / roberta-base initialisation: heads, projectors and fusion.
# They get the larger learning rate in pre-training (timm-style "group matcher" by name).
_NEW_PARAM_MARKERS = (
    "txt_proj.",
    "vid_proj.",
    "cross_modal_",
    "itm_score.",
    "mlm_score.",
    "_i2t",
    "crossattention_t2i.",
    "alpha_t2i",
)


class FusedOutput(NamedTuple):
    """States of a fused pass."""

    video: torch.Tensor | None  # (B, 1 + F*P, Dv) after the fusion-mode norm ((B, 1, Dv) if only CLS was asked)
    text: torch.Tensor  # (B, L, Dt) last text layer; [:, 0] is the fused text CLS


class EgoVLPv2(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        v, t, nf = cfg.video, cfg.text, cfg.num_fusion_layers
        self.first_fused_video = v.depth - nf
        self.first_fused_text = t.depth - nf
        fused_attn = {
            i: FusedSpaceAttention(v.width, v.num_heads, t.width, v.qkv_bias, v.dropout)
            for i in range(self.first_fused_video, v.depth)
        }
        self.video_model = SpaceTimeTransformer(v, fused_attn)
        self.text_model = build_text_tower(t, nf, v.width)
        self.txt_proj = build_projector(cfg.projector, t.width, cfg.embed_dim, "text")
        self.vid_proj = build_projector(cfg.projector, v.width, cfg.embed_dim, "video")
        if cfg.has_fusion:
            self.cls_token = nn.Parameter(torch.zeros(1, 1, v.width))  # fusion-mode video CLS, zero-init
            self.norm = nn.LayerNorm(v.width, eps=cfg.fusion_ln_eps)  # fusion-mode final video norm
            if cfg.vtm_head or cfg.mlm_head:
                self.cross_modal_text_transform = nn.Linear(t.width, t.width)
            if cfg.vtm_head:
                self.cross_modal_video_transform = nn.Linear(v.width, t.width)
                self.cross_modal_text_pooler = Pooler(t.width)
                self.cross_modal_video_pooler = Pooler(t.width)
                self.itm_score = VTMHead(2 * t.width)
            if cfg.mlm_head:
                self.mlm_score = MLMHead(t.width, t.vocab_size)
        if cfg.init_std != 0.02:  # the towers initialise themselves with the BERT/ViT value 0.02
            self.video_model.reset_parameters(cfg.init_std)
            self._text_tower.reset_parameters(cfg.init_std)
        for name, module in self.named_children():
            if name not in ("video_model", "text_model"):
                module.apply(functools.partial(init_linear_, std=cfg.init_std))
        if cfg.fusion_gate_init:  # open the gates at start (release: 0); see ModelConfig.fusion_gate_init
            with torch.no_grad():
                for name, p in self.named_parameters():
                    if name.endswith(("alpha_i2t", "alpha_t2i")):
                        p.fill_(cfg.fusion_gate_init)
        self.set_grad_checkpointing(cfg.grad_checkpointing)
        set_attention_impl(self, cfg.attn_impl)

    @property
    def _text_tower(self) -> TextTower:
        """``text_model`` (an ``nn.Module``) seen through the :class:`TextTower` interface the fusion model uses."""
        return cast(TextTower, self.text_model)

    # ----------------------------------------------------------------------------------------------- switches
    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        """Recompute each block / layer in the backward pass instead of storing its activations."""
        self.video_model.grad_checkpointing = enabled
        self._text_tower.grad_checkpointing = enabled

    def set_attention_impl(self, impl: str) -> None:
        """ "sdpa" (fast) or "reference" (explicit softmax attention)."""
        set_attention_impl(self, impl)

    def resize_temporal_embed(self, num_frames: int) -> None:
        """Change the number of frames the video tower accepts (interpolate or truncate the temporal embedding)."""
        with torch.no_grad():
            new = resize_temporal_embed(self.video_model.temporal_embed.data, num_frames)
        self.video_model.temporal_embed = nn.Parameter(new)
        video_cfg = dataclasses.replace(self.cfg.video, num_frames=num_frames)
        self.cfg = dataclasses.replace(self.cfg, video=video_cfg)
        self.video_model.cfg = video_cfg

    @contextmanager
    def frames(self, num_frames: int) -> Iterator[None]:
        """Accept ``num_frames`` frames inside the block (e.g. evaluation at 16 frames of a model trained with 4).

        More frames than the temporal embedding holds: a temporary, interpolated copy (as the release resizes) is
        used and the trained one is put back after; fewer need nothing (the tower uses the first rows). The trained
        parameter object is never modified, so an optimiser holding it is unaffected.
        """
        vm = self.video_model
        trained = vm.temporal_embed
        if num_frames <= trained.shape[1]:
            yield
            return
        with torch.no_grad():
            vm.temporal_embed = nn.Parameter(resize_temporal_embed(trained.detach(), num_frames), requires_grad=False)
        try:
            yield
        finally:
            vm.temporal_embed = trained

    @contextmanager
    def record_cross_attention(self) -> Iterator[dict[int, list[torch.Tensor]]]:
        """Inside the block, every fused pass records the text-to-video cross-attention of each fused text layer.

        Yields ``{text layer index: [probabilities (B, H, L, 1 + F*P), one per pass]}``: how much each text token
        (query) attends to each video token (CLS, then frame-major patches) per head, computed by the layer's own
        forward through the explicit softmax (what a visualisation of the poster's attention maps needs). The
        recordings are detached; outside the block nothing is kept.
        """
        self._require_fusion()
        layers = {
            i: cast(Any, self.text_model).encoder.layer[i].crossattention_t2i.self
            for i in range(self.first_fused_text, self.cfg.text.depth)
        }
        records: dict[int, list[torch.Tensor]] = {i: [] for i in layers}
        for i, module in layers.items():
            module.recording = records[i]
        try:
            yield records
        finally:
            for module in layers.values():
                module.recording = None

    # ------------------------------------------------------------------------------------------------- dual
    def encode_video(self, video: torch.Tensor, normalize: bool = False, project: bool = True) -> torch.Tensor:
        """Dual-encoder video feature: ``(B, F, 3, H, W) -> (B, E)`` (``(B, Dv)`` with ``project=False``)."""
        x = self.video_model(video)
        x = self.vid_proj(x) if project else x
        return F.normalize(x, dim=-1) if normalize else x

    def encode_text(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        normalize: bool = False,
        project: bool = True,
    ) -> torch.Tensor:
        """Dual-encoder text feature: ``input_ids (B, L) -> (B, E)`` from the ``<s>`` state (no tanh)."""
        x = self.text_model(input_ids, attention_mask)[:, 0]
        x = self.txt_proj(x) if project else x
        return F.normalize(x, dim=-1) if normalize else x

    # ----------------------------------------------------------------------------------------------- fusion
    def _require_fusion(self) -> None:
        if not self.cfg.has_fusion:
            raise RuntimeError(f"model {self.cfg.arch!r} has no fusion layers (num_fusion_layers=0)")

    def video_lower(self, video: torch.Tensor) -> torch.Tensor:
        """Fusion-mode video tokens through the unfused blocks: ``(B, F, 3, H, W) -> (B, 1 + F*P, Dv)``."""
        self._require_fusion()
        x = self.video_model.embed(video, cls_token=self.cls_token)
        for i in range(self.first_fused_video):
            x = self.video_model.run_block(i, x, video.shape[1])
        return x

    def text_lower(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Text tokens through the unfused layers: ``(B, L) -> (B, L, Dt)``."""
        h = self._text_tower.embeddings(input_ids)
        mask = additive_mask(attention_mask, h.dtype)
        for i in range(self.first_fused_text):
            h = self._text_tower.run_layer(i, h, mask)
        return h

    def fuse_upper(
        self,
        video: torch.Tensor,
        text: torch.Tensor,
        attention_mask: torch.Tensor,
        num_frames: int,
        video_out: str = "all",
    ) -> FusedOutput:
        """Co-attention through the fused layers, from the outputs of :meth:`video_lower` / :meth:`text_lower`.

        Args:
            video: ``(B, 1 + F*P, Dv)``; text: ``(B, L, Dt)``; attention_mask: text ``(B, L)`` of 1/0.
            video_out: which fused video states to compute. ``"all"``: every token; ``"cls"``: the CLS token only
                (``(B, 1, Dv)``; enough for VTM); ``"none"``: skip the last video block, whose output no text state
                depends on (enough for MLM), and return ``video=None``. Text states are always complete.
        """
        self._require_fusion()
        if video_out not in ("all", "cls", "none"):
            raise ValueError(f"video_out must be 'all', 'cls' or 'none', got {video_out!r}")
        mask = additive_mask(attention_mask, text.dtype)
        n = self.cfg.num_fusion_layers
        for k in range(n):
            last = k == n - 1
            new_video = None
            if not (last and video_out == "none"):
                i = self.first_fused_video + k
                new_video = self.video_model.run_block(i, video, num_frames, text, mask, last and video_out == "cls")
            text = self._text_tower.run_layer(self.first_fused_text + k, text, mask, video)
            if new_video is None:  # the last layer with video_out="none": its video block was skipped
                return FusedOutput(None, text)
            video = new_video
        return FusedOutput(self.norm(video), text)

    def fuse(
        self, video: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor, video_out: str = "all"
    ) -> FusedOutput:
        """Fusion-encoder pass on ``video (B, F, 3, H, W)`` and text ``(B, L)`` (``video_out``: see fuse_upper)."""
        lower_v = self.video_lower(video)
        lower_t = self.text_lower(input_ids, attention_mask)
        return self.fuse_upper(lower_v, lower_t, attention_mask, video.shape[1], video_out)

    def vtm_logits(self, fused: FusedOutput) -> torch.Tensor:
        """Video-text matching logits ``(B, 2)`` from the fused CLS states; P(match) = softmax(...)[:, 1]."""
        if fused.video is None:
            raise ValueError("VTM needs the fused video CLS state: fuse with video_out='cls' or 'all', not 'none'")
        text = self.cross_modal_text_pooler(self.cross_modal_text_transform(fused.text[:, 0]))
        video = self.cross_modal_video_pooler(self.cross_modal_video_transform(fused.video[:, 0]))
        return self.itm_score(torch.cat([text, video], dim=-1))

    def mlm_logits(self, fused: FusedOutput) -> torch.Tensor:
        """Masked-token logits ``(B, L, V)`` from all fused text states."""
        return self.mlm_score(self.cross_modal_text_transform(fused.text))

    def vtm_probability(self, video: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        """P(match) ``(B,)`` for aligned pairs of videos and texts."""
        fused = self.fuse(video, input_ids, attention_mask, video_out="cls")
        return self.vtm_logits(fused).softmax(dim=-1)[:, 1]

    def forward(
        self,
        video: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        fusion: bool = False,
    ):
        """Dual mode: ``(video (B, E) | None, text (B, E) | None)`` features; fusion mode: :class:`FusedOutput`."""
        if fusion:
            if video is None or input_ids is None or attention_mask is None:
                raise ValueError("a fused pass needs video, input_ids and attention_mask")
            return self.fuse(video, input_ids, attention_mask)
        v = self.encode_video(video) if video is not None else None
        t = self.encode_text(input_ids, attention_mask) if input_ids is not None else None
        return v, t

    # ------------------------------------------------------------------------------------ optimiser hooks
    @staticmethod
    def is_new_parameter(name: str) -> bool:
        """True for projector, head and fusion parameters (the x4 learning-rate group of pre-training)."""
        return name in ("cls_token", "norm.weight", "norm.bias") or any(m in name for m in _NEW_PARAM_MARKERS)

    @staticmethod
    def no_weight_decay(name: str, param: torch.Tensor) -> bool:
        """True for biases, norms, gates and embeddings-as-tokens (no weight decay)."""
        return param.ndim <= 1 or name.endswith(("cls_token", "pos_embed", "temporal_embed"))
