"""Charades-Ego datasets: whole videos with multi-hot labels (evaluation), action segments (fine-tuning).

Videos are ``<root>/<id>.mp4`` (:func:`~egovlp.data.charades.charades_video_path`).

- Evaluation (as the release): every video of the split once, F frames (32) at the middles of F equal segments of
  the whole video; the label is the multi-hot of its actions' classes (all zeros for a video without actions).
- Fine-tuning (as the release's ``metadata_train.csv``, made from the same CSV): one sample per labelled action,
  F frames drawn at a random time in each segment of ``[start, end]``, the text being the class name; the model is
  trained contrastively on these (video, class name) pairs. Action ends past the video's ``length`` are clamped to it.

:class:`~egovlp.data.epic_mir_dataset.ClipCollate` batches the items.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch
from torch.utils.data import Dataset

from egovlp.data.bad_input import BadInputPolicy
from egovlp.data.charades import CharadesEgoAnnotations
from egovlp.data.sampling import worker_rng
from egovlp.data.video_io import probe, read_video_clip
from egovlp.errors import VideoReadError

__all__ = ["CharadesActionDataset", "CharadesVideoDataset"]

Transform = Callable[..., torch.Tensor]


class _CharadesBase(Dataset):
    def __init__(
        self,
        annotations: CharadesEgoAnnotations,
        video_root: str | os.PathLike,
        num_frames: int,
        transform: Transform | None = None,
        bad_input: str = "raise",
    ) -> None:
        self.policy = BadInputPolicy(bad_input)
        self.annotations, self.video_root, self.num_frames = annotations, str(video_root), int(num_frames)
        self.transform, self.bad_input = transform, bad_input

    def _read(self, video: int, start: float, end: float, sample: str, rng, generator) -> torch.Tensor:
        path = self.annotations.video_path(self.video_root, video)
        try:
            frames = read_video_clip(path, start, end, self.num_frames, sample, rng)
        except VideoReadError as e:
            raise VideoReadError(f"{e} [Charades-Ego video {self.annotations.videos[video].id}]") from None
        return self.transform(frames, generator) if self.transform is not None else torch.from_numpy(frames)


class CharadesVideoDataset(_CharadesBase):
    """Whole videos for evaluation: items ``video (F, 3, S, S)``, ``label (C,)`` uint8 multi-hot, ``index``.

    The span read is ``[0, duration]`` with the duration from the file's header (the CSV ``length`` if the header
    has none).
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.labels = torch.from_numpy(self.annotations.labels())  # (N, C)

    def __len__(self) -> int:
        return len(self.annotations)

    def _load(self, i: int) -> dict[str, Any]:
        duration = probe(self.annotations.video_path(self.video_root, i)).duration or self.annotations.videos[i].length
        if not duration:
            raise VideoReadError(f"{self.annotations.video_path(self.video_root, i)}: unknown duration")
        return {"video": self._read(i, 0.0, duration, "uniform", None, None), "label": self.labels[i], "index": i}

    def __getitem__(self, i: int) -> dict[str, Any] | None:
        return self.policy.load(lambda: self._load(i), f"Charades-Ego video {i}")


class CharadesActionDataset(_CharadesBase):
    """Action segments for fine-tuning: items ``video (F, 3, S, S)``, ``text`` (class name), ``target`` (class
    index) and ``index`` (segment number), randomness from torch's stream (seed it per item)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.segments = self.annotations.action_segments()

    def __len__(self) -> int:
        return len(self.segments)

    def _load(self, i: int) -> dict[str, Any]:
        video, action = self.segments[i]
        length = self.annotations.videos[video].length
        end = min(action.end, length) if length else action.end
        rng = worker_rng()
        generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
        clip = self._read(video, min(action.start, end), end, "rand", rng, generator)
        name = self.annotations.class_names[action.class_index]
        return {"video": clip, "text": name, "target": action.class_index, "index": i}

    def __getitem__(self, i: int) -> dict[str, Any] | None:
        return self.policy.load(lambda: self._load(i), f"Charades-Ego action segment {i}")
