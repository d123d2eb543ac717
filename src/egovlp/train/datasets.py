"""Training-side dataset wrapper: reproducible per-item randomness and a counted skip policy that keeps batches full.

- Every item's random draws (frame times, crop, flip, negatives) come from torch's stream seeded with
  ``(seed, epoch, index)`` just for that item, so an item is the same whichever worker loads it and however many
  workers there are. This is what lets a resumed run see exactly the samples an uninterrupted run would have seen.
- A dataset that returns ``None`` for an unreadable sample (``bad_input="skip"``) gets a deterministic replacement
  index instead, so every rank keeps the same batch size (the contrastive all-gather needs it). Each replacement is
  counted and reported in the batch as ``num_skipped``; the wrapped dataset logs the file and time range.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import torch
from torch.utils.data import Dataset

from egovlp.errors import DataError

_STRIDE = 7919  # a prime, so replacement indices walk the whole dataset


def item_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed mixing the run seed, the epoch and the item index."""
    digest = hashlib.blake2b(f"{seed}/{epoch}/{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class TrainingDataset(Dataset):
    """Wraps a map-style dataset; items become ``(item, num_replaced)``. Use with :class:`CountingCollate`."""

    def __init__(self, dataset: Dataset, seed: int = 0, max_retries: int = 20) -> None:
        self.dataset, self.seed, self.max_retries = dataset, seed, max_retries
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[Any, int]:
        n = len(self.dataset)  # type: ignore[arg-type]
        for attempt in range(self.max_retries + 1):
            i = (index + attempt * _STRIDE) % n
            with torch.random.fork_rng(devices=[]):  # leave the caller's stream (dropout) untouched
                torch.manual_seed(item_seed(self.seed, self.epoch, i))
                item = self.dataset[i]
            if item is not None:
                return item, attempt
        raise DataError(
            f"{self.max_retries + 1} unreadable samples in a row starting at index {index}: check the data "
            "(each failure is logged with its file and time range)"
        )


class CountingCollate:
    """Collates the items of :class:`TrainingDataset` and adds how many were replacements as ``num_skipped``."""

    def __init__(self, collate: Callable[[list], dict[str, Any]]) -> None:
        self.collate = collate

    def __call__(self, batch: list[tuple[Any, int]]) -> dict[str, Any]:
        out = self.collate([item for item, _ in batch])
        out["num_skipped"] = int(out.get("num_skipped", 0)) + sum(n for _, n in batch)
        return out
