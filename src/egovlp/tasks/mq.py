"""Ego4D moment queries (MQ): a temporal detector over frozen dual video features (downstream.md §3).

Features: the dual video encoder's projected CLS of 16-frame windows at 1.875 per second (the release's), from a
feature folder of ``egovlp extract`` (``data.feature_dir``), or extracted here once with the run's model into
``data.feature_cache`` (:mod:`egovlp.episodic.mq_features`; the backbone stays frozen, so fine-tuning and evaluating
the result share the folder). Head: :class:`~egovlp.episodic.detector.TemporalDetector` (ActionFormer-style), trained
on the shared loop with the focal + DIoU loss (:mod:`egovlp.episodic.loss`); inference: top-k, decoding and per-class
Soft-NMS (:mod:`egovlp.episodic.inference`). Metrics: the official detection mAP at tIoU 0.1..0.5 and their average,
and Recall@{1..5}x at tIoU {0.3, 0.5, 0.7} (:func:`egovlp.metrics.detection.mq_metrics`); ground truth of clips
without features counts as missed. Every evaluation writes the challenge submission of its split
(``eval.split=test``: ``moments_test_unannot.json``, no metrics).

Weight files carry the head as ``heads.mq.*`` beside the (unchanged) backbone, with ``heads.mq.meta``: the class
names, the feature size and the detector config as UTF-8 JSON bytes, so ``egovlp evaluate mq --checkpoint`` needs
nothing else to rebuild it.
"""

from __future__ import annotations

import functools
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from egovlp.config import at_least, config_to_dict, one_of
from egovlp.data.moments import MQAnnotations, MQClip, MQDetection, load_moments, write_mq_submission
from egovlp.data.tokenizer import Tokenizer
from egovlp.episodic.detector import DetectorConfig, TemporalDetector
from egovlp.episodic.inference import InferenceConfig, detect_clips
from egovlp.episodic.loss import DetectionLoss, DetectionLossConfig
from egovlp.episodic.mq_data import ClipFeatures, MQCollate, MQFeatureDataset, feature_clips, load_test_clips
from egovlp.episodic.mq_features import extract_mq_features
from egovlp.episodic.targets import make_points
from egovlp.errors import CheckpointError, ConfigError, DataError
from egovlp.features import read_features
from egovlp.metrics.detection import Moments, mq_metrics
from egovlp.models.config import ModelConfig
from egovlp.models.factory import InitConfig
from egovlp.models.registry import get_model_config
from egovlp.models.weights import file_heads, loaded_heads, task_heads
from egovlp.tasks.registry import TaskSpec, register_task
from egovlp.tasks.shared import sharded_loader
from egovlp.train.datasets import CountingCollate, TrainingDataset
from egovlp.train.distributed import DistInfo, gather_objects
from egovlp.train.loop import TrainConfig
from egovlp.train.optim import OptimConfig
from egovlp.train.task import Task, TaskModule

log = logging.getLogger(__name__)

HEAD = "mq"  # heads.mq.* in weight files
_SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class MQData:
    train: str = ""  # moments_train.json
    val: str = ""  # moments_val.json
    test: str = ""  # moments_test_unannot.json (eval.split=test: the challenge submission, no metrics)
    classes: str = ""  # a class list, one name a line (default: the sorted labels of `train`)
    feature_dir: str = ""  # features made by `egovlp extract` (mode=video); empty: extracted into feature_cache
    feature_cache: str = "features/mq"  # features extracted here go to <feature_cache>/<arch>-<weights fingerprint>
    video_root: str = ""  # the videos to extract from (<root>/<video_uid>.mp4)
    extract_preset: str = "extract/mq_video"  # the `egovlp extract` config of that extraction
    extract: tuple[str, ...] = ()  # its key=value overrides, e.g. ["source.layout=chunked", "num_workers=8"]
    tokenizer: str = ""  # the model's tokenizer (the command loads one; MQ reads no text)
    num_frames: int = at_least(1, 16)  # frames per window the backbone runs at (release: 16, every frame)
    missing: str = one_of(("raise", "skip"), "raise")  # clips without features: stop, or leave out (GT missed)


