"""EgoTaskQA question answering with the fusion encoder and the release's answer head (downstream.md §1).

Model: the fusion encoder with the question as text (lower-cased, up to 30 tokens) over F frames (16 by default,
any count) -> the fused video CLS after the fusion-mode norm -> :class:`~egovlp.models.answer_head.AnswerHead`
(``projector_1`` -> ReLU -> Dropout(0.2) -> ``projector_2``) -> answer logits; cross-entropy. ``head.mode=dual`` is
the baseline that shows what fusion buys: the same head on the dual video and text CLS states concatenated (no
cross-attention anywhere).

Where egovlp departs from the release, and the switch that restores the release's behaviour:

- evaluation reads the middles of F equal segments (deterministic); the release samples frames at random also at
  validation and test (``eval.frame_sample=random``, repeatable with ``eval.seed``);
- model selection uses val: every evaluation during fine-tuning runs on ``eval.split`` (``val``) and the best
  ``All`` accuracy is written to ``<output_dir>/egotaskqa_best.safetensors``; the release keeps the checkpoint with
  the best TEST accuracy (``eval.split=test`` reproduces that; do not report such numbers as test results);
- training uses the training transform (random resized crop + flip) with ``train_data.transform=train``; the
  release applies the test transform at training time, which is the default here (``train_data.transform=eval``).

Weight files carry the head as ``heads.egotaskqa.projector_{1,2}.{weight,bias}`` beside the model
(:mod:`egovlp.models.weights`); ``egovlp convert`` maps a release EgoTaskQA checkpoint's ``projector_*`` keys there,
so ``egovlp evaluate egotaskqa --checkpoint converted.safetensors`` scores it. The head's input size tells its mode
(``Dv``: fusion, ``Dv + Dt``: dual).
"""

from __future__ import annotations

import collections
import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from egovlp.config import at_least, greater_than, one_of
from egovlp.data.egotaskqa import EgoTaskQASplit, QARecord, load_egotaskqa
from egovlp.data.egotaskqa_dataset import EgoTaskQADataset
from egovlp.data.epic_mir_dataset import ClipCollate
from egovlp.data.tokenizer import Tokenizer
from egovlp.data.transforms import eval_transform, train_transform
from egovlp.errors import CheckpointError, ConfigError, DataError
from egovlp.metrics import egotaskqa_accuracy
from egovlp.models.answer_head import AnswerHead
from egovlp.models.config import ModelConfig
from egovlp.models.factory import InitConfig
from egovlp.models.registry import get_model_config
from egovlp.models.weights import file_heads, save_weights
from egovlp.tasks.registry import TaskSpec, register_task
from egovlp.tasks.shared import (
    check_crop_scale,
    check_finite,
    check_vocab,
    first_items,
    gather_shards,
    sharded_loader,
)
from egovlp.train.datasets import CountingCollate, TrainingDataset
from egovlp.train.distributed import DistInfo
from egovlp.train.loop import TrainConfig
from egovlp.train.optim import OptimConfig
from egovlp.train.task import Task, TaskModule

log = logging.getLogger(__name__)

HEAD = "egotaskqa"  # the head's name in weight files: heads.egotaskqa.*
BEST_FILE = "egotaskqa_best.safetensors"


@dataclass(frozen=True)
class EgoTaskQAData:
    split_dir: str = ""  # Data/qa/direct or Data/qa/indirect: formatted_{train,val,test}_qas_encode.json
    video_root: str = ""  # the folder holding qa_videos/<interval>.mp4
    answer_set: str = ""  # default: answer_set.txt in split_dir or its parent
    tokenizer: str = ""  # roberta-base tokenizer directory
    num_frames: int = at_least(1, 16)  # release: 16 (the model runs at it)
    text_max_length: int = at_least(2, 30)  # release: questions truncated at 30 tokens


@dataclass(frozen=True)
class EgoTaskQAEval:
    split: str = one_of(("val", "test", "train"), "val")  # fine-tuning selects on val (the release: on test)
    batch_size: int = at_least(1, 8)
    num_workers: int = at_least(0, 4)
    bad_input: str = one_of(("raise", "skip"), "raise")  # skip: skipped questions are left out, and counted
    max_questions: int = at_least(0, 0)  # evaluate only the first N questions (0 = all)
    frame_sample: str = one_of(("middle", "random"), "middle")  # random: the release's non-deterministic frames
    seed: int = 0  # frames of frame_sample=random come from (seed, question)


