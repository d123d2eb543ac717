"""EgoVLPv2 pre-training on EgoClip: EgoNCE (dual pass) + MLM and VTM (fused passes).

Every iteration, as the release: (i) a dual pass gives EgoNCE over the all-gathered batch; (ii) a fused pass on the
masked narration and its own video gives MLM; (iii) a fused pass on a half-negative batch (hard negatives drawn from
the gathered batch by similarity) gives VTM. Total = egonce_weight * EgoNCE + mlm_weight * MLM + vtm_weight * VTM
(release: 1, 1, 2).

Work that is identical is done once (``loss.share_lower_layers``): both fused passes draw their videos from the batch,
so the unfused lower video blocks (with the fusion-mode CLS token) run once and the VTM pass indexes into them; the
MLM pass skips the last video block (no text state reads it) and the VTM pass computes only the CLS state of the last
video block. ``share_lower_layers=False`` runs the release's three full passes (for comparison; same losses).

That is the ``egovlpv2`` objective; ``loss.objective`` picks another (:mod:`egovlp.tasks.objectives`: EgoNCE,
NormSoftmax, OA-Trans), and ``auto`` the model family's own. The task below holds no per-objective code.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import torch
from torch import Tensor, nn

from egovlp.config import at_least, greater_than, one_of, rule
from egovlp.data.collate import EgoClipCollate
from egovlp.data.tokenizer import Tokenizer
from egovlp.errors import ConfigError
from egovlp.losses import EgoNCELoss, GatherGrad, all_gather_nograd, mlm_loss, sample_vtm_pairs, vtm_loss
from egovlp.losses.egonce import POSITIVE_MODES, Positives
from egovlp.losses.mlm import global_label_count
from egovlp.losses.vtm import RowConvention
from egovlp.models.config import ModelConfig
from egovlp.models.factory import InitConfig
from egovlp.models.model import EgoVLPv2
from egovlp.models.registry import get_model_config
from egovlp.tasks.mcq import EgoMCQConfig, EgoMCQEvaluator
from egovlp.tasks.objectives import OAConfig, Objective, register_objective, resolve_objective
from egovlp.tasks.shared import check_crop_scale, check_vocab, egoclip_training_clips
from egovlp.train.datasets import CountingCollate, TrainingDataset
from egovlp.train.distributed import DistInfo
from egovlp.train.loop import TrainConfig
from egovlp.train.optim import OptimConfig
from egovlp.train.task import Task, TaskModule

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PretrainDataConfig:
    video_root: str = ""  # <root>/<video_uid>/<k>.mp4
    metadata: str = ""  # egoclip.csv
    tokenizer: str = ""  # tokenizer folder: tokenizer.json, vocab.json + merges.txt (BPE) or vocab.txt (WordPiece)
    chunk_seconds: float = 0.0  # chunk length of the video layout; <= 0: <video_root>/chunks.json, else 600
    num_frames: int = at_least(1, 4)  # THE frame count of the run: the model's temporal embedding follows it
    text_max_length: int = at_least(2, 15)
    scene_negatives: bool = True  # one more clip from the same video and 60 s bucket per sample (batch x2)
    hflip: bool = True
    crop_scale: tuple[float, float] = (0.5, 1.0)
    batch_size: int = at_least(1, 32)  # clips per rank per micro-batch, before scene negatives
    num_workers: int = at_least(0, 4)
    bad_input: str = one_of(("raise", "skip"), "skip")  # "skip": replace, count and log
    num_verbs: int = at_least(1, 118)
    num_nouns: int = at_least(1, 582)
    max_rows: int = at_least(0, 0)  # read only the first N rows of the metadata (0 = all)

    def check_config(self):
        yield from check_crop_scale(self.crop_scale)


@dataclass(frozen=True)
class LossConfig:
    objective: str = "auto"  # auto: the model family's own (egovlp.tasks.objectives): egovlpv2 | egonce | normsoftmax
    temperature: float = greater_than(0, 0.05)
    positives: str = one_of(POSITIVE_MODES, "verb_and_noun")  # EgoNCE positives (none = InfoNCE)
    egonce_weight: float = at_least(0, 1.0)
    mlm_weight: float = at_least(0, 1.0)
    vtm_weight: float = at_least(0, 2.0)
    mlm_probability: float = rule(0.15, "must be in (0, 1)", lambda p: 0 < p < 1)
    vtm_row_convention: str = one_of(("albef", "release"), "albef")  # see egovlp.losses.vtm
    # fraction of VTM negatives drawn uniformly from the batch instead of by similarity (release: 0, all hard)
    vtm_random_negatives: float = rule(0.0, "must be in [0, 1]", lambda f: 0 <= f <= 1)
    gather_grad: str = one_of(("full", "local"), "full")  # full: exact full-batch gradient | local: the release's
    share_lower_layers: bool = True  # compute identical lower-layer work once (False: three full passes)


@dataclass(frozen=True)
class PretrainConfig:
    model: ModelConfig = field(default_factory=lambda: get_model_config("egovlpv2-base"))
    init: InitConfig = field(default_factory=InitConfig)
    data: PretrainDataConfig = field(default_factory=PretrainDataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(output_dir="runs/pretrain", epochs=20))
    egomcq: EgoMCQConfig = field(default_factory=EgoMCQConfig)  # validation ("" metadata = none)
    oa: OAConfig = field(default_factory=OAConfig)  # object streams of loss.objective=oa_trans


class PretrainModule(TaskModule):
    model: EgoVLPv2

    """``forward(batch)`` -> ``{"loss", "egonce", "mlm", "vtm"}`` for one (local) batch.

    The batch holds ``video (B, F, 3, H, W)``, ``input_ids`` / ``attention_mask`` ``(B, L)``, ``verb`` / ``noun``
    multi-hots and, for MLM, the masked ``mlm_input_ids`` / ``mlm_labels`` ``(B, L)`` (masked per item by the data
    pipeline, :func:`egovlp.data.collate.mask_rows`). ``dist`` gives this process's rank and the world size.
    """

    def __init__(
        self, model: EgoVLPv2, cfg: LossConfig, tokenizer: Tokenizer, seed: int = 0, dist: DistInfo | None = None
    ) -> None:
        super().__init__(model)
        self.cfg, self.tokenizer = cfg, tokenizer
        self.rank, self.world = (dist.rank, dist.world_size) if dist is not None else (0, 1)
        self.gather_grad = GatherGrad(cfg.gather_grad)
        self.egonce = EgoNCELoss(cfg.temperature, cast(Positives, cfg.positives), self.gather_grad)
        self.do_mlm = model.cfg.has_fusion and cfg.mlm_weight > 0
        self.do_vtm = model.cfg.has_fusion and cfg.vtm_weight > 0
        if (self.do_mlm and not model.cfg.mlm_head) or (self.do_vtm and not model.cfg.vtm_head):
            raise ConfigError("loss.mlm_weight / loss.vtm_weight > 0 need the model's MLM / VTM heads")
        # parameters that get no gradient in an ablation (e.g. the MLM head with mlm_weight=0): DDP must know
        self.has_unused_parameters = model.cfg.has_fusion and not (self.do_mlm and self.do_vtm)
        self.generator = torch.Generator().manual_seed(seed)  # VTM negatives (saved in checkpoints)

    def forward(self, batch: dict) -> dict[str, Tensor]:
        model, cfg = self.model, self.cfg
        video, ids, mask = batch["video"], batch["input_ids"], batch["attention_mask"]
        if cfg.share_lower_layers:
            v = model.encode_video(video)
        else:  # the release's full dual pass (every output token of the last block)
            vm = model.video_model
            v = model.vid_proj(vm.norm(vm.forward_features(video))[:, 0])
        t = model.encode_text(ids, mask)
        nce = self.egonce(t, v, batch.get("verb"), batch.get("noun"))
        out = {"egonce": nce.loss}
        if self.do_mlm or self.do_vtm:
            out.update(self._fused_losses(batch, nce))
        total = cfg.egonce_weight * out["egonce"]
        total = total + cfg.mlm_weight * out.get("mlm", 0.0) + cfg.vtm_weight * out.get("vtm", 0.0)
        return {"loss": total, **out}

    def _fused_losses(self, batch: dict, nce) -> dict[str, Tensor]:
        video, ids, mask = batch["video"], batch["input_ids"], batch["attention_mask"]
        model, cfg, share = self.model, self.cfg, self.cfg.share_lower_layers
        rank, world = self.rank, self.world
        frames = video.shape[1]
        lower = model.video_lower(video) if share else None  # (B, N, D): shared by the MLM and VTM passes
        out = {}
        if self.do_mlm:
            if "mlm_input_ids" not in batch:
                raise ValueError("MLM needs batch['mlm_input_ids'] / ['mlm_labels'] (EgoClipCollate(mlm_probability))")
            mlm_ids, labels = batch["mlm_input_ids"], batch["mlm_labels"]
            if share:  # the last video block is skipped: no text state reads its output
                assert lower is not None
                fused = model.fuse_upper(lower, model.text_lower(mlm_ids, mask), mask, frames, video_out="none")
            else:
                fused = model.fuse(video, mlm_ids, mask)
            count = global_label_count(labels) if world > 1 else None
            out["mlm"] = mlm_loss(model.mlm_logits(fused), labels, world, count)
        if self.do_vtm:
            pairs = sample_vtm_pairs(
                nce.similarity, nce.positive_mask, rank, video.shape[0], cfg.temperature, self.generator,
                cast(RowConvention, cfg.vtm_row_convention), cfg.vtm_random_negatives,
            )  # fmt: skip
            text_ids, text_mask = all_gather_nograd(ids)[pairs.text_index], all_gather_nograd(mask)[pairs.text_index]
            if share:
                assert lower is not None
                vtm_lower = self._pick_videos(lower, video, pairs.video_index, model.video_lower)
                fused = model.fuse_upper(vtm_lower, model.text_lower(text_ids, text_mask), text_mask, frames, "cls")
            else:
                fused = model.fuse(self._pick_videos(video, video, pairs.video_index), text_ids, text_mask)
            out["vtm"] = vtm_loss(model.vtm_logits(fused), pairs.labels)
        if self.gather_grad is GatherGrad.LOCAL and world > 1:
            # the release gathers MLM/VTM logits with a local-slice backward too: every term's gradient is 1/W
            out = {k: v / world for k, v in out.items()}
        return out

    def _pick_videos(self, local: Tensor, video: Tensor, index: Tensor, encode=None) -> Tensor:
        """Rows ``index`` (global) of the gathered batch, from ``local`` (this rank's rows, e.g. lower-layer states).

        Rows owned by other ranks are rebuilt from their raw frames (gathered without gradient, as the release
        gathers videos) and passed through ``encode`` (e.g. ``video_lower``); local rows keep their graph.
        """
        rank, world = self.rank, self.world
        b = video.shape[0]
        pos = index - rank * b
        is_local = (pos >= 0) & (pos < b)
        picked = local[pos.clamp(0, b - 1)]
        if world > 1:  # every rank joins the gather, even if all of its picks are local
            remote = all_gather_nograd(video)[index[~is_local]]
            if remote.shape[0]:
                rows = (~is_local).nonzero(as_tuple=True)[0]
                picked = picked.index_put((rows,), encode(remote) if encode is not None else remote)
        return picked


class PretrainTask(Task):
    """EgoClip pre-training with EgoMCQ validation."""

    name = "pretrain"

    def __init__(self, cfg: PretrainConfig, tokenizer: Tokenizer, dist: DistInfo) -> None:
        self.cfg, self.tokenizer, self.dist, self.seed = cfg, tokenizer, dist, cfg.train.seed
        self.batch_size, self.num_workers = cfg.data.batch_size, cfg.data.num_workers
        check_vocab(tokenizer, cfg.model)
        self.objective: Objective = resolve_objective(cfg.loss.objective, cfg.model)
        self.module: TaskModule | None = None
        self._evaluator: EgoMCQEvaluator | None = None
        mcq = cfg.egomcq
        if mcq.metadata:  # read the validation set now: a bad path fails at start, not after the first steps
            if not Path(mcq.video_root).is_dir():
                raise ConfigError(f"egomcq.video_root={mcq.video_root!r}: no such folder (the EgoMCQ clips)")
            size = cfg.model.video.img_size
            self._evaluator = EgoMCQEvaluator(mcq, tokenizer, size, dist, cfg.train.progress)

    def train_dataset(self) -> TrainingDataset:
        d = self.cfg.data
        dataset = egoclip_training_clips(d, self.cfg.model.video.img_size, scene_negatives=d.scene_negatives)
        wrap = self.objective.wrap_dataset
        return TrainingDataset(wrap(dataset, self.cfg) if wrap is not None else dataset, self.seed)

    def collate_fn(self):
        loss, fused = self.cfg.loss, self.cfg.model.has_fusion
        use_mlm = self.objective.uses_mlm and fused and loss.mlm_weight > 0
        mlm = loss.mlm_probability if use_mlm else None  # masked per item (mlm_seed)
        collate = EgoClipCollate(self.tokenizer, self.cfg.data.text_max_length, "max_length", mlm)
        wrap = self.objective.wrap_collate
        return CountingCollate(wrap(collate, self.cfg, self.tokenizer) if wrap is not None else collate)

    def build_module(self, model: nn.Module) -> TaskModule:
        seed = self.seed * 1000 + self.dist.rank
        self.module = self.objective.build_module(model, self.cfg, self.tokenizer, seed, self.dist)
        return self.module

    def evaluate(self, model: nn.Module, dist: DistInfo) -> dict[str, float]:
        mcq = self.cfg.egomcq
        if not mcq.metadata:
            return {}
        assert self._evaluator is not None  # built in __init__
        return {f"egomcq/{k}": v for k, v in self._evaluator(model).items()}

    def state_dict(self) -> dict:
        return {"generator": self.module.generator.get_state()} if isinstance(self.module, PretrainModule) else {}

    def load_state_dict(self, state: dict) -> None:
        if "generator" in state and isinstance(self.module, PretrainModule):
            self.module.generator.set_state(state["generator"])


def _egovlpv2_module(model: nn.Module, cfg: PretrainConfig, tokenizer: Tokenizer, seed: int, dist: DistInfo):
    if not isinstance(model, EgoVLPv2):
        raise ConfigError("loss.objective=egovlpv2 needs an EgoVLPv2-class model")
    return PretrainModule(model, cfg.loss, tokenizer, seed, dist)


register_objective(
    Objective("egovlpv2", "EgoNCE (dual) + MLM + VTM (fused passes): EgoVLPv2", _egovlpv2_module, uses_mlm=True)
)
