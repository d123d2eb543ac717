"""EgoClip pre-training dataset: (video clip, narration, verb/noun multi-hot) per row of ``egoclip.csv``.

Videos are read from the chunked layout ``<video_root>/<video_uid>/<k>.mp4`` (see :mod:`egovlp.data.video_io`).

Scene-aware negatives (``scene_negatives=True``): each item is a pair ``(sample, negative)`` where the negative is
another row of the same video and the same ``negative_bucket_seconds`` (60 s) bucket of narration time
(``floor(narration_time / 60)``), drawn uniformly and never the row itself. When the bucket holds only that row, the
negative comes from anywhere in the same video; when the video has only that row, the row itself is returned (a
duplicate, logged at debug level). The official loader draws from the bucket including the row itself.
:class:`~egovlp.data.collate.EgoClipCollate` flattens pairs into one batch (B pairs -> 2B items).

Randomness (frame times, crop, flip, negative choice, and the seed of the item's MLM masking, ``mlm_seed``) comes
from one draw of torch's random stream per item, so a run is reproducible for a fixed ``torch.manual_seed`` and
worker count, and DataLoader workers (whose torch stream is seeded with the worker seed) differ; under
:class:`~egovlp.train.datasets.TrainingDataset` every item's stream is seeded by ``(seed, epoch, index)``, so the
masking of a resumed run equals that of an uninterrupted one.

Bad videos: ``bad_input="raise"`` raises :class:`~egovlp.errors.VideoReadError` (file and time range);
``bad_input="skip"`` logs it, counts it in :attr:`EgoClipDataset.num_skipped` (per process) and returns None, which
the collate drops and counts in the batch's ``num_skipped`` (so the training loop can report the total across
workers). Black frames are never substituted.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from egovlp.data.bad_input import BadInputPolicy
from egovlp.data.egoclip_table import EgoClipTable, load_egoclip
from egovlp.data.sampling import worker_rng
from egovlp.data.tags import multi_hot
from egovlp.data.text import clean_narration
from egovlp.data.video_io import read_clip, resolve_chunk_seconds
from egovlp.errors import DataError, VideoReadError

log = logging.getLogger(__name__)

__all__ = ["EgoClipDataset", "SceneGroups"]

Transform = Callable[..., torch.Tensor]


class SceneGroups:
    """Rows grouped by (video, time bucket) and by video, for drawing scene-aware negatives.

    Args:
        video: ``(N,)`` video index per row; bucket: ``(N,)`` time bucket per row.
    """

    def __init__(self, video: np.ndarray, bucket: np.ndarray) -> None:
        self.bucket = self._group(video.astype(np.int64) * (int(bucket.max(initial=0)) + 1) + bucket)
        self.video = self._group(video.astype(np.int64))

    @staticmethod
    def _group(key: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(order, start, size, position)``: rows sorted by key; each row's group start/size and its position."""
        order = np.argsort(key, kind="stable")
        sorted_key = key[order]
        first = np.flatnonzero(np.r_[True, sorted_key[1:] != sorted_key[:-1]]) if len(key) else np.zeros(0, int)
        sizes = np.diff(np.r_[first, len(key)])
        group = np.repeat(np.arange(len(first)), sizes)
        position = np.empty(len(key), dtype=np.int64)
        position[order] = np.arange(len(key))
        start = np.empty(len(key), dtype=np.int64)
        size = np.empty(len(key), dtype=np.int64)
        start[order], size[order] = first[group], sizes[group]
        return order, start, size, position

    @staticmethod
    def _draw(groups, i: int, rng: np.random.Generator) -> int | None:
        order, start, size, position = groups
        if size[i] < 2:
            return None
        k = int(rng.integers(size[i] - 1))  # any other row of the group: skip over row i itself
        k += k >= position[i] - start[i]
        return int(order[start[i] + k])

    def negative(self, i: int, rng: np.random.Generator) -> int:
        """Another row of row ``i``'s bucket, else of its video, else ``i`` itself."""
        j = self._draw(self.bucket, i, rng)
        if j is None:
            j = self._draw(self.video, i, rng)
        if j is None:
            log.debug("row %d is the only clip of its video; its scene negative is itself", i)
            return i
        return j


