"""The frames of QFVS shots: 5 frames at 1 fps per 5 s shot, from a frames folder or a video file.

A video ``P0X`` is looked up under the video root as (first found):

- ``video_frames/P0X/`` or ``P0X/``: the release's frames at 1 fps (``*.jpg`` / ``*.png``, in natural order of
  their names: ``2.jpg`` before ``10.jpg``); shot ``s`` is frames ``5 s .. 5 s + 4``;
- ``P0X.mp4`` or ``videos/P0X.mp4`` (also ``.MP4`` / ``.avi``): the frames shown at ``0, 1, 2, ...`` s, cut the same
  way.

The last shot may miss up to 4 frames (its last frame is repeated, and the count is logged); a video with fewer
frames than that is a :class:`~egovlp.errors.DataError` naming it. Extra frames after the last shot are ignored.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from egovlp.data.video_io import read_frames_at
from egovlp.errors import DataError

log = logging.getLogger(__name__)

__all__ = ["SHOT_FRAMES", "QFVSShotBlocks", "ShotReader", "find_shot_source"]

SHOT_FRAMES = 5
_IMAGES = (".jpg", ".jpeg", ".png")
_VIDEOS = (".mp4", ".MP4", ".avi", ".mkv")


def _natural(name: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def find_shot_source(video_root: str | os.PathLike, video: str) -> Path:
    """The frames folder or video file of ``video`` under ``video_root`` (see the module docstring)."""
    root = Path(video_root)
    tried = []
    for folder in (root / "video_frames" / video, root / video):
        tried.append(str(folder) + "/")
        if folder.is_dir():
            return folder
    for base in (root, root / "videos"):
        for ext in _VIDEOS:
            path = base / f"{video}{ext}"
            tried.append(str(path))
            if path.is_file():
                return path
    raise DataError(f"QFVS video {video}: no frames folder or video file under {root} (tried {', '.join(tried)})")


class ShotReader:
    """``reader.read(start, end) -> (end - start, 5, H, W, 3)`` uint8: the frames of shots ``start..end - 1``."""

    def __init__(self, source: str | os.PathLike, num_shots: int) -> None:
        self.source, self.num_shots = Path(source), int(num_shots)
        self.frames: list[Path] | None = None
        if self.source.is_dir():
            self.frames = sorted(
                (p for p in self.source.iterdir() if p.suffix.lower() in _IMAGES), key=lambda p: _natural(p.name)
            )
            have, need = len(self.frames), SHOT_FRAMES * self.num_shots
            if have <= need - SHOT_FRAMES:
                raise DataError(
                    f"{self.source}: {have} frames, but {self.num_shots} shots need {need} ({SHOT_FRAMES} per shot)"
                )
            if have < need:
                log.warning("%s: the last shot has %d of %d frames (last frame repeated)", self.source,
                            have - need + SHOT_FRAMES, SHOT_FRAMES)  # fmt: skip

    def _images(self, index: np.ndarray) -> np.ndarray:
        from PIL import Image

        assert self.frames is not None
        out = []
        for i in np.minimum(index, len(self.frames) - 1):
            path = self.frames[int(i)]
            try:
                with Image.open(path) as image:
                    out.append(np.asarray(image.convert("RGB")))
            except OSError as e:
                raise DataError(f"{path}: cannot read the frame ({e})") from None
        shapes = {a.shape for a in out}
        if len(shapes) > 1:
            raise DataError(f"{self.source}: frames of different sizes {sorted(shapes)}")
        return np.stack(out)

    def read(self, start: int, end: int) -> np.ndarray:
        if not 0 <= start < end <= self.num_shots:
            raise ValueError(f"shots {start}..{end} outside 0..{self.num_shots}")
        index = np.arange(SHOT_FRAMES * start, SHOT_FRAMES * end)
        if self.frames is not None:
            frames = self._images(index)
        else:  # frame k is the one shown at k s; the last shot may end up to 4.5 s past the file's last frame
            frames = read_frames_at(self.source, index.astype(np.float64), end_tolerance=SHOT_FRAMES - 0.5,
                                    context=f"QFVS shots {start + 1}-{end} (1-based)")  # fmt: skip
        return frames.reshape(end - start, SHOT_FRAMES, *frames.shape[1:])


class QFVSShotBlocks(Dataset):
    """Blocks of consecutive shots of one video for feature extraction.

    Item ``k``: ``{"shots": (n, 5, 3, size, size) float32, "start": int}`` for shots ``k * block .. k * block + n -
    1``. ``transform(clip, generator)`` is applied per shot; a random transform gets a generator seeded with
    ``(seed, shot)`` so that every shot's crop is repeatable.
    """

    def __init__(self, reader: ShotReader, transform, block: int = 16, seed: int | None = None) -> None:
        self.reader, self.transform, self.block, self.seed = reader, transform, int(block), seed

    def __len__(self) -> int:
        return -(-self.reader.num_shots // self.block)

    def __getitem__(self, k: int) -> dict:
        start = k * self.block
        end = min(start + self.block, self.reader.num_shots)
        frames = self.reader.read(start, end)
        shots = []
        for i, clip in enumerate(frames):
            generator = None
            if self.seed is not None:
                generator = torch.Generator().manual_seed(self.seed * 1_000_003 + start + i)
            shots.append(self.transform(clip, generator))
        return {"shots": torch.stack(shots), "start": start}
