"""Building an index: sliding-window dual video embeddings of every video, a thumbnail per window, a FAISS index.

A run (:func:`build_index`):

1. collects the videos (:func:`~egovlp.search.inputs.collect_videos`) and checks the model and window settings
   against the folder's manifest (a different checkpoint or window setting is refused, see
   :func:`~egovlp.search.store.check_settings`), then records the settings (``complete: false``);
2. skips every video whose ``embeddings/<id>.npz`` exists (done by an earlier run: resume and incremental adds are
   the same thing) and embeds the others window batch by window batch: frames decoded once per batch, the middle
   frame of each window saved as its thumbnail, ``encode_video(normalize=True)`` ``(B, F, 3, S, S) -> (B, E)``;
3. rebuilds ``windows.npz`` and ``index.faiss`` from the embeddings of every video in the index (earlier runs'
   included) and writes the manifest (``complete: true``).
"""

from __future__ import annotations

import io
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from egovlp.config import config_to_dict
from egovlp.data.transforms import EvalTransform, eval_transform
from egovlp.errors import VideoReadError
from egovlp.features.config import ExtractConfig, VideoFeatureConfig
from egovlp.features.extract import FeatureExtractor
from egovlp.features.sources import VideoRef, probe_video, read_frames
from egovlp.features.windows import WindowPlan, plan_windows
from egovlp.search.ann import build_ann, write_ann
from egovlp.search.config import IndexConfig
from egovlp.search.inputs import collect_videos
from egovlp.search.store import (
    ANN_FILE,
    FORMAT,
    MANIFEST,
    WINDOWS_FILE,
    check_settings,
    checkpoint_fingerprint,
    embedding_path,
    read_embeddings,
    settings_hash,
    thumbnail_name,
    write_embeddings,
    write_json,
    write_windows,
)
from egovlp.utils.files import check_writable

log = logging.getLogger(__name__)

__all__ = ["IndexResult", "build_index", "index_settings"]


@dataclass
class IndexResult:
    """What a run did."""

    root: Path
    added: list[str] = field(default_factory=list)  # video ids embedded by this run
    skipped: list[str] = field(default_factory=list)  # done by an earlier run
    failed: dict[str, str] = field(default_factory=dict)  # id -> error (on_error=skip)
    num_windows: int = 0  # in the whole index
    num_new_windows: int = 0  # embedded by this run
    seconds: float = 0.0  # embedding time of this run
    index: dict = field(default_factory=dict)  # the FAISS parameters


@dataclass(frozen=True)
class _Job:
    vid: str
    ref: VideoRef
    plan: WindowPlan


class _Batch(NamedTuple):
    job: int
    batch: int
    video: torch.Tensor | None  # (b, F, 3, S, S)
    thumbs: list[bytes]  # b JPEG files
    error: str | None = None


def _jpeg(frame: np.ndarray, width: int, quality: int) -> bytes:
    from PIL import Image

    img = Image.fromarray(frame)
    height = max(1, round(img.height * width / img.width))
    buf = io.BytesIO()
    img.resize((width, height), Image.Resampling.BILINEAR).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


