"""``egovlp evaluate egomcq``: EgoMCQ accuracy of a checkpoint (dual, fusion and ensemble scores).

The scoring lives in :mod:`egovlp.tasks.mcq`, which pre-training's validation shares; this module registers the
task: its config schema, evaluator and table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from egovlp.data.tokenizer import Tokenizer
from egovlp.tasks.mcq import MODES, EgoMCQConfig, EgoMCQEvaluator
from egovlp.tasks.registry import TaskSpec, register_task
from egovlp.tasks.shared import check_vocab, table_row
from egovlp.train.distributed import DistInfo

__all__ = ["EgoMCQConfig", "EgoMCQEvalConfig", "EgoMCQEvaluator", "format_table"]


@dataclass(frozen=True)
class EgoMCQEvalConfig:
    """``egovlp evaluate egomcq``: the model comes from ``--checkpoint``."""

    data: EgoMCQConfig = field(default_factory=EgoMCQConfig)
    tokenizer: str = ""  # tokenizer folder: tokenizer.json, vocab.json + merges.txt (BPE) or vocab.txt (WordPiece)
    device: str = "auto"


def format_table(m: dict[str, Any]) -> str:
    """The accuracy table (percent) of ``egovlp evaluate egomcq``."""
    header = f"{'':22s}{'inter':>10s}{'intra':>10s}{'all':>10s}"
    lines = [f"EgoMCQ accuracy (%), {int(m['questions'])} questions", header]
    for mode in MODES:
        if f"{mode}/inter" in m:
            lines.append(table_row(mode, [m[f"{mode}/inter"], m[f"{mode}/intra"], m[f"{mode}/overall"]]))
    if m.get("skipped"):
        lines.append(f"skipped questions: {int(m['skipped'])}")
    return "\n".join(lines)


def _make_evaluator(cfg: EgoMCQEvalConfig, tokenizer: Tokenizer, model, dist: DistInfo, progress: bool = False):
    check_vocab(tokenizer, model.cfg)
    return EgoMCQEvaluator(cfg.data, tokenizer, model.cfg.video.img_size, dist, progress)


register_task(
    TaskSpec(
        name="egomcq",
        description="EgoMCQ: which of 5 clips a narration describes (dual, fusion and ensemble accuracy)",
        eval_schema=EgoMCQEvalConfig,
        make_evaluator=_make_evaluator,
        format_table=format_table,
        required=("data.metadata", "data.video_root", "tokenizer"),
        tokenizer_key="tokenizer",
    )
)