@dataclass(frozen=True)
class EgoTaskQAHead:
    mode: str = one_of(("fusion", "dual"), "fusion")  # dual: the baseline on concatenated dual CLS states
    dropout: float = 0.2  # release


@dataclass(frozen=True)
class EgoTaskQATrainData:
    batch_size: int = at_least(1, 8)  # questions per rank (release: 8 per GPU)
    num_workers: int = at_least(0, 4)
    transform: str = one_of(("eval", "train"), "eval")  # eval: the release's test transform at training time
    crop_scale: tuple[float, float] = (0.5, 1.0)  # transform=train: RandomResizedCrop area range
    hflip: bool = True  # transform=train
    bad_input: str = one_of(("raise", "skip"), "skip")

    def check_config(self):
        yield from check_crop_scale(self.crop_scale)


@dataclass(frozen=True)
class EgoTaskQAEvalConfig:
    """``egovlp evaluate egotaskqa``: model and answer head come from ``--checkpoint``."""

    data: EgoTaskQAData = field(default_factory=EgoTaskQAData)
    eval: EgoTaskQAEval = field(default_factory=EgoTaskQAEval)
    device: str = "auto"


@dataclass(frozen=True)
class EgoTaskQALoss:
    label_smoothing: float = greater_than(-1e-9, 0.0)  # release: plain cross-entropy


@dataclass(frozen=True)
class EgoTaskQAConfig:
    """``egovlp finetune egotaskqa`` (release: AdamW lr 2e-4 direct / 1e-4 indirect, weight decay 0.01, cosine with
    10 % warm-up, 36 epochs, batch 8 per GPU)."""

    model: ModelConfig = field(default_factory=lambda: get_model_config("egovlpv2-base"))
    init: InitConfig = field(default_factory=InitConfig)
    data: EgoTaskQAData = field(default_factory=EgoTaskQAData)
    train_data: EgoTaskQATrainData = field(default_factory=EgoTaskQATrainData)
    eval: EgoTaskQAEval = field(default_factory=EgoTaskQAEval)
    head: EgoTaskQAHead = field(default_factory=EgoTaskQAHead)
    loss: EgoTaskQALoss = field(default_factory=EgoTaskQALoss)
    optim: OptimConfig = field(
        default_factory=lambda: OptimConfig(lr=2e-4, weight_decay=0.01, new_param_lr_mult=1.0, warmup_fraction=0.1)
    )
    train: TrainConfig = field(default_factory=lambda: TrainConfig(output_dir="runs/egotaskqa", epochs=36))

    def check_config(self):
        if self.head.mode == "fusion" and not self.model.has_fusion:
            yield "head.mode", f"fusion needs a model with fusion layers ({self.model.arch} has none); use dual"


def load_split(data: EgoTaskQAData, split: str) -> EgoTaskQASplit:
    return load_egotaskqa(data.split_dir, split, data.answer_set or None)


def head_input_dim(model_cfg: ModelConfig, mode: str) -> int:
    """The answer head's input size: ``Dv`` (fused video CLS) or ``Dv + Dt`` (dual CLS states concatenated)."""
    return model_cfg.video.width + (model_cfg.text.width if mode == "dual" else 0)


