"""egovlp's own weight files: safetensors with the model config embedded, and strict, well-reported loading.

A weight file ``name.safetensors`` carries its :class:`ModelConfig` as YAML in the safetensors metadata (key
``egovlp.model_config``), and a copy sits beside it as ``name.yaml`` for people to read. Loading never unpickles.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from egovlp.config import load_config, to_yaml
from egovlp.errors import CheckpointError
from egovlp.models.config import ModelConfig
from egovlp.models.model import EgoVLPv2
from egovlp.utils.files import atomic_write

log = logging.getLogger(__name__)

CONFIG_KEY = "egovlp.model_config"


def check_state_dict(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Raise :class:`CheckpointError` naming every missing/unexpected key and every shape mismatch."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in state and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    problems = []
    if missing:
        problems.append(
            f"{len(missing)} missing key(s): {', '.join(missing[:20])}{' ...' if len(missing) > 20 else ''}"
        )
    if unexpected:
        n = len(unexpected)
        problems.append(f"{n} unexpected key(s): {', '.join(unexpected[:20])}{' ...' if n > 20 else ''}")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatch(es): " + "; ".join(shapes[:20]))
    if problems:
        raise CheckpointError(f"{source} does not fit the model:\n  " + "\n  ".join(problems))


def load_state_dict_strict(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """``model.load_state_dict(state, strict=True)`` with errors that name keys and shapes and the file."""
    check_state_dict(model, state, source)
    model.load_state_dict(state, strict=True)


def save_weights(model: EgoVLPv2, path: str | Path, extra_metadata: dict[str, str] | None = None) -> Path:
    """Write ``model``'s weights and config as safetensors (atomically) plus a ``.yaml`` config beside it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    metadata = {CONFIG_KEY: to_yaml(model.cfg), **(extra_metadata or {})}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
    atomic_write(path.with_suffix(".yaml"), lambda tmp: tmp.write_text(metadata[CONFIG_KEY]))
    return path


def read_model_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> ModelConfig:
    """The :class:`ModelConfig` stored in a weight file (metadata, else the sibling ``.yaml``), with overrides."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weight file not found: {path}")
    with safe_open(str(path), framework="pt") as f:
        text = (f.metadata() or {}).get(CONFIG_KEY)
    if text is None:
        sidecar = path.with_suffix(".yaml")
        if not sidecar.is_file():
            raise CheckpointError(f"{path} has no embedded model config and no {sidecar.name} beside it")
        text = sidecar.read_text()
    return load_config(ModelConfig, overrides=overrides, yaml_text=(text, str(path)))


def load_weights(path: str | Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file."""
    from safetensors.torch import load_file

    return load_file(str(path), device=str(device))


def load_model(
    path: str | Path,
    num_frames: int | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    device: str | torch.device = "cpu",
) -> EgoVLPv2:
    """Build the model a weight file describes and load it strictly.

    ``num_frames`` resizes the temporal embedding after loading (interpolate to more frames, truncate to fewer).
    ``overrides`` are ``key=value`` changes to the stored model config that do not alter shapes (e.g.
    ``grad_checkpointing=true``).
    """
    cfg = read_model_config(path, overrides)
    model = EgoVLPv2(cfg)
    load_state_dict_strict(model, load_weights(path), str(path))
    if num_frames is not None and num_frames != cfg.video.num_frames:
        model.resize_temporal_embed(num_frames)
        log.info("resized the temporal embedding of %s from %d to %d frames", path, cfg.video.num_frames, num_frames)
    return model.to(device)
