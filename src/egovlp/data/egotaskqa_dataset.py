"""EgoTaskQA questions as a dataset: the question's whole video, the lower-cased question and its answer class.

Frames are drawn from the whole video ``qa_videos/<interval>.mp4`` (duration from the file's header):

- ``sample="uniform"``: the middles of F equal segments, the deterministic evaluation egovlp uses by default;
- ``sample="rand"``: a random time in each segment (training, and the release's non-deterministic evaluation),
  drawn from the item's own stream (:func:`~egovlp.data.sampling.worker_rng`, seeded per item by the training
  loop) or, with ``seed`` set, from ``(seed, item)`` so that a random evaluation is at least repeatable.

Items: ``video (F, 3, S, S)``, ``text`` (the question, lower-cased as the release does), ``target`` (the answer
class id), ``index`` (the record's position in its JSON list). :class:`~egovlp.data.epic_mir_dataset.ClipCollate`
batches them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from egovlp.data.bad_input import BadInputPolicy
from egovlp.data.egotaskqa import EgoTaskQASplit
from egovlp.data.sampling import worker_rng
from egovlp.data.video_io import probe, read_video_clip
from egovlp.errors import VideoReadError

__all__ = ["EgoTaskQADataset"]


class EgoTaskQADataset(Dataset):
    """One item per question of ``split`` (see the module docstring)."""

    def __init__(
        self,
        split: EgoTaskQASplit,
        video_root: str | os.PathLike,
        num_frames: int,
        transform: Callable[..., torch.Tensor] | None = None,
        sample: str = "uniform",
        bad_input: str = "raise",
        seed: int | None = None,
    ) -> None:
        if sample not in ("uniform", "rand"):
            raise ValueError(f"sample must be 'uniform' or 'rand', got {sample!r}")
        self.split, self.video_root, self.num_frames = split, str(video_root), int(num_frames)
        self.transform, self.sample, self.seed = transform, sample, seed
        self.policy = BadInputPolicy(bad_input)

    def __len__(self) -> int:
        return len(self.split.records)

    def _load(self, i: int) -> dict[str, Any]:
        record = self.split.records[i]
        path = self.split.video_path(self.video_root, record)
        rng = None
        if self.sample == "rand":
            rng = worker_rng() if self.seed is None else np.random.default_rng([self.seed, i])
        try:
            duration = probe(path).duration
            if not duration:
                raise VideoReadError(f"{path}: unknown duration")
            frames = read_video_clip(path, 0.0, duration, self.num_frames, self.sample, rng)
        except VideoReadError as e:
            raise VideoReadError(f"{e} [EgoTaskQA {self.split.path} record {record.index}]") from None
        generator = None if rng is None else torch.Generator().manual_seed(int(rng.integers(2**62)))
        video = self.transform(frames, generator) if self.transform is not None else torch.from_numpy(frames)
        return {"video": video, "text": record.question.lower(), "target": record.answer_id, "index": i}

    def __getitem__(self, i: int) -> dict[str, Any] | None:
        return self.policy.load(lambda: self._load(i), f"EgoTaskQA question {i}")
