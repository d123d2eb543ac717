"""EgoMCQ scoring, shared by the ``egomcq`` task (:mod:`egovlp.tasks.egomcq`) and pre-training's validation.

Which of 5 clips a narration describes: dual (cosine), fusion (VTM probability) and ensemble (sum) scores, accuracy
per question type with the correct labels (1 = inter-video, 2 = intra-video). Under DDP every question is scored
exactly once (sharded without padding) and rank 0 computes the metric on the gathered scores.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from egovlp.config import at_least, one_of
from egovlp.data.collate import EgoMCQCollate
from egovlp.data.egomcq import EgoMCQDataset
from egovlp.data.tokenizer import Tokenizer
from egovlp.data.transforms import eval_transform
from egovlp.errors import DataError
from egovlp.metrics.mcq import egomcq_accuracy
from egovlp.tasks.shared import check_finite, first_items, sharded_loader
from egovlp.train.distributed import DistInfo, gather_objects

log = logging.getLogger(__name__)

__all__ = ["MODES", "EgoMCQConfig", "EgoMCQEvaluator", "egomcq_loader", "evaluate_egomcq", "mcq_metrics"]

MODES = ("dual", "fusion", "ensemble")


@dataclass(frozen=True)
class EgoMCQConfig:
    metadata: str = ""  # egomcq.json ("" = no EgoMCQ evaluation)
    video_root: str = ""  # <root>/<video_uid>/<k>.mp4
    chunk_seconds: float = 0.0  # chunk length of the video layout; <= 0: <video_root>/chunks.json, else 600
    num_frames: int = at_least(1, 16)  # the release evaluates at 16 frames (the temporal embedding is interpolated)
    batch_size: int = at_least(1, 4)  # questions per batch (x 5 clips)
    num_workers: int = at_least(0, 2)
    bad_input: str = one_of(("raise", "skip"), "raise")  # "skip": skipped questions are counted and excluded
    max_questions: int = at_least(0, 0)  # evaluate only the first N questions (0 = all)


def egomcq_loader(
    cfg: EgoMCQConfig, tokenizer: Tokenizer, img_size: int, dist: DistInfo, reverse_frames: bool = False
) -> DataLoader:
    """Rank-sharded loader over the EgoMCQ questions (no padding, so no question is counted twice)."""
    questions = EgoMCQDataset(
        cfg.metadata,
        cfg.video_root,
        cfg.num_frames,
        eval_transform(img_size),
        chunk_seconds=cfg.chunk_seconds,
        reverse_frames=reverse_frames,
        bad_input=cfg.bad_input,
    )
    return sharded_loader(
        first_items(questions, cfg.max_questions), cfg.batch_size, cfg.num_workers, dist, EgoMCQCollate(tokenizer)
    )


@torch.no_grad()
def score_batch(model, batch: dict, device: torch.device, fusion: bool) -> dict[str, np.ndarray]:
    """Option scores of one batch: ``dual`` cosine ``(B, 5)`` and, with ``fusion``, VTM P(match) ``(B, 5)``."""
    video = batch["video"].to(device)  # (B, 5, F, 3, H, W)
    b, k = video.shape[:2]
    flat = video.flatten(0, 1)  # (B*5, F, 3, H, W)
    ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
    v = model.encode_video(flat, normalize=True).view(b, k, -1)
    t = model.encode_text(ids, mask, normalize=True)
    out = {"dual": torch.einsum("be,bke->bk", t, v).float().cpu().numpy()}
    if fusion:
        rep_ids, rep_mask = ids.repeat_interleave(k, 0), mask.repeat_interleave(k, 0)
        out["fusion"] = model.vtm_probability(flat, rep_ids, rep_mask).view(b, k).float().cpu().numpy()
    for mode, scores in out.items():
        check_finite(scores, f"EgoMCQ {mode} scores of questions {batch['index'].tolist()}")
    return out


@torch.no_grad()
def score_egomcq(model, loader: DataLoader, device: torch.device, progress: bool = False) -> dict[str, np.ndarray]:
    """Scores of this rank's questions: ``index``, ``answer``, ``type`` ``(N,)`` and ``dual``/``fusion`` ``(N, 5)``."""
    fusion = model.cfg.has_fusion and model.cfg.vtm_head
    parts: dict[str, list] = {"index": [], "answer": [], "type": [], "dual": [], "fusion": []}
    skipped = 0
    batches = loader
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(loader, desc="EgoMCQ", leave=False, dynamic_ncols=True)
    for batch in batches:
        skipped += batch.get("num_skipped", 0)
        if "video" not in batch:
            continue
        scores = score_batch(model, batch, device, fusion)
        for key in ("index", "answer", "type"):
            parts[key].append(batch[key].numpy())
        for key, value in scores.items():
            parts[key].append(value)
    out = {k: np.concatenate(v) if v else np.zeros((0,) if k in ("index", "answer", "type") else (0, 5))
           for k, v in parts.items() if v or k != "fusion"}  # fmt: skip
    out["skipped"] = np.array(skipped)
    return out


