"""Text-only masked language modelling of the text tower on a narration corpus (``egovlp pretrain-text``).

The release starts its text tower from ``roberta-base``, a language model pre-trained with MLM. Where no such
checkpoint fits (a tiny model, a new tokenizer such as the synthetic world's) or to adapt one to narration style, this
task trains the text tower with MLM on the narrations alone and writes it in HuggingFace RoBERTa names
(``<output_dir>/roberta/model.safetensors``), ready for ``init.roberta=`` of video-text pre-training.

What trains: the unfused text tower (the fusion modules are not executed) and the model's MLM head
(``cross_modal_text_transform`` + ``mlm_score``) applied to the text tower's own token states. The video tower,
fusion modules, projectors and VTM head keep their initialisation and get no gradient. Each item's masking is drawn
from the per-item random stream of :class:`~egovlp.train.datasets.TrainingDataset`, so a resumed run sees exactly
the batches of an uninterrupted one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import torch
from safetensors.torch import save_file
from torch import Tensor, nn
from torch.utils.data import Dataset

from egovlp.config import at_least, rule
from egovlp.data.corpus import read_corpus
from egovlp.data.tokenizer import Tokenizer, mask_tokens
from egovlp.errors import ConfigError
from egovlp.losses.mlm import global_label_count, mlm_loss
from egovlp.models.config import ModelConfig
from egovlp.models.factory import InitConfig
from egovlp.models.model import EgoVLPv2, FusedOutput
from egovlp.models.registry import get_model_config
from egovlp.tasks.shared import check_vocab
from egovlp.train.datasets import CountingCollate, TrainingDataset
from egovlp.train.distributed import DistInfo
from egovlp.train.loop import TrainConfig
from egovlp.train.optim import OptimConfig
from egovlp.train.task import Task, TaskModule
from egovlp.utils.files import atomic_write

log = logging.getLogger(__name__)

ROBERTA_DIR = "roberta"  # <output_dir>/roberta/model.safetensors: the text tower in HuggingFace RoBERTa names
_FUSION_MARKERS = ("crossattention_t2i.", "alpha_t2i")
_HEAD_PREFIXES = ("cross_modal_text_transform.", "mlm_score.")


@dataclass(frozen=True)
class TextCorpusConfig:
    corpus: str = ""  # egoclip.csv (its clip_text column, cleaned) or a text file with one narration per line
    tokenizer: str = ""  # tokenizer folder: tokenizer.json, vocab.json + merges.txt (BPE) or vocab.txt (WordPiece)
    text_max_length: int = at_least(2, 15)
    batch_size: int = at_least(1, 64)
    num_workers: int = at_least(0, 0)
    mlm_probability: float = rule(0.15, "must be in (0, 1)", lambda p: 0 < p < 1)
    max_rows: int = at_least(0, 0)  # use only the first N texts (0 = all)
    eval_every_nth: int = at_least(0, 20)  # every n-th text is held out for the evaluation (0 = no evaluation)
    max_eval_texts: int = at_least(0, 2000)


@dataclass(frozen=True)
class TextMLMConfig:
    model: ModelConfig = field(default_factory=lambda: get_model_config("egovlpv2-base"))
    init: InitConfig = field(default_factory=InitConfig)  # roberta= continues from roberta-base (domain adaptation)
    data: TextCorpusConfig = field(default_factory=TextCorpusConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-4, new_param_lr_mult=1.0))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(output_dir="runs/pretrain_text", max_steps=10000))


class MaskedTexts(Dataset):
    """Texts as MLM items: ``input_ids`` (masked), ``attention_mask`` and ``labels``, each ``(max_length,)``.

    The masking draws from torch's default random stream, which :class:`TrainingDataset` seeds per item; pass a
    ``generator`` for a fixed masking (evaluation).
    """

    def __init__(
        self,
        texts: list[str],
        tokenizer: Tokenizer,
        max_length: int,
        probability: float,
        generator: torch.Generator | None = None,
    ) -> None:
        self.texts, self.tokenizer, self.max_length = texts, tokenizer, max_length
        self.probability, self.generator = probability, generator

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        enc = self.tokenizer([self.texts[i]], max_length=self.max_length, padding="max_length")
        ids, labels = mask_tokens(
            enc["input_ids"], enc["attention_mask"], self.tokenizer, self.probability, self.generator
        )
        return {"input_ids": ids[0], "attention_mask": enc["attention_mask"][0], "labels": labels[0]}


def stack_items(items: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    return {k: torch.stack([it[k] for it in items]) for k in items[0]}


def trains_in_text_mlm(name: str) -> bool:
    """Parameters that text-only MLM trains: the unfused text tower and the MLM head."""
    if name.startswith("text_model."):
        return not any(m in name for m in _FUSION_MARKERS)
    return name.startswith(_HEAD_PREFIXES)


def text_mlm_losses(model: EgoVLPv2, batch: dict, world: int = 1) -> dict[str, Tensor]:
    """``{"loss", "accuracy"}`` of MLM on the text tower's own (unfused) token states for a batch of masked texts;
    ``world`` ranks share the loss normalisation (the number of labels over all ranks)."""
    states = model.text_model(batch["input_ids"], batch["attention_mask"])  # (B, L, D), fusion not executed
    logits = model.mlm_logits(FusedOutput(None, states))  # (B, L, V)
    labels = batch["labels"]
    loss = mlm_loss(logits, labels, world, global_label_count(labels) if world > 1 else None)
    labelled = labels != -100
    correct = (logits.detach().argmax(-1) == labels) & labelled
    return {"loss": loss, "accuracy": correct.sum() / labelled.sum().clamp(min=1)}


class TextMLMModule(TaskModule):
    model: EgoVLPv2

    """The model with only the text tower and the MLM head trainable; ``forward`` = :func:`text_mlm_losses`."""

    def __init__(self, model: EgoVLPv2, dist: DistInfo | None = None) -> None:
        super().__init__(model)
        self.world = dist.world_size if dist is not None else 1
        if not (model.cfg.has_fusion and model.cfg.mlm_head):
            raise ConfigError("pretrain-text needs a model with an MLM head (num_fusion_layers > 0, mlm_head=true)")
        for name, p in model.named_parameters():
            p.requires_grad_(trains_in_text_mlm(name))

    def forward(self, batch: dict) -> dict[str, Tensor]:
        return text_mlm_losses(self.model, batch, self.world)


class TextMLMTask(Task):
    """Text-only MLM of the text tower; evaluation = masked-token loss and accuracy on held-out texts."""

    name = "pretrain-text"

    def __init__(self, cfg: TextMLMConfig, tokenizer: Tokenizer, dist: DistInfo) -> None:
        d = cfg.data
        check_vocab(tokenizer, cfg.model)
        self.cfg, self.tokenizer, self.dist, self.seed = cfg, tokenizer, dist, cfg.train.seed
        self.batch_size, self.num_workers = d.batch_size, d.num_workers
        texts = read_corpus(d.corpus, d.max_rows)
        n = d.eval_every_nth
        held = [t for i, t in enumerate(texts) if n and i % n == n - 1]
        self.train_texts = [t for i, t in enumerate(texts) if not (n and i % n == n - 1)]
        self.eval_texts = held[: d.max_eval_texts]
        log.info("text corpus %s: %d training and %d held-out texts", d.corpus, len(self.train_texts), len(held))

    def train_dataset(self) -> TrainingDataset:
        d = self.cfg.data
        return TrainingDataset(
            MaskedTexts(self.train_texts, self.tokenizer, d.text_max_length, d.mlm_probability), self.seed
        )

    def collate_fn(self):
        return CountingCollate(stack_items)

    def build_module(self, model: nn.Module) -> TextMLMModule:
        assert isinstance(model, EgoVLPv2), "text MLM needs an EgoVLPv2-family model"
        return TextMLMModule(model, self.dist)

    def batch_items(self, batch: dict) -> int:
        return int(batch["input_ids"].shape[0])

    def evaluate(self, model: nn.Module, dist: DistInfo) -> dict[str, float]:
        """Masked-token loss and accuracy on the held-out texts with a fixed masking (the same on every rank)."""
        if not self.eval_texts:
            return {}
        d = self.cfg.data
        generator = torch.Generator().manual_seed(self.seed)
        data = MaskedTexts(self.eval_texts, self.tokenizer, d.text_max_length, d.mlm_probability, generator)
        loss_sum = correct = count = 0.0
        for start in range(0, len(data), d.batch_size):
            batch = stack_items([data[i] for i in range(start, min(start + d.batch_size, len(data)))])
            batch = self.to_device(batch, dist.device)
            n = float((batch["labels"] != -100).sum())
            out = text_mlm_losses(cast(EgoVLPv2, model), batch)  # every rank evaluates the same texts: no reduction
            loss_sum, correct, count = (
                loss_sum + float(out["loss"]) * n,
                correct + float(out["accuracy"]) * n,
                count + n,
            )
        return {"mlm_loss": loss_sum / max(count, 1.0), "mlm_accuracy": 100 * correct / max(count, 1.0)}


def export_roberta(model: EgoVLPv2, out_dir: str | Path) -> Path:
    """Write the text tower (without fusion modules) as ``out_dir/model.safetensors`` in HuggingFace RoBERTa names.

    :func:`egovlp.models.pretrained.load_roberta` (``init.roberta=out_dir``) reads it back into any model with the
    same text configuration.
    """
    tensors = {
        k: v.detach().contiguous().cpu()
        for k, v in model.text_model.state_dict().items()
        if not any(m in k for m in _FUSION_MARKERS)
    }
    metadata = {"format": "pt", "egovlp": "text tower (RoBERTa names)"}
    path = Path(out_dir) / "model.safetensors"
    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
