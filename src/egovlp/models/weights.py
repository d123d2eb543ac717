"""egovlp's own weight files: safetensors with the model config embedded, and strict, well-reported loading.

A weight file ``name.safetensors`` carries its model config (of any family, :mod:`egovlp.models.registry`) as YAML
in the safetensors metadata (key ``egovlp.model_config``), and a copy sits beside it as ``name.yaml`` for people to
read. Loading never unpickles. Before a model is built, the file's tensor shapes (read from its header, no data) are
checked against the shapes the config implies (built on the meta device), so a small file whose config claims a
huge model fails at once, naming the keys, instead of allocating the huge model first.

Task heads that live outside the model (e.g. EgoTaskQA's answer classifier) travel in the same file under
``heads.<task>.<name>`` (:data:`HEAD_PREFIX`): the strict model check leaves them out, and :func:`load_model` hands
them to the caller as ``model.head_weights`` (``{"<task>.<name>": tensor}``, empty for a file without heads).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from egovlp.config import load_config, to_yaml
from egovlp.errors import CheckpointError, ConfigError
from egovlp.utils.files import atomic_write

log = logging.getLogger(__name__)

CONFIG_KEY = "egovlp.model_config"
HEAD_PREFIX = "heads."


def split_task_heads(state: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(model state, heads)``: the ``heads.*`` entries of a weight file, without the prefix, apart from the rest."""
    heads = {k[len(HEAD_PREFIX) :]: v for k, v in state.items() if k.startswith(HEAD_PREFIX)}
    return {k: v for k, v in state.items() if not k.startswith(HEAD_PREFIX)}, heads


def attach_file_heads(model: torch.nn.Module, heads: dict[str, torch.Tensor]) -> None:
    """Keep the task heads of the file ``model`` was loaded from on it (``model.head_weights``; not parameters)."""
    model.__dict__["head_weights"] = heads


def loaded_heads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every task head of the file ``model`` was loaded from (see :func:`attach_file_heads`), ``{}`` if none."""
    return model.__dict__.get("head_weights") or {}


def file_heads(model: torch.nn.Module, task: str) -> dict[str, torch.Tensor]:
    """The ``task`` head of the file ``model`` was loaded from (see :func:`attach_file_heads`), ``{}`` if none."""
    return task_heads(loaded_heads(model), task)


def task_heads(heads: dict[str, torch.Tensor], task: str) -> dict[str, torch.Tensor]:
    """The entries of ``task`` in a heads dict, without the task's prefix (``egotaskqa.projector_1.weight`` ->
    ``projector_1.weight``)."""
    prefix = f"{task}."
    return {k[len(prefix) :]: v for k, v in heads.items() if k.startswith(prefix)}


def check_state_dict(model: torch.nn.Module, state: dict[str, Any], source: str) -> None:
    """Raise :class:`CheckpointError` naming every missing/unexpected key and every shape mismatch.

    ``state`` maps names to tensors or to anything with a ``shape`` (e.g. shapes read from a file header).
    """
    check_shapes({k: tuple(v.shape) for k, v in model.state_dict().items()}, state, source)


def check_shapes(expected: dict[str, tuple[int, ...]], state: dict[str, Any], source: str) -> None:
    """:func:`check_state_dict` against expected ``{name: shape}``."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k])}"
        for k in expected
        if k in state and tuple(state[k].shape) != tuple(expected[k])
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


def save_weights(
    model: torch.nn.Module,
    path: str | Path,
    extra_metadata: dict[str, str] | None = None,
    heads: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write ``model``'s weights and config (``model.cfg``) as safetensors (atomically) plus a ``.yaml`` beside it.

    ``heads``: task-head tensors stored beside the model as ``heads.<name>`` (e.g. ``egotaskqa.projector_1.weight``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    tensors.update({HEAD_PREFIX + k: v.detach().contiguous().cpu() for k, v in (heads or {}).items()})
    metadata = {CONFIG_KEY: to_yaml(model.cfg), **(extra_metadata or {})}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))

    def write_yaml(tmp: Path) -> None:
        tmp.write_text(metadata[CONFIG_KEY])

    atomic_write(path.with_suffix(".yaml"), write_yaml)
    return path


