"""The "frozen" model family: Frozen-in-Time and EgoVLP (v1), one dual encoder with two released layouts.

Both are the EgoVLPv2 class without fusion (:class:`~egovlp.models.model.EgoVLPv2` with ``num_fusion_layers=0``,
no VTM/MLM heads) and these constants (families.md §1a, §2a)::

    video: TimeSformer ViT-B/16, LayerNorm eps 1e-6     text: DistilBERT-base-uncased (WordPiece, vocab 30522)
    video feature = vid_proj(norm(x)[:, 0])            text feature = txt_proj(h[:, 0])     (256-d "small")
    similarity = cosine, temperature 0.05 (the task's loss: NormSoftmax for Frozen, EgoNCE for EgoVLP)

Architectures: ``frozen-in-time`` (a 4-row temporal embedding) and ``egovlp`` (16 rows, of which the released
pre-training used only the first 4: ``egovlp.pth`` was trained with 4 frames, rows 4..15 keep their zero init).

Released checkpoints (``egovlp convert``): the trainers' ``{'arch', 'epoch', 'state_dict', 'optimizer',
'monitor_best', 'config'}`` with a pickled ``parse_config.ConfigParser`` (read inert), keys prefixed ``module.``
and otherwise named as ours. Conversion strips the prefix, drops a ``position_ids`` buffer if a newer
``transformers`` saved one, and slices (fewer frames) or interpolates (more) the temporal embedding to the
requested frame count, as the release's ``_inflate_positional_embeds`` does. Converting EgoVLP with
``--num-frames 4`` keeps its four trained rows; slicing, not interpolating 16 -> 4, which would mix in the untrained
zero rows.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import torch

from egovlp.errors import CheckpointError
from egovlp.models.config import ModelConfig, TextConfig, VideoConfig
from egovlp.models.registry import (
    ModelFamily,
    build_egovlpv2,
    egovlpv2_mac_table,
    egovlpv2_parameter_table,
    register_family,
    register_model,
)

log = logging.getLogger(__name__)

FAMILY = "frozen"
TEMPORAL_KEY = "video_model.temporal_embed"
#: buffers of newer ``transformers`` versions that the released files lack and our tower does not keep
DROPPED_KEYS = ("text_model.embeddings.position_ids",)

#: DistilBERT-base-uncased (HF ``DistilBertConfig`` defaults)
DISTILBERT_BASE = TextConfig(
    kind="distilbert",
    tokenizer="wordpiece",
    vocab_size=30522,
    width=768,
    depth=6,
    num_heads=12,
    ffn_dim=3072,
    max_positions=512,
    pad_token_id=0,
    ln_eps=1e-12,
    dropout=0.1,
)


def frozen_config(
    num_frames: int = 4, video: VideoConfig | None = None, text: TextConfig = DISTILBERT_BASE, **kw: Any
) -> ModelConfig:
    """A "frozen" family config: dual encoder, 256-d small projector, video LayerNorm eps 1e-6."""
    video = video or VideoConfig(num_frames=num_frames, ln_eps=1e-6)
    kw = {"projector": "small", "embed_dim": 256, **kw}
    return ModelConfig(family=FAMILY, video=video, text=text, num_fusion_layers=0, vtm_head=False, mlm_head=False, **kw)


# --------------------------------------------------------------------------------------------- family hooks
def recognises(state: dict) -> bool:
    """Frozen-in-Time / EgoVLP keys (prefix stripped): a TimeSformer plus DistilBERT ``transformer.layer``s."""
    return TEMPORAL_KEY in state and any(k.startswith("text_model.transformer.layer.") for k in state)


def official_config(state: dict[str, torch.Tensor]) -> ModelConfig:
    """The config of an official state dict (prefix stripped), read off its keys and shapes.

    The frame count is the temporal embedding's row count (16 for EgoVLP's files: arch ``egovlp``; otherwise
    ``frozen-in-time``); depths, widths, vocabulary, positions and the projector come from the tensors.
    """

    def shape(key: str) -> tuple[int, ...]:
        if key not in state:
            raise CheckpointError(f"not a Frozen-in-Time / EgoVLP state dict: key {key!r} is missing")
        return tuple(state[key].shape)

    def depth(prefix: str) -> int:
        return 1 + max(int(k[len(prefix) :].split(".")[0]) for k in state if k.startswith(prefix))

    frames = shape(TEMPORAL_KEY)[1]
    video_width = shape("video_model.norm.weight")[0]
    video = VideoConfig(
        num_frames=frames,
        width=video_width,
        depth=depth("video_model.blocks."),
        num_heads=max(video_width // 64, 1),
        mlp_ratio=shape("video_model.blocks.0.mlp.fc1.weight")[0] / video_width,
        patch_size=shape("video_model.patch_embed.proj.weight")[-1],
        ln_eps=1e-6,
    )
    num_patches = shape("video_model.pos_embed")[1] - 1
    video = dataclasses.replace(video, img_size=video.patch_size * round(num_patches**0.5))
    vocab, text_width = shape("text_model.embeddings.word_embeddings.weight")
    text = dataclasses.replace(
        DISTILBERT_BASE,
        vocab_size=vocab,
        width=text_width,
        depth=depth("text_model.transformer.layer."),
        num_heads=max(text_width // 64, 1),
        ffn_dim=shape("text_model.transformer.layer.0.ffn.lin1.weight")[0],
        max_positions=shape("text_model.embeddings.position_embeddings.weight")[0],
    )
    if "txt_proj.1.weight" in state:
        projector, embed_dim = "small", shape("txt_proj.1.weight")[0]
    else:  # the release's projection='' : identity
        projector, embed_dim = "none", text_width
    cfg = frozen_config(video=video, text=text, projector=projector, embed_dim=embed_dim)
    return dataclasses.replace(cfg, arch="egovlp" if frames == 16 else "frozen-in-time")


def _trained_rows(embed: torch.Tensor) -> int:
    """How many leading rows of a temporal embedding ``(1, F, D)`` are not all zero (the rest kept the zero init)."""
    nonzero = [i for i in range(embed.shape[1]) if bool(embed[0, i].ne(0).any())]
    return nonzero[-1] + 1 if nonzero else 0


def convert_state(state: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Official state dict -> ours for ``cfg``: no ``module.`` prefix or ``position_ids``, the temporal embedding
    sliced or interpolated to ``cfg.video.num_frames``. Other keys pass unchanged (the strict load names the
    unknown, missing and mis-shaped ones)."""
    from egovlp.models.convert import strip_prefix
    from egovlp.models.video import resize_temporal_embed

    out = {k: v for k, v in strip_prefix(state).items() if k not in DROPPED_KEYS}
    old = out.get(TEMPORAL_KEY)
    frames = cfg.video.num_frames
    if old is not None and old.ndim == 3 and old.shape[1] != frames:
        out[TEMPORAL_KEY] = resize_temporal_embed(old, frames)
        how = "sliced" if frames < old.shape[1] else "interpolated"
        log.info("temporal embedding %s from %d to %d frames", how, old.shape[1], frames)
    if old is not None and old.ndim == 3 and old.device.type != "meta":
        trained = _trained_rows(old)
        if 0 < trained < min(frames, old.shape[1]):
            log.warning(
                "rows %d..%d of the checkpoint's temporal embedding are all zero (never trained: the model was "
                "trained with %d frames); use --num-frames %d unless it was fine-tuned with more",
                trained,
                old.shape[1] - 1,
                trained,
                trained,
            )
    return out


