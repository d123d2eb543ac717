"""A toy task for loop tests: a linear head on random features around the tiny EgoVLPv2 (which checkpoints need)."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset, default_collate

from egovlp.config import to_yaml
from egovlp.models import create_model
from egovlp.train.datasets import CountingCollate, TrainingDataset
from egovlp.train.distributed import DistInfo
from egovlp.train.loop import FitResult, TrainConfig, Trainer
from egovlp.train.optim import OptimConfig
from egovlp.train.task import Task, TaskModule


class ToyData(Dataset):
    """``n`` items ``{"x": (4,), "y": (1,)}`` drawn from torch's (per-item seeded) stream; ``bad`` items are None."""

    def __init__(self, n: int, bad: tuple[int, ...] = ()) -> None:
        self.n, self.bad = n, set(bad)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, torch.Tensor] | None:
        if i in self.bad:
            logging.getLogger("egovlp.tests.toy").warning("unreadable toy item %d: replaced", i)
            return None
        return {"x": torch.randn(4), "y": torch.randn(1)}


class ToyModule(TaskModule):
    has_unused_parameters = True  # the model's own parameters get no gradient (DDP must know)

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        self.head = nn.Linear(4, 1)

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return {"loss": nn.functional.mse_loss(self.head(batch["x"]), batch["y"])}


class ToyTask(Task):
    name = "toy"
    batch_size = 2

    def __init__(self, n: int = 16, bad: tuple[int, ...] = ()) -> None:
        self.n, self.bad = n, bad

    def train_dataset(self) -> TrainingDataset:
        return TrainingDataset(ToyData(self.n, self.bad), seed=0)

    def collate_fn(self) -> CountingCollate:
        return CountingCollate(default_collate)

    def build_module(self, model: nn.Module) -> TaskModule:
        return ToyModule(model)

    def batch_items(self, batch: dict[str, Any]) -> int:
        return int(batch["x"].shape[0])


@dataclass(frozen=True)
class ToyConfig:
    train: TrainConfig = field(default_factory=TrainConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)


CPU = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
QUIET = {"progress": False, "tensorboard": False, "plot": False, "log_every": 1}


def fit(out: Path, task: ToyTask | None = None, lr: float = 1e-2, **train: Any) -> FitResult:
    """A toy run into ``out`` (its config.yaml is the ToyConfig's YAML, as `run_training` writes it)."""
    cfg = ToyConfig(dataclasses.replace(TrainConfig(), output_dir=str(out), **{**QUIET, **train}), OptimConfig(lr=lr))
    torch.manual_seed(0)
    model = create_model("egovlpv2-tiny")
    return Trainer(cfg.train, cfg.optim, CPU, to_yaml(cfg)).fit(task or ToyTask(), model)
