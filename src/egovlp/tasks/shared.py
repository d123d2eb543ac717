"""Helpers that several downstream tasks share: rank-sharded loaders, dual features of clips and texts gathered
over ranks, and the tokenizer / model vocabulary check. Task modules import these, never each other."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence, Sized
from typing import Any, cast

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from egovlp.data.tokenizer import Tokenizer
from egovlp.errors import DataError
from egovlp.models.config import ModelConfig
from egovlp.train.distributed import DistInfo, gather_objects
from egovlp.train.sampler import ShardedEvalSampler

__all__ = [
    "check_crop_scale",
    "check_finite",
    "check_vocab",
    "dual_evaluator",
    "encode_texts",
    "encode_videos",
    "first_items",
    "gather_shards",
    "merge_shards",
    "sharded_loader",
    "table_row",
]


def check_finite(values: np.ndarray, what: str) -> None:
    """Raise :class:`DataError` when ``values`` hold NaN or infinity (a broken checkpoint or input), naming ``what``
    and how many entries are bad, instead of a metric failing later without context."""
    bad = ~np.isfinite(values)
    if bad.any():
        raise DataError(
            f"{what}: {int(bad.sum())} of {values.size} values are NaN or infinite (a diverged or corrupt checkpoint?)"
        )


def check_crop_scale(scale: Sequence[float], key: str = "crop_scale") -> Iterator[tuple[str, str]]:
    """Config problems of a RandomResizedCrop area range: two numbers with ``0 < low <= high <= 1``."""
    if len(scale) != 2 or not 0 < scale[0] <= scale[1] <= 1:
        yield key, f"must be [low, high] with 0 < low <= high <= 1, got {list(scale)}"


def table_row(name: str, values: Sequence[float], width: int = 10) -> str:
    """One row of a result table: a label and numbers with 2 decimals (``n/a`` for NaN)."""
    cells = (f"{v:{width}.2f}" if not math.isnan(v) else f"{'n/a':>{width}s}" for v in values)
    return f"{name:22s}" + "".join(cells)


def mir_table(title: str, m: dict[str, Any]) -> str:
    """The EK-100 MIR mAP / nDCG table (percent, V2T / T2V / average) under ``title``."""
    lines = [
        title,
        f"{'':22s}{'V2T':>10s}{'T2V':>10s}{'AVG':>10s}",
        table_row("mAP", [m["mAP_V2T"], m["mAP_T2V"], m["mAP_AVG"]]),
        table_row("nDCG", [m["nDCG_V2T"], m["nDCG_T2V"], m["nDCG_AVG"]]),
    ]
    if m.get("skipped_clips"):
        lines.append(f"skipped clips: {int(m['skipped_clips'])}")
    return "\n".join(lines)


def dual_evaluator(evaluator: Callable[..., Any]) -> Callable[..., Any]:
    """A registry ``make_evaluator`` for evaluators built as ``evaluator(cfg.data, cfg.eval, tokenizer, img_size,
    dist, progress)`` (the dual-encoder tasks), checking the tokenizer against the model first."""

    def make(cfg: Any, tokenizer: Tokenizer, model: Any, dist: DistInfo, progress: bool = False) -> Any:
        check_vocab(tokenizer, model.cfg)
        return evaluator(cfg.data, cfg.eval, tokenizer, model.cfg.video.img_size, dist, progress)

    return make


def egoclip_training_clips(data: Any, img_size: int, scene_negatives: bool = False) -> Dataset:
    """The EgoClip training clips of a pre-training ``data`` config section (random frames, the training transform;
    fields ``metadata``, ``video_root``, ``num_frames``, ``crop_scale``, ``hflip``, ``chunk_seconds``, ``bad_input``,
    ``num_verbs``, ``num_nouns``, ``max_rows``), with scene-aware negatives when asked."""
    from egovlp.data.egoclip import EgoClipDataset
    from egovlp.data.transforms import train_transform

    return EgoClipDataset(
        data.metadata,
        data.video_root,
        data.num_frames,
        train_transform(img_size, (data.crop_scale[0], data.crop_scale[1]), data.hflip),
        chunk_seconds=data.chunk_seconds,
        sample="rand",
        scene_negatives=scene_negatives,
        bad_input=data.bad_input,
        num_verbs=data.num_verbs,
        num_nouns=data.num_nouns,
        max_rows=data.max_rows or None,
    )


def check_vocab(tokenizer: Tokenizer, model_cfg: ModelConfig) -> None:
    """Raise ConfigError when the tokenizer has ids the model's text embedding cannot hold, or pads with another id
    than the text tower's ``pad_token_id`` (RoBERTa's positions count from it)."""
    tokenizer.check_model(model_cfg.text.vocab_size, model_cfg.text.pad_token_id)


def first_items(dataset: Dataset, count: int) -> Dataset:
    """The first ``count`` items of ``dataset`` (all of them for 0): the ``max_*`` options of the evaluations."""
    n = len(cast(Sized, dataset))
    return torch.utils.data.Subset(dataset, range(min(count, n))) if count else dataset


def sharded_loader(dataset: Dataset, batch_size: int, num_workers: int, dist: DistInfo, collate) -> DataLoader:
    """This rank's share of ``dataset`` (every item exactly once over the ranks, no padding)."""
    sampler = ShardedEvalSampler(len(cast(Sized, dataset)), dist.rank, dist.world_size)
    return DataLoader(dataset, batch_size, sampler=sampler, num_workers=num_workers, collate_fn=collate)


