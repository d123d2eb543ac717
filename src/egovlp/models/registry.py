"""Model families and their named architectures (timm-style registry).

A **family** (:class:`ModelFamily`) is one kind of model: its config dataclass (with a ``family`` field naming it),
how to build it, how to count its parameters and compute, and how to recognise and convert the official
checkpoints of its release. An **architecture** is a named config of a family (``egovlpv2-base``,
``egovlpv2-tiny``, ...). Weight files record their config, family included, so :func:`create_model` and
:func:`egovlp.models.weights.load_model` dispatch on it; ``egovlp info`` and ``egovlp convert`` work for every
family.

The EgoVLPv2 family is registered here; other families register from their own modules, listed in
:data:`FAMILY_MODULES` and imported on first use.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from egovlp.errors import ConfigError
from egovlp.models.config import ModelConfig, TextConfig, VideoConfig

__all__ = [
    "FAMILY_MODULES",
    "ModelFamily",
    "create_model",
    "get_family",
    "get_model_config",
    "list_families",
    "list_models",
    "register_family",
    "register_model",
]

#: modules that register further families when imported (EgoVLPv2 is registered below)
FAMILY_MODULES: tuple[str, ...] = ("egovlp.models.frozen", "egovlp.models.allinone")


@dataclass(frozen=True)
class ModelFamily:
    """One kind of model.

    Attributes:
        name: the ``family`` value its configs carry.
        description: one line for ``egovlp info --list``.
        config_type: its frozen config dataclass (must have ``family`` and ``arch`` fields).
        build: ``config -> nn.Module`` with random weights (works under ``torch.device("meta")``).
        parameter_table: ``config -> {part: count}`` (with ``total``).
        mac_table: ``(config, num_frames | None, text_tokens) -> {path: GMACs}`` per input path, batch 1.
        recognises: ``official state dict (prefix stripped) -> bool``: are these this family's keys?
        official_config: ``official state dict -> config`` read off its keys and shapes.
        convert_state: ``(official state dict, config) -> state dict in our names`` for that config.
    """

    name: str
    description: str
    config_type: type
    build: Callable[[Any], nn.Module]
    parameter_table: Callable[[Any], dict[str, int]]
    mac_table: Callable[[Any, int | None, int], dict[str, float]]
    recognises: Callable[[dict], bool] | None = None
    official_config: Callable[[dict], Any] | None = None
    convert_state: Callable[[dict, Any], dict] | None = None


_FAMILIES: dict[str, ModelFamily] = {}
_REGISTRY: dict[str, Callable[[], Any]] = {}
_DESCRIPTIONS: dict[str, str] = {}
_loaded = False


def register_family(family: ModelFamily) -> ModelFamily:
    _FAMILIES[family.name] = family
    return family


def _load_families() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for module in FAMILY_MODULES:
            importlib.import_module(module)


def list_families() -> dict[str, ModelFamily]:
    _load_families()
    return dict(sorted(_FAMILIES.items()))


def get_family(name: str) -> ModelFamily:
    """The family ``name``; ConfigError naming the known ones otherwise."""
    families = list_families()
    if name not in families:
        raise ConfigError(f"unknown model family {name!r} (known: {', '.join(families)})")
    return families[name]


def register_model(name: str, description: str = "") -> Callable:
    """Decorator: register a function returning a config (of any family) under the architecture ``name``."""

    def wrap(fn: Callable[[], Any]) -> Callable[[], Any]:
        _REGISTRY[name] = fn
        _DESCRIPTIONS[name] = description or (fn.__doc__ or "").strip().splitlines()[0]
        return fn

    return wrap


def list_models() -> dict[str, str]:
    """Registered architecture names and one-line descriptions."""
    _load_families()
    return dict(sorted(_DESCRIPTIONS.items()))


def get_model_config(name: str) -> Any:
    """The registered configuration ``name`` (with ``arch`` set to it)."""
    _load_families()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; known: {', '.join(sorted(_REGISTRY))}"
        raise ConfigError(f"unknown model architecture {name!r}{hint}")
    return dataclasses.replace(_REGISTRY[name](), arch=name)


def create_model(cfg: Any) -> nn.Module:
    """Build the model of a config or a registered architecture name (random weights), whatever its family."""
    cfg = get_model_config(cfg) if isinstance(cfg, str) else cfg
    return get_family(cfg.family).build(cfg)


# --------------------------------------------------------------------------------------------- EgoVLPv2 family
def build_egovlpv2(cfg: ModelConfig) -> nn.Module:
    """The EgoVLPv2 class of a :class:`ModelConfig` (the ``egovlpv2`` family and the dual ``frozen`` one)."""
    from egovlp.models.model import EgoVLPv2

    return EgoVLPv2(cfg)


def egovlpv2_parameter_table(cfg: ModelConfig) -> dict[str, int]:
    """Parameters per part of the EgoVLPv2 class (counted on the meta device)."""
    import torch

    from egovlp.models.profile import count_parameters

    with torch.device("meta"):
        return count_parameters(build_egovlpv2(cfg))


def egovlpv2_mac_table(cfg: ModelConfig, num_frames: int | None, text_tokens: int) -> dict[str, float]:
    """GMACs per path of the EgoVLPv2 class; ``fused`` only with fusion layers; ``dual video run`` is what
    ``encode_video`` runs (its last block computes the CLS state only)."""
    from egovlp.models.profile import count_macs

    r = count_macs(cfg, num_frames, text_tokens)
    fused = {"fused": r.fused} if cfg.has_fusion else {}
    return {"dual video": r.dual_video, "dual text": r.dual_text, **fused, "dual video run": r.dual_video_executed}


def _egovlpv2_recognises(state: dict) -> bool:
    return "video_model.temporal_embed" in state and any(k.startswith("text_model.encoder.layer.") for k in state)


def _egovlpv2_official_config(state: dict) -> ModelConfig:
    from egovlp.models.convert import infer_official_config

    return infer_official_config(state)


def _egovlpv2_convert(state: dict, cfg: ModelConfig) -> dict:
    from egovlp.models.convert import convert_official_state_dict

    return convert_official_state_dict(state, cfg.video.num_frames)


register_family(
    ModelFamily(
        name="egovlpv2",
        description="EgoVLPv2: TimeSformer + RoBERTa, gated cross-attention fusion in the top layers of both towers",
        config_type=ModelConfig,
        build=build_egovlpv2,
        parameter_table=egovlpv2_parameter_table,
        mac_table=egovlpv2_mac_table,
        recognises=_egovlpv2_recognises,
        official_config=_egovlpv2_official_config,
        convert_state=_egovlpv2_convert,
    )
)


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
