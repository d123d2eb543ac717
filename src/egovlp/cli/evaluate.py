"""``egovlp evaluate TASK``: a checkpoint on EgoMCQ, EK-100 multi-instance retrieval or Charades-Ego.

egovlp evaluate egomcq --checkpoint egovlpv2.safetensors --config configs/eval/egomcq.yaml \\
    data.metadata=egomcq.json data.video_root=ego4d/chunked tokenizer=roberta-base
egovlp evaluate epic_mir --checkpoint egovlpv2_smallproj.safetensors --config configs/eval/epic_mir.yaml \\
    data.annotation_dir=epic-kitchens-100-annotations/retrieval_annotations data.video_root=EK100/videos \\
    data.tokenizer=roberta-base
egovlp evaluate charades --checkpoint egovlpv2_smallproj.safetensors --config configs/eval/charades.yaml \\
    data.annotation_dir=CharadesEgo data.video_root=CharadesEgo_v1_480 data.tokenizer=roberta-base
torchrun --nproc_per_node=8 -m egovlp.cli.main evaluate epic_mir ...   (sharded, each item evaluated once)

Prints a table and writes the metrics as JSON (--output, default results/<task>.json). The checkpoint's temporal
embedding is resized to the task's frame count (EgoMCQ 16, EK-100 16, Charades-Ego 32 by default).
"""

from __future__ import annotations

import argparse
import difflib
import functools
import json
import logging
import math
from dataclasses import field, make_dataclass
from pathlib import Path
from typing import Any

from egovlp.errors import ConfigError

log = logging.getLogger(__name__)

TASKS = ("egomcq", "epic_mir", "charades")


@functools.cache
def egomcq_eval_schema() -> type:
    """The ``egovlp evaluate egomcq`` config: ``data`` (:class:`~egovlp.tasks.egomcq.EgoMCQConfig`), ``tokenizer``
    (roberta-base directory), ``device``; the model comes from ``--checkpoint``. Made on first use, so that the
    command line starts without importing the data stack."""
    from egovlp.tasks.egomcq import EgoMCQConfig

    fields = [
        ("data", EgoMCQConfig, field(default_factory=EgoMCQConfig)),
        ("tokenizer", str, ""),
        ("device", str, "auto"),
    ]
    return make_dataclass("EgoMCQEvalConfig", fields, frozen=True)


