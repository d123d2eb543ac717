"""``egovlp pretrain``: EgoVLPv2 pre-training (EgoNCE + MLM + VTM) on EgoClip-format data, 1 CPU to many GPUs.
``egovlp pretrain-text``: masked language modelling of the text tower on narrations alone (an ``init.roberta``).

egovlp pretrain --config pretrain/egoclip data.video_root=... data.metadata=...
torchrun --nproc_per_node=8 -m egovlp.cli.main pretrain --config pretrain/egoclip ...
egovlp pretrain-text --config pretrain/demo_text data.corpus=egoclip.csv data.tokenizer=tok/
egovlp pretrain-text data.corpus=egoclip.csv data.tokenizer=roberta-base init.roberta=roberta-base   # adapt

pretrain-text trains the unfused text tower and the MLM head on the same loop (DDP, checkpoints, train.resume=auto)
and writes the text tower in HuggingFace RoBERTa names to <train.output_dir>/roberta/model.safetensors, for
`egovlp pretrain ... init.roberta=<train.output_dir>/roberta`. Its corpus is an egoclip.csv (the clip_text column)
or a text file with one narration per line.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from egovlp.cli.common import add_config_args

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    commands = (
        ("pretrain", "pre-train EgoVLPv2 on EgoClip-format data", run),
        ("pretrain-text", "pre-train the text tower with MLM on narrations (an init.roberta for pretrain)", run_text),
    )
    for name, help_text, func in commands:
        p = sub.add_parser(
            name, help=help_text, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
        )
        add_config_args(p, group="pretrain")
        p.set_defaults(func=func)


def run(args: argparse.Namespace) -> int:
    from egovlp.tasks.pretrain_families import pretraining_for

    schema, task = pretraining_for(_model_family(args.config, args.overrides))
    return _run(args, schema, lambda cfg: pretrain(cfg, task), "weights", "model.safetensors")


def _model_family(config: str | None, overrides: list[str]) -> str:
    """The family of the model a pre-training config names (``model.family``, else that of ``model.arch`` or
    ``init.checkpoint``; EgoVLPv2 by default), read before the config is checked against its family's schema."""
    from omegaconf import DictConfig, OmegaConf

    from egovlp.cli.common import resolve_model_config
    from egovlp.config import _parse_overrides
    from egovlp.configs import resolve_config

    try:
        layers = [OmegaConf.load(resolve_config(config, "pretrain"))] if config else []
        layers.append(_parse_overrides(overrides) if overrides else OmegaConf.create({}))
        user = OmegaConf.merge(*layers)
        assert isinstance(user, DictConfig)
        family = OmegaConf.select(user, "model.family", default=None)
        arch = OmegaConf.select(user, "model.arch", default=None) or OmegaConf.select(user, "init.checkpoint")
        if family is None and arch:
            family = resolve_model_config(str(arch)).family
    except Exception:  # a bad file, key or name: the full config load below reports it with its context
        return "egovlpv2"
    return str(family or "egovlpv2")


def run_text(args: argparse.Namespace) -> int:
    from egovlp.tasks.text_mlm import ROBERTA_DIR, TextMLMConfig

    return _run(args, TextMLMConfig, pretrain_text, "text tower", ROBERTA_DIR)


def _run(args: argparse.Namespace, schema: type, train, what: str, output: str) -> int:
    from egovlp.cli.common import load_experiment_config

    cfg: Any = load_experiment_config(schema, args.config, args.overrides, group="pretrain")
    result = train(cfg)
    if result is not None:
        print(f"finished at step {result.step}; {what}: {Path(cfg.train.output_dir) / output}")
    return 0


def pretrain(cfg, task: Any = None):
    """Run pre-training for a resolved config (:class:`PretrainConfig` or another family's, with its ``task``
    class); returns the FitResult on rank 0 (else None)."""
    from egovlp.cli.common import run_training
    from egovlp.models.weights import save_weights
    from egovlp.tasks.pretrain import PretrainTask

    def finish(model, result, task):
        save_weights(model, Path(cfg.train.output_dir) / "model.safetensors")
        return result

    return run_training(cfg, cfg.data.tokenizer, task or PretrainTask, finish)


def pretrain_text(cfg):
    """Run text-only MLM for a resolved :class:`TextMLMConfig`; returns the FitResult on rank 0 (else None)."""
    from egovlp.cli.common import run_training
    from egovlp.errors import ConfigError
    from egovlp.tasks.text_mlm import ROBERTA_DIR, TextMLMTask, export_roberta

    for key in ("corpus", "tokenizer"):
        if not getattr(cfg.data, key):
            raise ConfigError(f"data.{key} is not set (give data.{key}=PATH)")

    def finish(model, result, task):
        export_roberta(model, Path(cfg.train.output_dir) / ROBERTA_DIR)
        return result

    return run_training(cfg, cfg.data.tokenizer, TextMLMTask, finish)
