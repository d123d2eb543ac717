"""EPIC-Kitchens-100 multi-instance retrieval: dual-encoder evaluation and fine-tuning on the shared training loop.

Evaluation (zero-shot or fine-tuned, as the release): every test clip is encoded at 16 frames, every sentence of the
gallery (the narration of the clip row it names) as text; the similarity is the cosine of the L2-normalised dual
features, ``(clips, sentences)``, and :func:`~egovlp.metrics.epic_mir_metrics` gives mAP and nDCG in both directions
(deterministic on ties). Under DDP, clips and sentences are sharded without padding, features are gathered with
their indices, and rank 0 computes the metrics.

Fine-tuning (release: ``configs/ft/epic.json``): each training clip is paired with a sentence drawn among those with
relevancy > 0.1 (see :mod:`egovlp.data.epic_mir_dataset`); the loss is the adaptive max-margin ranking loss (margin
0.2) on the all-gathered batch, each pair's margin scaled by its relevancy.

The video / text encoding and gathering helpers here are shared with :mod:`egovlp.tasks.charades`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from egovlp.data.epic_mir import POSITIVE_THRESHOLD, load_epic_mir
from egovlp.data.epic_mir_dataset import ClipCollate, EpicMIRDataset
from egovlp.data.tokenizer import Tokenizer
from egovlp.data.transforms import eval_transform, train_transform
from egovlp.errors import ConfigError, DataError
from egovlp.losses import AdaptiveMaxMarginLoss
from egovlp.metrics import epic_mir_metrics
from egovlp.models.config import ModelConfig
from egovlp.models.registry import get_model_config
from egovlp.tasks.base import Task, TaskModule
from egovlp.tasks.frames import frames_for_eval
from egovlp.tasks.pretrain import InitConfig
from egovlp.train.datasets import CountingCollate, TrainingDataset
from egovlp.train.distributed import DistInfo, gather_objects
from egovlp.train.loop import TrainConfig
from egovlp.train.optim import OptimConfig
from egovlp.train.sampler import ShardedEvalSampler

log = logging.getLogger(__name__)

RELEVANCY_MODES = ("build", "pickle")


@dataclass(frozen=True)
class EpicMIRData:
    annotation_dir: str = ""  # retrieval_annotations/: EPIC_100_retrieval_*.csv (+ relevancy/*.pkl)
    video_root: str = ""  # <root>/<participant_id>/<video_id>.MP4
    tokenizer: str = ""  # roberta-base tokenizer directory
    num_frames: int = 16  # release: 16 for fine-tuning and evaluation (the temporal embedding is resized)
    relevancy: str = "build"  # build: from the CSV classes (training rows on the fly) | pickle: relevancy/*.pkl


@dataclass(frozen=True)
class EpicMIREval:
    split: str = "test"  # the release validates on the test split (there is no validation split)
    batch_size: int = 16  # clips per batch
    text_batch_size: int = 256  # sentences per batch (padded to the longest, as the release)
    num_workers: int = 4
    bad_input: str = "raise"  # raise | skip (skipped clips are left out of the metrics and counted)
    max_clips: int = 0  # evaluate only the first N clips (0 = all; the relevancy rows follow)


@dataclass(frozen=True)
class EpicMIRTrainData:
    batch_size: int = 16  # per rank (release: 16 x 8 GPUs)
    num_workers: int = 4
    text_max_length: int = 30  # release: padded to 30 tokens
    crop_scale: tuple[float, float] = (0.5, 1.0)
    hflip: bool = False  # the release's EK-100 training transform has no flip
    positive_threshold: float = POSITIVE_THRESHOLD
    bad_input: str = "skip"  # skip (replace, count and log) | raise


@dataclass(frozen=True)
class MarginLossConfig:
    margin: float = 0.2  # release configs/ft/epic.json
    gather_grad: str = "full"  # full: exact full-batch gradient | local: the release's (gradient / world size)


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


def check_vocab(tokenizer: Tokenizer, model_cfg: ModelConfig) -> None:
    """Raise ConfigError when the tokenizer has ids the model's text embedding cannot hold."""
    if tokenizer.vocab_size > model_cfg.text.vocab_size:
        raise ConfigError(
            f"the tokenizer {tokenizer.source} has {tokenizer.vocab_size} tokens but the model's text vocabulary "
            f"has {model_cfg.text.vocab_size}"
        )


# ------------------------------------------------------------------------------ encoding (shared with charades)
def sharded_loader(dataset: Dataset, batch_size: int, num_workers: int, dist: DistInfo, collate) -> DataLoader:
    """This rank's share of ``dataset`` (every item exactly once over the ranks, no padding)."""
    sampler = ShardedEvalSampler(len(dataset), dist.rank, dist.world_size)
    return DataLoader(dataset, batch_size, sampler=sampler, num_workers=num_workers, collate_fn=collate)


