"""EPIC-Kitchens-100 multi-instance retrieval: dual-encoder evaluation and fine-tuning on the shared training loop.

Evaluation (zero-shot or fine-tuned, as the release): every test clip is encoded at 16 frames, every sentence of the
gallery (the narration of the clip row it names) as text; the similarity is the cosine of the L2-normalised dual
features, ``(clips, sentences)``, and :func:`~egovlp.metrics.epic_mir_metrics` gives mAP and nDCG in both directions
(deterministic on ties). Under DDP, clips and sentences are sharded without padding, features are gathered with
their indices, and rank 0 computes the metrics.

Fine-tuning (release: ``configs/ft/epic.json``): each training clip is paired with a sentence drawn among those with
relevancy > 0.1 (see :mod:`egovlp.data.epic_mir_dataset`); the loss is the adaptive max-margin ranking loss (margin
0.2) on the all-gathered batch, each pair's margin scaled by its relevancy.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import torch

from egovlp.config import at_least, one_of
from egovlp.data.epic_mir import POSITIVE_THRESHOLD, load_epic_mir
from egovlp.data.epic_mir_dataset import ClipCollate, EpicMIRDataset
from egovlp.data.tokenizer import Tokenizer
from egovlp.data.transforms import eval_transform, train_transform
from egovlp.errors import DataError
from egovlp.losses import AdaptiveMaxMarginLoss
from egovlp.metrics import epic_mir_metrics
from egovlp.models.config import ModelConfig
from egovlp.models.factory import InitConfig
from egovlp.models.model import EgoVLPv2
from egovlp.models.registry import get_model_config
from egovlp.tasks.registry import TaskSpec, register_task
from egovlp.tasks.shared import (
    check_crop_scale,
    check_vocab,
    dual_evaluator,
    encode_texts,
    encode_videos,
    first_items,
    gather_shards,
    mir_table,
    sharded_loader,
)
from egovlp.train.datasets import CountingCollate, TrainingDataset
from egovlp.train.distributed import DistInfo
from egovlp.train.loop import TrainConfig
from egovlp.train.optim import OptimConfig
from egovlp.train.task import Task, TaskModule

log = logging.getLogger(__name__)

RELEVANCY_MODES = ("build", "pickle")


@dataclass(frozen=True)
class EpicMIRData:
    annotation_dir: str = ""  # retrieval_annotations/: EPIC_100_retrieval_*.csv (+ relevancy/*.pkl)
    video_root: str = ""  # <root>/<participant_id>/<video_id>.MP4
    tokenizer: str = ""  # roberta-base tokenizer directory
    num_frames: int = at_least(1, 16)  # release: 16 for fine-tuning and evaluation (the model runs at it)
    # build: from the CSV classes (training rows on the fly) | pickle: relevancy/*.pkl
    relevancy: str = one_of(RELEVANCY_MODES, "build")


@dataclass(frozen=True)
class EpicMIREval:
    split: str = "test"  # the release validates on the test split (there is no validation split)
    batch_size: int = at_least(1, 16)  # clips per batch
    text_batch_size: int = at_least(1, 256)  # sentences per batch (padded to the longest, as the release)
    num_workers: int = at_least(0, 4)
    bad_input: str = one_of(("raise", "skip"), "raise")  # skip: skipped clips are left out of the metrics, counted
    max_clips: int = at_least(0, 0)  # evaluate only the first N clips (0 = all; the relevancy rows follow)


@dataclass(frozen=True)
class EpicMIRTrainData:
    batch_size: int = at_least(1, 16)  # per rank (release: 16 x 8 GPUs)
    num_workers: int = at_least(0, 4)
    text_max_length: int = at_least(2, 30)  # release: padded to 30 tokens
    crop_scale: tuple[float, float] = (0.5, 1.0)
    hflip: bool = False  # the release's EK-100 training transform has no flip
    positive_threshold: float = POSITIVE_THRESHOLD
    bad_input: str = one_of(("raise", "skip"), "skip")  # skip: replace, count and log

    def check_config(self):
        yield from check_crop_scale(self.crop_scale)


@dataclass(frozen=True)
class MarginLossConfig:
    margin: float = at_least(0, 0.2)  # release configs/ft/epic.json
    gather_grad: str = one_of(("full", "local"), "full")  # full: exact full-batch gradient | local: the release's


@dataclass(frozen=True)
class EpicMIREvalConfig:
    """``egovlp evaluate epic_mir``: the model comes from ``--checkpoint``."""

    data: EpicMIRData = field(default_factory=EpicMIRData)
    eval: EpicMIREval = field(default_factory=EpicMIREval)
    device: str = "auto"


@dataclass(frozen=True)
class EpicMIRConfig:
    """``egovlp finetune epic_mir`` (release: lr 2e-4, batch 16 x 8 GPUs, 100 epochs, cosine with 10 % warm-up)."""

    model: ModelConfig = field(default_factory=lambda: get_model_config("egovlpv2-base-smallproj"))
    init: InitConfig = field(default_factory=InitConfig)
    data: EpicMIRData = field(default_factory=EpicMIRData)
    train_data: EpicMIRTrainData = field(default_factory=EpicMIRTrainData)
    eval: EpicMIREval = field(default_factory=EpicMIREval)
    loss: MarginLossConfig = field(default_factory=MarginLossConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=2e-4, new_param_lr_mult=1.0))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(output_dir="runs/epic_mir", epochs=100))


# ------------------------------------------------------------------------------------------------- evaluation
class EpicMIREvaluator:
    """Loads an EK-100 split once; ``evaluator(model)`` gives its metrics on rank 0 (``{}`` on other ranks)."""

    def __init__(
        self,
        data: EpicMIRData,
        cfg: EpicMIREval,
        tokenizer: Tokenizer,
        img_size: int,
        dist: DistInfo,
        progress: bool = False,
    ) -> None:
        self.data, self.cfg, self.tokenizer, self.dist = data, cfg, tokenizer, dist
        self.progress = "EK-100 clips" if progress and dist.is_main else ""
        self.annotations = load_epic_mir(data.annotation_dir, cast(Any, cfg.split), relevancy=cast(Any, data.relevancy))
        clips = EpicMIRDataset(
            self.annotations, data.video_root, data.num_frames, eval_transform(img_size), bad_input=cfg.bad_input
        )
        dataset = first_items(clips, cfg.max_clips)
        self.loader = sharded_loader(dataset, cfg.batch_size, cfg.num_workers, dist, ClipCollate())

    def _sentence_features(self, model) -> dict[str, Any] | None:
        """Sentences sharded over the ranks like the clips, gathered on rank 0: ``index (S,)``, ``text (S, E)``."""
        texts, rank, world = self.annotations.texts, self.dist.rank, self.dist.world_size
        index = np.arange(rank, len(texts), world)
        batch = self.cfg.text_batch_size
        features = encode_texts(model, self.tokenizer, [texts[i] for i in index], self.dist.device, batch)
        return gather_shards({"index": index, "text": features}, self.dist)

    @torch.no_grad()
    def __call__(self, model) -> dict[str, float]:
        with model.frames(self.data.num_frames):
            videos = gather_shards(encode_videos(model, self.loader, self.dist.device, (), self.progress), self.dist)
        sentences = self._sentence_features(model)
        if videos is None or sentences is None:  # not rank 0
            return {}
        return self.metrics(videos, sentences["text"])

    def metrics(self, videos: dict[str, Any], sentences: np.ndarray) -> dict[str, float]:
        """mAP / nDCG (percent) of the gathered clip features against the sentence features, plus counts."""
        rows = videos["index"].astype(np.int64)
        if not len(rows):
            raise DataError(f"EK-100 {self.cfg.split}: no clip could be read ({videos['skipped']} skipped)")
        similarity = videos["video"] @ sentences.T  # (clips, sentences) cosine
        assert self.annotations.relevancy is not None  # loaded for evaluation splits
        result = epic_mir_metrics(similarity, self.annotations.relevancy[rows])
        skipped_map = result.map_v2t_skipped + result.map_t2v_skipped
        skipped_ndcg = result.ndcg_v2t_skipped + result.ndcg_t2v_skipped
        if skipped_map or skipped_ndcg:
            log.info("EK-100: queries without relevant items left out: %d (mAP), %d (nDCG)", skipped_map, skipped_ndcg)
        return {
            **result.to_dict(),
            "clips": float(len(rows)),
            "sentences": float(len(sentences)),
            "skipped_clips": float(videos["skipped"]),
            "map_queries_skipped": float(skipped_map),
            "ndcg_queries_skipped": float(skipped_ndcg),
        }


# --------------------------------------------------------------------------------------------------- training
class EpicMIRModule(TaskModule):
    model: EgoVLPv2

    """``forward(batch)`` -> ``{"loss"}``: adaptive max-margin loss of the dual features over the gathered batch."""

    def __init__(self, model, cfg: MarginLossConfig) -> None:
        super().__init__(model)
        self.loss = AdaptiveMaxMarginLoss(cfg.margin, cfg.gather_grad)
        # the fusion layers and heads take no part in the dual pass: DDP must not wait for their gradients
        self.has_unused_parameters = model.cfg.has_fusion

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        video = self.model.encode_video(batch["video"])  # (B, E); the loss normalises
        text = self.model.encode_text(batch["input_ids"], batch["attention_mask"])  # (B, E)
        return {"loss": self.loss(text, video, batch["relevancy"])}


class EpicMIRTask(Task):
    """EK-100 MIR fine-tuning with evaluation on ``eval.split``."""

    name = "epic_mir"

    def __init__(self, cfg: EpicMIRConfig, tokenizer: Tokenizer, dist: DistInfo) -> None:
        check_vocab(tokenizer, cfg.model)
        self.cfg, self.tokenizer, self.dist, self.seed = cfg, tokenizer, dist, cfg.train.seed
        self.batch_size, self.num_workers = cfg.train_data.batch_size, cfg.train_data.num_workers
        self._evaluator: EpicMIREvaluator | None = None

    def train_dataset(self) -> TrainingDataset:
        d, t = self.cfg.data, self.cfg.train_data
        # "build": relevancy rows are computed per clip from the classes (the train matrix is too big to hold)
        relevancy = "pickle" if d.relevancy == "pickle" else "none"
        annotations = load_epic_mir(d.annotation_dir, "train", relevancy=cast(Any, relevancy))
        transform = train_transform(self.cfg.model.video.img_size, (t.crop_scale[0], t.crop_scale[1]), t.hflip)
        dataset = EpicMIRDataset(
            annotations, d.video_root, d.num_frames, transform, True, t.bad_input, t.positive_threshold
        )
        return TrainingDataset(dataset, self.seed)

    def collate_fn(self):
        return CountingCollate(ClipCollate(self.tokenizer, self.cfg.train_data.text_max_length, "max_length"))

    def build_module(self, model) -> EpicMIRModule:
        return EpicMIRModule(model, self.cfg.loss)

    def evaluate(self, model, dist: DistInfo) -> dict[str, float]:
        if self._evaluator is None:
            self._evaluator = EpicMIREvaluator(
                self.cfg.data,
                self.cfg.eval,
                self.tokenizer,
                self.cfg.model.video.img_size,
                dist,
                self.cfg.train.progress,
            )
        return self._evaluator(model)


def format_table(m: dict[str, Any]) -> str:
    """The mAP / nDCG table (percent) of ``egovlp evaluate epic_mir``."""
    return mir_table(
        f"EK-100 multi-instance retrieval (%), {int(m['clips'])} clips x {int(m['sentences'])} sentences", m
    )


_PATHS = ("data.annotation_dir", "data.video_root", "data.tokenizer")
register_task(
    TaskSpec(
        name="epic_mir",
        description="EPIC-Kitchens-100 multi-instance retrieval: mAP and nDCG, video-to-text and text-to-video",
        eval_schema=EpicMIREvalConfig,
        make_evaluator=dual_evaluator(EpicMIREvaluator),
        format_table=format_table,
        required=_PATHS,
        finetune_schema=EpicMIRConfig,
        make_task=EpicMIRTask,
        finetune_required=_PATHS,
    )
)
