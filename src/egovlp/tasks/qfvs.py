"""Query-focused video summarisation (QFVS, UT-Egocentric) with the fusion encoder (downstream.md §4).

Pipeline (the release's, with the departures named):

1. Shot features: per shot (5 frames at 1 fps) and prompt (``There is a {c1}`` / ``There is a {c2}`` / ``There is a
   {c1} and a {c2}``) the fused video CLS of the frozen fusion encoder (:mod:`egovlp.features.qfvs`), computed once
   per (video, prompt) and reused by every fold and epoch. Frames get the centre crop; ``data.crop=random`` is the
   release's random crop (repeatable per shot with ``data.crop_seed``).
2. Segments: KTS change points (:mod:`egovlp.data.kts`) on the lower video CLS of the shots, at most
   ``segments.max_segments`` segments of at most ``segments.max_segment_len`` shots (release 20 x 200).
3. Scorer: :class:`~egovlp.models.qfvs_scorer.QFVSScorer` over each segment; per query the sum of three BCE terms
   (concept-1 prompt vs the shots tagged with c1 in ``P0X.txt``, concept 2 likewise, the query prompt vs the oracle
   summary), summed over the batch as the release does.
4. Leave-one-video-out over the videos found: one scorer per held-out video, trained on the queries of the other
   videos only (all folds in one run of the shared loop: an item is ``(fold, query)``, and a fold's scorer only ever
   sees its own items). Evaluation scores each video with its own fold's scorer; the report is the release's
   semantic P / R / F1 (:func:`~egovlp.metrics.qfvs_metrics`) per video and the mean over the folds, beside the same
   numbers for random shot scores (``eval.random_repeats`` seeds averaged): the trivial baseline.

The release reports the best epoch on the test video; egovlp reports the last evaluation (no selection on test).
Weight files carry the scorers as ``heads.qfvs.<video>.*`` (the scorer that held ``<video>`` out), so ``egovlp
evaluate qfvs --checkpoint model.safetensors`` recomputes the report.
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from egovlp.config import at_least, greater_than, one_of, rule
from egovlp.data.kts import kts, segments
from egovlp.data.qfvs import QFVSVideo, find_qfvs_file, load_qfvs
from egovlp.data.tokenizer import Tokenizer
from egovlp.data.transforms import eval_transform, train_transform
from egovlp.errors import CheckpointError, ConfigError, DataError
from egovlp.features.qfvs import ShotFeatureCache, query_prompts
from egovlp.metrics import qfvs_metrics
from egovlp.models.config import ModelConfig
from egovlp.models.factory import InitConfig
from egovlp.models.qfvs_scorer import QFVSScorer, summary_bce_losses
from egovlp.models.registry import get_model_config
from egovlp.models.weights import file_heads
from egovlp.tasks.registry import TaskSpec, register_task
from egovlp.tasks.shared import check_crop_scale, check_vocab, table_row
from egovlp.train.datasets import TrainingDataset
from egovlp.train.distributed import DistInfo
from egovlp.train.loop import TrainConfig
from egovlp.train.optim import OptimConfig
from egovlp.train.task import Task, TaskModule

log = logging.getLogger(__name__)

HEAD = "qfvs"  # heads.qfvs.<video>.* in weight files
PROMPT_NAMES = {"Cupglass": "Glass", "Musicalinstrument": "Instrument", "Petsanimal": "Animal"}  # release's renames
TARGETS = ("concept1", "concept2", "oracle")
RELEASE_OPTIM = OptimConfig(
    lr=1e-5, new_param_lr_mult=1.0, weight_decay=0.1, betas=(0.9, 0.999), warmup_fraction=0.1, min_lr_ratio=0.001
)


@dataclass(frozen=True)
class QFVSData:
    root: str = ""  # Dense_per_shot_tags/, Oracle_Summaries/ (also under Query-Focused_Summaries/), Tags.mat
    video_root: str = ""  # video_frames/P0X/*.jpg, P0X/, P0X.mp4 or videos/P0X.mp4 (default: root)
    tokenizer: str = ""  # roberta-base tokenizer directory
    videos: tuple[str, ...] = ()  # default: every folder of Dense_per_shot_tags
    num_concepts: int = at_least(1, 48)  # columns of Tags.mat
    num_frames: int = rule(5, "must be 1-5 (frames of a 5 s shot at 1 fps)", lambda v: 1 <= v <= 5)
    crop: str = one_of(("center", "random"), "center")  # random: the release's random crop of feature extraction
    crop_scale: tuple[float, float] = (0.5, 1.0)  # crop=random: RandomResizedCrop area range
    crop_seed: int = 0  # crop=random: the crops repeat per (seed, shot)
    shot_block: int = at_least(1, 16)  # shots read and encoded together
    max_sequences: int = at_least(1, 64)  # (shot, prompt) pairs per fused forward
    num_workers: int = at_least(0, 0)  # shot-reading processes

    def check_config(self):
        yield from check_crop_scale(self.crop_scale, "crop_scale")


@dataclass(frozen=True)
class QFVSSegments:
    max_segments: int = at_least(1, 20)  # release
    max_segment_len: int = at_least(1, 200)  # release
    vmax: float = greater_than(0, 1.0)  # KTS penalty weight


@dataclass(frozen=True)
class QFVSEval:
    top_fraction: float = rule(0.02, "must be in (0, 1]", lambda v: 0 < v <= 1)  # machine summary share (release)
    random_repeats: int = at_least(0, 10)  # seeds of the random-score baseline (0: none)
    seed: int = 0  # of the random-score baseline


@dataclass(frozen=True)
class QFVSScorerConfig:
    num_heads: int = at_least(1, 2)
    num_layers: int = at_least(1, 2)
    ff_dim: int = at_least(1, 2048)  # nn.TransformerEncoderLayer's default, as the release
    dropout: float = 0.1
    head_dropout: float = 0.2
    last_bias: float = -1.91


@dataclass(frozen=True)
class QFVSTrainData:
    batch_size: int = at_least(1, 4)  # queries per rank (release: 4)


@dataclass(frozen=True)
class QFVSEvalConfig:
    """``egovlp evaluate qfvs``: the model and the fold scorers come from ``--checkpoint``."""

    data: QFVSData = field(default_factory=QFVSData)
    segments: QFVSSegments = field(default_factory=QFVSSegments)
    eval: QFVSEval = field(default_factory=QFVSEval)
    device: str = "auto"


@dataclass(frozen=True)
class QFVSConfig:
    """``egovlp finetune qfvs`` (release: AdamW lr 1e-5, weight decay 0.1, 2 warm-up epochs of 20 then cosine to
    1e-3 x, batch 4; the backbone is frozen, only the scorers train)."""

    model: ModelConfig = field(default_factory=lambda: get_model_config("egovlpv2-base"))
    init: InitConfig = field(default_factory=InitConfig)
    data: QFVSData = field(default_factory=QFVSData)
    segments: QFVSSegments = field(default_factory=QFVSSegments)
    eval: QFVSEval = field(default_factory=QFVSEval)
    scorer: QFVSScorerConfig = field(default_factory=QFVSScorerConfig)
    train_data: QFVSTrainData = field(default_factory=QFVSTrainData)
    optim: OptimConfig = field(
        default_factory=lambda: OptimConfig(
            lr=1e-5,
            new_param_lr_mult=1.0,
            weight_decay=0.1,
            betas=(0.9, 0.999),
            warmup_fraction=0.1,
            min_lr_ratio=0.001,
        )
    )
    train: TrainConfig = field(default_factory=lambda: TrainConfig(output_dir="runs/qfvs", epochs=20))

    def check_config(self):
        if not self.model.has_fusion:
            yield "model", f"QFVS needs a model with fusion layers ({self.model.arch} has none)"


@dataclass(frozen=True)
class Fold:
    """One leave-one-out fold: the held-out ``test`` video and the ``train`` videos."""

    test: str
    train: tuple[str, ...]


def leave_one_out(videos: list[str] | tuple[str, ...]) -> list[Fold]:
    """One fold per video: it is the test video once and in the training set of every other fold."""
    names = list(dict.fromkeys(videos))
    if len(names) < 2:
        raise DataError(f"QFVS leave-one-video-out needs at least 2 videos, found {names}")
    return [Fold(v, tuple(u for u in names if u != v)) for v in names]


@dataclass(frozen=True)
class Query:
    video: str
    concepts: tuple[str, str]
    oracle: tuple[int, ...]  # 0-based shots

    @property
    def prompts(self) -> tuple[str, str, str]:
        c1, c2 = (PROMPT_NAMES.get(c, c) for c in self.concepts)
        return query_prompts(c1, c2)


def concept_vectors(video: QFVSVideo, num_concepts: int) -> np.ndarray:
    """``(S, C)`` 0/1 vectors: Tags.mat's, else built from the tag names of ``P0X.txt`` (sorted vocabulary)."""
    if video.concepts is not None:
        return video.concepts
    vocab = sorted({c for tags in video.shot_tags for c in tags})
    out = np.zeros((video.num_shots, max(num_concepts, len(vocab))), np.uint8)
    for s, tags in enumerate(video.shot_tags):
        out[s, [vocab.index(c) for c in tags]] = 1
    return out