@torch.no_grad()
def encode_videos(
    model, loader: DataLoader, device: torch.device, keep: tuple[str, ...] = (), progress: str = ""
) -> dict[str, Any]:
    """This rank's dual video features: ``index (n,)``, ``video (n, E)`` float32 L2-normalised, the batch fields
    named in ``keep`` (e.g. ``label``) as arrays, and ``skipped`` (unreadable items dropped). A non-empty
    ``progress`` shows a progress bar with that label."""
    parts: dict[str, list] = {key: [] for key in ("index", "video", *keep)}
    skipped = 0
    batches: Any = loader
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(loader, desc=progress, leave=False, dynamic_ncols=True)
    for batch in batches:
        skipped += int(batch["num_skipped"])
        if "video" not in batch:
            continue
        features = model.encode_video(batch["video"].to(device), normalize=True).float().cpu().numpy()
        check_finite(features, f"video features of items {batch['index'].tolist()}")
        parts["video"].append(features)
        for key in ("index", *keep):
            parts[key].append(batch[key].numpy())
    out: dict[str, Any] = {k: np.concatenate(v) if v else np.zeros((0,)) for k, v in parts.items()}
    out["skipped"] = skipped
    return out


@torch.no_grad()
def encode_texts(
    model, tokenizer: Tokenizer, texts: list[str], device: torch.device, batch_size: int = 256, max_length=None
) -> np.ndarray:
    """Dual text features of ``texts``, ``(N, E)`` float32 L2-normalised (padded to the longest of each batch)."""
    parts = []
    for start in range(0, len(texts), batch_size):
        tokens = tokenizer(texts[start : start + batch_size], max_length=max_length)
        ids, mask = tokens["input_ids"].to(device), tokens["attention_mask"].to(device)
        features = model.encode_text(ids, mask, normalize=True).float().cpu().numpy()
        check_finite(features, f"text features of texts {start}-{start + len(features) - 1}")
        parts.append(features)
    return np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)


def merge_shards(shards: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-rank results of :func:`encode_videos` (or any dict with ``index``) -> one dict ordered by index."""
    keys = [k for k in shards[0] if k != "skipped"]
    nonempty = [s for s in shards if len(s["index"])] or shards[:1]
    arrays = {k: np.concatenate([s[k] for s in nonempty]) for k in keys}
    order = np.argsort(arrays["index"], kind="stable")
    merged: dict[str, Any] = {k: v[order] for k, v in arrays.items()}
    merged["skipped"] = sum(int(s.get("skipped", 0)) for s in shards)
    return merged


def gather_shards(local: dict[str, Any], dist: DistInfo) -> dict[str, Any] | None:
    """Gather every rank's ``local`` result and merge them on rank 0 (other ranks get None)."""
    shards = gather_objects(local)
    return merge_shards(shards) if dist.is_main else None
