"""Charades-Ego action recognition with the dual encoder: zero-shot / fine-tuned evaluation and fine-tuning.

Evaluation (as the release): each test video is encoded whole at 32 frames, each class name (the text after
``cNNN`` in ``Charades_v1_classes.txt``) as a text prompt; the score of class c for a video is the cosine of their
dual features, and :func:`~egovlp.metrics.charades_map` gives the mAP over classes (videos without labels ranked
last; classes without any positive video skipped and reported, where the official code returns NaN). Under DDP
videos are sharded without padding, features gathered with their indices, rank 0 computes the metric.

Fine-tuning (release: ``configs/ft/charades.json``, ``metadata_train.csv``): every labelled action segment is a
(video clip, class name) pair, 32 frames drawn at random in its segments, RandomResizedCrop + flip; the loss is the
symmetric InfoNCE (temperature 0.05) of the all-gathered batch (``NormSoftmaxLoss``: the EgoNCE loss with
``positives="none"``), with the class-name texts padded to 15 tokens; other segments of the same class in the batch
are negatives there, ``loss.same_class_positives=true`` makes them positives instead. Validation is the mAP above.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F

from egovlp.config import at_least, greater_than, one_of
from egovlp.data.charades import load_charades_ego
from egovlp.data.charades_dataset import CharadesActionDataset, CharadesVideoDataset
from egovlp.data.epic_mir_dataset import ClipCollate
from egovlp.data.tokenizer import Tokenizer
from egovlp.data.transforms import eval_transform, train_transform
from egovlp.errors import DataError
from egovlp.losses import EgoNCELoss
from egovlp.metrics import charades_map
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
    sharded_loader,
    table_row,
)
from egovlp.train.datasets import CountingCollate, TrainingDataset
from egovlp.train.distributed import DistInfo
from egovlp.train.loop import TrainConfig
from egovlp.train.optim import OptimConfig
from egovlp.train.task import Task, TaskModule

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CharadesData:
    annotation_dir: str = ""  # CharadesEgo_v1_{train,test}_only1st.csv (and Charades_v1_classes.txt)
    video_root: str = ""  # <root>/<id>.mp4
    classes_file: str = ""  # default: <annotation_dir>/Charades_v1_classes.txt
    tokenizer: str = ""  # roberta-base tokenizer directory
    num_frames: int = at_least(1, 32)  # release: 32 for fine-tuning and evaluation (the model runs at it)


@dataclass(frozen=True)
class CharadesEval:
    split: str = "test"  # the release validates on the test split
    batch_size: int = at_least(1, 8)  # videos per batch
    num_workers: int = at_least(0, 4)
    bad_input: str = one_of(("raise", "skip"), "raise")  # skip: skipped videos are left out of the mAP, counted
    max_videos: int = at_least(0, 0)  # evaluate only the first N videos (0 = all)
    prompt_max_length: int = at_least(2, 30)  # release: class names truncated at 30 tokens


@dataclass(frozen=True)
class CharadesTrainData:
    batch_size: int = at_least(1, 16)  # action segments per rank (release: 16 x 8 GPUs)
    num_workers: int = at_least(0, 4)
    text_max_length: int = at_least(2, 15)  # release: class names padded to 15 tokens in training
    crop_scale: tuple[float, float] = (0.5, 1.0)
    hflip: bool = True
    bad_input: str = one_of(("raise", "skip"), "skip")

    def check_config(self):
        yield from check_crop_scale(self.crop_scale)


@dataclass(frozen=True)
class ContrastiveLossConfig:
    temperature: float = greater_than(0, 0.05)  # release NormSoftmaxLoss
    gather_grad: str = one_of(("full", "local"), "full")  # full: exact full-batch gradient | local: the release's
    # release: False (other segments of the same class in the batch are negatives); True: they are positives
    # (EgoNCE's multi-positive form over class labels), which matters when the batch is large against the classes
    same_class_positives: bool = False


@dataclass(frozen=True)
class CharadesEvalConfig:
    """``egovlp evaluate charades``: the model comes from ``--checkpoint``."""

    data: CharadesData = field(default_factory=CharadesData)
    eval: CharadesEval = field(default_factory=CharadesEval)
    device: str = "auto"


@dataclass(frozen=True)
class CharadesConfig:
    """``egovlp finetune charades`` (release: lr 1.5e-5, batch 16 x 8 GPUs, 20 epochs, cosine with 10 % warm-up)."""

    model: ModelConfig = field(default_factory=lambda: get_model_config("egovlpv2-base-smallproj"))
    init: InitConfig = field(default_factory=InitConfig)
    data: CharadesData = field(default_factory=CharadesData)
    train_data: CharadesTrainData = field(default_factory=CharadesTrainData)
    eval: CharadesEval = field(default_factory=CharadesEval)
    loss: ContrastiveLossConfig = field(default_factory=ContrastiveLossConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1.5e-5, new_param_lr_mult=1.0))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(output_dir="runs/charades", epochs=20))


def _load(data: CharadesData, split: str):
    return load_charades_ego(data.annotation_dir, cast(Any, split), data.classes_file or None)


class CharadesEvaluator:
    """Loads a Charades-Ego split once; ``evaluator(model)`` gives its metrics on rank 0 (``{}`` on other ranks)."""

    def __init__(
        self,
        data: CharadesData,
        cfg: CharadesEval,
        tokenizer: Tokenizer,
        img_size: int,
        dist: DistInfo,
        progress: bool = False,
    ) -> None:
        self.data, self.cfg, self.tokenizer, self.dist = data, cfg, tokenizer, dist
        self.progress = "Charades-Ego videos" if progress and dist.is_main else ""
        self.annotations = _load(data, cfg.split)
        videos = CharadesVideoDataset(
            self.annotations, data.video_root, data.num_frames, eval_transform(img_size), cfg.bad_input
        )
        dataset = first_items(videos, cfg.max_videos)
        self.loader = sharded_loader(dataset, cfg.batch_size, cfg.num_workers, dist, ClipCollate())

    @torch.no_grad()
    def __call__(self, model) -> dict[str, Any]:
        with model.frames(self.data.num_frames):
            local = encode_videos(model, self.loader, self.dist.device, ("label",), self.progress)
            videos = gather_shards(local, self.dist)
        if videos is None:  # not rank 0
            return {}
        prompts = encode_texts(
            model, self.tokenizer, self.annotations.prompts, self.dist.device, max_length=self.cfg.prompt_max_length
        )
        return self.metrics(videos, prompts)

    def metrics(self, videos: dict[str, Any], prompts: np.ndarray) -> dict[str, Any]:
        """mAP (percent) of the gathered video features scored against the class prompts, plus what was skipped."""
        if not len(videos["index"]):
            raise DataError(f"Charades-Ego {self.cfg.split}: no video could be read ({videos['skipped']} skipped)")
        scores = videos["video"] @ prompts.T  # (videos, classes) cosine
        result = charades_map(scores, videos["label"].reshape(len(scores), len(prompts)))
        if result.skipped_classes:
            log.info("Charades-Ego mAP: %d classes without positives skipped", result.num_classes_skipped)
        return {
            "mAP": 100.0 * result.map,
            "videos": float(len(scores)),
            "classes_evaluated": float(result.num_classes_evaluated),
            "classes_skipped": float(result.num_classes_skipped),
            "videos_without_labels": float(result.num_videos_without_labels),
            "skipped_videos": float(videos["skipped"]),
            "skipped_class_ids": list(result.skipped_classes),
        }


class CharadesModule(TaskModule):
    model: EgoVLPv2

    """``forward(batch)`` -> ``{"loss"}``: symmetric InfoNCE of (clip, class name) pairs over the gathered batch
    (with ``same_class_positives``, every pair of the same class ``batch["target"]`` counts as a positive)."""

    def __init__(self, model, cfg: ContrastiveLossConfig, num_classes: int) -> None:
        super().__init__(model)
        self.same_class, self.num_classes = cfg.same_class_positives, num_classes
        self.loss = EgoNCELoss(cfg.temperature, "verb" if self.same_class else "none", cfg.gather_grad)
        self.has_unused_parameters = model.cfg.has_fusion  # fusion layers and heads are idle in the dual pass

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        video = self.model.encode_video(batch["video"])  # (B, E)
        text = self.model.encode_text(batch["input_ids"], batch["attention_mask"])  # (B, E)
        # class one-hots as EgoNCE "verb" tags: positives = pairs that share the class
        classes = F.one_hot(batch["target"], self.num_classes) if self.same_class else None
        return {"loss": self.loss(text, video, classes).loss}


class CharadesTask(Task):
    """Charades-Ego fine-tuning on action segments with mAP validation on ``eval.split``."""

    name = "charades"

    def __init__(self, cfg: CharadesConfig, tokenizer: Tokenizer, dist: DistInfo) -> None:
        check_vocab(tokenizer, cfg.model)
        self.cfg, self.tokenizer, self.dist, self.seed = cfg, tokenizer, dist, cfg.train.seed
        self.batch_size, self.num_workers = cfg.train_data.batch_size, cfg.train_data.num_workers
        self._evaluator: CharadesEvaluator | None = None

    @functools.cached_property
    def train_annotations(self):
        return _load(self.cfg.data, "train")

    def train_dataset(self) -> TrainingDataset:
        d, t = self.cfg.data, self.cfg.train_data
        transform = train_transform(self.cfg.model.video.img_size, (t.crop_scale[0], t.crop_scale[1]), t.hflip)
        dataset = CharadesActionDataset(self.train_annotations, d.video_root, d.num_frames, transform, t.bad_input)
        return TrainingDataset(dataset, self.seed)

    def collate_fn(self):
        return CountingCollate(ClipCollate(self.tokenizer, self.cfg.train_data.text_max_length, "max_length"))

    def build_module(self, model) -> CharadesModule:
        return CharadesModule(model, self.cfg.loss, len(self.train_annotations.class_names))

    def evaluate(self, model, dist: DistInfo) -> dict[str, Any]:
        if self._evaluator is None:
            self._evaluator = CharadesEvaluator(
                self.cfg.data,
                self.cfg.eval,
                self.tokenizer,
                self.cfg.model.video.img_size,
                dist,
                self.cfg.train.progress,
            )
        return self._evaluator(model)


def format_table(m: dict[str, Any]) -> str:
    """The mAP table (percent) of ``egovlp evaluate charades``."""
    lines = [
        f"Charades-Ego (%), {int(m['videos'])} videos",
        table_row("mAP", [m["mAP"]]),
        f"classes evaluated {int(m['classes_evaluated'])}, skipped (no positive video) {int(m['classes_skipped'])}",
    ]
    if m.get("skipped_videos"):
        lines.append(f"skipped videos: {int(m['skipped_videos'])}")
    return "\n".join(lines)


_PATHS = ("data.annotation_dir", "data.video_root", "data.tokenizer")
register_task(
    TaskSpec(
        name="charades",
        description="Charades-Ego action recognition: zero-shot with class names as text, or fine-tuned; mAP",
        eval_schema=CharadesEvalConfig,
        make_evaluator=dual_evaluator(CharadesEvaluator),
        format_table=format_table,
        required=_PATHS,
        finetune_schema=CharadesConfig,
        make_task=CharadesTask,
        finetune_required=_PATHS,
    )
)
