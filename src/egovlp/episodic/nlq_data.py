"""NLQ head inputs: the release's features extracted once per backbone and split, cached, and read back per query.

:func:`extract_nlq_features` runs :func:`egovlp.features.extract_features` in mode ``fused`` (4-frame windows, each
fused with the query; the dual text tower's token states of the query) into ``<cache>/<split>/``: one file per clip,
``features (Q, N, D)``, ``text_tokens (Q, L, D)``, ``text_mask (Q, L)``, ``window_start / window_end (N,)``. Items
whose file exists are not extracted again (the feature store's resume), so a head trains for many epochs and runs
again and again without touching the video. The cache is keyed by the backbone's CONTENT (:func:`backbone_id`, a
hash of its tensors, recorded as the store's ``checkpoint``): a fine-tuned weight file with the same frozen backbone
reuses the features, another backbone is refused by the store.

:class:`NLQFeatureSet` aligns every annotated query (``load_nlq``) with its clip's file (query key
``<annotation_uid>/<query_idx>``), pools the clip to ``max_len`` units (:func:`~egovlp.episodic.spans.pool_windows`)
and labels its answer. A query whose clip has no file (``on_error=skip``) is listed in ``missing`` and counted as a
miss by the evaluation.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from egovlp.data.nlq import NLQAnnotations, NLQQuery
from egovlp.episodic.spans import highlight_labels, pool_windows, span_labels
from egovlp.errors import DataError
from egovlp.features import (
    ExtractConfig,
    FusedFeatureConfig,
    SourceConfig,
    TextFeatureConfig,
    WindowConfig,
    extract_features,
    read_features,
)
from egovlp.features.store import feature_path

log = logging.getLogger(__name__)

__all__ = ["NLQFeatureConfig", "NLQFeatureSet", "NLQSample", "backbone_id", "collate_nlq", "extract_nlq_features"]


@dataclass(frozen=True)
class NLQFeatureConfig:
    """How the features are extracted (release: 16-frame windows at 30 fps, stride 16, whole windows only; queries
    lower-cased, at most 30 tokens) and where they are cached."""

    dir: str = ""  # cache root: <dir>/<split>/<clip_uid>.safetensors (+ manifest.json)
    window: WindowConfig = field(default_factory=lambda: WindowConfig(num_frames=4, size=16, stride=16, last="drop"))
    max_query_tokens: int = 30
    batch_size: int = 64  # windows per forward pass
    num_workers: int = 2  # decoding processes
    precision: str = "fp32"  # fp32 | fp16 | bf16 (autocast on CUDA)
    dtype: str = "float32"  # of the cached features
    on_error: str = "raise"  # unreadable video: raise, or skip (its queries count as misses)
    progress: bool = True


def backbone_id(model: torch.nn.Module) -> str:
    """``backbone-<16 hex>``: a SHA-256 of the model's tensors (names, shapes, dtypes, bytes), in name order."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.detach().to("cpu").contiguous().flatten().view(torch.uint8).numpy().tobytes())
    return f"backbone-{h.hexdigest()[:16]}"


def extract_nlq_features(
    cfg: NLQFeatureConfig,
    annotations: str | os.PathLike,
    video_root: str,
    split_dir: str | os.PathLike,
    model: torch.nn.Module,
    tokenizer: Any,
    tokenizer_dir: str,
    device: torch.device,
    rank: int = 0,
    world_size: int = 1,
    gather: Callable[[object], list] | None = None,
) -> Path:
    """Extract (or resume) the fused features of one NLQ file into ``split_dir``; returns it.

    ``model`` runs at ``cfg.window.num_frames`` frames; ``tokenizer_dir`` (recorded in the store's settings) is the
    folder ``tokenizer`` was read from; ``gather`` is the collective of a distributed run.
    """
    extract = ExtractConfig(
        mode="fused", checkpoint=backbone_id(model), tokenizer=tokenizer_dir,
        out_dir=str(split_dir), dtype=cfg.dtype, window=cfg.window,
        text=TextFeatureConfig(max_length=cfg.max_query_tokens, lowercase=True),
        fused=FusedFeatureConfig(pool="cls", text_tokens=True),
        source=SourceConfig(annotations=str(annotations), video_root=video_root, layout="files"),
        batch_size=cfg.batch_size, num_workers=cfg.num_workers, device=str(device), precision=cfg.precision,
        on_error=cfg.on_error, progress=cfg.progress and rank == 0,
    )  # fmt: skip
    kwargs: dict[str, Any] = {} if gather is None else {"gather": gather}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            result = extract_features(extract, model, tokenizer, device, rank, world_size, **kwargs)
    finally:
        model.train(was_training)
    if rank == 0:
        log.info("NLQ features in %s: %d extracted, %d cached, %d unreadable", split_dir, len(result.extracted),
                 len(result.skipped), len(result.failed))  # fmt: skip
    return Path(split_dir)


