"""``egovlp evaluate TASK``: a checkpoint on a downstream task (the tasks of :mod:`egovlp.tasks.registry`).

egovlp evaluate egomcq --checkpoint egovlpv2.safetensors --config egomcq \\
    data.metadata=egomcq.json data.video_root=ego4d/chunked tokenizer=roberta-base
egovlp evaluate epic_mir --checkpoint egovlpv2_smallproj.safetensors --config epic_mir \\
    data.annotation_dir=epic-kitchens-100-annotations/retrieval_annotations data.video_root=EK100/videos \\
    data.tokenizer=roberta-base
torchrun --nproc_per_node=8 -m egovlp.cli.main evaluate epic_mir ...   (sharded, each item evaluated once)

--config takes a shipped preset (eval/NAME, `egovlp configs`) or a YAML file. Prints a table and writes the metrics
as JSON (--output, default results/<task>.json). The model runs at the task's frame count (data.num_frames).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from pathlib import Path
from typing import Any

from egovlp.errors import ConfigError

log = logging.getLogger(__name__)


def _epilog(finetune: bool) -> str:
    from egovlp.tasks.registry import list_tasks

    lines = [f"  {name:12s} {spec.description}" for name, spec in list_tasks(finetune).items()]
    return "tasks:\n" + "\n".join(lines)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="evaluate a checkpoint on a downstream task (egovlp evaluate --help lists them)",
        description=__doc__,
        epilog=_epilog(finetune=False),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_task_args(p, "eval")
    p.add_argument("--checkpoint", help="egovlp .safetensors weights (see `egovlp convert`); required")
    p.add_argument("--output", default=None, help="results JSON (default results/<task>.json)")
    p.set_defaults(func=run)


def add_task_args(p: argparse.ArgumentParser, group: str) -> None:
    """``TASK``, ``--config`` and trailing ``key=value`` overrides (options may also follow TASK: see
    :func:`parse_trailing_options`)."""
    p.add_argument("task", metavar="TASK", help="a registered task (listed below)")
    p.add_argument(
        "--config", default=None, help=f"a shipped preset ({group}/TASK, `egovlp configs`) or a YAML config file"
    )
    p.add_argument(
        "overrides", nargs=argparse.REMAINDER, metavar="KEY=VALUE", help="config overrides, e.g. data.num_frames=8"
    )


OPTION_HELP = {
    "checkpoint": "egovlp .safetensors weights (see `egovlp convert`); required",
    "config": "a shipped preset (`egovlp configs`) or a YAML config file",
    "output": "results JSON (default results/<task>.json)",
}


def task_help(spec: Any, group: str, required: tuple[str, ...]) -> str:
    """What ``egovlp evaluate|finetune TASK --help`` says about the task."""
    from egovlp.configs import list_presets

    preset = f"{group}/{spec.name}"
    lines = [spec.description, "", f"required keys: {' '.join(f'{k}=...' for k in required) or '(none)'}"]
    if preset in list_presets():
        lines.append(f"shipped preset: --config {preset} (`egovlp configs {preset}` prints it with every key)")
    return "\n".join(lines)


def parse_trailing_options(args: argparse.Namespace, options: tuple[str, ...], description: str = "") -> None:
    """Options written after TASK land in the trailing overrides (argparse stops at the first positional): parse
    them out of ``args.overrides`` in place, options and overrides in any order (``--help`` there describes the
    task with ``description``)."""
    inner = argparse.ArgumentParser(
        prog=f"egovlp {args.command} {args.task}",
        description=description or None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for name in options:
        inner.add_argument(f"--{name}", default=getattr(args, name), help=OPTION_HELP.get(name))
    inner.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. data.num_frames=8")
    vars(args).update(vars(inner.parse_intermixed_args(args.overrides)))


def check_required(cfg: Any, keys: tuple[str, ...], task: str) -> None:
    """ConfigError naming every required path key that is empty."""
    from egovlp.tasks.registry import config_value

    missing = [key for key in keys if not str(config_value(cfg, key))]
    if missing:
        sets = " ".join(f"{k}=..." for k in missing)
        raise ConfigError(f"{task}: {', '.join(missing)} not set (pass {sets} or a --config that sets them)")


def evaluate(task: str, cfg: Any, checkpoint: str, progress: bool = True) -> dict[str, Any] | None:
    """Evaluate ``checkpoint`` on ``task`` under ``cfg``; the metrics on rank 0, None on other ranks."""
    from egovlp.data.tokenizer import Tokenizer
    from egovlp.models.weights import load_model
    from egovlp.tasks.registry import config_value, get_task
    from egovlp.train.distributed import cleanup_distributed, init_distributed

    spec = get_task(task)
    dist = init_distributed(cfg.device)
    try:
        frames = int(config_value(cfg, spec.frames_key))
        model = load_model(checkpoint, num_frames=frames, device=dist.device).eval()
        tokenizer = Tokenizer.from_dir(config_value(cfg, spec.tokenizer_key))
        metrics = spec.make_evaluator(cfg, tokenizer, model, dist, progress)(model)
        return metrics if dist.is_main else None
    finally:
        cleanup_distributed()


def _json_safe(value: Any) -> Any:
    """NaN / inf -> None (JSON has no such numbers), recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def write_results(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` as JSON (non-finite numbers as null), creating the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_json_safe(payload), indent=2, allow_nan=False) + "\n")
    return path


def run(args: argparse.Namespace) -> int:
    from egovlp.cli.common import load_experiment_config
    from egovlp.config import config_to_dict
    from egovlp.tasks.registry import get_task
    from egovlp.utils.files import check_writable

    spec = get_task(args.task)
    parse_trailing_options(args, ("checkpoint", "config", "output"), task_help(spec, "eval", spec.required))
    if not args.checkpoint:
        raise ConfigError("--checkpoint is required (egovlp .safetensors weights)")
    cfg: Any = load_experiment_config(spec.eval_schema, args.config, args.overrides, group="eval")
    check_required(cfg, spec.required, spec.name)
    output = Path(args.output or Path("results") / f"{spec.name}.json")
    check_writable(output.parent, "--output folder")  # before the evaluation, not after it
    metrics = evaluate(spec.name, cfg, args.checkpoint)
    if metrics is None:
        return 0
    print(spec.format_table(metrics))
    output = write_results(
        output,
        {"task": spec.name, "checkpoint": str(args.checkpoint), "metrics": metrics, "config": config_to_dict(cfg)},
    )
    print(f"results: {output}")
    return 0
