"""Helpers shared by the command modules (argument conventions, model resolution)."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf, read_write

from egovlp.models.config import ModelConfig

T = TypeVar("T")


def add_config_args(parser: argparse.ArgumentParser, default: str | None = None) -> None:
    """``--config FILE`` plus trailing ``key.sub=value`` overrides."""
    parser.add_argument(
        "--config", default=default, help="YAML experiment config" + (f" (default {default})" if default else "")
    )
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. train.max_steps=100")


def resolve_model_config(spec: str) -> ModelConfig:
    """A registry name, or a weight file (``.safetensors``) / model YAML whose config we read."""
    from egovlp.config import load_config
    from egovlp.models.registry import get_model_config
    from egovlp.models.weights import read_model_config

    path = Path(spec)
    if path.suffix == ".safetensors":
        return read_model_config(path)
    if path.suffix in (".yaml", ".yml"):
        return load_config(ModelConfig, path)
    return get_model_config(spec)


def _model_from_arch(user: DictConfig, base: DictConfig) -> DictConfig:
    """Start ``model`` from what the user names in ``model.arch`` (if anything): a registered architecture, or a
    weight file (``.safetensors``) or model YAML whose config is read (e.g. to fine-tune a model of your own)."""
    arch = OmegaConf.select(user, "model.arch", default=None)
    if arch and "model" in base:
        base = base.copy()
        with read_write(base):
            base.model = OmegaConf.structured(resolve_model_config(str(arch)))
    return base


def load_experiment_config(schema: type[T], path: str | None, overrides: list[str]) -> T:
    """An experiment config: schema defaults <- ``model.arch`` preset <- YAML file <- ``key=value`` overrides."""
    from egovlp.config import load_config

    return load_config(schema, path, overrides, prepare=_model_from_arch)


def run_training(cfg: Any, tokenizer_dir: str, make_task: Callable, finish: Callable) -> Any:
    """The frame every training command shares; returns ``finish(model, result)`` on rank 0, None on other ranks.

    torchrun/DDP set-up from ``cfg.train.device``, logging to ``<train.output_dir>/train.log``, the tokenizer, the
    model from ``cfg.model`` and ``cfg.init`` (seeded: the same initial weights on every rank and in every run),
    ``make_task(cfg, tokenizer)`` and :class:`~egovlp.train.loop.Trainer` with ``cfg.train`` and ``cfg.optim``.
    """
    from egovlp.config import to_yaml
    from egovlp.data.tokenizer import Tokenizer
    from egovlp.models.factory import build_model
    from egovlp.train.distributed import cleanup_distributed, init_distributed
    from egovlp.train.loop import Trainer, seed_everything
    from egovlp.utils.logging import add_log_file, setup_logging

    dist = init_distributed(cfg.train.device)
    setup_logging(logging.getLogger("egovlp").level or logging.INFO, rank=dist.rank)
    add_log_file(Path(cfg.train.output_dir) / "train.log")
    try:
        tokenizer = Tokenizer.from_dir(tokenizer_dir)
        seed_everything(cfg.train.seed)
        model = build_model(cfg.model, cfg.init.checkpoint, cfg.init.vit, cfg.init.roberta)
        task = make_task(cfg, tokenizer)
        result = Trainer(cfg.train, cfg.optim, dist, to_yaml(cfg)).fit(task, model)
        return finish(model, result) if dist.is_main else None
    finally:
        cleanup_distributed()
