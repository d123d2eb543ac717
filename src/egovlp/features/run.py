"""One extraction run: collect items, skip finished ones, extract the rest on this rank, write the manifest.

Under torchrun every rank takes items ``rank, rank + W, ...`` of the same ordered list (no item twice), writes its own
files, and sends its manifest entries to rank 0 through ``gather`` (a collective, so every rank has finished when it
returns); rank 0 then writes ``manifest.json``. Rank, world size and ``gather`` are passed in, so the library needs
no process group (the command line passes :func:`egovlp.train.distributed.gather_objects`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from egovlp.config import config_to_dict
from egovlp.data.transforms import eval_transform
from egovlp.errors import VideoReadError
from egovlp.features.config import ExtractConfig
from egovlp.features.extract import FeatureExtractor, Job, WindowBatch, WindowBatches, feature_dim
from egovlp.features.sources import Item, collect_items, probe_video
from egovlp.features.store import (
    check_settings,
    feature_path,
    read_entry,
    remove_stale_temporaries,
    settings_hash,
    write_features,
    write_manifest,
)
from egovlp.features.windows import plan_windows

log = logging.getLogger(__name__)

__all__ = ["ExtractResult", "extract_features", "feature_settings"]

# Config fields that do not change the features (how fast, where, what to do on errors).
_RUNTIME_FIELDS = ("out_dir", "batch_size", "num_workers", "device", "progress", "on_error", "source")


@dataclass
class ExtractResult:
    """What a run did: on rank 0 for every rank (and ``manifest``, the path written), elsewhere for this rank."""

    out_dir: Path
    extracted: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # finished by an earlier run
    failed: dict[str, str] = field(default_factory=dict)
    manifest: Path | None = None


def feature_settings(cfg: ExtractConfig, model) -> dict:
    """The settings that decide the features (recorded in the manifest and compared when resuming)."""
    settings = {k: v for k, v in config_to_dict(cfg).items() if k not in _RUNTIME_FIELDS}
    settings["source"] = {"chunk_seconds": cfg.source.chunk_seconds}
    ckpt = Path(cfg.checkpoint)
    settings["checkpoint"] = {"name": ckpt.name, "bytes": ckpt.stat().st_size if ckpt.is_file() else None}
    settings["model"] = {
        "arch": model.cfg.arch,
        "num_frames": cfg.window.num_frames,
        "feature_dim": feature_dim(model, cfg),
    }
    return settings


def _local_gather(obj: object) -> list:
    return [obj]


# ---------------------------------------------------------------------------------------------------- planning
def _plan(item: Item, cfg: ExtractConfig) -> Job:
    if cfg.mode == "text":
        return Job(item, None)
    fps, duration = probe_video(item.video)
    start, end = item.span if item.span is not None else (0.0, duration)
    if end > duration + 1.0:
        log.warning(
            "%s: span ends at %.2f s but %s lasts %.2f s; clipped", item.id, end, item.video.describe(), duration
        )
    end = min(end, duration)
    if start >= end:
        raise VideoReadError(f"{item.video.describe()}: span {start:.2f}-{end:.2f} s of {item.id} is past its end")
    return Job(item, plan_windows(start, end, fps, cfg.window))


def _entry(job: Job, path: Path, out_dir: Path, arrays: dict[str, np.ndarray], cfg: ExtractConfig) -> dict:
    item, plan = job.item, job.plan
    entry = {
        "id": item.id,
        "status": "ok",
        "file": path.relative_to(out_dir).as_posix(),
        "mode": cfg.mode,
        "shape": list(arrays["features"].shape),
        "arrays": list(arrays),
    }
    if plan is not None:
        entry.update(
            source=item.video.describe(),
            fps=plan.fps,
            duration=plan.duration,
            offset=plan.offset,
            num_windows=plan.num_windows,
            features_per_second=plan.features_per_second,
        )
    if cfg.mode != "video":
        entry["queries"] = [{"key": q.key, "text": q.text, **({"time": q.time} if q.time is not None else {})}
                            for q in item.queries]  # fmt: skip
    return entry


# ----------------------------------------------------------------------------------------------------- running
class _Run:
    """The state of one rank's run: jobs, partial features, entries, failures."""

    def __init__(self, cfg: ExtractConfig, extractor: FeatureExtractor, out_dir: Path) -> None:
        self.cfg, self.extractor, self.out_dir = cfg, extractor, out_dir
        self.entries: dict[str, dict] = {}
        self.result = ExtractResult(out_dir)
        self.dim = feature_dim(extractor.model, cfg)

    def fail(self, item: Item, error: str) -> None:
        if self.cfg.on_error == "raise":
            raise VideoReadError(error)
        log.warning("skipping %s: %s", item.id, error)
        self.result.failed[item.id] = error

    def save(self, job: Job, arrays: dict[str, np.ndarray]) -> None:
        if self.cfg.dtype == "float16":
            arrays = {k: v.astype(np.float16) if v.dtype == np.float32 else v for k, v in arrays.items()}
        path = feature_path(self.out_dir, job.item.id, self.cfg.format)
        entry = _entry(job, path, self.out_dir, arrays, self.cfg)
        write_features(path, arrays, entry, self.cfg.format)
        self.entries[job.item.id] = entry
        self.result.extracted.append(job.item.id)

    def window_arrays(self, job: Job, features: list[torch.Tensor], queries: dict | None) -> dict[str, np.ndarray]:
        axis = 1 if self.cfg.mode == "fused" else 0
        if features:
            feats = torch.cat(features, dim=axis).numpy()
        else:  # a span shorter than one window with last="drop"
            shape = (len(job.item.queries), 0, self.dim) if axis else (0, self.dim)
            feats = np.zeros(shape, np.float32)
        arrays = {"features": feats, "window_start": job.plan.start, "window_end": job.plan.end}
        if queries is not None and queries["tokens"] is not None:
            arrays["text_tokens"] = queries["tokens"].float().cpu().numpy()
            arrays["text_mask"] = queries["mask"].cpu().numpy().astype(np.int8)
        return arrays


