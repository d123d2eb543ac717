"""``egovlp evaluate video_mc``: zero-shot multiple-choice video QA, the protocol of All-in-one's MSRVTT-MC.

Every option sentence is scored against the whole video with the joint model's VTM score (All-in-one: the release's
``rank_output``, the match logit; a model without it: its VTM match probability), and the question is answered by the
highest-scoring option. Accuracy in percent. The data are user-provided in the release's format
(:mod:`egovlp.data.video_mc`: ``msrvtt_mc_test.jsonl`` and ``<video_root>/<clip_name>.mp4``). Under DDP every
question is scored once (sharded without padding) and rank 0 computes the accuracy.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from egovlp.config import at_least, one_of
from egovlp.data.tokenizer import Tokenizer
from egovlp.data.transforms import eval_transform
from egovlp.data.video_mc import VideoMCCollate, VideoMCDataset, load_video_mc
from egovlp.errors import ConfigError, DataError
from egovlp.tasks.registry import TaskSpec, register_task
from egovlp.tasks.shared import check_finite, check_vocab, first_items, gather_shards, sharded_loader
from egovlp.train.distributed import DistInfo

log = logging.getLogger(__name__)

__all__ = ["VideoMCConfig", "VideoMCEvalConfig", "VideoMCEvaluator", "format_table", "mc_accuracy", "option_scores"]


@dataclass(frozen=True)
class VideoMCConfig:
    metadata: str = ""  # msrvtt_mc_test.jsonl (JSON lines), a .json list of {clip_name, options, answer}, or .csv/.tsv
    video_root: str = ""  # <root>/<clip_name>.mp4 (the release: <data>/videos/all)
    tokenizer: str = ""  # the model's tokenizer folder (bert-base-uncased vocab.txt for the released All-in-one)
    num_frames: int = at_least(1, 3)  # frames of each whole video (the release: 3)
    text_max_length: int = at_least(2, 40)  # option sentences truncated to this many tokens (the release: 40)
    batch_size: int = at_least(1, 4)  # questions per batch (x K options)
    num_workers: int = at_least(0, 2)
    bad_input: str = one_of(("raise", "skip"), "raise")  # "skip": unreadable videos are counted and excluded
    max_questions: int = at_least(0, 0)  # evaluate only the first N questions (0 = all)


@dataclass(frozen=True)
class VideoMCEvalConfig:
    """``egovlp evaluate video_mc``: the model comes from ``--checkpoint``."""

    data: VideoMCConfig = field(default_factory=VideoMCConfig)
    device: str = "auto"


@torch.no_grad()
def option_scores(model, video: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """``(B, K)`` VTM scores of the K options of each of B videos (``input_ids`` question-major ``(B * K, L)``)."""
    b = video.shape[0]
    k = input_ids.shape[0] // b
    score = getattr(model, "vtm_score", None) or getattr(model, "vtm_probability", None)
    if score is None:
        raise ConfigError(f"{type(model).__name__} has no VTM head: multiple-choice QA scores options with VTM")
    return score(video.repeat_interleave(k, dim=0), input_ids, attention_mask).view(b, k)


def mc_accuracy(scores: np.ndarray, answers: np.ndarray) -> float:
    """Percent of rows whose highest score is at the answer index (ties go to the first option, as argmax)."""
    if not len(answers):
        return float("nan")
    return 100.0 * float((scores.argmax(axis=1) == answers).mean())


class VideoMCEvaluator:
    """Reads the questions once; ``evaluator(model)`` gives ``accuracy``, ``questions``, ``skipped`` on rank 0."""

    def __init__(self, cfg: VideoMCConfig, tokenizer: Tokenizer, img_size: int, dist: DistInfo, progress=False):
        self.cfg, self.dist, self.progress = cfg, dist, progress and dist.is_main
        questions = load_video_mc(cfg.metadata)
        dataset = VideoMCDataset(questions, cfg.video_root, cfg.num_frames, eval_transform(img_size), cfg.bad_input)
        collate = VideoMCCollate(tokenizer, cfg.text_max_length)
        self.loader = sharded_loader(first_items(dataset, cfg.max_questions), cfg.batch_size, cfg.num_workers, dist,
                                     collate)  # fmt: skip
        self.scores: dict[str, Any] = {}

    @torch.no_grad()
    def __call__(self, model) -> dict[str, float]:
        parts: dict[str, list] = {"index": [], "answer": [], "scores": []}
        skipped = 0
        batches: Any = self.loader
        if self.progress:
            from tqdm.auto import tqdm

            batches = tqdm(self.loader, desc="multiple choice", leave=False, dynamic_ncols=True)
        device = self.dist.device
        with model.frames(self.cfg.num_frames):
            for batch in batches:
                skipped += int(batch["num_skipped"])
                if "video" not in batch:
                    continue
                ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
                scores = option_scores(model, batch["video"].to(device), ids, mask).float().cpu().numpy()
                check_finite(scores, f"option scores of questions {batch['index'].tolist()}")
                parts["scores"].append(scores)
                parts["index"].append(batch["index"].numpy())
                parts["answer"].append(batch["answer"].numpy())
        local: dict[str, Any] = {k: np.concatenate(v) if v else np.zeros((0,)) for k, v in parts.items()}
        local["skipped"] = skipped
        merged = gather_shards(local, self.dist)
        if merged is None:
            return {}
        if not len(merged["index"]):
            raise DataError(f"{self.cfg.metadata}: no question could be scored ({merged['skipped']} skipped)")
        self.scores = merged
        return {
            "accuracy": mc_accuracy(merged["scores"], merged["answer"].astype(np.int64)),
            "questions": float(len(merged["index"])),
            "skipped": float(merged["skipped"]),
        }


def format_table(m: dict[str, Any]) -> str:
    lines = [f"multiple-choice video QA, {int(m['questions'])} questions", f"{'accuracy (%)':22s}{m['accuracy']:10.2f}"]
    if m.get("skipped"):
        lines.append(f"skipped questions: {int(m['skipped'])}")
    return "\n".join(lines)


def _make_evaluator(cfg: VideoMCEvalConfig, tokenizer: Tokenizer, model, dist: DistInfo, progress: bool = False):
    check_vocab(tokenizer, model.cfg)
    return VideoMCEvaluator(cfg.data, tokenizer, model.cfg.video.img_size, dist, progress)


register_task(
    TaskSpec(
        name="video_mc",
        description="zero-shot multiple-choice video QA (All-in-one's MSRVTT-MC protocol): the option of highest VTM",
        eval_schema=VideoMCEvalConfig,
        make_evaluator=_make_evaluator,
        format_table=format_table,
        required=("data.metadata", "data.video_root", "data.tokenizer"),
    )
)
