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
    from egovlp.config import to_yaml
    from egovlp.data.tokenizer import Tokenizer
    from egovlp.models.factory import build_model
    from egovlp.models.weights import save_weights
    from egovlp.tasks.pretrain import PretrainTask
    from egovlp.train.distributed import cleanup_distributed, init_distributed
    from egovlp.train.loop import Trainer, seed_everything
    from egovlp.utils.logging import add_log_file, setup_logging

    dist = init_distributed(cfg.train.device)
    setup_logging(logging.getLogger("egovlp").level or logging.INFO, rank=dist.rank)
    out = Path(cfg.train.output_dir)
    add_log_file(out / "train.log")
    try:
        tokenizer = Tokenizer.from_dir(cfg.data.tokenizer)
        seed_everything(cfg.train.seed)  # the same initial weights on every rank and in every run
        model = build_model(cfg.model, cfg.init.checkpoint, cfg.init.vit, cfg.init.roberta)
        task = PretrainTask(cfg, tokenizer, seed=cfg.train.seed)
        result = Trainer(cfg.train, cfg.optim, dist, to_yaml(cfg)).fit(task, model)
        if dist.is_main:
            save_weights(model, out / "model.safetensors")
            return result
        return None
    finally:
        cleanup_distributed()
