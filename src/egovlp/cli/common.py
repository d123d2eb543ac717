"""Helpers shared by the command modules (argument conventions, model resolution)."""

from __future__ import annotations

import argparse
import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf, read_write

from egovlp.errors import ConfigError
from egovlp.models.config import ModelConfig

T = TypeVar("T")


def add_config_args(
    parser: argparse.ArgumentParser,
    default: str | None = None,
    group: str | None = None,
    example: str = "train.max_steps=100",
) -> None:
    """``--config NAME|FILE`` (a shipped preset or a YAML path) plus trailing ``key.sub=value`` overrides.

    ``group`` is the preset folder the command looks bare names up in (``"pretrain"``, ``"extract"``, ...);
    ``example`` an override the command accepts, for the help text.
    """
    help_text = "YAML config file"
    if group is not None:
        help_text = f"a shipped preset ({group}/NAME or NAME; `egovlp configs` lists them) or a YAML config file"
    parser.add_argument("--config", default=default, help=help_text + (f" (default {default})" if default else ""))
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=f"config overrides, e.g. {example}")


def resolve_model_config(spec: str) -> ModelConfig:
    """A registry name, or a weight file (``.safetensors``) / model YAML whose config we read."""
    from egovlp.config import load_config
    from egovlp.models.registry import get_model_config
    from egovlp.models.weights import read_model_config

    path = Path(spec)
    if path.suffix == ".safetensors" or (path.is_file() and path.suffix not in (".yaml", ".yml")):
        return read_model_config(path)  # a release .pth is explained there (egovlp convert)
    if path.suffix in (".yaml", ".yml"):
        return load_config(ModelConfig, path)
    return get_model_config(spec)


def _model_from_arch(user: DictConfig, base: DictConfig) -> DictConfig:
    """Start ``model`` from what the user names in ``model.arch``: a registered architecture, or a weight file
    (``.safetensors``) or model YAML whose config is read (e.g. to fine-tune a model of your own). Without
    ``model.arch``, a training config with ``init.checkpoint`` starts from that checkpoint's architecture.

    The frame count of a command is ``data.num_frames`` (the model follows it, see :func:`run_training`): a user
    layer that also sets ``model.video.num_frames`` to another value is refused here, before anything runs.
    """
    if "model" not in base:
        return base
    arch = OmegaConf.select(user, "model.arch", default=None)
    if not arch and "init" in base:
        arch = OmegaConf.select(user, "init.checkpoint", default=None)
    frames = OmegaConf.select(user, "model.video.num_frames", default=None)
    data_frames = OmegaConf.select(user, "data.num_frames", default=None)
    if frames is not None and "data" in base and "num_frames" in base.data:
        wanted = data_frames if data_frames is not None else base.data.num_frames
        if int(frames) != int(wanted):
            raise ConfigError(
                f"model.video.num_frames={frames} disagrees with data.num_frames={wanted}: the frame count of a "
                "run is data.num_frames (the model follows it); drop model.video.num_frames"
            )
    if arch:
        base = base.copy()
        with read_write(base):
            base.model = OmegaConf.structured(resolve_model_config(str(arch)))
    return base


def load_experiment_config(schema: type[T], path: str | None, overrides: list[str], group: str | None = None) -> T:
    """An experiment config: schema defaults <- ``model.arch`` preset <- YAML file <- ``key=value`` overrides.

    ``path`` is a YAML file or a shipped preset name, resolved by :func:`egovlp.configs.resolve_config` with
    ``group`` (the command's preset folder, for bare names); None means the schema defaults only.
    """
    from egovlp.config import load_config
    from egovlp.configs import resolve_config

    resolved = resolve_config(path, group) if path is not None else None
    return load_config(schema, resolved, overrides, prepare=_model_from_arch)


def with_frames(cfg: T) -> T:
    """``cfg`` whose model runs at ``data.num_frames`` (the one frame count of a training command), if it has one."""
    data = getattr(cfg, "data", None)
    frames = getattr(data, "num_frames", None)
    model = getattr(cfg, "model", None)
    if frames is None or model is None or model.video.num_frames == frames:
        return cfg
    video = dataclasses.replace(model.video, num_frames=frames)
    return dataclasses.replace(cfg, model=dataclasses.replace(model, video=video))  # type: ignore[type-var]


def check_init_paths(cfg: Any) -> None:
    """ConfigError at start (not after the data has loaded) for an ``init.*`` path that does not exist."""
    init = getattr(cfg, "init", None)
    for f in dataclasses.fields(init) if init is not None else ():
        value = getattr(init, f.name)
        if value and not Path(value).exists():
            hint = (
                " (a RoBERTa folder: roberta-base, or what `egovlp pretrain-text` writes)"
                if f.name == "roberta"
                else ""
            )
            raise ConfigError(f"init.{f.name}={value}: no such file or folder{hint}")


def run_training(cfg: Any, tokenizer_dir: str, make_task: Callable, finish: Callable) -> Any:
    """The frame every training command shares; returns ``finish(model, result, task)`` on rank 0, None on other ranks.

    torchrun/DDP set-up from ``cfg.train.device``, logging to ``<train.output_dir>/train.log``, the tokenizer, the
    model from ``cfg.model`` at ``cfg.data.num_frames`` and ``cfg.init`` (seeded: the same initial weights on every
    rank and in every run), ``make_task(cfg, tokenizer, dist)`` and :class:`~egovlp.train.loop.Trainer` with
    ``cfg.train`` and ``cfg.optim``.
    """
    from egovlp.config import to_yaml
    from egovlp.data.tokenizer import Tokenizer
    from egovlp.models.factory import build_model
    from egovlp.train.distributed import cleanup_distributed, init_distributed
    from egovlp.train.loop import Trainer, seed_everything
    from egovlp.utils.logging import add_log_file, setup_logging

    cfg = with_frames(cfg)
    check_init_paths(cfg)
    dist = init_distributed(cfg.train.device)
    setup_logging(logging.getLogger("egovlp").level or logging.INFO, rank=dist.rank)
    add_log_file(Path(cfg.train.output_dir) / "train.log", rank=dist.rank)
    try:
        tokenizer = Tokenizer.from_dir(tokenizer_dir)
        seed_everything(cfg.train.seed)
        model = build_model(cfg.model, cfg.init.checkpoint, cfg.init.vit, cfg.init.roberta)
        task = make_task(cfg, tokenizer, dist)
        result = Trainer(cfg.train, cfg.optim, dist, to_yaml(cfg)).fit(task, model)
        return finish(model, result, task) if dist.is_main else None
    finally:
        cleanup_distributed()
