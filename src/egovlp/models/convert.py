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


def describe(obj: object) -> str:
    """A short description of an unpickled object, for errors about unknown formats."""
    if isinstance(obj, dict):
        keys = list(obj)[:8]
        return f"a {type(obj).__name__} with keys {keys}{' ...' if len(obj) > 8 else ''}"
    return f"a {type(obj).__name__}"


def official_state_dict(obj: object, source: str) -> tuple[str, dict[str, torch.Tensor]]:
    """``(format, state dict)`` of a loaded checkpoint object; CheckpointError naming what was found otherwise.

    Formats: ``"lightning"`` (a PyTorch-Lightning ``.ckpt``: ``state_dict`` + ``pytorch-lightning_version``),
    ``"trainer"`` (the release trainers' ``{'arch', 'epoch', 'state_dict', ...}``), ``"state_dict"`` (a bare dict of
    tensors) and ``"model"`` (``{'model': state dict}``).
    """
    if isinstance(obj, dict):
        for key, kind in (("state_dict", "trainer"), ("model", "model")):
            if isinstance(obj.get(key), dict):
                fmt = "lightning" if "pytorch-lightning_version" in obj else kind
                state = obj[key]
                break
        else:
            fmt, state = "state_dict", obj
        if state and all(isinstance(v, torch.Tensor) for v in state.values()):
            return fmt, state
        if state:
            odd = next(k for k, v in state.items() if not isinstance(v, torch.Tensor))
            raise CheckpointError(f"{source}: its state dict holds a non-tensor under {odd!r} ({describe(obj)})")
    raise CheckpointError(f"{source}: not a known checkpoint format (found {describe(obj)}); expected a state dict")


def detect_family(state: dict[str, torch.Tensor], source: str):
    """The :class:`~egovlp.models.registry.ModelFamily` whose official keys ``state`` has (prefix stripped)."""
    from egovlp.models.registry import list_families

    families = list_families()
    matches = [f for f in families.values() if f.recognises is not None and f.recognises(state)]
    if len(matches) == 1:
        return matches[0]
    sample = ", ".join(sorted(state)[:6])
    if not matches:
        raise CheckpointError(
            f"{source}: its keys ({sample}, ... {len(state)} in all) match no model family "
            f"(known: {', '.join(families)})"
        )
    raise CheckpointError(f"{source}: its keys match several families ({', '.join(f.name for f in matches)})")


def read_official_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The ``state_dict`` of an official checkpoint file, read without executing its pickle code."""
    from egovlp.utils.safe_pickle import load_torch_checkpoint

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        raise CheckpointError(f"{path} is a safetensors file (already egovlp weights?); convert reads release .pth")
    obj = load_torch_checkpoint(path, allow_opaque_calls=True)  # foreign classes become inert records
    fmt, state = official_state_dict(obj, str(path))
    log.info("%s: %s checkpoint with %d tensors", path, fmt, len(state))
    return state


# Task-head tensors of fine-tuned release checkpoints, outside the backbone: release key -> egovlp head name.
# EgoTaskQA (downstream.md §1): projector_1 Linear(768, n_answers) -> ReLU -> Dropout -> projector_2.
RELEASE_HEADS = {
    f"{layer}.{p}": f"egotaskqa.{layer}.{p}" for layer in ("projector_1", "projector_2") for p in ("weight", "bias")
}


def split_release_heads(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """``(backbone state, heads)``: the release's task-head tensors (:data:`RELEASE_HEADS`) under egovlp head names."""
    heads = {RELEASE_HEADS[k]: v for k, v in state.items() if k in RELEASE_HEADS}
    return {k: v for k, v in state.items() if k not in RELEASE_HEADS}, heads


def convert_official_checkpoint(
    path: str | Path, out: str | Path, num_frames: int | None = None, arch: str | None = None
) -> Path:
    """Read an official checkpoint, detect its family, map it onto our model, load strictly, write safetensors.

    ``arch`` (a registry name) checks the file against that architecture instead of inferring it from the keys.
    ``num_frames`` resizes the temporal embedding (default: keep the checkpoint's frame count).
    """
    from egovlp.models.registry import create_model
    from egovlp.models.weights import check_state_dict, save_weights

    raw, heads = split_release_heads(strip_prefix(read_official_checkpoint(path)))
    if heads:
        log.info("%s: task head tensors %s kept as heads.*", path, ", ".join(sorted(heads)))
    family = detect_family(raw, str(path))
    assert family.official_config is not None and family.convert_state is not None
    cfg = get_model_config(arch) if arch else family.official_config(raw)
    if cfg.family != family.name:
        raise CheckpointError(f"{path}: --arch {arch} is a {cfg.family} model but the file holds a {family.name} one")
    video = getattr(cfg, "video", None)
    if video is not None:
        frames = num_frames or raw.get("video_model.temporal_embed", torch.zeros(1, video.num_frames)).shape[1]
        cfg = dataclasses.replace(cfg, video=dataclasses.replace(video, num_frames=frames))
    state = family.convert_state(raw, cfg)
    with torch.device("meta"):
        model = create_model(cfg)
    check_state_dict(model, state, str(path))
    model.load_state_dict(state, strict=True, assign=True)  # the meta model takes the checkpoint's tensors
    return save_weights(model, out, extra_metadata={"egovlp.converted_from": Path(path).name}, heads=heads)