def video_names(data: QFVSData) -> list[str]:
    """``data.videos``, else every folder of ``Dense_per_shot_tags`` (sorted), without reading the annotations."""
    if data.videos:
        return sorted(data.videos)
    tags = find_qfvs_file(data.root, "Dense_per_shot_tags")
    if tags is None or not os.path.isdir(tags):
        raise DataError(f"{data.root}: no Dense_per_shot_tags folder")
    return sorted(d for d in os.listdir(tags) if os.path.isdir(os.path.join(tags, d)))


class QFVSSet:
    """The annotations, queries, cached shot features and KTS segments of the videos found."""

    def __init__(self, data: QFVSData, seg: QFVSSegments, cache: ShotFeatureCache) -> None:
        self.data, self.cache = data, cache
        self.videos = {v.name: v for v in load_qfvs(data.root, data.videos or None, data.num_concepts)}
        self.folds = leave_one_out(list(self.videos))
        self.queries = {
            name: [Query(name, q, shots) for q, shots in sorted(v.oracle.items())] for name, v in self.videos.items()
        }
        self.concepts = {name: concept_vectors(v, data.num_concepts) for name, v in self.videos.items()}
        self.segments: dict[str, list[tuple[int, int]]] = {}
        for name, v in self.videos.items():
            prompts = [p for q in self.queries[name] for p in q.prompts]
            feats = cache.get(name, v.num_shots, prompts)
            self.segments[name] = self._segment(name, feats.kts, seg)

    @staticmethod
    def _segment(name: str, features: Any, seg: QFVSSegments) -> list[tuple[int, int]]:
        n = len(features)
        if n > seg.max_segments * seg.max_segment_len:
            raise ConfigError(f"QFVS {name}: {n} shots do not fit segments.max_segments x segments.max_segment_len")
        change_points = kts(features, seg.max_segments - 1, seg.max_segment_len, seg.vmax)
        out = segments(change_points, n)
        log.info("QFVS %s: %d shots in %d KTS segments", name, n, len(out))
        return out

    def features(self, query: Query) -> list[torch.Tensor]:
        """The three prompts' shot features ``(S, D)`` of ``query`` (concept 1, concept 2, both)."""
        video = self.videos[query.video]
        cached = self.cache.get(query.video, video.num_shots, query.prompts)
        return [cached.prompts[p] for p in query.prompts]

    def targets(self, query: Query) -> list[torch.Tensor]:
        """``(S,)`` 0/1 targets: shots tagged with concept 1, with concept 2, and the oracle summary."""
        tags = self.videos[query.video].shot_tags
        c1, c2 = query.concepts
        oracle = torch.zeros(len(tags))
        oracle[list(query.oracle)] = 1.0
        return [torch.tensor([float(c1 in t) for t in tags]), torch.tensor([float(c2 in t) for t in tags]), oracle]