@dataclass(frozen=True)
class MQEval:
    split: str = one_of(_SPLITS, "val")
    batch_size: int = at_least(1, 4)  # clips per forward pass
    num_workers: int = at_least(0, 2)
    submission: str = ""  # the challenge JSON (default: <output folder>/mq_submission_<split>.json)


@dataclass(frozen=True)
class MQEvalConfig:
    """``egovlp evaluate mq``: backbone and detector come from ``--checkpoint``."""

    data: MQData = field(default_factory=MQData)
    eval: MQEval = field(default_factory=MQEval)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    output_dir: str = "results"  # where the default submission file goes
    device: str = "auto"


@dataclass(frozen=True)
class MQTrainData:
    batch_size: int = at_least(1, 2)  # clips per step (ActionFormer Ego4D: 2)
    num_workers: int = at_least(0, 2)
    max_seq_len: int = at_least(0, 1024)  # longer clips are cropped at random to this many steps (0: never)
    min_crop_overlap: float = 0.3  # a cropped segment keeps at least this part of its length, else it is dropped


@dataclass(frozen=True)
class MQConfig:
    """``egovlp finetune mq`` (ActionFormer on Ego4D MQ: AdamW lr 1e-4, weight decay 0.05, batch 2, cosine with
    warm-up; the backbone is frozen and only the detector trains)."""

    model: ModelConfig = field(default_factory=lambda: get_model_config("egovlpv2-base"))
    init: InitConfig = field(default_factory=InitConfig)
    data: MQData = field(default_factory=MQData)
    train_data: MQTrainData = field(default_factory=MQTrainData)
    eval: MQEval = field(default_factory=MQEval)
    head: DetectorConfig = field(default_factory=DetectorConfig)
    loss: DetectionLossConfig = field(default_factory=DetectionLossConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    optim: OptimConfig = field(
        default_factory=lambda: OptimConfig(
            lr=1e-4, weight_decay=0.05, new_param_lr_mult=1.0, warmup_fraction=0.3, grad_clip=1.0
        )
    )
    train: TrainConfig = field(default_factory=lambda: TrainConfig(output_dir="runs/mq", epochs=15))


def read_classes(path: str) -> tuple[str, ...]:
    """A class list file: one name a line (blank lines ignored)."""
    if not Path(path).is_file():
        raise DataError(f"{path}: no such class list file")
    names = tuple(line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip())
    if not names:
        raise DataError(f"{path}: no class names")
    return names


def split_file(data: MQData, split: str) -> str:
    path = getattr(data, split)
    if not path:
        raise ConfigError(f"mq: data.{split} is not set (the {split} split's moments file)")
    return path


def load_split(data: MQData, split: str, classes: tuple[str, ...] | None) -> tuple[list[MQClip], MQAnnotations | None]:
    """The clips of a split and, for train/val, the parsed annotations (labels in ``classes``)."""
    path = split_file(data, split)
    if split == "test":
        return load_test_clips(path), None
    ann = load_moments(path, classes=classes)
    return list(ann.clips), ann


def feature_folder(data: MQData, model: nn.Module, dist: DistInfo, splits: tuple[str, ...], progress: bool) -> Path:
    """``data.feature_dir``, or the cache folder after extracting the clips of ``splits`` with ``model``."""
    if data.feature_dir:
        return Path(data.feature_dir)
    if not data.video_root:
        raise ConfigError("mq: set data.feature_dir (features from `egovlp extract`) or data.video_root (extract here)")
    files = [split_file(data, s) for s in splits]
    overrides = [f"window.num_frames={data.num_frames}", *data.extract]
    return extract_mq_features(model, files, data.video_root, data.feature_cache, data.extract_preset, overrides,
                               dist.device, dist.rank, dist.world_size, gather_objects, progress)  # fmt: skip


def head_meta(classes: tuple[str, ...], input_dim: int, cfg: DetectorConfig) -> torch.Tensor:
    """The detector's description as a uint8 tensor of UTF-8 JSON (weight files hold tensors only)."""
    text = json.dumps({"classes": list(classes), "input_dim": input_dim, "detector": config_to_dict(cfg)})
    return torch.tensor(list(text.encode("utf-8")), dtype=torch.uint8)


def detector_from_weights(heads: dict[str, torch.Tensor]) -> tuple[TemporalDetector, tuple[str, ...]]:
    """The detector and its class names stored in a weight file's ``heads.mq.*``."""
    state = task_heads(heads or {}, HEAD)
    if "meta" not in state:
        raise CheckpointError("the checkpoint holds no MQ detector (heads.mq.*): train one with `egovlp finetune mq`")
    meta = json.loads(bytes(state.pop("meta").tolist()).decode("utf-8"))
    detector = TemporalDetector(DetectorConfig(**meta["detector"]), int(meta["input_dim"]), len(meta["classes"]))
    expected, got = set(detector.state_dict()), set(state)
    if expected != got:
        raise CheckpointError(
            f"MQ detector: missing {sorted(expected - got)[:5]}, unexpected {sorted(got - expected)[:5]}"
        )
    detector.load_state_dict(state)
    return detector, tuple(meta["classes"])


def _cat(parts: list[np.ndarray], empty_shape: tuple[int, ...]) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(empty_shape)


class MQEvaluator:
    """Runs the detector on ``eval.split``: metrics (percent) on rank 0 and the split's submission file."""

    def __init__(self, data: MQData, cfg: MQEval, inference: InferenceConfig, detector: TemporalDetector,
                 classes: tuple[str, ...], dist: DistInfo, out_dir: str, progress: bool = False,
                 folder: Path | None = None) -> None:  # fmt: skip
        self.data, self.cfg, self.inference, self.detector = data, cfg, inference, detector
        self.classes, self.dist, self.progress = classes, dist, progress
        self.submission = Path(cfg.submission or Path(out_dir) / f"mq_submission_{cfg.split}.json")
        self.clips, self.annotations = load_split(data, cfg.split, classes)
        self._folder = folder  # the feature folder, once known

    def __call__(self, model: nn.Module) -> dict[str, Any]:
        if self._folder is None:  # the backbone is frozen: one extraction serves every evaluation
            self._folder = feature_folder(self.data, model, self.dist, (self.cfg.split,), self.progress)
        present, missing = feature_clips(self.clips, self._folder, self.data.missing)
        was_training = self.detector.training
        self.detector.eval()
        try:
            local = self._detect(present)
        finally:
            self.detector.train(was_training)
        shards = gather_objects(local)
        if not self.dist.is_main:
            return {}
        detections = {int(i): d for shard in shards for i, d in shard}
        return self._finish(present, detections, missing)

    @torch.no_grad()
    def _detect(self, present: list[ClipFeatures]) -> list[tuple[int, Any]]:
        dataset = MQFeatureDataset(present)
        loader = sharded_loader(dataset, self.cfg.batch_size, self.cfg.num_workers, self.dist,
                                MQCollate(self.detector.cfg.num_levels))  # fmt: skip
        device, out = self.dist.device, cast(list[tuple[int, Any]], [])
        for batch in loader:
            result = self.detector(batch["features"].to(device), batch["mask"].to(device))
            points = make_points(batch["features"].shape[1], self.detector.cfg.num_levels, device)
            out.extend(zip(batch["index"], detect_clips(result, points, batch, self.inference)))
        return out

    def _finish(self, present: list[ClipFeatures], detections: dict[int, Any], missing: list[str]) -> dict[str, Any]:
        rows: dict[str, list[MQDetection]] = {}
        video, label, segment, score = [], [], [], []
        for i, item in enumerate(present):
            d = detections[i]
            uid = item.clip.clip_uid
            rows[uid] = [MQDetection(self.classes[int(c)], float(s), (float(a), float(b)))
                         for (a, b), s, c in zip(d.segments, d.scores, d.labels)]  # fmt: skip
            video += [uid] * len(d.scores)
            label.append(d.labels)
            segment.append(d.segments)
            score.append(d.scores)
        path = write_mq_submission(self.submission, rows)
        count = sum(len(r) for r in rows.values())
        metrics: dict[str, Any] = {"clips": len(present), "clips_without_features": len(missing), "detections": count}
        metrics["submission"] = str(path)
        if self.annotations is None:  # the test split: no labels
            return metrics
        gt = [(c.clip_uid, lab, seg) for c in self.clips for lab, seg in zip(c.labels, c.segments)]
        truth = Moments([g[0] for g in gt], np.array([g[1] for g in gt], np.int64), np.array([g[2] for g in gt]))
        predictions = Moments(np.array(video, dtype=truth.video.dtype) if video else truth.video[:0],
                              _cat(label, (0,)).astype(np.int64), _cat(segment, (0, 2)), _cat(score, (0,)))  # fmt: skip
        result = mq_metrics(truth, predictions)
        metrics.update(result.to_dict())
        metrics["ground_truth"] = len(truth)
        metrics["videos_without_predictions"] = result.retrieval.num_videos_without_predictions
        return metrics


class MQModule(TaskModule):
    """``forward(batch)`` -> ``{"loss", "cls_loss", "reg_loss", "num_pos"}``: the detector on a batch of features
    (the backbone in ``model`` is frozen and unused here)."""

    def __init__(self, model: nn.Module, detector: TemporalDetector, loss: DetectionLoss) -> None:
        super().__init__(model)
        self.detector, self.loss = detector, loss

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        feats = batch["features"]
        out = self.detector(feats, batch["mask"])
        points = make_points(feats.shape[1], self.detector.cfg.num_levels, feats.device)
        return self.loss(out, points, batch["segments"], batch["labels"])


class MQTask(Task):
    """Detector training on the train split's features, evaluated on ``eval.split``."""

    name = "mq"

    def __init__(self, cfg: MQConfig, tokenizer: Tokenizer, dist: DistInfo) -> None:
        self.cfg, self.dist, self.seed = cfg, dist, cfg.train.seed
        self.batch_size, self.num_workers = cfg.train_data.batch_size, cfg.train_data.num_workers
        self.detector: TemporalDetector | None = None
        self._folder: Path | None = None
        self._evaluator: MQEvaluator | None = None

    @functools.cached_property
    def train_split(self) -> MQAnnotations:
        classes = read_classes(self.cfg.data.classes) if self.cfg.data.classes else None
        return load_moments(split_file(self.cfg.data, "train"), classes=classes)

    @property
    def classes(self) -> tuple[str, ...]:
        return self.train_split.classes

    @functools.cached_property
    def train_clips(self) -> list[ClipFeatures]:
        assert self._folder is not None, "build_module comes first"
        present, _ = feature_clips(self.train_split.clips, self._folder, self.cfg.data.missing)
        if not present:
            raise DataError(f"{self.train_split.path}: no training clip has features in {self._folder}")
        return present

    def build_module(self, model: nn.Module) -> MQModule:
        """Freeze the backbone, make sure the features exist (train and eval splits), build the detector."""
        model.to(self.dist.device).requires_grad_(False)
        splits = tuple(dict.fromkeys(("train", self.cfg.eval.split)))
        self._folder = feature_folder(self.cfg.data, model, self.dist, splits, self.cfg.train.progress)
        input_dim = int(read_features(self.train_clips[0].path).features.shape[1])
        self.detector = TemporalDetector(self.cfg.head, input_dim, len(self.classes))
        start = file_heads(model, HEAD)
        if start:  # init.checkpoint carried a detector: continue from it when it fits
            stored, stored_classes = detector_from_weights({f"{HEAD}.{k}": v for k, v in start.items()})
            if stored_classes == self.classes and stored.input_dim == input_dim and stored.cfg == self.cfg.head:
                self.detector.load_state_dict(stored.state_dict())
                log.info("MQ detector initialised from init.checkpoint")
        log.info("MQ detector: %d classes, %d-d features, %.2f M parameters", len(self.classes), input_dim,
                 sum(p.numel() for p in self.detector.parameters()) / 1e6)  # fmt: skip
        return MQModule(model, self.detector, DetectionLoss(self.cfg.loss, len(self.classes)))

    def train_dataset(self) -> TrainingDataset:
        t = self.cfg.train_data
        return TrainingDataset(MQFeatureDataset(self.train_clips, t.max_seq_len, t.min_crop_overlap), self.seed)

    def collate_fn(self):
        return CountingCollate(MQCollate(self.cfg.head.num_levels))

    def to_device(self, batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
        out = super().to_device(batch, device)
        for key in ("segments", "labels"):
            out[key] = [t.to(device) for t in batch[key]]
        return out

    def batch_items(self, batch: dict[str, Any]) -> int:
        return int(batch["features"].shape[0])

    def head_weights(self) -> dict[str, torch.Tensor]:
        """The detector as ``mq.*`` tensors plus ``mq.meta`` (classes, feature size, config)."""
        assert self.detector is not None
        heads = {f"{HEAD}.{k}": v for k, v in self.detector.state_dict().items()}
        heads[f"{HEAD}.meta"] = head_meta(self.classes, self.detector.input_dim, self.cfg.head)
        return heads

    def evaluate(self, model: nn.Module, dist: DistInfo) -> dict[str, Any]:
        assert self.detector is not None
        if self._evaluator is None:
            c = self.cfg
            self._evaluator = MQEvaluator(c.data, c.eval, c.inference, self.detector, self.classes, dist,
                                          c.train.output_dir, c.train.progress, self._folder)  # fmt: skip
        return self._evaluator(model)


def make_evaluator(cfg: MQEvalConfig, tokenizer: Tokenizer, model: nn.Module, dist: DistInfo, progress=False):
    detector, classes = detector_from_weights(loaded_heads(model))
    log.info("MQ detector from the checkpoint: %d classes, %d-d features", len(classes), detector.input_dim)
    return MQEvaluator(cfg.data, cfg.eval, cfg.inference, detector.to(dist.device), classes, dist, cfg.output_dir,
                       progress)  # fmt: skip


def format_table(m: dict[str, Any]) -> str:
    """mAP (%) at each tIoU and their average, Recall@kx (%) at tIoU 0.3/0.5/0.7, counts and the submission."""
    lines = [f"Ego4D MQ ({m.get('clips', 0)} clips, {m.get('detections', 0)} detections)"]
    if "average_mAP" in m:
        maps = [k for k in m if k.startswith("mAP@")]
        lines.append(f"{'tIoU':22s}" + "".join(f"{k[4:]:>10s}" for k in maps) + f"{'average':>10s}")
        lines.append(f"{'mAP':22s}" + "".join(f"{m[k]:10.2f}" for k in maps) + f"{m['average_mAP']:10.2f}")
        for t in ("0.3", "0.5", "0.7"):
            keys = [f"R{r}x@{t}" for r in range(1, 6) if f"R{r}x@{t}" in m]
            lines.append(f"{'Recall@1..5x tIoU ' + t:22s}" + "".join(f"{m[k]:10.2f}" for k in keys))
    if m.get("clips_without_features"):
        lines.append(f"clips without features (their ground truth missed): {m['clips_without_features']}")
    lines.append(f"submission: {m.get('submission', '')}")
    return "\n".join(lines)


register_task(
    TaskSpec(
        name="mq",
        description="Ego4D moment queries: temporal detector on frozen dual video features; mAP at tIoU, Recall@kx",
        eval_schema=MQEvalConfig,
        make_evaluator=make_evaluator,
        format_table=format_table,
        required=("data.tokenizer",),
        finetune_schema=MQConfig,
        make_task=MQTask,
        finetune_required=("data.train", "data.tokenizer"),
    )
)