def qa_features(model, mode: str, video: torch.Tensor, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The answer head's input ``(B, Dv)`` (fusion: fused video CLS) or ``(B, Dv + Dt)`` (dual) for a batch."""
    if mode == "fusion":
        fused = model.fuse(video, input_ids, mask, video_out="cls")
        return fused.video[:, 0]
    return torch.cat([model.encode_video(video, project=False), model.encode_text(input_ids, mask, project=False)], -1)


def head_from_checkpoint(model) -> tuple[AnswerHead, str]:
    """The answer head stored in the weight file ``model`` was loaded from (``model.head_weights``) and its mode."""
    state = file_heads(model, HEAD)
    if not state:
        raise CheckpointError(
            "the checkpoint holds no EgoTaskQA answer head (heads.egotaskqa.*): fine-tune one with `egovlp finetune "
            "egotaskqa`, or convert a release EgoTaskQA checkpoint with `egovlp convert`"
        )
    needed = {f"{p}.{k}" for p in ("projector_1", "projector_2") for k in ("weight", "bias")}
    if set(state) != needed:
        raise CheckpointError(f"EgoTaskQA head: expected tensors {sorted(needed)}, got {sorted(state)}")
    in_dim, answers = state["projector_1.weight"].shape[1], state["projector_1.weight"].shape[0]
    modes = {head_input_dim(model.cfg, m): m for m in ("fusion", "dual")}
    if in_dim not in modes:
        raise CheckpointError(f"EgoTaskQA head: input size {in_dim} fits neither mode of the model ({modes})")
    head = AnswerHead(in_dim, answers)
    head.load_state_dict(state)
    return head, modes[in_dim]


class EgoTaskQAEvaluator:
    """Loads an EgoTaskQA split once; ``evaluator(model)`` gives its accuracies on rank 0 (``{}`` on other ranks)."""

    def __init__(
        self,
        data: EgoTaskQAData,
        cfg: EgoTaskQAEval,
        tokenizer: Tokenizer,
        img_size: int,
        dist: DistInfo,
        head: AnswerHead,
        mode: str,
        progress: bool = False,
    ) -> None:
        self.data, self.cfg, self.dist, self.head, self.mode = data, cfg, dist, head, mode
        self.progress = "EgoTaskQA questions" if progress and dist.is_main else ""
        self.split = load_split(data, cfg.split)
        try:  # for the answer-prior baseline row
            self.train_records: tuple[QARecord, ...] = load_split(data, "train").records
        except DataError:
            self.train_records = ()
        if head.num_answers != self.split.num_answers:
            raise ConfigError(
                f"the answer head has {head.num_answers} answers but {self.split.path}'s answer set has "
                f"{self.split.num_answers}"
            )
        sample = "uniform" if cfg.frame_sample == "middle" else "rand"
        dataset = EgoTaskQADataset(
            self.split, data.video_root, data.num_frames, eval_transform(img_size), sample, cfg.bad_input, cfg.seed
        )
        collate = ClipCollate(tokenizer, data.text_max_length)
        self.loader = sharded_loader(first_items(dataset, cfg.max_questions), cfg.batch_size, cfg.num_workers, dist,
                                     collate)  # fmt: skip

    @torch.no_grad()
    def __call__(self, model) -> dict[str, Any]:
        was_training = self.head.training
        self.head.eval()
        try:
            with model.frames(self.data.num_frames):
                local = self._predict(model)
        finally:
            self.head.train(was_training)
        merged = gather_shards(local, self.dist)
        return {} if merged is None else self.metrics(merged)

    def _predict(self, model) -> dict[str, Any]:
        parts: dict[str, list[Any]] = {"index": [], "logits": []}
        device, skipped = self.dist.device, 0
        batches: Any = self.loader
        if self.progress:
            from tqdm.auto import tqdm

            batches = tqdm(self.loader, desc=self.progress, leave=False, dynamic_ncols=True)
        for batch in batches:
            skipped += int(batch["num_skipped"])
            if "video" not in batch:
                continue
            x = qa_features(model, self.mode, batch["video"].to(device), batch["input_ids"].to(device),
                            batch["attention_mask"].to(device))  # fmt: skip
            logits = self.head(x).float().cpu().numpy()
            check_finite(logits, f"EgoTaskQA logits of questions {batch['index'].tolist()}")
            parts["logits"].append(logits)
            parts["index"].append(batch["index"].numpy())
        out: dict[str, Any] = {k: np.concatenate(v) if v else np.zeros((0,)) for k, v in parts.items()}
        out["skipped"] = skipped
        return out

    def metrics(self, merged: dict[str, Any]) -> dict[str, Any]:
        """Accuracy (percent) overall, per type and per reasoning type, with counts; ``None`` for a group without
        questions."""
        if not len(merged["index"]):
            raise DataError(f"EgoTaskQA {self.split.path}: no question could be read ({merged['skipped']} skipped)")
        records = [self.split.records[int(i)] for i in merged["index"]]
        result = egotaskqa_accuracy(
            merged["logits"].reshape(len(records), -1),
            [r.answer_id for r in records],
            [r.type for r in records],
            [r.reasoning_types for r in records],
            self.split.reasoning_type_names,
        )
        out = {**result.to_dict(), "skipped_questions": merged["skipped"], "mode": self.mode}
        if self.train_records:  # the answer-prior baseline on the same questions, for comparison
            answers, types = [r.answer_id for r in records], [r.type for r in records]
            predicted = answer_prior(self.train_records, records)
            prior = egotaskqa_accuracy(predicted, answers, types, [r.reasoning_types for r in records])
            out.update({f"prior/{k}": v for k, v in prior.to_dict().items() if k in ("open", "binary", "All")})
        return out


def answer_prior(train: Sequence[QARecord], questions: Sequence[QARecord]) -> np.ndarray:
    """The answer-prior baseline: for each question, the most frequent TRAIN answer among train questions of the
    same ``type`` and ``category`` (the whole train split's most frequent answer for an unseen pair; the lowest
    class id on ties). Needs no video: what a model must clearly beat."""
    counts: dict[tuple[str, str], collections.Counter] = collections.defaultdict(collections.Counter)
    for r in train:
        counts[(r.type, r.category)][r.answer_id] += 1
    overall = collections.Counter(r.answer_id for r in train)

    def top(counter: collections.Counter) -> int:
        return min(counter, key=lambda a: (-counter[a], a))

    best = {key: top(c) for key, c in counts.items()}
    fallback = top(overall)
    return np.array([best.get((q.type, q.category), fallback) for q in questions], dtype=np.int64)


class EgoTaskQAModule(TaskModule):
    """``forward(batch)`` -> ``{"loss", "accuracy"}``: cross-entropy of the answer logits (accuracy logged)."""

    def __init__(self, model, head: AnswerHead, mode: str, loss: EgoTaskQALoss) -> None:
        super().__init__(model)
        self.head, self.mode, self.label_smoothing = head, mode, loss.label_smoothing
        self.has_unused_parameters = True  # dual projections / VTM / MLM heads (fusion), fusion layers (dual)

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        x = qa_features(self.model, self.mode, batch["video"], batch["input_ids"], batch["attention_mask"])
        logits = self.head(x)
        loss = F.cross_entropy(logits, batch["target"], label_smoothing=self.label_smoothing)
        accuracy = (logits.detach().argmax(-1) == batch["target"]).float().mean()
        return {"loss": loss, "accuracy": accuracy}


class EgoTaskQATask(Task):
    """EgoTaskQA fine-tuning on the train split, evaluated on ``eval.split`` with the best model kept."""

    name = "egotaskqa"

    def __init__(self, cfg: EgoTaskQAConfig, tokenizer: Tokenizer, dist: DistInfo) -> None:
        check_vocab(tokenizer, cfg.model)
        self.cfg, self.tokenizer, self.dist, self.seed = cfg, tokenizer, dist, cfg.train.seed
        self.batch_size, self.num_workers = cfg.train_data.batch_size, cfg.train_data.num_workers
        self.head: AnswerHead | None = None
        self._evaluator: EgoTaskQAEvaluator | None = None
        self.best: tuple[float, int] | None = None  # (All accuracy, evaluation number)
        self._evaluations = 0

    @functools.cached_property
    def train_split(self) -> EgoTaskQASplit:
        return load_split(self.cfg.data, "train")

    def train_dataset(self) -> TrainingDataset:
        d, t = self.cfg.data, self.cfg.train_data
        size = self.cfg.model.video.img_size
        transform = eval_transform(size) if t.transform == "eval" else train_transform(size, t.crop_scale, t.hflip)
        dataset = EgoTaskQADataset(self.train_split, d.video_root, d.num_frames, transform, "rand", t.bad_input)
        return TrainingDataset(dataset, self.seed)

    def collate_fn(self):
        return CountingCollate(ClipCollate(self.tokenizer, self.cfg.data.text_max_length))

    def build_module(self, model) -> EgoTaskQAModule:
        mode = self.cfg.head.mode
        head = AnswerHead(head_input_dim(self.cfg.model, mode), self.train_split.num_answers, self.cfg.head.dropout)
        start = file_heads(model, HEAD)
        if start and tuple(start["projector_1.weight"].shape) == tuple(head.projector_1.weight.shape):
            head.load_state_dict(start)  # init.checkpoint carried a head of this shape: fine-tune it further
            log.info("EgoTaskQA answer head initialised from init.checkpoint")
        self.head = head
        return EgoTaskQAModule(model, head, mode, self.cfg.loss)

    def head_weights(self) -> dict[str, torch.Tensor]:
        """The answer head as ``egotaskqa.projector_*`` tensors, saved beside the model (``heads.*``)."""
        assert self.head is not None
        return {f"{HEAD}.{k}": v for k, v in self.head.state_dict().items()}

    def evaluate(self, model, dist: DistInfo) -> dict[str, Any]:
        assert self.head is not None
        if self._evaluator is None:
            img = self.cfg.model.video.img_size
            self._evaluator = EgoTaskQAEvaluator(self.cfg.data, self.cfg.eval, self.tokenizer, img, dist, self.head,
                                                 self.cfg.head.mode, self.cfg.train.progress)  # fmt: skip
        metrics = self._evaluator(model)
        self._evaluations += 1
        if dist.is_main and metrics.get("All") is not None:
            if self.best is None or metrics["All"] > self.best[0]:
                self.best = (float(metrics["All"]), self._evaluations)
                path = save_weights(model, f"{self.cfg.train.output_dir}/{BEST_FILE}", heads=self.head_weights())
                log.info("best %s All accuracy so far (%.2f %%): %s", self.cfg.eval.split, metrics["All"], path)
            metrics["best/All"], metrics["best/evaluation"] = self.best
        return metrics

    def state_dict(self) -> dict[str, Any]:
        return {"best": list(self.best) if self.best else [], "evaluations": self._evaluations}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        best = state.get("best") or []
        self.best = (float(best[0]), int(best[1])) if best else None
        self._evaluations = int(state.get("evaluations", 0))


def make_evaluator(cfg: EgoTaskQAEvalConfig, tokenizer: Tokenizer, model: Any, dist: DistInfo, progress=False):
    """The registry's evaluator of ``egovlp evaluate egotaskqa``: the answer head comes from the checkpoint."""
    check_vocab(tokenizer, model.cfg)
    head, mode = head_from_checkpoint(model)
    head = head.to(dist.device)
    log.info("EgoTaskQA answer head from the checkpoint: %s mode, %d answers", mode, head.num_answers)
    img_size = model.cfg.video.img_size
    return EgoTaskQAEvaluator(cfg.data, cfg.eval, tokenizer, img_size, dist, head, mode, progress)


def _cell(m: dict[str, Any], key: str) -> str:
    acc, count = m.get(key), int(m.get(f"{key}/count", 0))
    return f"{'n/a' if acc is None else f'{acc:.2f}':>10s}{count:>8d}"


def format_table(m: dict[str, Any]) -> str:
    """Accuracy (%) and question counts overall, per type and per reasoning type (``n/a``: no question)."""
    lines = [f"EgoTaskQA accuracy (%), {m.get('mode', 'fusion')} head", f"{'':22s}{'accuracy':>10s}{'count':>8s}"]
    for key in ("open", "binary", "All"):
        lines.append(f"{key:22s}{_cell(m, key)}")
    reasoning = [k for k in m if k.startswith("reasoning/") and not k.endswith("/count")]
    for key in reasoning:
        lines.append(f"{key[len('reasoning/') :]:22s}{_cell(m, key)}")
    if "prior/All" in m:
        cells = "".join(f"{m[f'prior/{k}']:10.2f}" if m.get(f"prior/{k}") is not None else f"{'n/a':>10s}"
                        for k in ("open", "binary", "All"))  # fmt: skip
        lines.append(f"{'':22s}{'open':>10s}{'binary':>10s}{'All':>10s}")
        lines.append(f"{'answer prior (train)':22s}{cells}")
    if "best/All" in m:
        lines.append(f"best All so far: {m['best/All']:.2f} at evaluation {int(m['best/evaluation'])} ({BEST_FILE})")
    if m.get("skipped_questions"):
        lines.append(f"skipped questions: {int(m['skipped_questions'])}")
    return "\n".join(lines)


_PATHS = ("data.split_dir", "data.video_root", "data.tokenizer")
register_task(
    TaskSpec(
        name="egotaskqa",
        description="EgoTaskQA question answering: fusion encoder + answer head (or the dual baseline); accuracy",
        eval_schema=EgoTaskQAEvalConfig,
        make_evaluator=make_evaluator,
        format_table=format_table,
        required=_PATHS,
        finetune_schema=EgoTaskQAConfig,
        make_task=EgoTaskQATask,
        finetune_required=_PATHS,
    )
)
