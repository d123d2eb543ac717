"""Samplers for data-parallel training that resume mid-epoch, and for evaluation without duplicated samples."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class ResumableDistributedSampler(Sampler[int]):
    """Shuffled, rank-sharded sampler whose order depends only on ``(seed, epoch)`` and that can skip ahead.

    Like ``DistributedSampler(shuffle=True, drop_last=True)``: every epoch draws a permutation from a generator seeded
    with ``seed + epoch``, truncates it to a multiple of the world size and gives rank ``r`` the items ``r::W``.
    ``set_epoch(epoch, start)`` makes the next iteration skip the first ``start`` of this rank's items, so a run
    restored from a checkpoint continues with exactly the samples an uninterrupted run would have seen.
    """

    def __init__(self, num_samples: int, rank: int = 0, world_size: int = 1, seed: int = 0, shuffle: bool = True):
        if num_samples < world_size:
            raise ValueError(f"dataset of {num_samples} samples is smaller than the world size {world_size}")
        self.num_samples, self.rank, self.world_size = num_samples, rank, world_size
        self.seed, self.shuffle = seed, shuffle
        self.epoch, self.start = 0, 0
        self.per_rank = num_samples // world_size

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def indices(self) -> list[int]:
        """This rank's full index list for the current epoch (before skipping)."""
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.num_samples, generator=g).tolist()
        else:
            order = list(range(self.num_samples))
        order = order[: self.per_rank * self.world_size]
        return order[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices()[self.start :])

    def __len__(self) -> int:
        return self.per_rank - self.start


class ShardedEvalSampler(Sampler[int]):
    """Rank ``r`` gets items ``r, r + W, r + 2W, ...`` with NO padding: every sample is evaluated exactly once.

    ``DistributedSampler`` pads the last shard by repeating samples, which double-counts them in a metric. With this
    sampler ranks may hold one item more or less; gather per-item results (with their indices) and reduce on rank 0.
    """

    def __init__(self, num_samples: int, rank: int = 0, world_size: int = 1) -> None:
        self.num_samples, self.rank, self.world_size = num_samples, rank, world_size

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.num_samples, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.num_samples, self.world_size))
