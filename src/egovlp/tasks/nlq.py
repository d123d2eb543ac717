"""Ego4D natural-language queries (NLQ) with the release's VSLNet head on cached fused features (downstream §2).

Features (:mod:`egovlp.episodic.nlq_data`): the frozen backbone extracts, once per split and backbone, the fused
video CLS of every 4-frame window with the query (16 frames at 30 fps, stride 16: 1.875 windows per second) and
the dual text tower's token states of the query, cached under ``features.dir`` (``<train.output_dir>/features``
when empty); clips longer than ``head.max_pos_len`` windows are mean-pooled to it as the release does. The head
(:class:`~egovlp.episodic.vslnet.VSLNet`) then trains for many epochs on the shared loop without touching the video;
the backbone stays frozen and its weights are saved unchanged, with the head as ``heads.nlq.*``.

Evaluation: top-``eval.top_k`` (5) spans per query by ``p_start * p_end``; Recall@{1,3,5} at IoU {0.3, 0.5, 0.01}
and the top-1 mIoU over ALL annotated queries with text (a query without features counts as a miss; how many are
missing is reported, as are the skipped queries without text). Beside it, the prior-window baseline: every query
answered with the most common normalised windows of the train file (bins of 1 / ``eval.prior_bins``). During
fine-tuning every evaluation runs on ``eval.split`` (val) and the best R1@0.3 is kept in ``nlq_best.safetensors``;
the report labels the last evaluation and the val-selected one with their epochs (the release reports the best val
number, selected on val itself). ``eval.split=test`` writes the Ego4D challenge submission JSON instead.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from egovlp.config import at_least, one_of
from egovlp.data.nlq import NLQAnnotations, NLQPrediction, load_nlq, write_nlq_submission
from egovlp.data.tokenizer import Tokenizer
from egovlp.episodic.nlq_data import NLQFeatureConfig, NLQFeatureSet, collate_nlq, extract_nlq_features
from egovlp.episodic.spans import top_spans
from egovlp.episodic.vslnet import VSLNet, VSLNetConfig, vslnet_config_from_state, vslnet_loss
from egovlp.errors import CheckpointError, ConfigError
from egovlp.metrics.grounding import nlq_recall
from egovlp.models.config import ModelConfig
from egovlp.models.factory import InitConfig
from egovlp.models.registry import get_model_config
from egovlp.models.weights import file_heads, save_weights
from egovlp.tasks.registry import TaskSpec, register_task
from egovlp.tasks.shared import check_vocab
from egovlp.train.datasets import CountingCollate, TrainingDataset
from egovlp.train.distributed import DistInfo, gather_objects
from egovlp.train.loop import TrainConfig
from egovlp.train.optim import OptimConfig
from egovlp.train.task import Task, TaskModule

log = logging.getLogger(__name__)

HEAD = "nlq"  # heads.nlq.* in weight files
BEST_FILE = "nlq_best.safetensors"
SPLIT_FILES = {"train": "nlq_train.json", "val": "nlq_val.json", "test": "nlq_test_unannotated.json"}
KS, THRESHOLDS = (1, 3, 5), (0.3, 0.5, 0.01)
SELECT = "R1@0.3"  # the release's model-selection metric


@dataclass(frozen=True)
class NLQData:
    annotation_dir: str = ""  # nlq_{train,val,test_unannotated}.json
    video_root: str = ""  # <root>/<video_uid>.mp4 (Ego4D's canonical videos)
    tokenizer: str = ""
    num_frames: int = at_least(1, 4)  # frames per window (release 4; the model runs at it)
    window_tolerance: float = at_least(0.0, 1.0)  # seconds a window may leave its clip and be clamped


@dataclass(frozen=True)
class NLQEval:
    split: str = one_of(("val", "test", "train"), "val")  # test: nlq_test_unannotated.json -> submission JSON
    batch_size: int = at_least(1, 64)
    top_k: int = at_least(1, 5)  # spans per query (the challenge takes 5)
    submission: str = ""  # test split: the challenge JSON (default <features dir>/nlq_submission_test.json)
    prior_bins: int = at_least(1, 20)  # the prior-window baseline's grid over the normalised clip


@dataclass(frozen=True)
class NLQTrainData:
    batch_size: int = at_least(1, 32)  # queries per rank (release 32)
    num_workers: int = at_least(0, 0)  # the features are in memory
    highlight_extend: float = at_least(0.0, 0.1)  # highlight labels reach this fraction of the answer beyond it


@dataclass(frozen=True)
class NLQEvalHead:
    num_heads: int = at_least(1, 8)  # not visible in the weights' shapes; the others are read from them


@dataclass(frozen=True)
class NLQEvalConfig:
    """``egovlp evaluate nlq``: backbone and head (``heads.nlq.*``) from ``--checkpoint``."""

    data: NLQData = field(default_factory=NLQData)
    features: NLQFeatureConfig = field(default_factory=NLQFeatureConfig)
    eval: NLQEval = field(default_factory=NLQEval)
    head: NLQEvalHead = field(default_factory=NLQEvalHead)
    device: str = "auto"


@dataclass(frozen=True)
class NLQConfig:
    """``egovlp finetune nlq`` (release head: lr 1e-3, batch 32, 50 epochs, gradient clip 1.0)."""

    model: ModelConfig = field(default_factory=lambda: get_model_config("egovlpv2-base"))
    init: InitConfig = field(default_factory=InitConfig)
    data: NLQData = field(default_factory=NLQData)
    features: NLQFeatureConfig = field(default_factory=NLQFeatureConfig)
    head: VSLNetConfig = field(default_factory=VSLNetConfig)  # video_dim / text_dim 0: the features' sizes
    train_data: NLQTrainData = field(default_factory=NLQTrainData)
    eval: NLQEval = field(default_factory=NLQEval)
    optim: OptimConfig = field(
        default_factory=lambda: OptimConfig(lr=1e-3, new_param_lr_mult=1.0, warmup_fraction=0.01, grad_clip=1.0)
    )
    train: TrainConfig = field(default_factory=lambda: TrainConfig(output_dir="runs/nlq", epochs=50))


def feature_config(cfg: NLQConfig | NLQEvalConfig) -> NLQFeatureConfig:
    """The features' settings with the window's frame count taken from ``data.num_frames``."""
    return dataclasses.replace(cfg.features, window=dataclasses.replace(cfg.features.window,
                                                                         num_frames=cfg.data.num_frames))  # fmt: skip


def load_split(data: NLQData, split: str) -> NLQAnnotations:
    return load_nlq(Path(data.annotation_dir) / SPLIT_FILES[split], data.window_tolerance)


def split_features(
    cfg: NLQConfig | NLQEvalConfig, root: str, split: str, backbone, dist: DistInfo, max_len: int, extend: float
) -> NLQFeatureSet:
    """Extract (or find cached) the features of ``split`` under ``<root>/<split>`` and read them."""
    annotations = load_split(cfg.data, split)
    tokenizer = Tokenizer.from_dir(cfg.data.tokenizer)
    gather = gather_objects if dist.distributed else None
    folder = extract_nlq_features(feature_config(cfg), annotations.path, cfg.data.video_root, Path(root) / split,
                                  backbone, tokenizer, cfg.data.tokenizer, dist.device, dist.rank, dist.world_size,
                                  gather)  # fmt: skip
    return NLQFeatureSet(annotations, folder, max_len, extend)


def prior_windows(train: NLQAnnotations, bins: int, k: int) -> np.ndarray:
    """``(k, 2)`` the most common normalised train windows (start, end as fractions of the clip), best first.

    Windows are snapped to a grid of ``1 / bins`` (start down, end up, at least one bin long); ties go to the earlier
    start, then the shorter window.
    """
    counts: collections.Counter = collections.Counter()
    for q in train.queries:
        if q.window is None or q.clip_duration <= 0:
            continue
        s = min(int(np.floor(q.window[0] / q.clip_duration * bins)), bins - 1)
        e = max(int(np.ceil(q.window[1] / q.clip_duration * bins)), s + 1)
        counts[(s, min(e, bins))] += 1
    ranked = sorted(counts, key=lambda w: (-counts[w], w))[:k]
    return np.array(ranked, dtype=np.float64).reshape(-1, 2) / bins


class NLQModule(TaskModule):
    """``forward(batch)`` -> ``{"loss", "span_loss", "highlight_loss"}`` of the VSLNet head; the backbone is frozen."""

    def __init__(self, model, head: VSLNet) -> None:
        super().__init__(model)
        self.head = head
        self.micro_batches = 0  # training forwards so far (for the epoch labels of evaluations)

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        if self.training:
            self.micro_batches += 1
        out = self.head(batch["video"], batch["video_mask"], batch["text"], batch["text_mask"])
        return vslnet_loss(out, batch["start"], batch["end"], batch["highlight"], batch["video_mask"],
                           self.head.cfg.highlight_weight)  # fmt: skip


class NLQEvaluator:
    """Scores a head on one split's cached features (rank 0 scores; every rank takes part in the extraction)."""

    def __init__(self, cfg: NLQConfig | NLQEvalConfig, root: str, backbone, head: VSLNet, dist: DistInfo) -> None:
        self.cfg, self.head, self.dist, self.root = cfg, head, dist, root
        self.split = cfg.eval.split
        self.features = split_features(cfg, root, self.split, backbone, dist, head.cfg.max_pos_len, 0.0)
        self.annotations = self.features.annotations
        train_file = Path(cfg.data.annotation_dir) / SPLIT_FILES["train"]
        self.prior = prior_windows(load_split(cfg.data, "train"), cfg.eval.prior_bins, cfg.eval.top_k) if (
            self.split != "test" and train_file.is_file()) else None  # fmt: skip

    @torch.no_grad()
    def predict(self) -> dict[tuple[str, str, int], np.ndarray]:
        """``{query key: (k, 2) windows in seconds, best first}`` for every query with features."""
        was_training = self.head.training
        self.head.eval()
        loader = DataLoader(self.features, self.cfg.eval.batch_size, collate_fn=collate_nlq)
        out: dict[tuple[str, str, int], np.ndarray] = {}
        try:
            for batch in loader:
                mask = batch["video_mask"].to(self.dist.device)
                res = self.head(batch["video"].to(self.dist.device), mask, batch["text"].to(self.dist.device),
                                batch["text_mask"].to(self.dist.device))  # fmt: skip
                starts, ends, _ = top_spans(res.start_logits, res.end_logits, mask, self.cfg.eval.top_k)
                for row, index in enumerate(batch["index"].tolist()):
                    s = self.features.samples[index]
                    times = np.stack([s.unit_start[starts[row].cpu().numpy()], s.unit_end[ends[row].cpu().numpy()]], 1)
                    out[s.query.key] = np.clip(times, 0.0, s.query.clip_duration)
        finally:
            self.head.train(was_training)
        return out

    def __call__(self, model=None) -> dict[str, Any]:
        if not self.dist.is_main:
            return {}
        predictions = self.predict()
        counts = {"queries": float(len(self.annotations)), "missing": float(len(self.features.missing)),
                  "without_query": float(self.annotations.num_without_query)}  # fmt: skip
        if self.split == "test":
            return {**counts, "submission": str(self.write_submission(predictions))}
        gt = {q.key: q.window for q in self.annotations.queries}
        result = nlq_recall(predictions, gt, KS, THRESHOLDS)
        metrics: dict[str, Any] = {**result.to_dict(), **counts}
        if self.prior is not None:
            prior = {q.key: self.prior * q.clip_duration for q in self.annotations.queries}
            metrics.update({f"prior/{k}": v for k, v in nlq_recall(prior, gt, KS, THRESHOLDS).to_dict().items()})
        return metrics

    def write_submission(self, predictions: dict[tuple[str, str, int], np.ndarray]) -> Path:
        path = self.cfg.eval.submission or str(Path(self.root) / "nlq_submission_test.json")
        rows = [
            NLQPrediction(q.clip_uid, q.annotation_uid, q.query_idx, tuple(map(tuple, predictions[q.key].tolist())))
            for q in self.annotations.queries
            if q.key in predictions
        ]
        written = write_nlq_submission(path, rows, self.cfg.eval.top_k)
        log.info("NLQ submission (%d queries, %d without features left out): %s", len(rows),
                 len(self.features.missing), written)  # fmt: skip
        return written


