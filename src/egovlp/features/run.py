"""One extraction run: collect items, skip finished ones, extract the rest on this rank, write the manifest.

Under torchrun every rank takes items ``rank, rank + W, ...`` of the same ordered list (no item twice), writes its own
files, and sends its manifest entries to rank 0 through ``gather`` (a collective, so every rank has finished when it
returns); rank 0 then writes ``manifest.json``. Rank, world size and ``gather`` are passed in, so the library needs
no process group (the command line passes :func:`egovlp.train.distributed.gather_objects`).

Nothing is dropped silently: queries without text are logged and counted (``queries_without_text`` in the result
and the manifest), unreadable videos are raised or, under ``on_error=skip``, logged and listed under ``failed``, and
a run in which no video at all could be read raises after writing the manifest.
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
from egovlp.features.extract import FeatureExtractor, Job, WindowBatches, feature_dim
from egovlp.features.sources import Collection, Item, VideoRef, collect_inputs, probe_video
from egovlp.features.store import (
    MANIFEST,
    check_settings,
    feature_path,
    item_files,
    read_entry,
    remove_own_temporaries,
    remove_stale_temporaries,
    settings_hash,
    write_features,
    write_manifest,
)
from egovlp.features.windows import WindowPlan, plan_windows
from egovlp.utils.files import check_writable

log = logging.getLogger(__name__)

__all__ = ["ExtractResult", "collect_run_inputs", "extract_features", "feature_settings"]

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
    queries_without_text: dict[str, list[str]] = field(default_factory=dict)  # item id -> keys of textless queries
    items_without_text: list[str] = field(default_factory=list)  # left out: none of their queries has text

    @property
    def num_queries_without_text(self) -> int:
        return sum(len(keys) for keys in self.queries_without_text.values())


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
def _plan(item: Item, cfg: ExtractConfig, probes: dict[VideoRef, tuple[float, float] | str]) -> Job:
    """The windows of ``item``; ``probes`` caches each video's ``(fps, duration)`` or its error (clips share it)."""
    if cfg.mode == "text" or item.video is None:
        return Job(item, None)
    ref = item.video
    if ref not in probes:
        try:
            probes[ref] = probe_video(ref)
        except VideoReadError as e:
            probes[ref] = str(e)
    probed = probes[ref]
    if isinstance(probed, str):
        raise VideoReadError(probed)
    fps, duration = probed
    start, end = item.span if item.span is not None else (0.0, duration)
    if end > duration + 1.0:
        log.warning("%s: span ends at %.2f s but %s lasts %.2f s; clipped", item.id, end, ref.describe(), duration)
    end = min(end, duration)
    if start >= end:
        raise VideoReadError(f"{ref.describe()}: span {start:.2f}-{end:.2f} s of {item.id} is past its end")
    return Job(item, plan_windows(start, end, fps, cfg.window))


def _entry(job: Job, path: Path, out_dir: Path, arrays: dict[str, np.ndarray], cfg: ExtractConfig) -> dict:
    item, plan = job.item, job.plan
    entry: dict[str, object] = {
        "id": item.id,
        "status": "ok",
        "file": path.relative_to(out_dir).as_posix(),
        "mode": cfg.mode,
        "shape": list(arrays["features"].shape),
        "arrays": list(arrays),
    }
    if plan is not None and item.video is not None:
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
        self.created: set[Path] = set()  # the temporary files this rank made (removed at the end if still there)

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
        write_features(path, arrays, entry, self.cfg.format, self.created)
        self.entries[job.item.id] = entry
        self.result.extracted.append(job.item.id)

    def window_arrays(self, job: Job, features: list[torch.Tensor], queries: dict | None) -> dict[str, np.ndarray]:
        plan = _window_plan(job)
        axis = 1 if self.cfg.mode == "fused" else 0
        if features:
            feats = torch.cat(features, dim=axis).numpy()
        else:  # a span shorter than one window with last="drop"
            shape = (len(job.item.queries), 0, self.dim) if axis else (0, self.dim)
            feats = np.zeros(shape, np.float32)
        arrays = {"features": feats, "window_start": plan.start, "window_end": plan.end}
        if queries is not None and queries["tokens"] is not None:
            arrays["text_tokens"] = queries["tokens"].float().cpu().numpy()
            arrays["text_mask"] = queries["mask"].cpu().numpy().astype(np.int8)
        return arrays


def _window_plan(job: Job) -> WindowPlan:
    if job.plan is None:
        raise ValueError(f"{job.item.id}: a text-only job has no windows")
    return job.plan


def _identity(x):  # the batches are made by WindowBatches; the DataLoader only moves them (typed loosely for it)
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
        bar.update(len(_window_plan(job).times[wb.batch * cfg.batch_size : (wb.batch + 1) * cfg.batch_size]))
        if wb.job in failed:
            continue
        if wb.error is not None:
            failed.add(wb.job)
            parts.pop(wb.job, None)
            run.fail(job.item, wb.error)
            continue
        if wb.video is None:
            raise ValueError(f"{job.item.id}: batch {wb.batch} has neither frames nor an error")
        if cfg.mode == "fused":
            if wb.job not in queries:
                queries[wb.job] = run.extractor.query_states([q.text for q in job.item.queries])
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


