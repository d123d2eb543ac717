"""``egovlp finetune TASK``: fine-tune on a downstream task on the shared training loop, then evaluate.

egovlp finetune epic_mir --config epic_mir init.checkpoint=egovlpv2_smallproj.safetensors \\
    data.annotation_dir=... data.video_root=... data.tokenizer=roberta-base
torchrun --nproc_per_node=8 -m egovlp.cli.main finetune charades --config charades ...

Runs the shared training loop (DDP, AdamW, cosine schedule, checkpoints with exact resume: train.resume=auto),
evaluates on eval.split at the end (and every train.eval_every steps), and writes <train.output_dir>/model.safetensors
and results.json. The model runs at data.num_frames (the checkpoint's temporal embedding is resized); without
model.arch the architecture is the init.checkpoint's.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from egovlp.cli.evaluate import (
    _epilog,
    add_task_args,
    check_required,
    parse_trailing_options,
    task_help,
    write_results,
)

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "finetune",
        help="fine-tune on a downstream task (shared training loop), then evaluate",
        description=__doc__,
        epilog=_epilog(finetune=True),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_task_args(p, "finetune")
    p.set_defaults(func=run)


def finetune(task_name: str, cfg: Any):
    """Fine-tune for a resolved config; returns the FitResult on rank 0 (None on other ranks)."""
    from egovlp.cli.common import run_training
    from egovlp.models.weights import save_weights
    from egovlp.tasks.registry import get_task

    spec = get_task(task_name)
    out = Path(cfg.train.output_dir)

    def finish(model, result, task):
        weights = save_weights(model, out / "model.safetensors", heads=task.head_weights())
        final = result.evaluations[-1] if result.evaluations else {}
        write_results(
            out / "results.json",
            {"task": spec.name, "weights": str(weights), "step": result.step, "metrics": final},
        )
        return result

    assert spec.make_task is not None
    return run_training(cfg, cfg.data.tokenizer, spec.make_task, finish)


def run(args: argparse.Namespace) -> int:
    from egovlp.cli.common import load_experiment_config
    from egovlp.tasks.registry import get_task, resolve_task

    spec = get_task(resolve_task(args.task, finetune=True))
    parse_trailing_options(args, ("config",), task_help(spec, "finetune", spec.finetune_required))
    assert spec.finetune_schema is not None
    cfg: Any = load_experiment_config(spec.finetune_schema, args.config, args.overrides, group="finetune")
    check_required(cfg, spec.finetune_required, spec.name)
    if not cfg.init.checkpoint:
        log.warning(
            "init.checkpoint is not set: fine-tuning starts from random weights of %s (give init.checkpoint="
            "W.safetensors, e.g. a converted release checkpoint)", cfg.model.arch
        )  # fmt: skip
    result = finetune(spec.name, cfg)
    if result is None:
        return 0
    if result.evaluations:
        metrics = {k: v for k, v in result.evaluations[-1].items() if k != "step"}
        print(spec.format_table(metrics))
    out = Path(cfg.train.output_dir)
    print(f"finished at step {result.step}; weights: {out / 'model.safetensors'}; results: {out / 'results.json'}")
    return 0
