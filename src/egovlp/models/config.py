"""Typed configurations of the two towers and the assembled EgoVLPv2 model (defaults = the released base model)."""

from __future__ import annotations

from dataclasses import dataclass, field

from egovlp.errors import ConfigError

PROJECTORS = ("mlp", "small", "none")
TEXT_TOWERS = ("roberta", "distilbert")  # text tower implementations (egovlp.models.text.TEXT_TOWERS)
#: families whose configs are ModelConfig (built by the EgoVLPv2 class): frozen = Frozen-in-Time / EgoVLP (v1)
MODEL_CONFIG_FAMILIES = ("egovlpv2", "frozen")


@dataclass(frozen=True)
class VideoConfig:
    """TimeSformer (Frozen-in-Time space-time transformer) video tower."""

    img_size: int = 224
    patch_size: int = 16
    width: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    num_frames: int = 4  # length of the temporal embedding; inputs may have fewer frames
    qkv_bias: bool = True
    ln_eps: float = 1e-5
    dropout: float = 0.0
    drop_path: float = 0.0
    temporal_init_std: float = 0.0  # std of the initial temporal embedding (release: 0, zeros)

    @property
    def patches_per_frame(self) -> int:
        return (self.img_size // self.patch_size) ** 2


@dataclass(frozen=True)
class TextConfig:
    """The text tower: RoBERTa (HuggingFace parameter names) by default (``kind``: see :data:`TEXT_TOWERS`)."""

    kind: str = "roberta"  # which implementation (egovlp.models.text.build_text_tower)
    tokenizer: str = "bpe"  # the tokenizer kind its vocabulary comes from (bpe: RoBERTa byte-level BPE | wordpiece)
    vocab_size: int = 50265
    width: int = 768
    depth: int = 12
    num_heads: int = 12
    ffn_dim: int = 3072
    max_positions: int = 514
    type_vocab_size: int = 1
    pad_token_id: int = 1
    ln_eps: float = 1e-5
    dropout: float = 0.1


@dataclass(frozen=True)
class ModelConfig:
    """EgoVLPv2 = video tower + text tower + gated cross-attention in the top ``num_fusion_layers`` of both + heads.

    ``num_fusion_layers = 0`` gives a pure dual encoder (EgoVLP-style); the VTM/MLM heads are then dropped.
    """

    family: str = "egovlpv2"  # model family (egovlp.models.registry): which class builds this config
    arch: str = "egovlpv2-base"  # registry name this config was derived from (informational)
    video: VideoConfig = field(default_factory=VideoConfig)
    text: TextConfig = field(default_factory=TextConfig)
    num_fusion_layers: int = 6
    projector: str = "mlp"  # "mlp": 768->4096->4096->4096 | "small": 768->256 (text ReLU first) | "none"
    embed_dim: int = 4096  # output size of the projector
    fusion_ln_eps: float = 1e-6  # eps of the fusion-mode final video LayerNorm
    vtm_head: bool = True
    mlm_head: bool = True
    grad_checkpointing: bool = False
    attn_impl: str = "sdpa"  # "sdpa" | "reference"
    init_std: float = 0.02  # std of random initial weights (BERT/ViT 0.02 at width 768; ~1/sqrt(width) if narrow)
    # initial value of every fusion gate (alpha_i2t, alpha_t2i); release: 0, so a fresh model is two towers and the
    # cross-attention weights get no gradient until the gates have grown (docs/demo.md: too slow for a tiny demo run)
    fusion_gate_init: float = 0.0

    def __post_init__(self) -> None:
        if self.family not in MODEL_CONFIG_FAMILIES:
            raise ConfigError(f"model.family={self.family!r} is not a family of this config {MODEL_CONFIG_FAMILIES}")
        if self.text.kind not in TEXT_TOWERS:
            raise ConfigError(f"model.text.kind must be one of {TEXT_TOWERS}, got {self.text.kind!r}")
        if self.projector not in PROJECTORS:
            raise ConfigError(f"model.projector must be one of {PROJECTORS}, got {self.projector!r}")
        if self.num_fusion_layers and (self.family == "frozen" or self.text.kind == "distilbert"):
            raise ConfigError(
                f"model.num_fusion_layers must be 0 for the {self.family} family / {self.text.kind} text tower "
                f"(a dual encoder without cross-attention), got {self.num_fusion_layers}"
            )
        if not 0 <= self.num_fusion_layers <= min(self.video.depth, self.text.depth):
            raise ConfigError(
                f"model.num_fusion_layers={self.num_fusion_layers} must be between 0 and "
                f"min(video.depth, text.depth)={min(self.video.depth, self.text.depth)}"
            )
        if self.video.width % self.video.num_heads or self.text.width % self.text.num_heads:
            raise ConfigError("model widths must be divisible by their number of heads")
        if self.video.img_size % self.video.patch_size:
            raise ConfigError("model.video.img_size must be a multiple of model.video.patch_size")

    @property
    def has_fusion(self) -> bool:
        return self.num_fusion_layers > 0