@dataclass(frozen=True)
class NLQSample:
    """One query's head inputs (after pooling to at most ``max_len`` units)."""

    query: NLQQuery
    video: np.ndarray  # (N, Dv) fused window features of this query
    text: np.ndarray  # (L, Dt) dual text token states
    text_mask: np.ndarray  # (L,) 1 = real token
    unit_start: np.ndarray  # (N,) seconds from the clip start
    unit_end: np.ndarray  # (N,)
    labels: tuple[int, int] | None  # answer (start unit, end unit); None for the test file


class NLQFeatureSet(Dataset):
    """Every query of ``annotations`` with its cached features; ``dataset[i]`` is a dict for :func:`collate_nlq`."""

    def __init__(self, annotations: NLQAnnotations, split_dir: str | os.PathLike, max_len: int, extend: float) -> None:
        self.annotations, self.max_len, self.extend = annotations, max_len, extend
        self.samples: list[NLQSample] = []
        self.missing: list[NLQQuery] = []  # queries whose clip has no feature file
        by_clip: dict[str, list[NLQQuery]] = {}
        for q in annotations.queries:
            by_clip.setdefault(q.clip_uid, []).append(q)
        for clip_uid, queries in by_clip.items():
            path = feature_path(split_dir, clip_uid, "safetensors")
            if not path.is_file():
                self.missing.extend(queries)
                continue
            self.samples.extend(self._clip_samples(path, queries))
        if not self.samples:
            raise DataError(f"{split_dir}: no NLQ feature file for any clip of {annotations.path}")
        if self.missing:
            log.warning("%s: %d queries without features (counted as misses)", annotations.path, len(self.missing))

    def _clip_samples(self, path: Path, queries: list[NLQQuery]) -> list[NLQSample]:
        f = read_features(path)
        keys = {q["key"]: i for i, q in enumerate(f.entry.get("queries", []))}
        for name in ("text_tokens", "text_mask", "window_start", "window_end"):
            if name not in f.arrays:
                raise DataError(f"{path}: no '{name}' array (extract with mode=fused and fused.text_tokens=true)")
        out = []
        for q in queries:
            key = f"{q.annotation_uid}/{q.query_idx}"
            if key not in keys:
                raise DataError(f"{path}: clip {q.clip_uid} has no features for annotation {q.annotation_uid} "
                                f"query {q.query_idx}: the feature folder is from another annotation file")  # fmt: skip
            i = keys[key]
            video, start, end = pool_windows(f.arrays["features"][i], f.arrays["window_start"],
                                             f.arrays["window_end"], self.max_len)  # fmt: skip
            labels = None if q.window is None else span_labels(start, end, q.window)
            out.append(NLQSample(q, video, f.arrays["text_tokens"][i], f.arrays["text_mask"][i], start, end, labels))
        return out

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        s = self.samples[index]
        item: dict[str, Any] = {"index": index, "video": torch.from_numpy(np.asarray(s.video, np.float32)),
                                "text": torch.from_numpy(np.asarray(s.text, np.float32)),
                                "text_mask": torch.from_numpy(np.asarray(s.text_mask, np.int64))}  # fmt: skip
        if s.labels is not None:
            item["start"], item["end"] = s.labels
            item["highlight"] = torch.from_numpy(highlight_labels(*s.labels, len(s.video), self.extend))
        return item


def collate_nlq(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Pad to the longest clip of the batch: ``video (B, N, Dv)``, ``video_mask (B, N)``, ``text (B, L, Dt)``,
    ``text_mask (B, L)``, ``index (B,)`` and, when labelled, ``start``, ``end (B,)``, ``highlight (B, N)``."""
    n = max(int(it["video"].shape[0]) for it in items)
    b = len(items)
    video = torch.zeros(b, n, items[0]["video"].shape[1])
    video_mask = torch.zeros(b, n, dtype=torch.int64)
    for i, it in enumerate(items):
        video[i, : len(it["video"])] = it["video"]
        video_mask[i, : len(it["video"])] = 1
    out = {"video": video, "video_mask": video_mask, "text": torch.stack([it["text"] for it in items]),
           "text_mask": torch.stack([it["text_mask"] for it in items]),
           "index": torch.tensor([it["index"] for it in items])}  # fmt: skip
    if "start" in items[0]:
        highlight = torch.zeros(b, n)
        for i, it in enumerate(items):
            highlight[i, : len(it["highlight"])] = it["highlight"]
        out.update(start=torch.tensor([it["start"] for it in items]), end=torch.tensor([it["end"] for it in items]),
                   highlight=highlight)  # fmt: skip
    return out