def _identity(x: WindowBatch) -> WindowBatch:
    return x


def _run_texts(run: _Run, jobs: list[Job], bar) -> None:
    step = run.cfg.batch_size
    for job in jobs:
        texts = [q.text for q in job.item.queries]
        chunks = [run.extractor.text_features(texts[i : i + step]) for i in range(0, len(texts), step)]
        run.save(job, {name: np.concatenate([c[name] for c in chunks]) for name in chunks[0]})
        bar.update(1)


def _run_windows(run: _Run, jobs: list[Job], bar) -> None:
    cfg = run.cfg
    size = run.extractor.model.cfg.video.img_size
    batches = WindowBatches(jobs, cfg.batch_size, eval_transform(size))
    loader = DataLoader(
        batches,
        batch_size=None,
        num_workers=cfg.num_workers,
        collate_fn=_identity,
        pin_memory=run.extractor.device.type == "cuda",
    )
    parts: dict[int, list[torch.Tensor]] = {}
    queries: dict[int, dict] = {}
    failed: set[int] = set()
    for job in jobs:
        if job.num_batches(cfg.batch_size) == 0:
            run.save(job, run.window_arrays(job, [], _queries(run, job)))
    for wb in loader:
        job = jobs[wb.job]
        bar.update(len(job.plan.times[wb.batch * cfg.batch_size : (wb.batch + 1) * cfg.batch_size]))
        if wb.job in failed:
            continue
        if wb.error is not None:
            failed.add(wb.job)
            parts.pop(wb.job, None)
            run.fail(job.item, wb.error)
            continue
        if cfg.mode == "fused":
            if wb.job not in queries:
                queries[wb.job] = _queries(run, job)
            feats = run.extractor.fused_features(wb.video, queries[wb.job])
        else:
            feats = run.extractor.video_features(wb.video)
        parts.setdefault(wb.job, []).append(feats)
        if wb.batch == job.num_batches(cfg.batch_size) - 1:
            run.save(job, run.window_arrays(job, parts.pop(wb.job), queries.pop(wb.job, None)))


