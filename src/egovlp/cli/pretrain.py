"""``egovlp pretrain``: EgoVLPv2 pre-training (EgoNCE + MLM + VTM) on EgoClip-format data, 1 CPU to many GPUs.

egovlp pretrain --config configs/pretrain/egoclip.yaml data.video_root=... data.metadata=...
torchrun --nproc_per_node=8 -m egovlp.cli.main pretrain --config configs/pretrain/egoclip.yaml ...
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from egovlp.cli.common import add_config_args

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pretrain",
        help="pre-train EgoVLPv2 on EgoClip-format data",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from egovlp.cli.common import load_experiment_config
    from egovlp.tasks.pretrain import PretrainConfig

    cfg = load_experiment_config(PretrainConfig, args.config, args.overrides)
    result = pretrain(cfg)
    if result is not None:
        print(f"finished at step {result.step}; weights: {Path(cfg.train.output_dir) / 'model.safetensors'}")
    return 0


def pretrain(cfg):
    """Run pre-training for a resolved :class:`PretrainConfig`; returns the FitResult on rank 0 (else None)."""
    from egovlp.cli.common import run_training
    from egovlp.models.weights import save_weights
    from egovlp.tasks.pretrain import PretrainTask

    def finish(model, result):
        save_weights(model, Path(cfg.train.output_dir) / "model.safetensors")
        return result

    return run_training(cfg, cfg.data.tokenizer, lambda c, tok: PretrainTask(c, tok, seed=c.train.seed), finish)
