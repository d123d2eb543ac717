"""The training contract: what a task gives the one training loop (:mod:`egovlp.train.loop`).

A :class:`Task` builds the training data (a :class:`~egovlp.train.datasets.TrainingDataset`), its collate function
and a :class:`TaskModule` (the model plus any task heads) whose ``forward(batch)`` returns named 0-d losses, and it
evaluates. Every hook the loop calls is declared here with its default, so the loop never probes with ``getattr``.
Downstream tasks register themselves in :mod:`egovlp.tasks.registry`; this module knows nothing of them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from egovlp.train.datasets import TrainingDataset
from egovlp.train.distributed import DistInfo


class TaskModule(nn.Module):
    """The trainable module the loop wraps in DDP: the model plus any task heads.

    ``forward(batch)`` returns a dict of 0-d losses; ``"loss"`` is the one optimised, the others are logged.
    Parameters of task heads (outside ``model``) count as new parameters (larger learning rate).
    """

    #: Parameters that get no gradient in some steps (e.g. fusion layers in a dual-only loss): DDP must know.
    has_unused_parameters: bool = False

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def is_new_parameter(self, name: str) -> bool:
        if name.startswith("model."):
            inner = getattr(self.model, "is_new_parameter", None)
            return bool(inner(name[len("model.") :])) if inner else False
        return True

    def no_weight_decay(self, name: str, param: torch.Tensor) -> bool:
        inner = getattr(self.model, "no_weight_decay", None)
        if name.startswith("model.") and callable(inner):
            return bool(inner(name[len("model.") :], param))
        return param.ndim <= 1

    def extra_state_dict(self) -> dict[str, torch.Tensor]:
        """Weights of the task heads (everything outside ``model``), for checkpoints."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("model.")}

    def load_extra_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        expected = self.extra_state_dict()
        if set(state) != set(expected):
            raise ValueError(f"task head weights do not match: expected {sorted(expected)}, got {sorted(state)}")
        self.load_state_dict({**{f"model.{k}": v for k, v in self.model.state_dict().items()}, **state})


class Task:
    """Base class of training tasks (pre-training, fine-tuning)."""

    name: str = "task"
    batch_size: int = 1
    num_workers: int = 0

    def train_dataset(self) -> TrainingDataset:  # pragma: no cover - abstract
        raise NotImplementedError

    def collate_fn(self) -> Callable | None:
        return None

    def build_module(self, model: nn.Module) -> TaskModule:  # pragma: no cover - abstract
        raise NotImplementedError

    def evaluate(self, model: nn.Module, dist: DistInfo) -> dict[str, float]:
        """Metrics of ``model`` (called on every rank under no_grad, model in eval mode); rank 0's are logged."""
        return {}

    def to_device(self, batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
        non_blocking = device.type == "cuda"
        return {k: v.to(device, non_blocking=non_blocking) if torch.is_tensor(v) else v for k, v in batch.items()}

    def batch_items(self, batch: dict[str, Any]) -> int:
        """Samples in a batch (for the throughput counter)."""
        return int(batch["video"].shape[0]) if "video" in batch else 0

    def head_weights(self) -> dict[str, torch.Tensor]:
        """Task-head tensors to save beside the model in its weight file (``heads.<name>``; see
        :mod:`egovlp.models.weights`), e.g. ``{"egotaskqa.projector_1.weight": ...}``; none by default."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """Random-stream state etc. that must survive a resume (tensors and plain values only)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
