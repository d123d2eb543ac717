"""``egovlp evaluate charades_vtm``: Charades-Ego mAP of a joint model by two-stage VTM re-ranking.

The Charades-Ego mAP ranks, for every class, the videos by their score against the class name. Two passes over the
videos (:mod:`egovlp.models.vtm_rerank` for the ranking rule): (1) cheap scores, the cosine of ``encode_video`` and
``encode_text`` of the class names (the projections if the model has them); (2) each class's top ``eval.k`` videos
re-scored with the joint pass (``model.vtm_score``), streamed video batch by video batch; the other videos follow in
their cheap order. ``eval.k`` at least the number of videos gives the full VTM ranking (``videos x classes`` passes).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import torch

from egovlp.config import at_least, one_of
from egovlp.data.charades import load_charades_ego
from egovlp.data.charades_dataset import CharadesVideoDataset
from egovlp.data.epic_mir_dataset import ClipCollate
from egovlp.data.tokenizer import Tokenizer
from egovlp.data.transforms import eval_transform
from egovlp.errors import ConfigError, DataError
from egovlp.metrics import charades_map
from egovlp.models.vtm_rerank import rerank, stream_pair_scores, topk_candidates
from egovlp.tasks.registry import TaskSpec, register_task
from egovlp.tasks.shared import check_vocab, encode_texts, encode_videos, first_items, merge_shards, sharded_loader
from egovlp.train.distributed import DistInfo, gather_objects

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CharadesVTMData:
    annotation_dir: str = ""  # CharadesEgo_v1_{train,test}_only1st.csv (and Charades_v1_classes.txt)
    video_root: str = ""  # <root>/<id>.mp4
    classes_file: str = ""  # default: <annotation_dir>/Charades_v1_classes.txt
    tokenizer: str = ""  # the model's tokenizer folder
    num_frames: int = at_least(1, 3)  # All-in-one: 3


@dataclass(frozen=True)
class CharadesVTMEval:
    split: str = "test"
    k: int = at_least(1, 10)  # videos re-ranked with VTM per class
    batch_size: int = at_least(1, 8)  # videos per batch
    vtm_batch_size: int = at_least(1, 64)  # joint passes per forward
    prompt_max_length: int = at_least(2, 30)  # class names truncated to this many tokens
    num_workers: int = at_least(0, 4)
    bad_input: str = one_of(("raise", "skip"), "raise")
    max_videos: int = at_least(0, 0)  # evaluate only the first N videos (0 = all)


@dataclass(frozen=True)
class CharadesVTMEvalConfig:
    data: CharadesVTMData = field(default_factory=CharadesVTMData)
    eval: CharadesVTMEval = field(default_factory=CharadesVTMEval)
    device: str = "auto"


class CharadesVTMEvaluator:
    """Loads the split once; ``evaluator(model)`` gives the mAP and the VTM pair counts on rank 0."""

    def __init__(self, data: CharadesVTMData, cfg: CharadesVTMEval, tokenizer: Tokenizer, img_size: int,
                 dist: DistInfo, progress: bool = False) -> None:  # fmt: skip
        self.data, self.cfg, self.tokenizer, self.dist = data, cfg, tokenizer, dist
        self.progress = "Charades-Ego videos" if progress and dist.is_main else ""
        self.annotations = load_charades_ego(data.annotation_dir, cast(Any, cfg.split), data.classes_file or None)
        videos = CharadesVideoDataset(
            self.annotations, data.video_root, data.num_frames, eval_transform(img_size), cfg.bad_input
        )
        self.loader = sharded_loader(first_items(videos, cfg.max_videos), cfg.batch_size, cfg.num_workers, dist,
                                     ClipCollate())  # fmt: skip

    @torch.no_grad()
    def __call__(self, model) -> dict[str, Any]:
        device, prompts = self.dist.device, self.annotations.prompts
        with model.frames(self.data.num_frames):
            local = encode_videos(model, self.loader, device, ("label",), self.progress)
            videos = merge_shards(gather_objects(local))
            rows = videos["index"].astype(np.int64)
            if not len(rows):
                raise DataError(f"Charades-Ego {self.cfg.split}: no video could be read ({videos['skipped']} skipped)")
            classes = encode_texts(model, self.tokenizer, prompts, device, 256, self.cfg.prompt_max_length)
            cheap = torch.from_numpy(classes @ videos["video"].T)  # (C, V)
            candidates = topk_candidates(cheap, min(self.cfg.k, len(rows)))  # (C, k) video rows of each class
            c = cheap.shape[0]
            pairs = (candidates * c + torch.arange(c)[:, None]).flatten().unique().numpy()  # row * C + class
            wanted = {int(rows[r]): pairs[pairs // c == r] % c for r in np.unique(pairs // c)}
            tokens = self.tokenizer(prompts, max_length=self.cfg.prompt_max_length)
            ids, mask = tokens["input_ids"].to(device), tokens["attention_mask"].to(device)
            scores = stream_pair_scores(model.vtm_score, self.loader, wanted, ids, mask, self.cfg.vtm_batch_size)
        shards = gather_objects(scores)
        if not self.dist.is_main:
            return {}
        merged: dict[tuple[int, int], float] = {}
        for shard in shards:
            merged.update(shard)
        vtm = torch.tensor([[merged[(int(rows[r]), j)] for r in row] for j, row in enumerate(candidates.tolist())])
        ranked = rerank(cheap, candidates, vtm).T.numpy()  # (V, C)
        result = charades_map(ranked, videos["label"].reshape(len(rows), c))
        return {
            "mAP": 100.0 * result.map,
            "videos": float(len(rows)),
            "classes_evaluated": float(result.num_classes_evaluated),
            "vtm_pairs": float(len(merged)),
            "full_pairs": float(len(rows) * c),
            "k": float(self.cfg.k),
            "skipped_videos": float(videos["skipped"]),
        }


def format_table(m: dict[str, Any]) -> str:
    lines = [
        f"Charades-Ego mAP, VTM re-ranking of the top {int(m['k'])} videos per class (%): {m['mAP']:.2f}",
        f"{int(m['videos'])} videos, {int(m['classes_evaluated'])} classes evaluated; "
        f"{int(m['vtm_pairs'])} of {int(m['full_pairs'])} pairs scored",
    ]
    if m.get("skipped_videos"):
        lines.append(f"skipped videos: {int(m['skipped_videos'])}")
    return "\n".join(lines)


def _make_evaluator(cfg: CharadesVTMEvalConfig, tokenizer: Tokenizer, model, dist: DistInfo, progress=False):
    check_vocab(tokenizer, model.cfg)
    if not hasattr(model, "vtm_score"):
        raise ConfigError(f"charades_vtm re-ranks with a VTM score; a {model.cfg.family} model has no vtm_score")
    return CharadesVTMEvaluator(cfg.data, cfg.eval, tokenizer, model.cfg.video.img_size, dist, progress)


register_task(
    TaskSpec(
        name="charades_vtm",
        description="Charades-Ego mAP by a joint model: each class's cheap top-k videos re-ranked with VTM",
        eval_schema=CharadesVTMEvalConfig,
        make_evaluator=_make_evaluator,
        format_table=format_table,
        required=("data.annotation_dir", "data.video_root", "data.tokenizer"),
    )
)
