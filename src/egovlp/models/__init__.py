"""EgoVLPv2 model: TimeSformer + RoBERTa towers with gated cross-attention fusion in the top layers, and heads."""

from egovlp.models.config import ModelConfig, TextConfig, VideoConfig
from egovlp.models.model import EgoVLPv2, FusedOutput
from egovlp.models.registry import create_model, get_model_config, list_models, register_model

__all__ = [
    "EgoVLPv2",
    "FusedOutput",
    "ModelConfig",
    "TextConfig",
    "VideoConfig",
    "create_model",
    "get_model_config",
    "list_models",
    "register_model",
]