class QFVSQueries(torch.utils.data.Dataset):
    """Training items ``(fold, query)``: every query of every training video of every fold."""

    def __init__(self, qset: QFVSSet) -> None:
        self.qset = qset
        self.items = [(k, q) for k, fold in enumerate(qset.folds) for v in fold.train for q in qset.queries[v]]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        fold, query = self.items[i]
        return {"fold": fold, "features": self.qset.features(query), "targets": self.qset.targets(query),
                "segments": self.qset.segments[query.video]}  # fmt: skip


def collate_queries(items: list[tuple[dict[str, Any], int]]) -> dict[str, Any]:
    """``TrainingDataset`` items -> lists per field plus ``num_skipped`` (items are never skipped here)."""
    out: dict[str, Any] = {k: [item[k] for item, _ in items] for k in ("fold", "features", "targets", "segments")}
    out["num_skipped"] = sum(n for _, n in items)
    return out


def build_scorer(dim: int, cfg: QFVSScorerConfig) -> QFVSScorer:
    return QFVSScorer(dim, cfg.num_heads, cfg.num_layers, cfg.ff_dim, cfg.dropout, cfg.head_dropout, cfg.last_bias)


def feature_dim(model: Any) -> int:
    """The shot feature width: the VTM video transform's output, else the video width."""
    transform = getattr(model, "cross_modal_video_transform", None)
    return int(transform.out_features) if transform is not None else int(model.cfg.video.width)