class _Batches(Dataset):
    """Window batches of every job; ``[i]`` decodes one batch (one seek), its thumbnails and model input."""

    def __init__(self, jobs: list[_Job], cfg: IndexConfig, transform: EvalTransform) -> None:
        self.jobs, self.cfg, self.transform = jobs, cfg, transform
        self.size = cfg.batch_size
        self.index = [(j, k) for j, job in enumerate(jobs) for k in range(-(-job.plan.num_windows // self.size))]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> _Batch:
        j, k = self.index[i]
        job = self.jobs[j]
        times = job.plan.times[k * self.size : (k + 1) * self.size]  # (b, F)
        try:
            frames = read_frames(job.ref, times.reshape(-1))  # (b*F, H, W, 3)
        except VideoReadError as e:
            return _Batch(j, k, None, [], str(e))
        b, f = times.shape
        middle = frames.reshape(b, f, *frames.shape[1:])[:, f // 2]  # (b, H, W, 3)
        thumbs = [_jpeg(m, self.cfg.thumbnail_width, self.cfg.thumbnail_quality) for m in middle]
        clip = self.transform(frames)  # (b*F, 3, S, S)
        return _Batch(j, k, clip.view(b, f, *clip.shape[1:]), thumbs)


def index_settings(cfg: IndexConfig, model: Any) -> dict:
    """What decides the embeddings: the checkpoint (name, size, SHA-256), the model's arch and width, the windows."""
    mcfg = model.cfg
    return {
        "model": {
            **checkpoint_fingerprint(cfg.checkpoint),
            "family": getattr(mcfg, "family", "egovlpv2"),
            "arch": getattr(mcfg, "arch", ""),
            "embed_dim": int(mcfg.embed_dim),
        },
        "window": config_to_dict(cfg.window),
        "chunk_seconds": cfg.chunk_seconds,
    }


def _identity(x):
    return x


def _plan(vid: str, ref: VideoRef, cfg: IndexConfig) -> _Job:
    fps, duration = probe_video(ref)
    return _Job(vid, ref, plan_windows(0.0, duration, fps, cfg.window))


def _entry(job: _Job) -> dict:
    ref, plan = job.ref, job.plan
    return {
        "id": job.vid,
        "source": ref.describe(),
        "kind": ref.kind,
        "root": ref.path,
        "uid": ref.uid,
        "chunk_seconds": ref.chunk_seconds if ref.kind == "chunked" else None,
        "fps": plan.fps,
        "duration": plan.duration,
        "num_windows": plan.num_windows,
        "embeddings": f"embeddings/{job.vid}.npz",
        "thumbs": f"thumbs/{job.vid}",
    }


class _Embedder:
    """Runs the jobs: model passes, thumbnails, one embedding file per finished video."""

    def __init__(self, cfg: IndexConfig, model: Any, device: torch.device, root: Path, result: IndexResult) -> None:
        ecfg = ExtractConfig(video=VideoFeatureConfig(project=True, normalize=True), precision=cfg.precision)
        self.cfg, self.root, self.result = cfg, root, result
        self.extractor = FeatureExtractor(model, ecfg, device)
        self.transform = eval_transform(model.cfg.video.img_size)

    def fail(self, vid: str, error: str) -> None:
        if self.cfg.on_error == "raise":
            raise VideoReadError(error)
        log.warning("skipping %s: %s", vid, error)
        self.result.failed[vid] = error

    def run(self, jobs: list[_Job]) -> None:
        from tqdm.auto import tqdm

        loader = DataLoader(
            _Batches(jobs, self.cfg, self.transform), batch_size=None, num_workers=self.cfg.num_workers,
            collate_fn=_identity,
        )  # fmt: skip
        parts: dict[int, list[torch.Tensor]] = {}
        failed: set[int] = set()
        total = sum(j.plan.num_windows for j in jobs)
        for job in jobs:  # a video shorter than one window under window.last=drop: done, with no window
            if job.plan.num_windows == 0:
                self.save(job, np.zeros((0, int(self.extractor.model.cfg.embed_dim)), np.float32))
        with tqdm(total=total, disable=not self.cfg.progress, unit="win", desc="index", dynamic_ncols=True) as bar:
            for b in loader:
                job = jobs[b.job]
                bar.update(len(job.plan.start[b.batch * self.cfg.batch_size : (b.batch + 1) * self.cfg.batch_size]))
                if b.job in failed:
                    continue
                if b.error is not None or b.video is None:
                    failed.add(b.job)
                    parts.pop(b.job, None)
                    self.fail(job.vid, b.error or "no frames")
                    continue
                for n, data in enumerate(b.thumbs):
                    path = self.root / thumbnail_name(job.vid, b.batch * self.cfg.batch_size + n)
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(data)
                parts.setdefault(b.job, []).append(self.extractor.video_features(b.video))
                if (b.batch + 1) * self.cfg.batch_size >= job.plan.num_windows:
                    self.save(job, torch.cat(parts.pop(b.job)).numpy())

    def save(self, job: _Job, embeddings: np.ndarray) -> None:
        write_embeddings(embedding_path(self.root, job.vid), embeddings, job.plan.start, job.plan.end, _entry(job))
        self.result.added.append(job.vid)
        self.result.num_new_windows += job.plan.num_windows


def _finish(cfg: IndexConfig, root: Path, base: dict, order: list[str], result: IndexResult) -> dict:
    """Rebuild windows.npz and index.faiss from every video's embeddings; the final manifest."""
    videos: list[dict] = []
    vectors: list[np.ndarray] = []
    owner: list[np.ndarray] = []
    starts: list[np.ndarray] = []
    ends: list[np.ndarray] = []
    first = 0
    for vid in order:
        path = embedding_path(root, vid)
        if not path.is_file():
            continue
        emb, start, end, entry = read_embeddings(path)
        entry["first_window"] = first
        first += len(start)
        owner.append(np.full(len(start), len(videos), np.int32))
        videos.append(entry)
        vectors.append(emb)
        starts.append(start)
        ends.append(end)
    dim = base["settings"]["model"]["embed_dim"]
    x = np.concatenate(vectors) if vectors else np.zeros((0, dim), np.float32)
    cat = (lambda a, t: np.concatenate(a) if a else np.zeros(0, t))  # fmt: skip
    write_windows(root / WINDOWS_FILE, cat(owner, np.int32), cat(starts, np.float64), cat(ends, np.float64))
    ann, params = build_ann(x, cfg.index)
    write_ann(ann, root / ANN_FILE)
    result.num_windows, result.index = int(x.shape[0]), params
    return {**base, "complete": True, "index": params, "num_windows": int(x.shape[0]), "videos": videos}


def build_index(cfg: IndexConfig, videos: list[str], model: Any, device: torch.device | str = "cpu") -> IndexResult:
    """Index ``videos`` (files and folders, see :mod:`egovlp.search.inputs`) into ``cfg.out_dir`` with ``model``
    (loaded with ``cfg.window.num_frames`` frames; any family with ``encode_video``)."""
    cfg.validate()
    root = Path(cfg.out_dir)
    found = collect_videos(videos, cfg.extensions, cfg.chunk_seconds)
    settings = index_settings(cfg, model)
    previous = check_settings(root, settings)
    check_writable(root, "--out")
    old = [v["id"] for v in (previous or {}).get("videos", [])]
    order = old + [vid for vid, _ in found if vid not in old]
    base = {
        "format": FORMAT,
        "checkpoint": str(Path(cfg.checkpoint).resolve()),
        "tokenizer": str(Path(cfg.tokenizer).resolve()) if cfg.tokenizer else (previous or {}).get("tokenizer", ""),
        "settings": settings,
        "settings_hash": settings_hash(settings),
        "updated": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    early = {**base, "complete": False, "videos": (previous or {}).get("videos", [])}
    write_json(root / MANIFEST, early)  # the settings are on record before any embedding is written
    result = IndexResult(root)
    embedder = _Embedder(cfg, model, torch.device(device), root, result)
    jobs = []
    for vid, ref in found:
        if embedding_path(root, vid).is_file():
            result.skipped.append(vid)
            continue
        try:
            jobs.append(_plan(vid, ref, cfg))
        except VideoReadError as e:
            embedder.fail(vid, str(e))
    log.info("%d video(s): %d to index, %d done before", len(found), len(jobs), len(result.skipped))
    started = time.perf_counter()
    embedder.run(jobs)
    result.seconds = time.perf_counter() - started
    manifest = _finish(cfg, root, base, order, result)
    manifest["failed"] = result.failed
    write_json(root / MANIFEST, manifest)
    return result
