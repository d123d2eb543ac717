"""Named model configurations (timm-style registry) and model creation."""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable

from egovlp.errors import ConfigError
from egovlp.models.config import ModelConfig, TextConfig, VideoConfig

_REGISTRY: dict[str, Callable[[], ModelConfig]] = {}
_DESCRIPTIONS: dict[str, str] = {}


def register_model(name: str, description: str = "") -> Callable:
    def wrap(fn: Callable[[], ModelConfig]) -> Callable[[], ModelConfig]:
        _REGISTRY[name] = fn
        _DESCRIPTIONS[name] = description or (fn.__doc__ or "").strip().splitlines()[0]
        return fn

    return wrap


def list_models() -> dict[str, str]:
    """Registered names and one-line descriptions."""
    return dict(sorted(_DESCRIPTIONS.items()))


def get_model_config(name: str) -> ModelConfig:
    """The registered configuration ``name`` (with ``arch`` set to it)."""
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; known: {', '.join(sorted(_REGISTRY))}"
        raise ConfigError(f"unknown model architecture {name!r}{hint}")
    return dataclasses.replace(_REGISTRY[name](), arch=name)


def create_model(cfg: ModelConfig | str):
    """Build an :class:`~egovlp.models.model.EgoVLPv2` from a config or a registered name (random weights)."""
    from egovlp.models.model import EgoVLPv2

    return EgoVLPv2(get_model_config(cfg) if isinstance(cfg, str) else cfg)


# ------------------------------------------------------------------------------------------------ released models
@register_model(
    "egovlpv2-base", "EgoVLPv2 pre-training checkpoint: ViT-B/16 TimeSformer + RoBERTa-base, 4096 projector"
)
def egovlpv2_base() -> ModelConfig:
    return ModelConfig()


@register_model("egovlpv2-base-smallproj", "EgoVLPv2 EK-100 / Charades-Ego checkpoints: 256-d projector")
def egovlpv2_base_smallproj() -> ModelConfig:
    return ModelConfig(projector="small", embed_dim=256)


@register_model("egovlpv2-base-dual", "EgoVLPv2 towers as a pure dual encoder (no fusion layers, no VTM/MLM heads)")
def egovlpv2_base_dual() -> ModelConfig:
    return ModelConfig(num_fusion_layers=0, vtm_head=False, mlm_head=False)


# --------------------------------------------------------------------------------------------- tiny test variants
def _tiny(width: int = 64, depth: int = 4, frames: int = 4, img: int = 32, patch: int = 8, vocab: int = 1000):
    video = VideoConfig(
        img_size=img, patch_size=patch, width=width, depth=depth, num_heads=4, num_frames=frames, mlp_ratio=4.0
    )
    text = TextConfig(
        vocab_size=vocab, width=width, depth=depth, num_heads=4, ffn_dim=4 * width, max_positions=66, dropout=0.1
    )
    return video, text


@register_model("egovlpv2-tiny", "tiny random-weight EgoVLPv2 for tests/demo: 32 px, patch 8, width 64, 4+4 layers")
def egovlpv2_tiny() -> ModelConfig:
    video, text = _tiny()
    return ModelConfig(video=video, text=text, num_fusion_layers=2, projector="mlp", embed_dim=64, init_std=0.1)


@register_model("egovlpv2-tiny-smallproj", "tiny EgoVLPv2 with the small (ReLU-first text) projector")
def egovlpv2_tiny_smallproj() -> ModelConfig:
    video, text = _tiny()
    return ModelConfig(video=video, text=text, num_fusion_layers=2, projector="small", embed_dim=32, init_std=0.1)


@register_model("egovlpv2-tiny-deepfusion", "tiny EgoVLPv2 with 3 of 4 layers fused and unequal tower depths")
def egovlpv2_tiny_deepfusion() -> ModelConfig:
    video, text = _tiny(width=32, depth=4)
    text = dataclasses.replace(text, depth=3)
    return ModelConfig(video=video, text=text, num_fusion_layers=3, projector="mlp", embed_dim=32, init_std=0.15)
