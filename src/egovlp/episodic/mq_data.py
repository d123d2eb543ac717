"""Ego4D MQ clips over a feature store: the detector's dataset, its collate function and the test-split reader.

A feature store is a folder written by ``egovlp extract`` in mode ``video`` (one ``<clip_uid>.safetensors`` per clip
with ``features (T, D)``, ``window_start (T,)`` and ``window_end (T,)`` in seconds from the clip start, and
``manifest.json``). A clip's features are read when its item is loaded, so a split of any size fits in memory.

Times become level-0 grid positions (see :mod:`egovlp.episodic.targets`): ``p = (t - t0) / dt``, ``t0`` the centre of
the first window and ``dt = 1 / features_per_second``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from egovlp.data.json_records import array, number, read_json, text
from egovlp.data.moments import MQClip
from egovlp.episodic.detector import padded_length
from egovlp.errors import DataError
from egovlp.features.store import read_features, read_manifest

log = logging.getLogger(__name__)

__all__ = ["ClipFeatures", "MQCollate", "MQFeatureDataset", "feature_clips", "load_test_clips"]


@dataclass(frozen=True)
class ClipFeatures:
    """A clip with its feature file and ground truth (seconds from the clip start; empty for the test split)."""

    clip: MQClip
    path: Path


def load_test_clips(path: str | os.PathLike) -> list[MQClip]:
    """The clips of an MQ file without labels (``moments_test_unannot.json``): ``videos[].clips[]`` with
    ``clip_uid``, ``video_start_sec`` and ``video_end_sec`` (labels, if any, are ignored). DataError names the
    file, the clip and the field."""
    name = str(path)
    data = read_json(name, "MQ test")
    clips = []
    for vi, v in enumerate(array(data, "videos", name)):
        video_uid = text(v, "video_uid", f"{name}: videos[{vi}]")
        for ci, c in enumerate(array(v, "clips", f"{name}: video {video_uid}")):
            clip_uid = text(c, "clip_uid", f"{name}: video {video_uid} clips[{ci}]")
            where = f"{name}: clip {clip_uid}"
            v0, v1 = number(c, "video_start_sec", where), number(c, "video_end_sec", where)
            if v1 <= v0:
                raise DataError(f"{where}: 'video_end_sec' {v1:g} must be after 'video_start_sec' {v0:g}")
            clips.append(MQClip(video_uid, clip_uid, v0, v1, (), (), ()))
    if not clips:
        raise DataError(f"{name}: no clips")
    return clips


def feature_clips(
    clips: Sequence[MQClip], feature_dir: str | os.PathLike, missing: str = "raise"
) -> tuple[list[ClipFeatures], list[str]]:
    """The clips whose features are in ``feature_dir`` and the clip_uids without (``missing="skip"``, logged).

    A clip is missing when the manifest does not list it (not extracted, or unreadable: listed under ``failed``) or
    its file has no window. ``missing="raise"``: a :class:`DataError` naming the folder and the first clips.
    """
    manifest = read_manifest(feature_dir)
    if manifest is None:
        raise DataError(f"{feature_dir}: no manifest.json (not a feature folder of `egovlp extract`)")
    if manifest.get("mode") != "video":
        raise DataError(f"{feature_dir}: holds mode={manifest.get('mode')!r} features; MQ reads mode=video ones")
    entries = manifest.get("videos", {})
    kept, absent = [], []
    for clip in clips:
        entry = entries.get(clip.clip_uid)
        if entry is None or not entry.get("num_windows"):
            absent.append(clip.clip_uid)
            continue
        kept.append(ClipFeatures(clip, Path(feature_dir) / entry["file"]))
    if absent:
        failed = manifest.get("failed", {})
        why = "; ".join(f"{uid}: {failed.get(uid, {}).get('error', 'no features / no window')}" for uid in absent[:3])
        if missing == "raise":
            raise DataError(f"{feature_dir}: {len(absent)} clip(s) without features ({why}); missing=skip leaves "
                            "them out (their ground truth then counts as missed)")  # fmt: skip
        log.warning("%s: %d clip(s) without features left out (%s)", feature_dir, len(absent), why)
    return kept, absent


class MQFeatureDataset(Dataset):
    """Items of :class:`ClipFeatures`; with ``max_seq_len > 0`` a longer clip is cropped to a random window of that
    many steps (training), its segments clipped to the crop (those left shorter than ``min_crop_overlap`` of their
    length are dropped).

    Item: ``features (T, D)`` float32, ``segments (N, 2)`` grid units, ``labels (N,)`` int64, ``index`` (the clip's
    position), ``t0`` / ``dt`` (seconds), ``offset`` (grid steps cropped away at the start) and ``duration``.
    """

    def __init__(self, clips: Sequence[ClipFeatures], max_seq_len: int = 0, min_crop_overlap: float = 0.3) -> None:
        self.clips, self.max_seq_len, self.min_crop_overlap = list(clips), max_seq_len, min_crop_overlap

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.clips[index]
        f = read_features(item.path)
        feats, start, end = f.features, f.arrays.get("window_start"), f.arrays.get("window_end")
        if start is None or end is None or feats.ndim != 2 or len(start) != len(feats) or not len(feats):
            raise DataError(f"{item.path}: expected features (T, D) with window_start/window_end (T,), T >= 1")
        fps = float(f.entry.get("features_per_second") or 0.0)
        dt = 1.0 / fps if fps > 0 else float(start[1] - start[0]) if len(start) > 1 else float(end[0] - start[0])
        t0 = float(start[0] + end[0]) / 2
        seg = (np.asarray(item.clip.segments, np.float64).reshape(-1, 2) - t0) / dt
        labels = np.asarray(item.clip.labels, np.int64)
        offset = 0
        if self.max_seq_len and len(feats) > self.max_seq_len:
            offset = int(torch.randint(0, len(feats) - self.max_seq_len + 1, ()).item())
            feats = feats[offset : offset + self.max_seq_len]
            seg, labels = self._crop(seg - offset, labels, len(feats))
        return {
            "features": torch.from_numpy(np.ascontiguousarray(feats, np.float32)),
            "segments": torch.from_numpy(seg.astype(np.float32)),
            "labels": torch.from_numpy(labels),
            "index": index, "t0": t0, "dt": dt, "offset": offset, "duration": item.clip.duration,
        }  # fmt: skip

    def _crop(self, seg: np.ndarray, labels: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
        clipped = np.clip(seg, 0.0, length - 1.0)
        full = np.maximum(seg[:, 1] - seg[:, 0], 1e-6)
        keep = (clipped[:, 1] - clipped[:, 0]) / full >= self.min_crop_overlap
        return clipped[keep], labels[keep]


class MQCollate:
    """Pads a list of items to ``padded_length(max T, num_levels)``: ``features (B, T, D)``, ``mask (B, T)`` bool;
    ``segments`` / ``labels`` stay lists; the other fields become lists too."""

    def __init__(self, num_levels: int) -> None:
        self.num_levels = num_levels

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        length = padded_length(max(it["features"].shape[0] for it in items), self.num_levels)
        dim = items[0]["features"].shape[1]
        feats = torch.zeros(len(items), length, dim)
        mask = torch.zeros(len(items), length, dtype=torch.bool)
        for b, it in enumerate(items):
            n = it["features"].shape[0]
            feats[b, :n], mask[b, :n] = it["features"], True
        out: dict[str, Any] = {"features": feats, "mask": mask, "lengths": [it["features"].shape[0] for it in items]}
        for key in ("segments", "labels", "index", "t0", "dt", "offset", "duration"):
            out[key] = [it[key] for it in items]
        return out