@torch.no_grad()
def encode_videos(model, loader: DataLoader, device: torch.device, keep: tuple[str, ...] = ()) -> dict[str, Any]:
    """This rank's dual video features: ``index (n,)``, ``video (n, E)`` float32 L2-normalised, the batch fields
    named in ``keep`` (e.g. ``label``) as arrays, and ``skipped`` (unreadable items dropped)."""
    parts: dict[str, list] = {key: [] for key in ("index", "video", *keep)}
    skipped = 0
    for batch in loader:
        skipped += int(batch["num_skipped"])
        if "video" not in batch:
            continue
        parts["video"].append(model.encode_video(batch["video"].to(device), normalize=True).float().cpu().numpy())
        for key in ("index", *keep):
            parts[key].append(batch[key].numpy())
    out: dict[str, Any] = {k: np.concatenate(v) if v else np.zeros((0,)) for k, v in parts.items()}
    out["skipped"] = skipped
    return out


@torch.no_grad()
def encode_texts(
    model, tokenizer: Tokenizer, texts: list[str], device: torch.device, batch_size: int = 256, max_length=None
) -> np.ndarray:
    """Dual text features of ``texts``, ``(N, E)`` float32 L2-normalised (padded to the longest of each batch)."""
    parts = []
    for start in range(0, len(texts), batch_size):
        tokens = tokenizer(texts[start : start + batch_size], max_length=max_length)
        ids, mask = tokens["input_ids"].to(device), tokens["attention_mask"].to(device)
        parts.append(model.encode_text(ids, mask, normalize=True).float().cpu().numpy())
    return np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)


def merge_shards(shards: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-rank results of :func:`encode_videos` (or any dict with ``index``) -> one dict ordered by index."""
    keys = [k for k in shards[0] if k != "skipped"]
    nonempty = [s for s in shards if len(s["index"])] or shards[:1]
    merged = {k: np.concatenate([s[k] for s in nonempty]) for k in keys}
    order = np.argsort(merged["index"], kind="stable")
    merged = {k: v[order] for k, v in merged.items()}
    merged["skipped"] = sum(int(s.get("skipped", 0)) for s in shards)
    return merged


def gather_shards(local: dict[str, Any], dist: DistInfo) -> dict[str, Any] | None:
    """Gather every rank's ``local`` result and merge them on rank 0 (other ranks get None)."""
    shards = gather_objects(local)
    return merge_shards(shards) if dist.is_main else None


# ------------------------------------------------------------------------------------------------- evaluation
class EpicMIREvaluator:
    """Loads an EK-100 split once; ``evaluator(model)`` gives its metrics on rank 0 (``{}`` on other ranks)."""

    def __init__(self, data: EpicMIRData, cfg: EpicMIREval, tokenizer: Tokenizer, img_size: int, dist: DistInfo):
        if data.relevancy not in RELEVANCY_MODES:
            raise ConfigError(f"data.relevancy must be one of {RELEVANCY_MODES}, got {data.relevancy!r}")
        self.data, self.cfg, self.tokenizer, self.dist = data, cfg, tokenizer, dist
        self.annotations = load_epic_mir(data.annotation_dir, cfg.split, relevancy=data.relevancy)
        dataset: Dataset = EpicMIRDataset(
            self.annotations, data.video_root, data.num_frames, eval_transform(img_size), bad_input=cfg.bad_input
        )
        if cfg.max_clips:
            dataset = torch.utils.data.Subset(dataset, range(min(cfg.max_clips, len(dataset))))
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
        with frames_for_eval(model, self.data.num_frames):
            videos = gather_shards(encode_videos(model, self.loader, self.dist.device), self.dist)
        sentences = self._sentence_features(model)
        if not self.dist.is_main:
            return {}
        return self.metrics(videos, sentences["text"])

    def metrics(self, videos: dict[str, Any], sentences: np.ndarray) -> dict[str, float]:
        """mAP / nDCG (percent) of the gathered clip features against the sentence features, plus counts."""
        rows = videos["index"].astype(np.int64)
        if not len(rows):
            raise DataError(f"EK-100 {self.cfg.split}: no clip could be read ({videos['skipped']} skipped)")
        similarity = videos["video"] @ sentences.T  # (clips, sentences) cosine
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

    def __init__(self, cfg: EpicMIRConfig, tokenizer: Tokenizer, seed: int = 0) -> None:
        check_vocab(tokenizer, cfg.model)
        if cfg.data.relevancy not in RELEVANCY_MODES:
            raise ConfigError(f"data.relevancy must be one of {RELEVANCY_MODES}, got {cfg.data.relevancy!r}")
        self.cfg, self.tokenizer, self.seed = cfg, tokenizer, seed
        self.batch_size, self.num_workers = cfg.train_data.batch_size, cfg.train_data.num_workers
        self._evaluator: EpicMIREvaluator | None = None

    def train_dataset(self) -> TrainingDataset:
        d, t = self.cfg.data, self.cfg.train_data
        # "build": relevancy rows are computed per clip from the classes (the train matrix is too big to hold)
        relevancy = "pickle" if d.relevancy == "pickle" else "none"
        annotations = load_epic_mir(d.annotation_dir, "train", relevancy=relevancy)
        transform = train_transform(self.cfg.model.video.img_size, tuple(t.crop_scale), t.hflip)
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
                self.cfg.data, self.cfg.eval, self.tokenizer, model.cfg.video.img_size, dist
            )
        return self._evaluator(model)
