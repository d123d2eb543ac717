"""Build a model from a config plus optional weights on disk (an egovlp checkpoint or backbone initialisations)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from torch import nn

from egovlp.errors import ConfigError
from egovlp.models.registry import create_model
from egovlp.models.video import resize_temporal_embed
from egovlp.models.weights import attach_file_heads, load_state_dict_strict, load_weights, split_task_heads

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InitConfig:
    """Where a training run's initial weights come from (the ``init`` section of a training config)."""

    checkpoint: str = ""  # egovlp .safetensors to start from (e.g. a converted official checkpoint)
    vit: str = ""  # timm / Google ViT-B/16 ImageNet weights for the video tower (.pth, .npz, .safetensors)
    roberta: str = ""  # HuggingFace text tower: roberta-base (or distilbert-base-uncased for a DistilBERT model) folder


def build_model(cfg: Any, checkpoint: str = "", vit: str = "", roberta: str = "") -> nn.Module:
    """The model of ``cfg`` (any family), then weights: ``checkpoint`` (an egovlp ``.safetensors``, loaded strictly;
    its temporal embedding is resized to ``cfg.video.num_frames``), or else ImageNet ``vit`` and ``roberta-base``
    backbones (EgoVLPv2 family)."""
    model = create_model(cfg)
    if checkpoint:
        state, heads = split_task_heads(load_weights(checkpoint))
        key = "video_model.temporal_embed"
        if key in state and state[key].shape[1] != cfg.video.num_frames:
            log.info(
                "resizing %s of %s from %d to %d frames", key, checkpoint, state[key].shape[1], cfg.video.num_frames
            )
            state[key] = resize_temporal_embed(state[key], cfg.video.num_frames)
        load_state_dict_strict(model, state, checkpoint)
        attach_file_heads(model, heads)  # task heads of the file (heads.*), e.g. to start a fine-tune's head from
        log.info("loaded %s", checkpoint)
        return model
    if vit or roberta:
        from egovlp.models.model import EgoVLPv2
        from egovlp.models.pretrained import load_roberta, load_vit

        if not isinstance(model, EgoVLPv2):
            raise ConfigError(f"init.vit / init.roberta initialise EgoVLPv2-family towers, not a {cfg.family} model")
        if vit:
            load_vit(model, vit)
        if roberta and cfg.text.kind == "distilbert":  # the frozen family's text tower (distilbert-base-uncased)
            from egovlp.models.distilbert import load_distilbert

            load_distilbert(model.text_model, roberta)
        elif roberta:
            load_roberta(model, roberta)
    return model