# the config keys that must name files for each task
REQUIRED = {
    "egomcq": ("data.metadata", "data.video_root", "tokenizer"),
    "epic_mir": ("data.annotation_dir", "data.video_root", "data.tokenizer"),
    "charades": ("data.annotation_dir", "data.video_root", "data.tokenizer"),
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="evaluate a checkpoint on EgoMCQ, EK-100 MIR or Charades-Ego",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_task_args(p, TASKS)
    p.add_argument("--checkpoint", help="egovlp .safetensors weights (see `egovlp convert`); required")
    p.add_argument("--output", default=None, help="results JSON (default results/<task>.json)")
    p.set_defaults(func=run)


def add_task_args(p: argparse.ArgumentParser, tasks: tuple[str, ...]) -> None:
    """``TASK``, ``--config`` and trailing ``key=value`` overrides (options may also follow TASK: see
    :func:`parse_trailing_options`)."""
    p.add_argument("task", metavar="TASK", help=" | ".join(tasks))
    p.add_argument("--config", default=None, help="YAML config (e.g. configs/eval/<task>.yaml)")
    p.add_argument(
        "overrides", nargs=argparse.REMAINDER, metavar="KEY=VALUE", help="config overrides, e.g. data.num_frames=8"
    )


def parse_trailing_options(args: argparse.Namespace, options: tuple[str, ...]) -> None:
    """Options written after TASK land in the trailing overrides (argparse stops at the first positional): parse
    them out of ``args.overrides`` in place, options and overrides in any order."""
    inner = argparse.ArgumentParser(prog=f"egovlp {args.command} {args.task}")
    for name in options:
        inner.add_argument(f"--{name}", default=getattr(args, name))
    inner.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    vars(args).update(vars(inner.parse_intermixed_args(args.overrides)))


def resolve_task(name: str, known: tuple[str, ...]) -> str:
    """``name`` if it is a known task (``-`` and ``_`` alike), else ConfigError with the closest names."""
    task = name.replace("-", "_").lower()
    if task in known:
        return task
    close = difflib.get_close_matches(task, known, n=2, cutoff=0.4)
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    raise ConfigError(f"unknown task {name!r} (known: {', '.join(known)}){hint}")


def schema_of(task: str) -> type:
    from egovlp.tasks.charades import CharadesEvalConfig
    from egovlp.tasks.epic_mir import EpicMIREvalConfig

    return {"egomcq": egomcq_eval_schema(), "epic_mir": EpicMIREvalConfig, "charades": CharadesEvalConfig}[task]


def check_required(cfg: Any, keys: tuple[str, ...], task: str) -> None:
    """ConfigError naming every required path key that is empty."""
    missing = []
    for key in keys:
        value = cfg
        for part in key.split("."):
            value = getattr(value, part)
        if not str(value):
            missing.append(key)
    if missing:
        sets = " ".join(f"{k}=..." for k in missing)
        raise ConfigError(f"{task}: {', '.join(missing)} not set (pass {sets} or a --config that sets them)")


def evaluate(task: str, cfg: Any, checkpoint: str) -> dict[str, Any] | None:
    """Evaluate ``checkpoint`` on ``task`` under ``cfg``; the metrics on rank 0, None on other ranks."""
    from egovlp.data.tokenizer import Tokenizer
    from egovlp.models.weights import load_model
    from egovlp.tasks.epic_mir import check_vocab
    from egovlp.train.distributed import cleanup_distributed, init_distributed

    dist = init_distributed(cfg.device)
    try:
        model = load_model(checkpoint, num_frames=cfg.data.num_frames, device=dist.device).eval()
        tokenizer = Tokenizer.from_dir(cfg.tokenizer if task == "egomcq" else cfg.data.tokenizer)
        check_vocab(tokenizer, model.cfg)
        img_size = model.cfg.video.img_size
        if task == "egomcq":
            from egovlp.tasks.egomcq import egomcq_loader, evaluate_egomcq

            metrics, _ = evaluate_egomcq(model, egomcq_loader(cfg.data, tokenizer, img_size, dist), dist, True)
        elif task == "epic_mir":
            from egovlp.tasks.epic_mir import EpicMIREvaluator

            metrics = EpicMIREvaluator(cfg.data, cfg.eval, tokenizer, img_size, dist)(model)
        else:
            from egovlp.tasks.charades import CharadesEvaluator

            metrics = CharadesEvaluator(cfg.data, cfg.eval, tokenizer, img_size, dist)(model)
        return metrics if dist.is_main else None
    finally:
        cleanup_distributed()


def _row(name: str, values: list[float], width: int = 10) -> str:
    return f"{name:22s}" + "".join(f"{v:{width}.2f}" if not math.isnan(v) else f"{'n/a':>{width}s}" for v in values)


def format_table(task: str, m: dict[str, Any]) -> str:
    """A small text table of a task's metrics (percent)."""
    if task == "egomcq":
        header = f"{'':22s}{'inter':>10s}{'intra':>10s}{'all':>10s}"
        lines = [f"EgoMCQ accuracy (%), {int(m['questions'])} questions", header]
        for mode in ("dual", "fusion", "ensemble"):
            if f"{mode}/inter" in m:
                lines.append(_row(mode, [m[f"{mode}/inter"], m[f"{mode}/intra"], m[f"{mode}/overall"]]))
        if m.get("skipped"):
            lines.append(f"skipped questions: {int(m['skipped'])}")
        return "\n".join(lines)
    if task == "epic_mir":
        lines = [
            f"EK-100 multi-instance retrieval (%), {int(m['clips'])} clips x {int(m['sentences'])} sentences",
            f"{'':22s}{'V2T':>10s}{'T2V':>10s}{'AVG':>10s}",
            _row("mAP", [m["mAP_V2T"], m["mAP_T2V"], m["mAP_AVG"]]),
            _row("nDCG", [m["nDCG_V2T"], m["nDCG_T2V"], m["nDCG_AVG"]]),
        ]
        if m.get("skipped_clips"):
            lines.append(f"skipped clips: {int(m['skipped_clips'])}")
        return "\n".join(lines)
    lines = [
        f"Charades-Ego (%), {int(m['videos'])} videos",
        _row("mAP", [m["mAP"]]),
        f"classes evaluated {int(m['classes_evaluated'])}, skipped (no positive video) {int(m['classes_skipped'])}",
    ]
    if m.get("skipped_videos"):
        lines.append(f"skipped videos: {int(m['skipped_videos'])}")
    return "\n".join(lines)


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

    parse_trailing_options(args, ("checkpoint", "config", "output"))
    if not args.checkpoint:
        raise ConfigError("--checkpoint is required (egovlp .safetensors weights)")
    task = resolve_task(args.task, TASKS)
    cfg = load_experiment_config(schema_of(task), args.config, args.overrides)
    check_required(cfg, REQUIRED[task], task)
    metrics = evaluate(task, cfg, args.checkpoint)
    if metrics is None:
        return 0
    print(format_table(task, metrics))
    output = write_results(
        args.output or Path("results") / f"{task}.json",
        {"task": task, "checkpoint": str(args.checkpoint), "metrics": metrics, "config": config_to_dict(cfg)},
    )
    print(f"results: {output}")
    return 0