class EgoClipDataset(Dataset):
    """EgoClip rows as training samples.

    Args:
        metadata_csv: ``egoclip.csv`` (TAB-separated, official columns).
        video_root: folder of ``<video_uid>/<k>.mp4`` chunks.
        num_frames: frames per clip (F).
        transform: ``transform(clip_uint8 (F, H, W, 3), generator) -> (F, 3, H', W')`` float, e.g.
            :func:`~egovlp.data.transforms.train_transform`.
        chunk_seconds: chunk length of the video layout (600 for EgoClip; <= 0: ``<video_root>/chunks.json``,
            else 600).
        sample: ``"rand"`` (training) or ``"uniform"`` (segment middles).
        scene_negatives: return ``(sample, negative)`` pairs (see the module docstring).
        bad_input: ``"raise"`` or ``"skip"`` for unreadable videos; ``bad_rows`` the same for malformed CSV rows.
        num_verbs, num_nouns: taxonomy sizes (Ego4D: 118 and 582); tags outside raise at construction.
        text_cleaner: applied to ``clip_text`` (None keeps the raw narration).
        table: an already loaded :class:`EgoClipTable` (then ``metadata_csv`` is only used in messages).

    Items are dicts: ``video`` float ``(F, 3, H, W)``, ``text`` str, ``verb`` ``(num_verbs,)`` and ``noun``
    ``(num_nouns,)`` float multi-hot, ``clip_idx`` int, ``video_uid`` str, ``mlm_seed`` int (the seed of this item's
    MLM masking); or a pair of them; or None (skipped).
    """

    def __init__(
        self,
        metadata_csv: str | os.PathLike,
        video_root: str | os.PathLike,
        num_frames: int,
        transform: Transform | None = None,
        chunk_seconds: float = 0.0,
        sample: str = "rand",
        scene_negatives: bool = False,
        bad_input: str = "raise",
        num_verbs: int = 118,
        num_nouns: int = 582,
        negative_bucket_seconds: float = 60.0,
        text_cleaner: Callable[[str], str] | None = clean_narration,
        bad_rows: str = "raise",
        max_rows: int | None = None,
        table: EgoClipTable | None = None,
    ) -> None:
        self.policy = BadInputPolicy(bad_input)
        self.table = table if table is not None else load_egoclip(metadata_csv, bad_rows=bad_rows, max_rows=max_rows)
        if not len(self.table):
            bad = f", {self.table.num_bad_rows} malformed row(s) skipped" if self.table.num_bad_rows else ""
            raise DataError(f"{self.table.path}: no clip rows to train on (a header only{bad})")
        self.table.check_tag_range(num_verbs, num_nouns)
        self.video_root, self.num_frames, self.transform = str(video_root), int(num_frames), transform
        self.chunk_seconds, self.sample = resolve_chunk_seconds(video_root, chunk_seconds), sample
        self.scene_negatives, self.bad_input = bool(scene_negatives), bad_input
        self.num_verbs, self.num_nouns, self.text_cleaner = int(num_verbs), int(num_nouns), text_cleaner
        self.groups: SceneGroups | None = None
        if self.scene_negatives:
            bucket = np.floor(self.table.narration_time / negative_bucket_seconds).astype(np.int64)
            self.groups = SceneGroups(self.table.video, np.maximum(bucket, 0))

    def __len__(self) -> int:
        return len(self.table)

    def load(self, i: int, rng: np.random.Generator, generator: torch.Generator) -> dict[str, Any]:
        """Row ``i`` as a sample (raises :class:`VideoReadError` on a bad video)."""
        t = self.table
        video_uid = t.video_uid(i)
        try:
            clip = read_clip(
                self.video_root, video_uid, t.clip_start[i], t.clip_end[i], self.num_frames, self.sample,
                self.chunk_seconds, rng,
            )  # fmt: skip
        except VideoReadError as e:
            raise VideoReadError(f"{e} [row {t.where(i)}]") from None
        video = self.transform(clip, generator) if self.transform is not None else torch.from_numpy(clip)
        text = t.text(i)
        return {
            "mlm_seed": int(rng.integers(2**62)),
            "video": video,
            "text": self.text_cleaner(text) if self.text_cleaner is not None else text,
            "verb": torch.from_numpy(multi_hot(t.verbs(i), self.num_verbs)),
            "noun": torch.from_numpy(multi_hot(t.nouns(i), self.num_nouns)),
            "clip_idx": int(t.clip_idx[i]),
            "video_uid": video_uid,
        }

    @property
    def num_skipped(self) -> int:
        """Samples skipped as unreadable in this process (``bad_input="skip"``)."""
        return self.policy.num_skipped

    def __getitem__(self, i: int) -> dict[str, Any] | tuple[dict[str, Any], dict[str, Any]] | None:
        rng = worker_rng()
        generator = torch.Generator().manual_seed(int(rng.integers(2**62)))

        def load() -> dict[str, Any] | tuple[dict[str, Any], dict[str, Any]]:
            sample = self.load(i, rng, generator)
            if self.groups is None:
                return sample
            return sample, self.load(self.groups.negative(i, rng), rng, generator)

        return self.policy.load(load, f"EgoClip sample {i}")
