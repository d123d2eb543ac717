"""``egovlp finetune TASK``: fine-tune on EK-100 multi-instance retrieval or Charades-Ego, then evaluate.

egovlp finetune epic_mir --config configs/finetune/epic_mir.yaml init.checkpoint=egovlpv2_smallproj.safetensors \\
    data.annotation_dir=... data.video_root=... data.tokenizer=roberta-base
torchrun --nproc_per_node=8 -m egovlp.cli.main finetune charades --config configs/finetune/charades.yaml ...

Runs the shared training loop (DDP, AdamW, cosine schedule, checkpoints with exact resume: train.resume=auto),
evaluates on eval.split at the end (and every train.eval_every steps), and writes <train.output_dir>/model.safetensors
and results.json. The model runs at data.num_frames (the checkpoint's temporal embedding is resized).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path
from typing import Any

from egovlp.cli.evaluate import (
    REQUIRED,
    add_task_args,
    check_required,
    format_table,
    parse_trailing_options,
    resolve_task,
    write_results,
)

log = logging.getLogger(__name__)

TASKS = ("epic_mir", "charades")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "finetune",
        help="fine-tune on EK-100 MIR or Charades-Ego (shared training loop), then evaluate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_task_args(p, TASKS)
    p.set_defaults(func=run)


def _task_types(task: str) -> tuple[type, type]:
    """``(config schema, Task class)`` of a fine-tuning task."""
    if task == "epic_mir":
        from egovlp.tasks.epic_mir import EpicMIRConfig, EpicMIRTask

        return EpicMIRConfig, EpicMIRTask
    from egovlp.tasks.charades import CharadesConfig, CharadesTask

    return CharadesConfig, CharadesTask


def with_frames(cfg: Any) -> Any:
    """``cfg`` whose model runs at ``data.num_frames`` (the one setting of the frame count)."""
    video = dataclasses.replace(cfg.model.video, num_frames=cfg.data.num_frames)
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, video=video))


def finetune(task_name: str, cfg: Any):
    """Fine-tune for a resolved config; returns the FitResult on rank 0 (None on other ranks)."""
    from egovlp.cli.common import run_training
    from egovlp.models.weights import save_weights

    cfg = with_frames(cfg)
    out = Path(cfg.train.output_dir)

    def finish(model, result):
        weights = save_weights(model, out / "model.safetensors")
        final = result.evaluations[-1] if result.evaluations else {}
        write_results(
            out / "results.json",
            {"task": task_name, "weights": str(weights), "step": result.step, "metrics": final},
        )
        return result

    task_type = _task_types(task_name)[1]
    return run_training(cfg, cfg.data.tokenizer, lambda c, tok: task_type(c, tok, seed=c.train.seed), finish)


def run(args: argparse.Namespace) -> int:
    from egovlp.cli.common import load_experiment_config

    parse_trailing_options(args, ("config",))
    task = resolve_task(args.task, TASKS)
    cfg = load_experiment_config(_task_types(task)[0], args.config, args.overrides)
    check_required(cfg, REQUIRED[task], task)
    result = finetune(task, cfg)
    if result is None:
        return 0
    if result.evaluations:
        metrics = {k: v for k, v in result.evaluations[-1].items() if k != "step"}
        print(format_table(task, metrics))
    out = Path(cfg.train.output_dir)
    print(f"finished at step {result.step}; weights: {out / 'model.safetensors'}; results: {out / 'results.json'}")
    return 0
