"""Import official EgoVLPv2 checkpoints.

Released files are ``torch.save`` pickles of ``{'arch', 'epoch', 'state_dict', 'optimizer', 'scheduler',
'monitor_best', 'config'}`` whose ``config`` is an object of a class from the official code base. We read them with
a restricted unpickler that only rebuilds tensors (:func:`egovlp.utils.safe_pickle.load_torch_checkpoint`), never
running the file's pickle code. Our parameter names equal the release's, so the mapping is: drop the DDP
``module.`` prefix, drop the ``text_model.embeddings.position_ids`` buffer, and resize ``video_model.temporal_embed``
to the requested frame count.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import torch

from egovlp.errors import CheckpointError
from egovlp.models.config import ModelConfig
from egovlp.models.registry import get_model_config
from egovlp.models.video import resize_temporal_embed

log = logging.getLogger(__name__)

DROPPED_KEYS = ("text_model.embeddings.position_ids", "text_model.pooler.dense.weight", "text_model.pooler.dense.bias")


def strip_prefix(state: dict[str, torch.Tensor], prefix: str = "module.") -> dict[str, torch.Tensor]:
    """Remove a DDP/DataParallel prefix from every key that has it."""
    return {k[len(prefix) :] if k.startswith(prefix) else k: v for k, v in state.items()}


def infer_official_config(state: dict[str, torch.Tensor]) -> ModelConfig:
    """The :class:`ModelConfig` of an official state dict (prefix already stripped), read off its keys and shapes.

    Detects the projector ("mlp" 4096 or "small" 256), the number of fused layers, the frame count of the temporal
    embedding and the tower depths; widths and vocabulary come from the tensors themselves.
    """

    def shape(key: str) -> tuple[int, ...]:
        if key not in state:
            raise CheckpointError(f"not an EgoVLPv2 state dict: key {key!r} is missing")
        return tuple(state[key].shape)

    base = get_model_config("egovlpv2-base")
    if "txt_proj.0.weight" in state:
        projector, embed_dim = "mlp", shape("txt_proj.0.weight")[0]
    elif "txt_proj.1.weight" in state:
        projector, embed_dim = "small", shape("txt_proj.1.weight")[0]
    else:
        projector, embed_dim = "none", shape("video_model.norm.weight")[0]
    video_depth = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("video_model.blocks."))
    text_depth = 1 + max(int(k.split(".")[3]) for k in state if k.startswith("text_model.encoder.layer."))
    num_fused = sum(1 for k in state if k.endswith("alpha_t2i"))
    frames = shape("video_model.temporal_embed")[1]
    video = dataclasses.replace(
        base.video, num_frames=frames, depth=video_depth, width=shape("video_model.norm.weight")[0]
    )
    vocab, text_width = shape("text_model.embeddings.word_embeddings.weight")
    text = dataclasses.replace(base.text, vocab_size=vocab, width=text_width, depth=text_depth)
    return dataclasses.replace(
        base,
        arch="egovlpv2-base" if projector == "mlp" else "egovlpv2-base-smallproj",
        video=video,
        text=text,
        num_fusion_layers=num_fused,
        projector=projector,
        embed_dim=embed_dim,
        vtm_head="itm_score.fc.weight" in state,
        mlm_head="mlm_score.decoder.weight" in state,
    )


def convert_official_state_dict(state: dict[str, torch.Tensor], num_frames: int | None = None) -> dict:
    """Official state dict -> ours: strip ``module.``, drop unused buffers, resize the temporal embedding."""
    out = {k: v for k, v in strip_prefix(state).items() if k not in DROPPED_KEYS}
    if num_frames is not None and "video_model.temporal_embed" in out:
        old = out["video_model.temporal_embed"]
        out["video_model.temporal_embed"] = resize_temporal_embed(old, num_frames)
        if old.shape[1] != num_frames:
            log.info("temporal embedding resized from %d to %d frames", old.shape[1], num_frames)
    return out


def read_official_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The ``state_dict`` of an official checkpoint file, read without executing its pickle code."""
    from egovlp.utils.safe_pickle import load_torch_checkpoint

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    obj = load_torch_checkpoint(path, allow_opaque_calls=True)  # foreign classes become inert records
    if isinstance(obj, dict) and "state_dict" in obj:
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} holds no state dict of tensors (found {type(obj).__name__})")
    return obj


def convert_official_checkpoint(
    path: str | Path, out: str | Path, num_frames: int | None = None, arch: str | None = None
) -> Path:
    """Read an official checkpoint, map it onto :class:`EgoVLPv2`, load strictly and write our safetensors file.

    ``arch`` (a registry name) checks the file against that architecture instead of inferring it from the keys.
    """
    from egovlp.models.model import EgoVLPv2
    from egovlp.models.weights import check_state_dict, save_weights

    raw = strip_prefix(read_official_checkpoint(path))
    cfg = get_model_config(arch) if arch else infer_official_config(raw)
    if "video_model.temporal_embed" not in raw:
        raise CheckpointError(f"{path}: key 'video_model.temporal_embed' is missing; not an EgoVLPv2 checkpoint")
    frames = num_frames or raw["video_model.temporal_embed"].shape[1]  # default: keep the checkpoint's frame count
    cfg = dataclasses.replace(cfg, video=dataclasses.replace(cfg.video, num_frames=frames))
    state = convert_official_state_dict(raw, cfg.video.num_frames)
    with torch.device("meta"):
        model = EgoVLPv2(cfg)
    check_state_dict(model, state, str(path))
    model.load_state_dict(state, strict=True, assign=True)  # the meta model takes the checkpoint's tensors
    return save_weights(model, out, extra_metadata={"egovlp.converted_from": Path(path).name})