class QFVSModule(TaskModule):
    """``forward(batch)`` -> ``{"loss", "loss_concept1", "loss_concept2", "loss_oracle"}``, each summed over the
    batch's queries; each query is scored by its fold's scorer. The backbone is frozen (features are cached)."""

    def __init__(self, model: nn.Module, scorers: nn.ModuleDict, folds: list[Fold]) -> None:
        super().__init__(model)
        model.requires_grad_(False)
        self.scorers, self.folds = scorers, folds
        self.has_unused_parameters = True  # the scorers of folds without items in a batch

    def no_weight_decay(self, name: str, param: torch.Tensor) -> bool:
        return False  # the release decays every scorer parameter (the backbone is frozen)

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        device = next(self.scorers.parameters()).device
        total: dict[str, torch.Tensor] = {}
        for k in sorted(set(batch["fold"])):
            rows = [i for i, f in enumerate(batch["fold"]) if f == k]
            feats = [batch["features"][i][j].to(device) for i in rows for j in range(3)]
            segs = [batch["segments"][i] for i in rows for _ in range(3)]
            scorer = cast(QFVSScorer, self.scorers[self.folds[k].test])
            logits = scorer.score(feats, segs)  # 3 per row: concept1, concept2, oracle
            for r, i in enumerate(rows):
                out = summary_bce_losses(
                    dict(zip(TARGETS, logits[3 * r : 3 * r + 3])),
                    {t: batch["targets"][i][j].to(device) for j, t in enumerate(TARGETS)},
                )
                for key, value in out.items():
                    total[key] = total[key] + value if key in total else value
        return total


class QFVSEvaluator:
    """``evaluator(model)``: every video scored by the scorer of the fold that held it out; P / R / F1 (percent)."""

    def __init__(self, qset: QFVSSet, cfg: QFVSEval, scorers: dict[str, QFVSScorer], dist: DistInfo) -> None:
        self.qset, self.cfg, self.scorers, self.dist = qset, cfg, scorers, dist
        missing = [f.test for f in qset.folds if f.test not in scorers]
        if missing:
            raise CheckpointError(f"no QFVS scorer for video(s) {missing} (scorers for {sorted(scorers)})")

    @torch.no_grad()
    def scores(self) -> list[tuple[str, np.ndarray, tuple[int, ...]]]:
        """``(video, shot scores (S,), oracle shots)`` per query of every test video."""
        out = []
        for fold in self.qset.folds:
            scorer = self.scorers[fold.test]
            was_training = scorer.training
            scorer.eval()
            device = next(scorer.parameters()).device
            try:
                for q in self.qset.queries[fold.test]:
                    feature = self.qset.features(q)[2].to(device)
                    logits = scorer.score([feature], [self.qset.segments[fold.test]])[0]
                    out.append((fold.test, logits.float().cpu().numpy(), q.oracle))
            finally:
                scorer.train(was_training)
        return out

    def __call__(self, model: Any = None) -> dict[str, Any]:
        if not self.dist.is_main:
            return {}
        queries = self.scores()
        metrics: dict[str, Any] = qfvs_metrics(queries, self.qset.concepts, self.cfg.top_fraction).to_dict()
        if self.cfg.random_repeats:
            runs = []
            for r in range(self.cfg.random_repeats):
                rng = np.random.default_rng([self.cfg.seed, r])
                random = [(v, rng.random(len(s)), gt) for v, s, gt in queries]
                runs.append(qfvs_metrics(random, self.qset.concepts, self.cfg.top_fraction).to_dict())
            metrics.update({f"random/{k}": float(np.mean([m[k] for m in runs])) for k in runs[0]})
        metrics["queries"] = float(len(queries))
        metrics["videos"] = [f.test for f in self.qset.folds]
        return metrics


def _cache(data: QFVSData, model: Any, tokenizer: Tokenizer, device: torch.device) -> ShotFeatureCache:
    size = model.cfg.video.img_size
    transform = eval_transform(size) if data.crop == "center" else train_transform(size, data.crop_scale, False)
    seed = data.crop_seed if data.crop == "random" else None
    return ShotFeatureCache(model, tokenizer, data.video_root or data.root, transform, device, data.num_frames,
                            data.shot_block, data.max_sequences, seed, data.num_workers)  # fmt: skip


