"""Backbone initialisation from local files: HuggingFace ``roberta-base`` and timm / Google ViT-B/16 weights.

Pre-training starts from ImageNet ViT weights in the video tower (patch embedding, CLS, positional embedding and the
spatial parts of every block) and ``roberta-base`` in the text tower. Time attention, ``norm3``, the temporal
embedding, the fusion modules and the heads keep their initialisation. Nothing is downloaded: the user passes paths.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from egovlp.errors import CheckpointError
from egovlp.models.model import EgoVLPv2

log = logging.getLogger(__name__)

_FUSION_MARKERS = ("_i2t", "crossattention_t2i.", "alpha_t2i")
_VIT_SPATIAL = ("norm1.", "attn.qkv.", "attn.proj.", "norm2.", "mlp.fc1.", "mlp.fc2.")
_VIT_IGNORED = ("head.", "pre_logits.", "fc_norm.", "head_drop.")


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from ``.safetensors`` or a plain PyTorch file (loaded with ``weights_only=True``)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle.UnpicklingError and friends: not a plain tensor file
        raise CheckpointError(f"cannot read {path} as a plain tensor file (weights_only=True): {e}") from None
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state dict")
    return obj


def _find_file(path: str | Path, names: tuple[str, ...]) -> Path:
    path = Path(path)
    if path.is_dir():
        for name in names:
            if (path / name).is_file():
                return path / name
        raise CheckpointError(f"none of {', '.join(names)} found in directory {path}")
    if not path.is_file():
        raise CheckpointError(f"weight file not found: {path}")
    return path


def _load_partial(module: torch.nn.Module, state: dict, source: str, keep_init: tuple[str, ...]) -> list[str]:
    """Load ``state`` into ``module``; every module key must be provided unless it contains a ``keep_init`` marker.

    Returns the names left at their initialisation. Shape mismatches and unknown keys raise CheckpointError.
    """
    expected = module.state_dict()
    unexpected = sorted(set(state) - set(expected))
    missing = sorted(k for k in expected if k not in state and not any(m in k for m in keep_init))
    bad = [
        f"{k}: file {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
        for k, v in state.items()
        if k in expected and tuple(v.shape) != tuple(expected[k].shape)
    ]
    if unexpected or missing or bad:
        parts = [
            f"unexpected keys: {unexpected[:10]}" if unexpected else "",
            f"missing keys: {missing[:10]}" if missing else "",
            f"shape mismatches: {bad[:10]}" if bad else "",
        ]
        raise CheckpointError(f"{source} does not fit: " + "; ".join(p for p in parts if p))
    module.load_state_dict(state, strict=False)
    return sorted(k for k in expected if k not in state)


# ------------------------------------------------------------------------------------------------------ RoBERTa
def roberta_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """HuggingFace RoBERTa weights (dir or file; safetensors or pytorch_model.bin) in our ``text_model`` names."""
    file = _find_file(path, ("model.safetensors", "pytorch_model.bin"))
    state = _read_tensors(file)
    out = {}
    for k, v in state.items():
        k = k.removeprefix("roberta.")
        if k.startswith(("lm_head.", "pooler.", "classifier.")) or k.endswith("position_ids"):
            continue
        out[k] = v
    return out


def load_roberta(model: EgoVLPv2, path: str | Path) -> list[str]:
    """Initialise the text tower from ``roberta-base``; returns the names left at init (fusion modules)."""
    kept = _load_partial(model.text_model, roberta_state_dict(path), str(path), _FUSION_MARKERS)
    log.info("text tower initialised from %s (%d tensors kept their init: fusion)", path, len(kept))
    return kept


# ---------------------------------------------------------------------------------------------------------- ViT
def _npz_to_timm(arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Google ``ViT-B_16.npz`` (JAX/Flax names) -> timm names."""
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).float()
    out = {
        "patch_embed.proj.weight": t(arrays["embedding/kernel"].transpose(3, 2, 0, 1)),  # HWIO -> OIHW
        "patch_embed.proj.bias": t(arrays["embedding/bias"]),
        "cls_token": t(arrays["cls"]),
        "pos_embed": t(arrays["Transformer/posembed_input/pos_embedding"]),
        "norm.weight": t(arrays["Transformer/encoder_norm/scale"]),
        "norm.bias": t(arrays["Transformer/encoder_norm/bias"]),
    }
    i = 0
    while f"Transformer/encoderblock_{i}/LayerNorm_0/scale" in arrays:
        p, b = f"Transformer/encoderblock_{i}/", f"blocks.{i}."
        att = p + "MultiHeadDotProductAttention_1/"
        qkv_w = [arrays[f"{att}{n}/kernel"] for n in ("query", "key", "value")]
        dim = qkv_w[0].shape[0]
        out[b + "attn.qkv.weight"] = t(np.concatenate([w.reshape(dim, -1).T for w in qkv_w]))
        qkv_b = [arrays[f"{att}{n}/bias"].reshape(-1) for n in ("query", "key", "value")]
        out[b + "attn.qkv.bias"] = t(np.concatenate(qkv_b))
        out[b + "attn.proj.weight"] = t(arrays[att + "out/kernel"].reshape(-1, dim).T)
        out[b + "attn.proj.bias"] = t(arrays[att + "out/bias"])
        for ln, name in (("LayerNorm_0", "norm1"), ("LayerNorm_2", "norm2")):
            out[f"{b}{name}.weight"] = t(arrays[f"{p}{ln}/scale"])
            out[f"{b}{name}.bias"] = t(arrays[f"{p}{ln}/bias"])
        for dense, name in (("Dense_0", "fc1"), ("Dense_1", "fc2")):
            out[f"{b}mlp.{name}.weight"] = t(arrays[f"{p}MlpBlock_3/{dense}/kernel"].T)
            out[f"{b}mlp.{name}.bias"] = t(arrays[f"{p}MlpBlock_3/{dense}/bias"])
        i += 1
    return out


