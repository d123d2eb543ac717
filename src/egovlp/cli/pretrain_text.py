"""``egovlp pretrain-text``: masked language modelling of the text tower on narrations alone.

egovlp pretrain-text --config configs/pretrain/demo_text.yaml data.corpus=egoclip.csv data.tokenizer=tok/
egovlp pretrain-text data.corpus=egoclip.csv data.tokenizer=roberta-base init.roberta=roberta-base   # adapt

Trains the unfused text tower and the MLM head (shared training loop: DDP, checkpoints, train.resume=auto) and
writes the text tower in HuggingFace RoBERTa names to <train.output_dir>/roberta/model.safetensors, for
`egovlp pretrain ... init.roberta=<train.output_dir>/roberta`. The corpus is an egoclip.csv (its clip_text column)
or a text file with one narration per line.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from egovlp.cli.common import add_config_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pretrain-text",
        help="pre-train the text tower with MLM on narrations (an init.roberta for pretrain)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from egovlp.cli.common import load_experiment_config
    from egovlp.tasks.text_mlm import TextMLMConfig

    cfg = load_experiment_config(TextMLMConfig, args.config, args.overrides)
    result = pretrain_text(cfg)
    if result is not None:
        print(f"finished at step {result.step}; text tower: {Path(cfg.train.output_dir) / 'roberta'}")
    return 0


def pretrain_text(cfg):
    """Run text-only MLM for a resolved :class:`TextMLMConfig`; returns the FitResult on rank 0 (else None)."""
    from egovlp.cli.common import run_training
    from egovlp.errors import ConfigError
    from egovlp.tasks.text_mlm import ROBERTA_DIR, TextMLMTask, export_roberta

    for key in ("corpus", "tokenizer"):
        if not getattr(cfg.data, key):
            raise ConfigError(f"data.{key} is not set (give data.{key}=PATH)")

    def finish(model, result):
        export_roberta(model, Path(cfg.train.output_dir) / ROBERTA_DIR)
        return result

    return run_training(cfg, cfg.data.tokenizer, lambda c, tok: TextMLMTask(c, tok, seed=c.train.seed), finish)