def _final_manifest(
    cfg: ExtractConfig,
    settings: dict,
    previous: dict | None,
    collection: Collection,
    all_entries: list[dict],
    all_failed: list[dict[str, str]],
    out_dir: Path,
) -> dict:
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
        "num_queries_without_text": collection.num_queries_without_text,
        "num_items_without_text": len(collection.items_without_text),
        "videos": dict(sorted(videos.items())),
        "failed": dict(sorted(failed.items())),
        "queries_without_text": collection.queries_without_text,
        "items_without_text": collection.items_without_text,
    }


def _nothing_read(cfg: ExtractConfig, result: ExtractResult) -> VideoReadError | None:
    """The error of a video run in which items failed and not one video could be read (now or before)."""
    if cfg.mode == "text" or not result.failed or result.extracted or result.skipped:
        return None
    first = "; ".join(f"{k}: {e}" for k, e in list(result.failed.items())[:3])
    more = f"; and {len(result.failed) - 3} more" if len(result.failed) > 3 else ""
    return VideoReadError(
        f"no video could be read: all {len(result.failed)} item(s) failed: {first}{more} "
        f"(all listed in {result.manifest})"
    )


def _plan_jobs(run: _Run, items: list[Item]) -> list[Job]:
    """The jobs of this rank's items; finished items are skipped, unreadable ones go to the error policy."""
    jobs = []
    probes: dict[VideoRef, tuple[float, float] | str] = {}
    for item in items:
        path = feature_path(run.out_dir, item.id, run.cfg.format)
        if path.is_file():
            run.entries[item.id] = read_entry(path)
            run.result.skipped.append(item.id)
            continue
        try:
            jobs.append(_plan(item, run.cfg, probes))
        except VideoReadError as e:
            run.fail(item, str(e))
    return jobs


def collect_run_inputs(cfg: ExtractConfig) -> Collection:
    """The items of a run, every id checked as the output name it will become (before any work is done).

    Raises :class:`ConfigError` / :class:`DataError` for bad settings, inputs or ids.
    """
    cfg.validate()
    collection = collect_inputs(cfg.source, cfg.mode)
    for item in collection.items:
        item_files(cfg.out_dir, item.id, cfg.format)
    return collection


def extract_features(
    cfg: ExtractConfig,
    model,
    tokenizer=None,
    device: torch.device | str = "cpu",
    rank: int = 0,
    world_size: int = 1,
    gather: Callable[[object], list] = _local_gather,
    inputs: Collection | None = None,
) -> ExtractResult:
    """Extract the features ``cfg`` describes with ``model`` (already loaded with ``window.num_frames`` frames).

    Items whose file exists are skipped (their entries are read from the file); the rest are extracted by this
    rank. Returns what was done: on rank 0 by every rank, with ``manifest`` the written ``manifest.json``.
    ``inputs``: what :func:`collect_run_inputs` returned for ``cfg`` (collected here when None). Raises
    :class:`VideoReadError` (on rank 0, after writing the manifest) when items failed and no video at all could be
    read.
    """
    started = time.time()
    collection = collect_run_inputs(cfg) if inputs is None else inputs
    cfg.validate()
    device = torch.device(device)
    out_dir = Path(cfg.out_dir)
    items = collection.items
    files = [f for item in items for f in item_files(out_dir, item.id, cfg.format)]
    settings = feature_settings(cfg, model)
    previous = check_settings(out_dir, settings)
    if rank == 0:
        collection.log_left_out(cfg.source.annotations)
    check_writable(out_dir, "--out")
    run = _Run(cfg, FeatureExtractor(model, cfg, device, tokenizer), out_dir)
    if rank == 0:  # record the settings now, so that a concurrent or crashed run is checked against them
        early = _final_manifest(cfg, settings, previous, collection, [], [], out_dir)
        write_manifest(out_dir, {**early, "complete": False}, run.created)
    mine = items[rank::world_size]
    jobs = _plan_jobs(run, mine)
    log.info(
        "%d item(s) on rank %d: %d to extract, %d done before, %d unreadable",
        len(mine), rank, len(jobs), len(run.result.skipped), len(run.result.failed),
    )  # fmt: skip
    windows = cfg.mode != "text"
    total = sum(_window_plan(j).num_windows for j in jobs) if windows else len(jobs)
    try:
        with _progress(total, cfg.progress and rank == 0, "win" if windows else "item") as bar:
            (_run_windows if windows else _run_texts)(run, jobs, bar)
    finally:
        remove_own_temporaries(run.created)
    r = run.result
    gathered = gather((run.entries, r.failed, r.extracted, r.skipped))
    r.queries_without_text, r.items_without_text = collection.queries_without_text, collection.items_without_text
    if rank != 0:
        return r
    entries, fails = [g[0] for g in gathered], [g[1] for g in gathered]
    manifest = _final_manifest(cfg, settings, previous, collection, entries, fails, out_dir)
    r.manifest = write_manifest(out_dir, manifest, run.created)
    remove_stale_temporaries([*files, out_dir / MANIFEST], before=started)  # every rank has finished (gather)
    r.failed = {k: v for g in gathered for k, v in g[1].items()}
    r.extracted = sorted(i for g in gathered for i in g[2])
    r.skipped = sorted(i for g in gathered for i in g[3])
    if r.failed:
        log.warning(
            "%d of %d item(s) could not be read (on_error=skip); listed under 'failed' in %s",
            len(r.failed), len(items), r.manifest,
        )  # fmt: skip
    error = _nothing_read(cfg, r)
    if error is not None:
        raise error
    return r