FROZEN = register_family(
    ModelFamily(
        name=FAMILY,
        description="Frozen-in-Time / EgoVLP (v1): TimeSformer + DistilBERT dual encoder, 256-d projections",
        config_type=ModelConfig,
        build=build_egovlpv2,
        parameter_table=egovlpv2_parameter_table,
        mac_table=egovlpv2_mac_table,
        recognises=recognises,
        official_config=official_config,
        convert_state=convert_state,
    )
)


# ------------------------------------------------------------------------------------------------ released models
@register_model("frozen-in-time", "Frozen-in-Time (cc-webvid2m-4f): ViT-B/16 TimeSformer + DistilBERT, 4 frames")
def frozen_in_time() -> ModelConfig:
    return frozen_config(num_frames=4)


@register_model("egovlp", "EgoVLP (v1) egovlp.pth: Frozen-in-Time layout, 16-row temporal embedding (trained with 4)")
def egovlp() -> ModelConfig:
    return frozen_config(num_frames=16)


# --------------------------------------------------------------------------------------------- tiny test variants
def _tiny_towers(frames: int) -> tuple[VideoConfig, TextConfig]:
    video = VideoConfig(img_size=32, patch_size=8, width=64, depth=4, num_heads=4, num_frames=frames, ln_eps=1e-6)
    text = dataclasses.replace(
        DISTILBERT_BASE, vocab_size=1000, width=64, depth=2, num_heads=4, ffn_dim=256, max_positions=64
    )
    return video, text


@register_model("frozen-in-time-tiny", "tiny random-weight Frozen-in-Time for tests: 32 px, width 64, 4 + 2 layers")
def frozen_in_time_tiny() -> ModelConfig:
    video, text = _tiny_towers(4)
    return frozen_config(video=video, text=text, embed_dim=32, init_std=0.1)


@register_model("egovlp-tiny", "tiny random-weight EgoVLP (v1) for tests: as frozen-in-time-tiny, 16-row temporal")
def egovlp_tiny() -> ModelConfig:
    video, text = _tiny_towers(16)
    return frozen_config(video=video, text=text, embed_dim=32, init_std=0.1)
