"""Typed configuration of the All-in-one family (one ViT over [text ; frame], temporal token rolling).

The field names follow the rest of egovlp where tasks read them (``video.img_size``, ``video.num_frames``,
``text.vocab_size``, ``text.pad_token_id``, ``text.tokenizer``), so the shared evaluations and the tokenizer check
work unchanged. Defaults are All-in-one-B as released (families.md §4a-4b).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from egovlp.errors import ConfigError

FAMILY = "allinone"
PATCH_ORDERS = ("raster", "shuffle")


@dataclass(frozen=True)
class AioVideoConfig:
    """The video side: ViLT-style per-frame patch tokens with a per-frame CLS."""

    img_size: int = 224
    patch_size: int = 16
    num_frames: int = 3  # rows of the temporal embedding (the release: 3)
    distilled: bool = False  # DeiT-S distilled: a second prefix token (dist_token) and no temporal embedding added
    # "raster": patches in raster order (deterministic; the default for evaluation) | "shuffle": a fresh random
    # order per frame and per call as the release draws it, from the model's generator seeded with patch_seed
    patch_order: str = "raster"
    patch_seed: int = 0

    @property
    def grid(self) -> int:
        return self.img_size // self.patch_size

    @property
    def patches_per_frame(self) -> int:
        return self.grid**2

    @property
    def prefix_tokens(self) -> int:
        """CLS (+ dist_token for the distilled model)."""
        return 2 if self.distilled else 1


@dataclass(frozen=True)
class AioTextConfig:
    """The text side: BERT embeddings only (random init in the release; no text transformer)."""

    tokenizer: str = "wordpiece"  # bert-base-uncased vocabulary
    vocab_size: int = 30522
    max_positions: int = 40  # the release's max_text_len
    pad_token_id: int = 0
    ln_eps: float = 1e-12


@dataclass(frozen=True)
class AllInOneConfig:
    """All-in-one: ``depth`` pre-LN ViT blocks shared by text and video, temporal token rolling before each."""

    family: str = FAMILY
    arch: str = "allinone-base"
    video: AioVideoConfig = field(default_factory=AioVideoConfig)
    text: AioTextConfig = field(default_factory=AioTextConfig)
    width: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    ln_eps: float = 1e-6  # the ViT's LayerNorms
    roll_div: int = 8  # temporal token rolling: fold = tokens per frame // roll_div
    dropout: float = 0.0  # release training: 0.1
    drop_path: float = 0.0  # release training: 0.1
    mlm_head: bool = True
    vtm_head: bool = True
    embed_dim: int = 0  # contrastive (VTC) projections txt_proj / vid_proj of this size; 0 = none (pre-trained files)
    attn_impl: str = "sdpa"  # "sdpa" | "reference"
    init_std: float = 0.02

    def __post_init__(self) -> None:
        if self.family != FAMILY:
            raise ConfigError(f"model.family={self.family!r}: an AllInOneConfig is of the {FAMILY!r} family")
        if self.width % self.num_heads:
            raise ConfigError(f"model.width={self.width} must be divisible by model.num_heads={self.num_heads}")
        if self.video.img_size % self.video.patch_size:
            raise ConfigError("model.video.img_size must be a multiple of model.video.patch_size")
        if self.video.patch_order not in PATCH_ORDERS:
            raise ConfigError(f"model.video.patch_order must be one of {PATCH_ORDERS}, got {self.video.patch_order!r}")
        if self.roll_div < 3:  # two folds and CLS must fit in a frame's tokens
            raise ConfigError(f"model.roll_div must be >= 3 (two disjoint folds besides CLS), got {self.roll_div}")
        if self.embed_dim < 0:
            raise ConfigError(f"model.embed_dim must be >= 0 (0: no contrastive projections), got {self.embed_dim}")

    @property
    def has_fusion(self) -> bool:
        """The joint (single-stream) pass exists: VTM scores and MLM come from it."""
        return True

    @property
    def has_projections(self) -> bool:
        """txt_proj / vid_proj exist (fine-tuned VTC checkpoints): encode_text / encode_video are aligned."""
        return self.embed_dim > 0