class QFVSTask(Task):
    """Leave-one-video-out scorer training on cached fused shot features, evaluated on each held-out video."""

    name = "qfvs"

    def __init__(self, cfg: QFVSConfig, tokenizer: Tokenizer, dist: DistInfo) -> None:
        check_vocab(tokenizer, cfg.model)
        self.cfg, self.tokenizer, self.dist, self.seed = cfg, tokenizer, dist, cfg.train.seed
        self.batch_size, self.num_workers = cfg.train_data.batch_size, 0
        self.model: Any = None
        self.scorers: nn.ModuleDict | None = None

    @functools.cached_property
    def qset(self) -> QFVSSet:
        assert self.model is not None, "build_module comes first"
        return QFVSSet(self.cfg.data, self.cfg.segments, _cache(self.cfg.data, self.model, self.tokenizer,
                                                                  self.dist.device))  # fmt: skip

    def build_module(self, model) -> QFVSModule:
        self.model = model
        folds = leave_one_out(video_names(self.cfg.data))
        dim = feature_dim(model)
        self.scorers = nn.ModuleDict({f.test: build_scorer(dim, self.cfg.scorer) for f in folds})
        return QFVSModule(model, self.scorers, folds)

    def train_dataset(self) -> TrainingDataset:
        if [f.test for f in self.qset.folds] != list(self.scorers or {}):
            raise DataError("the QFVS videos changed between building the scorers and loading the data")
        return TrainingDataset(QFVSQueries(self.qset), self.seed)

    def collate_fn(self):
        return collate_queries

    def batch_items(self, batch: dict[str, Any]) -> int:
        return len(batch["fold"])

    def head_weights(self) -> dict[str, torch.Tensor]:
        """Every fold's scorer as ``qfvs.<held-out video>.*`` tensors (saved as ``heads.qfvs.*``)."""
        assert self.scorers is not None
        return {f"{HEAD}.{v}.{k}": t for v, s in self.scorers.items() for k, t in s.state_dict().items()}

    def evaluate(self, model, dist: DistInfo) -> dict[str, Any]:
        assert self.scorers is not None
        return QFVSEvaluator(self.qset, self.cfg.eval, dict(self.scorers.items()), dist)(model)  # type: ignore[arg-type]


def scorers_from_checkpoint(model: Any) -> dict[str, QFVSScorer]:
    """The fold scorers stored in the weight file ``model`` was loaded from, by held-out video."""
    state = file_heads(model, HEAD)
    if not state:
        raise CheckpointError(
            "the checkpoint holds no QFVS scorers (heads.qfvs.*): fine-tune with `egovlp finetune qfvs`"
        )
    by_video: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in state.items():
        video, _, name = key.partition(".")
        by_video.setdefault(video, {})[name] = tensor
    return {v: QFVSScorer.from_state_dict(s) for v, s in by_video.items()}


def make_evaluator(cfg: QFVSEvalConfig, tokenizer: Tokenizer, model: Any, dist: DistInfo, progress: bool = False):
    """The registry's evaluator of ``egovlp evaluate qfvs``."""
    check_vocab(tokenizer, model.cfg)
    scorers = {v: s.to(dist.device) for v, s in scorers_from_checkpoint(model).items()}
    qset = QFVSSet(cfg.data, cfg.segments, _cache(cfg.data, model, tokenizer, dist.device))
    return QFVSEvaluator(qset, cfg.eval, scorers, dist)


def format_table(m: dict[str, Any]) -> str:
    """P / R / F1 (%) per held-out video and their mean, and the random-score baseline."""
    videos = m.get("videos") or sorted({k.split("/")[0] for k in m if k.endswith("/F1") and "random" not in k})
    lines = [f"QFVS semantic matching (%), leave-one-video-out, {int(m.get('queries', 0))} queries",
             f"{'':22s}{'P':>10s}{'R':>10s}{'F1':>10s}"]  # fmt: skip
    for v in videos:
        lines.append(table_row(v, [m[f"{v}/P"], m[f"{v}/R"], m[f"{v}/F1"]]))
    lines.append(table_row("mean", [m["P"], m["R"], m["F1"]]))
    if "random/F1" in m:
        lines.append(table_row("random scores (mean)", [m["random/P"], m["random/R"], m["random/F1"]]))
    return "\n".join(lines)


_PATHS = ("data.root", "data.tokenizer")
register_task(
    TaskSpec(
        name="qfvs",
        description="query-focused video summarisation (UT-Egocentric): fusion shot features + scorer; F1",
        eval_schema=QFVSEvalConfig,
        make_evaluator=make_evaluator,
        format_table=format_table,
        required=_PATHS,
        finetune_schema=QFVSConfig,
        make_task=QFVSTask,
        finetune_required=_PATHS,
    )
)

__all__ = ["Fold", "QFVSConfig", "QFVSEvalConfig", "QFVSModule", "QFVSSet", "QFVSTask", "leave_one_out"]
