"""EgoVLPv2 pre-training on EgoClip: EgoNCE (dual pass) + MLM and VTM (fused passes).

Every iteration, as the release: (i) a dual pass gives EgoNCE over the all-gathered batch; (ii) a fused pass on the
masked narration and its own video gives MLM; (iii) a fused pass on a half-negative batch (hard negatives drawn from
the gathered batch by similarity) gives VTM. Total = egonce_weight * EgoNCE + mlm_weight * MLM + vtm_weight * VTM
(release: 1, 1, 2).

Work that is identical is done once (``loss.share_lower_layers``): both fused passes draw their videos from the batch,
so the unfused lower video blocks (with the fusion-mode CLS token) run once and the VTM pass indexes into them; the
MLM pass skips the last video block (no text state reads it) and the VTM pass computes only the CLS state of the last
video block. ``share_lower_layers=False`` runs the release's three full passes (for comparison; same losses).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
from torch import Tensor

from egovlp.data.collate import EgoClipCollate
from egovlp.data.egoclip import EgoClipDataset
from egovlp.data.tokenizer import Tokenizer, mask_tokens
from egovlp.data.transforms import train_transform
from egovlp.errors import ConfigError
from egovlp.losses import EgoNCELoss, GatherGrad, all_gather_nograd, mlm_loss, sample_vtm_pairs, vtm_loss, world_info
from egovlp.losses.mlm import global_label_count
from egovlp.models.config import ModelConfig
from egovlp.models.model import EgoVLPv2
from egovlp.models.registry import get_model_config
from egovlp.tasks.base import Task, TaskModule
from egovlp.tasks.egomcq import EgoMCQConfig, egomcq_loader, evaluate_egomcq
from egovlp.tasks.frames import frames_for_eval
from egovlp.train.datasets import CountingCollate, TrainingDataset
from egovlp.train.distributed import DistInfo
from egovlp.train.loop import TrainConfig
from egovlp.train.optim import OptimConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InitConfig:
    checkpoint: str = ""  # egovlp .safetensors to start from (e.g. a converted official checkpoint)
    vit: str = ""  # timm / Google ViT-B/16 ImageNet weights for the video tower (.pth, .npz, .safetensors)
    roberta: str = ""  # HuggingFace roberta-base directory or weight file for the text tower


@dataclass(frozen=True)
class PretrainDataConfig:
    video_root: str = ""  # <root>/<video_uid>/<k>.mp4
    metadata: str = ""  # egoclip.csv
    tokenizer: str = ""  # directory with tokenizer.json or vocab.json + merges.txt
    chunk_seconds: float = 600.0
    num_frames: int = 4
    text_max_length: int = 15
    scene_negatives: bool = True  # one more clip from the same video and 60 s bucket per sample (batch x2)
    hflip: bool = True
    crop_scale: tuple[float, float] = (0.5, 1.0)
    batch_size: int = 32  # clips per rank per micro-batch, before scene negatives
    num_workers: int = 4
    bad_input: str = "skip"  # "skip" (replace, count and log) or "raise"
    num_verbs: int = 118
    num_nouns: int = 582
    max_rows: int = 0  # read only the first N rows of the metadata (0 = all)


@dataclass(frozen=True)
class LossConfig:
    temperature: float = 0.05
    positives: str = "verb_and_noun"  # EgoNCE positives: verb_and_noun | verb | noun | none (InfoNCE)
    egonce_weight: float = 1.0
    mlm_weight: float = 1.0
    vtm_weight: float = 2.0
    mlm_probability: float = 0.15
    vtm_row_convention: str = "albef"  # albef | release (see egovlp.losses.vtm)
    gather_grad: str = "full"  # full: exact full-batch gradient | local: the release's (every term / world size)
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


class PretrainModule(TaskModule):
    """``forward(batch)`` -> ``{"loss", "egonce", "mlm", "vtm"}`` for one (local) batch."""

    def __init__(self, model: EgoVLPv2, cfg: LossConfig, tokenizer: Tokenizer, seed: int = 0) -> None:
        super().__init__(model)
        self.cfg, self.tokenizer = cfg, tokenizer
        self.gather_grad = GatherGrad(cfg.gather_grad)
        self.egonce = EgoNCELoss(cfg.temperature, cfg.positives, self.gather_grad)
        self.do_mlm = model.cfg.has_fusion and cfg.mlm_weight > 0
        self.do_vtm = model.cfg.has_fusion and cfg.vtm_weight > 0
        if (self.do_mlm and not model.cfg.mlm_head) or (self.do_vtm and not model.cfg.vtm_head):
            raise ConfigError("loss.mlm_weight / loss.vtm_weight > 0 need the model's MLM / VTM heads")
        # parameters that get no gradient in an ablation (e.g. the MLM head with mlm_weight=0): DDP must know
        self.has_unused_parameters = model.cfg.has_fusion and not (self.do_mlm and self.do_vtm)
        self.generator = torch.Generator().manual_seed(seed)  # MLM masking and VTM negatives (saved in checkpoints)

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
            out.update(self._fused_losses(video, ids, mask, nce))
        total = cfg.egonce_weight * out["egonce"]
        total = total + cfg.mlm_weight * out.get("mlm", 0.0) + cfg.vtm_weight * out.get("vtm", 0.0)
        return {"loss": total, **out}

    def _fused_losses(self, video: Tensor, ids: Tensor, mask: Tensor, nce) -> dict[str, Tensor]:
        model, cfg, share = self.model, self.cfg, self.cfg.share_lower_layers
        rank, world = world_info()
        frames = video.shape[1]
        lower = model.video_lower(video) if share else None  # (B, N, D): shared by the MLM and VTM passes
        out = {}
        if self.do_mlm:
            cpu_ids, labels = mask_tokens(ids.cpu(), mask.cpu(), self.tokenizer, cfg.mlm_probability, self.generator)
            mlm_ids, labels = cpu_ids.to(ids.device), labels.to(ids.device)
            if share:  # the last video block is skipped: no text state reads its output
                fused = model.fuse_upper(lower, model.text_lower(mlm_ids, mask), mask, frames, video_out="none")
            else:
                fused = model.fuse(video, mlm_ids, mask)
            count = global_label_count(labels) if world > 1 else None
            out["mlm"] = mlm_loss(model.mlm_logits(fused), labels, world, count)
        if self.do_vtm:
            pairs = sample_vtm_pairs(
                nce.similarity, nce.positive_mask, rank, video.shape[0], cfg.temperature, self.generator,
                cfg.vtm_row_convention,
            )  # fmt: skip
            text_ids, text_mask = all_gather_nograd(ids)[pairs.text_index], all_gather_nograd(mask)[pairs.text_index]
            if share:
                vtm_lower = self._pick_videos(lower, video, pairs.video_index, model.video_lower)
                fused = model.fuse_upper(vtm_lower, model.text_lower(text_ids, text_mask), text_mask, frames, "cls")
            else:
                fused = model.fuse(self._pick_videos(video, video, pairs.video_index), text_ids, text_mask)
            out["vtm"] = vtm_loss(model.vtm_logits(fused), pairs.labels)
        if self.gather_grad is GatherGrad.LOCAL and world > 1:
            # the release gathers MLM/VTM logits with a local-slice backward too: every term's gradient is 1/W
            out = {k: v / world for k, v in out.items()}
        return out

    @staticmethod
    def _pick_videos(local: Tensor, video: Tensor, index: Tensor, encode=None) -> Tensor:
        """Rows ``index`` (global) of the gathered batch, from ``local`` (this rank's rows, e.g. lower-layer states).

        Rows owned by other ranks are rebuilt from their raw frames (gathered without gradient, as the release
        gathers videos) and passed through ``encode`` (e.g. ``video_lower``); local rows keep their graph.
        """
        rank, world = world_info()
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

    def __init__(self, cfg: PretrainConfig, tokenizer: Tokenizer, seed: int = 0) -> None:
        self.cfg, self.tokenizer, self.seed = cfg, tokenizer, seed
        self.batch_size, self.num_workers = cfg.data.batch_size, cfg.data.num_workers
        if tokenizer.vocab_size > cfg.model.text.vocab_size:
            raise ConfigError(
                f"the tokenizer has {tokenizer.vocab_size} tokens but model.text.vocab_size is "
                f"{cfg.model.text.vocab_size}"
            )
        self.module: PretrainModule | None = None
        self._mcq_loader = None

    def train_dataset(self) -> TrainingDataset:
        d = self.cfg.data
        dataset = EgoClipDataset(
            d.metadata,
            d.video_root,
            d.num_frames,
            train_transform(self.cfg.model.video.img_size, tuple(d.crop_scale), d.hflip),
            chunk_seconds=d.chunk_seconds,
            sample="rand",
            scene_negatives=d.scene_negatives,
            bad_input=d.bad_input,
            num_verbs=d.num_verbs,
            num_nouns=d.num_nouns,
            max_rows=d.max_rows or None,
        )
        return TrainingDataset(dataset, self.seed)

    def collate_fn(self):
        return CountingCollate(EgoClipCollate(self.tokenizer, self.cfg.data.text_max_length, "max_length", None))

    def build_module(self, model: EgoVLPv2) -> PretrainModule:
        rank, _ = world_info()
        self.module = PretrainModule(model, self.cfg.loss, self.tokenizer, self.seed * 1000 + rank)
        return self.module

    def evaluate(self, model: EgoVLPv2, dist: DistInfo) -> dict[str, float]:
        mcq = self.cfg.egomcq
        if not mcq.metadata:
            return {}
        if self._mcq_loader is None:
            self._mcq_loader = egomcq_loader(mcq, self.tokenizer, model.cfg.video.img_size, dist)
        with frames_for_eval(model, mcq.num_frames):
            metrics, _ = evaluate_egomcq(model, self._mcq_loader, dist)
        return {f"egomcq/{k}": v for k, v in metrics.items()}

    def state_dict(self) -> dict:
        return {"generator": self.module.generator.get_state()} if self.module is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if "generator" in state and self.module is not None:
            self.module.generator.set_state(state["generator"])
