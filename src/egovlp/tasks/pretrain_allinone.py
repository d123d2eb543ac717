"""All-in-one pre-training on EgoClip: MLM + VTM (+ optional video-text contrastive), on the shared loop.

Per iteration (families.md §4c), with the release's weights as on/off flags and egovlp's as true weights::

    MLM: joint pass of (video, masked text); cross-entropy at the masked positions of the frame-averaged text states
    VTM: joint pass of (video', text) where half of the rows (a random half) get another clip of the local batch;
         cross-entropy of itm_score(pooled [CLS]) against match (1) / no match (0)
    VTC: (needs model.embed_dim > 0) symmetric InfoNCE ("NormSoftmax", temperature 0.05) between the text-only
         [CLS] and the video-only mean frame CLS, projected, over the all-gathered batch
    loss = mlm_weight * MLM + vtm_weight * VTM + vtc_weight * VTC

Differences from the release, on purpose: VTM negatives are other clips of the same batch (the release loads one
more random clip per sample); token-level MLM masking (the release masks whole words); no WPA term (its 0.1-weighted
optimal-transport alignment). Patch orders are shuffled per frame as the release does in training, from a seeded
generator saved in checkpoints (``loss.shuffle_patches``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from egovlp.config import at_least, greater_than, one_of, rule
from egovlp.data.collate import EgoClipCollate
from egovlp.data.tokenizer import Tokenizer
from egovlp.errors import ConfigError
from egovlp.losses import EgoNCELoss, GatherGrad
from egovlp.models.allinone_config import AllInOneConfig
from egovlp.models.allinone_model import AllInOne
from egovlp.models.factory import InitConfig
from egovlp.models.registry import get_model_config
from egovlp.tasks.mcq import EgoMCQConfig, EgoMCQEvaluator
from egovlp.tasks.shared import check_crop_scale, check_vocab, egoclip_training_clips
from egovlp.train.datasets import CountingCollate, TrainingDataset
from egovlp.train.distributed import DistInfo
from egovlp.train.loop import TrainConfig
from egovlp.train.optim import OptimConfig
from egovlp.train.task import Task, TaskModule

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AioDataConfig:
    video_root: str = ""  # <root>/<video_uid>/<k>.mp4
    metadata: str = ""  # egoclip.csv
    tokenizer: str = ""  # WordPiece folder (vocab.txt, bert-base-uncased for the released models) or tokenizer.json
    chunk_seconds: float = 0.0  # chunk length of the video layout; <= 0: <video_root>/chunks.json, else 600
    num_frames: int = at_least(1, 3)  # THE frame count of the run (release: 3)
    text_max_length: int = at_least(2, 40)  # padded to this length (release: 40 = the text positions)
    hflip: bool = True
    crop_scale: tuple[float, float] = (0.5, 1.0)
    batch_size: int = at_least(2, 32)  # clips per rank per micro-batch (VTM negatives come from the batch: >= 2)
    num_workers: int = at_least(0, 4)
    bad_input: str = one_of(("raise", "skip"), "skip")
    num_verbs: int = at_least(1, 118)
    num_nouns: int = at_least(1, 582)
    max_rows: int = at_least(0, 0)  # read only the first N rows of the metadata (0 = all)

    def check_config(self):
        yield from check_crop_scale(self.crop_scale)


@dataclass(frozen=True)
class AioLossConfig:
    mlm_weight: float = at_least(0, 1.0)
    vtm_weight: float = at_least(0, 1.0)
    vtc_weight: float = at_least(0, 0.0)  # > 0 needs model.embed_dim > 0 (the 512-d projections)
    temperature: float = greater_than(0, 0.05)  # of VTC
    mlm_probability: float = rule(0.15, "must be in (0, 1)", lambda p: 0 < p < 1)
    shuffle_patches: bool = True  # the release's random patch order per frame in training (seeded, resumable)
    gather_grad: str = one_of(("full", "local"), "full")  # VTC over the gathered batch (see egovlp.losses.gather)


@dataclass(frozen=True)
class AllInOnePretrainConfig:
    model: AllInOneConfig = field(default_factory=lambda: get_model_config("allinone-base"))
    init: InitConfig = field(default_factory=InitConfig)
    data: AioDataConfig = field(default_factory=AioDataConfig)
    loss: AioLossConfig = field(default_factory=AioLossConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-4, new_param_lr_mult=1.0))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(output_dir="runs/pretrain_allinone", epochs=10))
    egomcq: EgoMCQConfig = field(default_factory=lambda: EgoMCQConfig(num_frames=3))  # validation ("" = none)

    def check_config(self):
        if self.loss.vtc_weight > 0 and not self.model.has_projections:
            yield "loss.vtc_weight", "> 0 needs the contrastive projections: set model.embed_dim (release: 512)"
        if self.loss.mlm_weight > 0 and not self.model.mlm_head:
            yield "loss.mlm_weight", "> 0 needs model.mlm_head=true"
        if self.loss.vtm_weight > 0 and not self.model.vtm_head:
            yield "loss.vtm_weight", "> 0 needs model.vtm_head=true"
        if self.data.text_max_length > self.model.text.max_positions:
            yield "data.text_max_length", f"must be <= model.text.max_positions={self.model.text.max_positions}"


def vtm_pairs(batch_size: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """``(video_index (B,), labels (B,))``: a random half of the rows (``B // 2``, rounded down) keep their own clip
    (label 1), the others get another clip of the batch (label 0): ``(i + s) % B`` with ``s`` in ``1..B-1``."""
    if batch_size < 2:
        raise ValueError("VTM negatives come from the batch: it needs at least 2 clips")
    labels = torch.zeros(batch_size, dtype=torch.long)
    labels[torch.randperm(batch_size, generator=generator)[: batch_size // 2]] = 1
    shift = torch.randint(1, batch_size, (batch_size,), generator=generator)
    index = torch.arange(batch_size)
    return torch.where(labels.bool(), index, (index + shift) % batch_size), labels


class AllInOnePretrainModule(TaskModule):
    """``forward(batch)`` -> ``{"loss", "mlm", "vtm", "vtc"}`` (the active terms) for one local batch.

    The batch holds ``video (B, T, 3, H, W)``, ``input_ids`` / ``attention_mask`` ``(B, L)`` and, for MLM, the
    masked ``mlm_input_ids`` / ``mlm_labels`` (masked per item by the data pipeline).
    """

    model: AllInOne

    def __init__(self, model: AllInOne, cfg: AioLossConfig, seed: int = 0) -> None:
        super().__init__(model)
        self.cfg = cfg
        self.do_mlm, self.do_vtm, self.do_vtc = cfg.mlm_weight > 0, cfg.vtm_weight > 0, cfg.vtc_weight > 0
        if not (self.do_mlm or self.do_vtm or self.do_vtc):
            raise ConfigError("every All-in-one loss weight is 0: nothing to train")
        self.vtc = EgoNCELoss(cfg.temperature, "none", GatherGrad(cfg.gather_grad))
        self.generator = torch.Generator().manual_seed(seed)  # VTM pairs (saved in checkpoints)
        self.patch_generator = torch.Generator().manual_seed(seed + 1)  # patch orders (saved in checkpoints)
        c = model.cfg  # parameters without a gradient in an ablation (the pooler feeds only VTM): DDP must know
        self.has_unused_parameters = (
            not self.do_vtm or (c.mlm_head and not self.do_mlm) or (c.has_projections and not self.do_vtc)
        )

    def _patches(self) -> torch.Generator | None:
        return self.patch_generator if self.cfg.shuffle_patches else None

    def forward(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        model, cfg = self.model, self.cfg
        video, ids, mask = batch["video"], batch["input_ids"], batch["attention_mask"]
        out: dict[str, Tensor] = {}
        if self.do_mlm:
            if "mlm_input_ids" not in batch:
                raise ValueError("MLM needs batch['mlm_input_ids'] / ['mlm_labels'] (EgoClipCollate(mlm_probability))")
            labels = batch["mlm_labels"]
            joint = model.joint(video, batch["mlm_input_ids"], mask, self._patches())
            picked = labels != -100
            logits = model.mlm_logits(joint.text_feats[picked])  # only the masked positions: (M, vocab)
            # a batch without a masked token still gives a 0 with a graph, so DDP sees every head parameter
            out["mlm"] = F.cross_entropy(logits, labels[picked]) if picked.any() else logits.sum() * 0.0
        if self.do_vtm:
            index, labels = vtm_pairs(video.shape[0], self.generator)
            joint = model.joint(video[index.to(video.device)], ids, mask, self._patches())
            out["vtm"] = F.cross_entropy(model.vtm_logits(joint), labels.to(video.device))
        if self.do_vtc:
            t = model.encode_text(ids, mask, normalize=True)
            v = F.normalize(model.vid_proj(model.video_features(video, self._patches())[:, 0]), dim=-1)
            out["vtc"] = self.vtc(t, v).loss
        weights = {"mlm": cfg.mlm_weight, "vtm": cfg.vtm_weight, "vtc": cfg.vtc_weight}
        total = sum(weights[k] * v for k, v in out.items())
        return {"loss": torch.as_tensor(total), **out}


class AllInOnePretrainTask(Task):
    """EgoClip pre-training of an All-in-one model with EgoMCQ validation (the VTM score as ``fusion``)."""

    name = "pretrain_allinone"

    def __init__(self, cfg: AllInOnePretrainConfig, tokenizer: Tokenizer, dist: DistInfo) -> None:
        self.cfg, self.tokenizer, self.dist, self.seed = cfg, tokenizer, dist, cfg.train.seed
        self.batch_size, self.num_workers = cfg.data.batch_size, cfg.data.num_workers
        check_vocab(tokenizer, cfg.model)  # type: ignore[arg-type]  # reads text.vocab_size / pad_token_id
        self.module: AllInOnePretrainModule | None = None
        self._evaluator: EgoMCQEvaluator | None = None
        mcq = cfg.egomcq
        if mcq.metadata:
            if not Path(mcq.video_root).is_dir():
                raise ConfigError(f"egomcq.video_root={mcq.video_root!r}: no such folder (the EgoMCQ clips)")
            self._evaluator = EgoMCQEvaluator(mcq, tokenizer, cfg.model.video.img_size, dist, cfg.train.progress)

    def train_dataset(self) -> TrainingDataset:
        d = self.cfg.data
        dataset = egoclip_training_clips(d, self.cfg.model.video.img_size)
        return TrainingDataset(dataset, self.seed)

    def collate_fn(self):
        loss = self.cfg.loss
        mlm = loss.mlm_probability if loss.mlm_weight > 0 else None
        return CountingCollate(EgoClipCollate(self.tokenizer, self.cfg.data.text_max_length, "max_length", mlm))

    def build_module(self, model: nn.Module) -> AllInOnePretrainModule:
        if not isinstance(model, AllInOne):
            raise ConfigError(f"All-in-one pre-training needs an allinone-family model, got {type(model).__name__}")
        self.module = AllInOnePretrainModule(model, self.cfg.loss, self.seed * 1000 + self.dist.rank)
        return self.module

    def evaluate(self, model: nn.Module, dist: DistInfo) -> dict[str, float]:
        if self._evaluator is None:
            return {}
        return {f"egomcq/{k}": v for k, v in self._evaluator(model).items()}

    def state_dict(self) -> dict:
        m = self.module
        return {"generator": m.generator.get_state(), "patches": m.patch_generator.get_state()} if m else {}

    def load_state_dict(self, state: dict) -> None:
        if self.module is not None and "generator" in state:
            self.module.generator.set_state(state["generator"])
            self.module.patch_generator.set_state(state["patches"])