def _queries(run: _Run, job: Job) -> dict | None:
    if run.cfg.mode != "fused":
        return None
    return run.extractor.query_states([q.text for q in job.item.queries])


def _progress(total: int, enabled: bool, unit: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not enabled, unit=unit, desc="extract", dynamic_ncols=True)


def _final_manifest(cfg, settings, previous: dict | None, all_entries: list, all_failed: list, out_dir: Path) -> dict:
    videos = {k: v for k, v in (previous or {}).get("videos", {}).items() if (out_dir / v["file"]).is_file()}
    failed = dict((previous or {}).get("failed", {}))
    for entries in all_entries:
        videos.update(entries)
    for fails in all_failed:
        failed.update({k: {"status": "failed", "error": e} for k, e in fails.items()})
    failed = {k: v for k, v in failed.items() if k not in videos}
    return {
        "complete": True,
        "updated": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "mode": cfg.mode,
        "checkpoint": str(Path(cfg.checkpoint).resolve()),
        "model": settings["model"],
        "settings": settings,
        "settings_hash": settings_hash(settings),
        "config": config_to_dict(cfg),
        "num_videos": len(videos),
        "num_failed": len(failed),
        "videos": dict(sorted(videos.items())),
        "failed": dict(sorted(failed.items())),
    }


def extract_features(
    cfg: ExtractConfig,
    model,
    tokenizer=None,
    device: torch.device | str = "cpu",
    rank: int = 0,
    world_size: int = 1,
    gather: Callable[[object], list] = _local_gather,
) -> ExtractResult:
    """Extract the features ``cfg`` describes with ``model`` (already loaded with ``window.num_frames`` frames).

    Items whose file exists are skipped (their entries are read from the file); the rest are extracted by this
    rank. Returns what was done: on rank 0 by every rank, with ``manifest`` the written ``manifest.json``.
    """
    cfg.validate()
    device = torch.device(device)
    out_dir = Path(cfg.out_dir)
    items = collect_items(cfg.source, cfg.mode)
    settings = feature_settings(cfg, model)
    previous = check_settings(out_dir, settings)
    out_dir.mkdir(parents=True, exist_ok=True)
    if rank == 0:  # record the settings now, so that a concurrent or crashed run is checked against them
        write_manifest(out_dir, {**_final_manifest(cfg, settings, previous, [], [], out_dir), "complete": False})
    run = _Run(cfg, FeatureExtractor(model, cfg, device, tokenizer), out_dir)
    jobs = []
    for item in items[rank::world_size]:
        path = feature_path(out_dir, item.id, cfg.format)
        if path.is_file():
            run.entries[item.id] = read_entry(path)
            run.result.skipped.append(item.id)
            continue
        try:
            jobs.append(_plan(item, cfg))
        except VideoReadError as e:
            run.fail(item, str(e))
    log.info(
        "%d item(s) on rank %d: %d to extract, %d done before, %d unreadable",
        len(items[rank::world_size]), rank, len(jobs), len(run.result.skipped), len(run.result.failed),
    )  # fmt: skip
    windows = cfg.mode != "text"
    total = sum(j.plan.num_windows for j in jobs) if windows else len(jobs)
    with _progress(total, cfg.progress and rank == 0, "win" if windows else "item") as bar:
        (_run_windows if windows else _run_texts)(run, jobs, bar)
    r = run.result
    gathered = gather((run.entries, r.failed, r.extracted, r.skipped))
    if rank == 0:
        manifest = _final_manifest(cfg, settings, previous, [g[0] for g in gathered], [g[1] for g in gathered], out_dir)
        r.manifest = write_manifest(out_dir, manifest)
        remove_stale_temporaries(out_dir)
        r.failed = {k: v for g in gathered for k, v in g[1].items()}
        r.extracted = sorted(i for g in gathered for i in g[2])
        r.skipped = sorted(i for g in gathered for i in g[3])
    return r