def merge_scores(shards: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Concatenate per-rank scores, ordered by question index, each question once."""
    keys = [k for k in shards[0] if k != "skipped"]
    merged = {k: np.concatenate([s[k] for s in shards]) for k in keys}
    _, first = np.unique(merged["index"], return_index=True)
    merged = {k: v[first] for k, v in merged.items()}
    merged["skipped"] = np.array(sum(int(s["skipped"]) for s in shards))
    return merged


def mcq_metrics(scores: dict[str, np.ndarray]) -> dict[str, float]:
    """Accuracy (%) per mode and type: ``{mode}/inter``, ``{mode}/intra``, ``{mode}/overall``; plus counts."""
    results: dict[str, float] = {}
    modes = {"dual": scores["dual"]}
    if "fusion" in scores:
        modes["fusion"] = scores["fusion"]
        modes["ensemble"] = scores["dual"] + scores["fusion"]
    for mode, s in modes.items():
        acc = egomcq_accuracy(s, scores["answer"], scores["type"])
        for name, value in (("inter", acc.inter_video), ("intra", acc.intra_video), ("overall", acc.overall)):
            results[f"{mode}/{name}"] = float("nan") if value is None else 100.0 * value
    results["questions"] = float(len(scores["index"]))
    results["skipped"] = float(scores["skipped"])
    return results


def evaluate_egomcq(
    model, loader: DataLoader, dist: DistInfo, progress: bool = False
) -> tuple[dict[str, float], dict[str, np.ndarray]] | tuple[dict, dict]:
    """Score on every rank, gather, and compute the metrics on rank 0 (other ranks get empty dicts)."""
    local = score_egomcq(model, loader, dist.device, progress and dist.is_main)
    shards = gather_objects(local)
    if not dist.is_main:
        return {}, {}
    merged = merge_scores(shards)
    if not len(merged["index"]):
        raise DataError(f"EgoMCQ: no question could be scored ({int(merged['skipped'])} skipped)")
    return mcq_metrics(merged), merged


class EgoMCQEvaluator:
    """Loads the questions once; ``evaluator(model)`` gives the accuracies on rank 0 (``{}`` on other ranks).

    The model runs at ``cfg.num_frames`` (:meth:`~egovlp.models.model.EgoVLPv2.frames`); ``reverse_frames`` plays
    every option clip backwards (the probe of whether a model reads motion). The last gathered scores are kept in
    :attr:`scores`.
    """

    def __init__(
        self,
        cfg: EgoMCQConfig,
        tokenizer: Tokenizer,
        img_size: int,
        dist: DistInfo,
        progress: bool = False,
        reverse_frames: bool = False,
    ) -> None:
        self.cfg, self.dist, self.progress = cfg, dist, progress
        self.loader = egomcq_loader(cfg, tokenizer, img_size, dist, reverse_frames)
        self.scores: dict[str, np.ndarray] = {}

    @torch.no_grad()
    def __call__(self, model) -> dict[str, Any]:
        with model.frames(self.cfg.num_frames):
            metrics, self.scores = evaluate_egomcq(model, self.loader, self.dist, self.progress)
        return metrics
