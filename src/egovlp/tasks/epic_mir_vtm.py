"""``egovlp evaluate epic_mir_vtm``: EK-100 multi-instance retrieval of a joint model by two-stage VTM re-ranking.

For checkpoints without contrastive projections (the released All-in-one pre-training files: MLM + VTM only), or to
add VTM to a VTC ranking. Two passes over the clips (:mod:`egovlp.models.vtm_rerank` for the ranking rule):

1. cheap scores: the cosine of ``encode_video`` / ``encode_text`` (the projections if the model has them);
2. VTM: each sentence's top ``eval.k`` clips (text-to-video) and each clip's top ``eval.k`` sentences
   (video-to-text) are scored with the joint pass (``model.vtm_score``: All-in-one's ``rank_output``), clip by
   clip as the loader streams them (no clip is held in memory); ``clips x sentences`` would be the full cost.

Video-to-text metrics come from the clip rows re-ranked by their candidates, text-to-video from the sentence rows;
mAP / nDCG as ``epic_mir``. ``eval.k`` at least the number of clips and of sentences gives the full VTM ranking.
Under DDP each rank scores the pairs of its own clips; rank 0 computes the metrics.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import numpy as np
import torch

from egovlp.config import at_least, one_of
from egovlp.data.epic_mir import load_epic_mir
from egovlp.data.epic_mir_dataset import ClipCollate, EpicMIRDataset
from egovlp.data.tokenizer import Tokenizer
from egovlp.data.transforms import eval_transform
from egovlp.errors import ConfigError, DataError
from egovlp.metrics import epic_mir_metrics
from egovlp.metrics.retrieval import MIRMetrics
from egovlp.models.vtm_rerank import rerank, stream_pair_scores, topk_candidates
from egovlp.tasks.registry import TaskSpec, register_task
from egovlp.tasks.shared import (
    check_vocab,
    encode_texts,
    encode_videos,
    first_items,
    merge_shards,
    mir_table,
    sharded_loader,
)
from egovlp.train.distributed import DistInfo, gather_objects

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EpicVTMData:
    annotation_dir: str = ""  # retrieval_annotations/: EPIC_100_retrieval_*.csv (+ relevancy/*.pkl)
    video_root: str = ""  # <root>/<participant_id>/<video_id>.MP4
    tokenizer: str = ""  # the model's tokenizer folder
    num_frames: int = at_least(1, 3)  # All-in-one: 3
    relevancy: str = one_of(("build", "pickle"), "build")  # build: from the CSV classes | pickle: relevancy/*.pkl


@dataclass(frozen=True)
class EpicVTMEval:
    split: str = "test"
    k: int = at_least(1, 10)  # candidates re-ranked with VTM per sentence and per clip
    batch_size: int = at_least(1, 16)  # clips per batch
    vtm_batch_size: int = at_least(1, 64)  # joint passes per forward
    text_max_length: int = at_least(2, 40)  # sentences truncated to this many tokens (All-in-one: 40 positions)
    num_workers: int = at_least(0, 4)
    bad_input: str = one_of(("raise", "skip"), "raise")
    max_clips: int = at_least(0, 0)  # evaluate only the first N clips (0 = all)


@dataclass(frozen=True)
class EpicVTMEvalConfig:
    data: EpicVTMData = field(default_factory=EpicVTMData)
    eval: EpicVTMEval = field(default_factory=EpicVTMEval)
    device: str = "auto"


class EpicVTMEvaluator:
    """Loads the split once; ``evaluator(model)`` gives mAP / nDCG and the VTM pair counts on rank 0."""

    def __init__(self, data: EpicVTMData, cfg: EpicVTMEval, tokenizer: Tokenizer, img_size: int, dist: DistInfo,
                 progress: bool = False) -> None:  # fmt: skip
        self.data, self.cfg, self.tokenizer, self.dist = data, cfg, tokenizer, dist
        self.progress = progress and dist.is_main
        relevancy = cast(Literal["build", "pickle"], data.relevancy)
        self.annotations = load_epic_mir(data.annotation_dir, cast(Any, cfg.split), relevancy=relevancy)
        clips = EpicMIRDataset(
            self.annotations, data.video_root, data.num_frames, eval_transform(img_size), bad_input=cfg.bad_input
        )
        self.loader = sharded_loader(first_items(clips, cfg.max_clips), cfg.batch_size, cfg.num_workers, dist,
                                     ClipCollate())  # fmt: skip

    @torch.no_grad()
    def __call__(self, model) -> dict[str, float]:
        device, texts = self.dist.device, self.annotations.texts
        with model.frames(self.data.num_frames):
            label = "EK-100 clips" if self.progress else ""
            videos = merge_shards(gather_objects(encode_videos(model, self.loader, device, (), label)))
            rows = videos["index"].astype(np.int64)  # dataset index of each clip row
            if not len(rows):
                raise DataError(f"EK-100 {self.cfg.split}: no clip could be read ({videos['skipped']} skipped)")
            sentences = encode_texts(model, self.tokenizer, texts, device, 256, self.cfg.text_max_length)
            cheap = torch.from_numpy(videos["video"] @ sentences.T)  # (C, S)
            k_v2t, k_t2v = min(self.cfg.k, cheap.shape[1]), min(self.cfg.k, cheap.shape[0])
            v2t = topk_candidates(cheap, k_v2t)  # (C, k) sentences of each clip
            t2v = topk_candidates(cheap.T, k_t2v)  # (S, k) clips of each sentence
            wanted = self._pairs_by_clip(rows, v2t, t2v)
            local = self._score(model, wanted, rows)
        shards = gather_objects(local)
        if not self.dist.is_main:
            return {}
        scores: dict[int, float] = {}
        for shard in shards:
            scores.update(shard)
        s = cheap.shape[1]
        v2t_scores = torch.tensor([[scores[r * s + j] for j in row] for r, row in enumerate(v2t.tolist())])
        t2v_scores = torch.tensor([[scores[r * s + j] for r in row] for j, row in enumerate(t2v.tolist())])
        by_clip = rerank(cheap, v2t, v2t_scores).numpy()  # video-to-text ranking
        by_text = rerank(cheap.T, t2v, t2v_scores).T.numpy()  # text-to-video ranking
        assert self.annotations.relevancy is not None
        relevancy = self.annotations.relevancy[rows]
        a, b = epic_mir_metrics(by_clip, relevancy), epic_mir_metrics(by_text, relevancy)
        result = MIRMetrics(a.map_v2t, b.map_t2v, a.ndcg_v2t, b.ndcg_t2v)
        return {
            **result.to_dict(),
            "clips": float(len(rows)),
            "sentences": float(s),
            "vtm_pairs": float(len(scores)),
            "full_pairs": float(len(rows) * s),
            "k": float(self.cfg.k),
            "skipped_clips": float(videos["skipped"]),
        }

    @staticmethod
    def _pairs_by_clip(rows: np.ndarray, v2t: torch.Tensor, t2v: torch.Tensor) -> dict[int, np.ndarray]:
        """``{dataset index of a clip: the sentences to score with it}``: its own candidates and the sentences that
        have it among theirs."""
        s = t2v.shape[0]
        codes = [(torch.arange(len(rows))[:, None] * s + v2t).flatten(), (t2v * s + torch.arange(s)[:, None]).flatten()]
        unique = torch.cat(codes).unique().numpy()
        row, sentence = unique // s, unique % s
        return {int(rows[r]): sentence[row == r] for r in np.unique(row)}

    def _score(self, model, wanted: dict[int, np.ndarray], rows: np.ndarray) -> dict[int, float]:
        """VTM scores ``{row * S + sentence: score}`` of the wanted pairs of this rank's clips (``rows``: the dataset
        index of each clip row)."""
        tokens = self.tokenizer(self.annotations.texts, max_length=self.cfg.text_max_length)
        device, s = self.dist.device, len(self.annotations.texts)
        ids, mask = tokens["input_ids"].to(device), tokens["attention_mask"].to(device)
        row_of = {int(index): r for r, index in enumerate(rows)}
        scores = stream_pair_scores(model.vtm_score, self.loader, wanted, ids, mask, self.cfg.vtm_batch_size)
        return {row_of[i] * s + j: value for (i, j), value in scores.items()}


def format_table(m: dict[str, Any]) -> str:
    title = (
        f"EK-100 multi-instance retrieval, VTM re-ranking of the top {int(m['k'])} (%), {int(m['clips'])} clips x "
        f"{int(m['sentences'])} sentences; {int(m['vtm_pairs'])} of {int(m['full_pairs'])} pairs scored"
    )
    return mir_table(title, m)


def _make_evaluator(cfg: EpicVTMEvalConfig, tokenizer: Tokenizer, model, dist: DistInfo, progress: bool = False):
    check_vocab(tokenizer, model.cfg)
    if not hasattr(model, "vtm_score"):
        raise ConfigError(f"epic_mir_vtm re-ranks with a VTM score; a {model.cfg.family} model has no vtm_score")
    return EpicVTMEvaluator(cfg.data, cfg.eval, tokenizer, model.cfg.video.img_size, dist, progress)


register_task(
    TaskSpec(
        name="epic_mir_vtm",
        description="EK-100 multi-instance retrieval by a joint model: cheap candidates re-ranked with VTM (top k)",
        eval_schema=EpicVTMEvalConfig,
        make_evaluator=_make_evaluator,
        format_table=format_table,
        required=("data.annotation_dir", "data.video_root", "data.tokenizer"),
    )
)