def weight_file(path: str | Path) -> Path:
    """``path`` as an egovlp weight file, or a :class:`CheckpointError` that says what it is instead.

    A folder holding ``model.safetensors`` (a training run's output folder) stands for that file.
    """
    path = Path(path)
    if path.is_dir():
        if (path / "model.safetensors").is_file():
            return path / "model.safetensors"
        raise CheckpointError(f"{path} is a folder without model.safetensors; give an egovlp .safetensors weight file")
    if not path.is_file():
        raise CheckpointError(f"weight file not found: {path}")
    with open(path, "rb") as f:
        head = f.read(9)  # safetensors: an 8-byte header length, then the JSON header's "{"
    if head[8:9] != b"{" and (head[:4] == b"PK\x03\x04" or head[:1] == b"\x80"):  # torch.save zip, raw pickle
        raise CheckpointError(
            f"{path} is a PyTorch pickle (an official release checkpoint?), not an egovlp weight file: convert it "
            f"once with `egovlp convert {path} --out {path.with_suffix('.safetensors').name}`"
        )
    return path


def _open(path: Path) -> tuple[dict[str, str], dict[str, tuple[int, ...]]]:
    """The metadata and the tensor shapes of a safetensors file (header only), with clear errors."""
    try:
        with safe_open(str(path), framework="pt") as f:
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118 (safe_open API)
            return dict(f.metadata() or {}), shapes
    except (SafetensorError, OSError, ValueError) as e:
        size = path.stat().st_size
        raise CheckpointError(
            f"{path}: not a readable safetensors file ({size} bytes; truncated, empty or another format?): {e}"
        ) from None


def read_model_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Any:
    """The model config stored in a weight file (metadata, else the sibling ``.yaml``), with overrides, as the
    config type of the family it names (files without a family are EgoVLPv2's)."""
    from egovlp.models.registry import get_family

    path = weight_file(path)
    text = _open(path)[0].get(CONFIG_KEY)
    if text is None:
        sidecar = path.with_suffix(".yaml")
        if not sidecar.is_file():
            raise CheckpointError(f"{path} has no embedded model config and no {sidecar.name} beside it")
        text = sidecar.read_text()
    try:
        conf = OmegaConf.create(text)
        family = conf.get("family", "egovlpv2") if isinstance(conf, DictConfig) else "egovlpv2"
    except Exception as e:  # yaml errors
        raise CheckpointError(f"{path}: its embedded model config is not valid YAML: {e}") from None
    try:
        return load_config(get_family(str(family)).config_type, overrides=overrides, yaml_text=(text, str(path)))
    except ConfigError as e:
        raise CheckpointError(f"{path}: {e}") from None


def load_weights(path: str | Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file."""
    from safetensors.torch import load_file

    path = weight_file(path)
    _open(path)
    return load_file(str(path), device=str(device))


def load_model(
    path: str | Path,
    num_frames: int | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    device: str | torch.device = "cpu",
) -> torch.nn.Module:
    """Build the model a weight file describes (whatever its family) and load it strictly.

    The file's tensor shapes are checked against the config's before anything is allocated. ``num_frames``
    resizes the temporal embedding after loading (interpolate to more frames, truncate to fewer). ``overrides``
    are ``key=value`` changes to the stored model config that do not alter shapes (e.g.
    ``grad_checkpointing=true``). Task heads stored in the file (``heads.*``) become ``model.head_weights``.
    """
    from egovlp.models.registry import create_model

    path = weight_file(path)
    cfg = read_model_config(path, overrides)
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in create_model(cfg).state_dict().items()}
    check_shapes(expected, _ShapeView.of(split_task_heads(_open(path)[1])[0]), str(path))
    model = create_model(cfg)
    state, heads = split_task_heads(load_weights(path))
    load_state_dict_strict(model, state, str(path))
    attach_file_heads(model, heads)
    frames = getattr(getattr(cfg, "video", None), "num_frames", None)
    if num_frames is not None and frames is not None and num_frames != frames:
        model.resize_temporal_embed(num_frames)  # type: ignore[operator]
        log.info("resized the temporal embedding of %s from %d to %d frames", path, frames, num_frames)
    return model.to(device)


class _ShapeView:
    """A shape read from a file header, looking like a tensor's ``.shape`` to :func:`check_shapes`."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = shape

    @classmethod
    def of(cls, shapes: dict[str, tuple[int, ...]]) -> dict[str, _ShapeView]:
        return {k: cls(v) for k, v in shapes.items()}