def resize_pos_embed(pos_embed: torch.Tensor, num_patches: int) -> torch.Tensor:
    """Bicubic resampling of a ``(1, 1 + g*g, D)`` ViT positional embedding to ``1 + num_patches`` positions."""
    old, new = math.isqrt(pos_embed.shape[1] - 1), math.isqrt(num_patches)
    if old * old + 1 != pos_embed.shape[1] or new * new != num_patches:
        raise CheckpointError(f"cannot resize a non-square positional embedding {tuple(pos_embed.shape)}")
    grid = pos_embed[:, 1:].reshape(1, old, old, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid.float(), size=(new, new), mode="bicubic", align_corners=False)
    return torch.cat([pos_embed[:, :1], grid.permute(0, 2, 3, 1).reshape(1, new * new, -1)], dim=1)


def vit_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """timm ViT weights (``.pth``/``.bin``/``.safetensors``) or Google ``.npz``, in timm names, heads dropped."""
    file = _find_file(path, ("model.safetensors", "pytorch_model.bin"))
    if file.suffix == ".npz":
        with np.load(file) as z:
            state = _npz_to_timm({k: z[k] for k in z.files})
    else:
        state = _read_tensors(file)
    return {k: v for k, v in state.items() if not k.startswith(_VIT_IGNORED)}


def load_vit(model: EgoVLPv2, path: str | Path) -> list[str]:
    """Initialise the video tower's spatial parts from ImageNet ViT weights; returns names left at init."""
    state = vit_state_dict(path)
    vm = model.video_model
    if "pos_embed" in state and state["pos_embed"].shape[1] != vm.pos_embed.shape[1]:
        log.info(
            "resampling the ViT positional embedding %s -> %s",
            tuple(state["pos_embed"].shape),
            tuple(vm.pos_embed.shape),
        )
        state["pos_embed"] = resize_pos_embed(state["pos_embed"], vm.pos_embed.shape[1] - 1)
    for k in state:
        if k.startswith("blocks.") and not k.split(".", 2)[2].startswith(_VIT_SPATIAL):
            raise CheckpointError(f"{path}: unexpected ViT key {k!r}")
    keep = ("timeattn.", "norm3.", "temporal_embed", *_FUSION_MARKERS)
    kept = _load_partial(vm, state, str(path), keep)
    log.info("video tower initialised from %s (%d tensors kept their init: time attention, fusion)", path, len(kept))
    return kept