class NLQTask(Task):
    """Trains the VSLNet head on the cached features of the train split; evaluates on ``eval.split``."""

    name = "nlq"

    def __init__(self, cfg: NLQConfig, tokenizer: Tokenizer, dist: DistInfo) -> None:
        check_vocab(tokenizer, cfg.model)
        self.cfg, self.dist, self.seed = cfg, dist, cfg.train.seed
        self.batch_size, self.num_workers = cfg.train_data.batch_size, cfg.train_data.num_workers
        self.root = cfg.features.dir or str(Path(cfg.train.output_dir) / "features")
        self.head: VSLNet | None = None
        self.module: NLQModule | None = None
        self.train_set: NLQFeatureSet | None = None
        self._evaluator: NLQEvaluator | None = None
        self.best: tuple[float, float] | None = None  # (val R1@0.3, epoch)
        self._micro = 0  # restored training forwards (resume)

    def build_module(self, model) -> NLQModule:
        """Freeze the backbone, extract (or read) the train features with it, and build the head on their sizes."""
        model.requires_grad_(False)
        h = self.cfg.head
        self.train_set = split_features(self.cfg, self.root, "train", model, self.dist, h.max_pos_len,
                                        self.cfg.train_data.highlight_extend)  # fmt: skip
        first = self.train_set.samples[0]
        dims = {"video_dim": h.video_dim or first.video.shape[1], "text_dim": h.text_dim or first.text.shape[1]}
        if (dims["video_dim"], dims["text_dim"]) != (first.video.shape[1], first.text.shape[1]):
            raise ConfigError(f"head.video_dim / text_dim {dims} do not match the features "
                              f"({first.video.shape[1]}, {first.text.shape[1]}); set them to 0")  # fmt: skip
        head = VSLNet(dataclasses.replace(h, **dims))
        start = file_heads(model, HEAD)
        if start:
            head.load_state_dict(start)  # init.checkpoint carried an NLQ head: train it further
            log.info("NLQ head initialised from init.checkpoint")
        self.head, self.module = head, NLQModule(model, head)
        self.module.micro_batches = self._micro
        return self.module

    def train_dataset(self) -> TrainingDataset:
        assert self.train_set is not None, "build_module extracts the train features first"
        return TrainingDataset(self.train_set, self.seed)

    def collate_fn(self):
        return CountingCollate(collate_nlq)

    def head_weights(self) -> dict[str, torch.Tensor]:
        assert self.head is not None
        return {f"{HEAD}.{k}": v for k, v in self.head.state_dict().items()}

    def epoch(self) -> float:
        """Epochs of training done (training forwards / micro-batches per epoch)."""
        assert self.train_set is not None and self.module is not None
        per_epoch = max(1, len(self.train_set) // self.dist.world_size // self.batch_size)
        return self.module.micro_batches / per_epoch

    def evaluate(self, model, dist: DistInfo) -> dict[str, Any]:
        assert self.head is not None
        if self._evaluator is None:
            self._evaluator = NLQEvaluator(self.cfg, self.root, model, self.head, dist)
        metrics = self._evaluator()
        if not metrics or SELECT not in metrics:
            return metrics
        epoch = round(self.epoch(), 3)
        metrics["epoch"] = epoch
        if self.best is None or metrics[SELECT] > self.best[0]:
            self.best = (float(metrics[SELECT]), epoch)
            path = save_weights(model, f"{self.cfg.train.output_dir}/{BEST_FILE}", heads=self.head_weights())
            log.info("best %s %s so far (%.2f, epoch %g): %s", self.cfg.eval.split, SELECT, self.best[0], epoch, path)
            self._best_metrics = {k: v for k, v in metrics.items() if not k.startswith("prior/")}
        metrics.update({f"selected/{k}": v for k, v in self._best_metrics.items()})
        return metrics

    def state_dict(self) -> dict[str, Any]:
        micro = self.module.micro_batches if self.module is not None else self._micro
        best = dict(getattr(self, "_best_metrics", {}))
        return {"best": list(self.best) if self.best else [], "micro_batches": micro, "best_metrics": best}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        best = state.get("best") or []
        self.best = (float(best[0]), float(best[1])) if best else None
        self._best_metrics = dict(state.get("best_metrics") or {})
        self._micro = int(state.get("micro_batches", 0))
        if self.module is not None:
            self.module.micro_batches = self._micro


def make_evaluator(cfg: NLQEvalConfig, tokenizer: Tokenizer, model: Any, dist: DistInfo, progress=False):
    """``egovlp evaluate nlq``: the head comes from the checkpoint's ``heads.nlq.*``."""
    check_vocab(tokenizer, model.cfg)
    state = file_heads(model, HEAD)
    if not state:
        raise CheckpointError("the checkpoint holds no NLQ head (heads.nlq.*): train one with `egovlp finetune nlq`")
    head = VSLNet(vslnet_config_from_state(state, cfg.head.num_heads))
    head.load_state_dict(state)
    head = head.to(dist.device).eval()
    if not cfg.features.dir:
        raise ConfigError(
            "nlq: features.dir not set (the feature cache; the fine-tuning run's is <output_dir>/features)"
        )
    return NLQEvaluator(cfg, cfg.features.dir, model, head, dist)


def _row(label: str, m: dict[str, Any], prefix: str = "") -> str:
    values = [m[f"{prefix}R{k}@{t:g}"] for t in THRESHOLDS for k in KS] + [m[f"{prefix}mIoU"]]
    return f"{label:28s}" + "".join(f"{v:9.2f}" for v in values)


def format_table(m: dict[str, Any]) -> str:
    """Recall (%) at K {1, 3, 5} x IoU {0.3, 0.5, 0.01} and mIoU; last / val-selected / prior rows."""
    if "submission" in m:
        return f"NLQ test: {int(m['queries'])} queries -> submission {m['submission']}"
    head = "".join(f"{f'R{k}@{t:g}':>9s}" for t in THRESHOLDS for k in KS) + f"{'mIoU':>9s}"
    lines = [f"NLQ (%), {int(m['queries'])} queries ({int(m['missing'])} without features, counted as misses; "
             f"{int(m['without_query'])} without query text skipped)", f"{'':28s}{head}"]  # fmt: skip
    label = f"last (epoch {m['epoch']:g})" if "epoch" in m else "checkpoint"
    lines.append(_row(label, m))
    if "selected/epoch" in m:
        lines.append(_row(f"val-selected (epoch {m['selected/epoch']:g})", m, "selected/"))
    if "prior/mIoU" in m:
        lines.append(_row("prior window (train)", m, "prior/"))
    return "\n".join(lines)


_PATHS = ("data.annotation_dir", "data.video_root", "data.tokenizer")
register_task(
    TaskSpec(
        name="nlq",
        description="Ego4D NLQ: VSLNet on cached fused window features; Recall@{1,3,5} x IoU {0.3,0.5,0.01}, mIoU",
        eval_schema=NLQEvalConfig,
        make_evaluator=make_evaluator,
        format_table=format_table,
        required=(*_PATHS, "features.dir"),
        finetune_schema=NLQConfig,
        make_task=NLQTask,
        finetune_required=_PATHS,
    )
)
