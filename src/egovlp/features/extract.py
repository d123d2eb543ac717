"""From windows and texts to features: frame decoding in batches of windows, and the model passes of each mode.

* ``video``: ``encode_video`` of each window, ``(B, F, 3, H, W) -> (B, D)``: the dual video CLS, through the
  projector or not (``video.project``), L2-normalised or not (``video.normalize``). The release's MQ features are
  projected and not normalised (4096-d).
* ``text``: ``encode_text`` of each text, ``(Q, D)`` (same options), and with ``text.tokens`` the unprojected state of
  every token ``(Q, L, Dt)`` with its attention mask ``(Q, L)``.
* ``fused``: every window fused with every query: the fused video CLS after the fusion norm (``fused.pool="cls"``,
  the release's NLQ features, 768-d and unprojected) or the mean of the fused patch states (``"mean"``), ``(Q, B, D)``.
  The unfused lower video blocks do not depend on the text, so they run once per window batch and only the fused
  upper blocks run once per query; ``fuse_upper`` computes just the CLS state of the last block for ``"cls"``.
"""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset

from egovlp.data.transforms import EvalTransform
from egovlp.errors import VideoReadError
from egovlp.features.config import ExtractConfig
from egovlp.features.sources import Item, read_frames
from egovlp.features.windows import WindowPlan

log = logging.getLogger(__name__)

__all__ = ["FeatureExtractor", "Job", "WindowBatch", "WindowBatches", "feature_dim"]


@dataclass(frozen=True)
class Job:
    """An item to extract with its windows (``plan`` is None for text-only items)."""

    item: Item
    plan: WindowPlan | None

    def num_batches(self, batch_size: int) -> int:
        return 0 if self.plan is None else math.ceil(self.plan.num_windows / batch_size)


class WindowBatch(NamedTuple):
    """Batch ``batch`` of job ``job``: frames ``(b, F, 3, S, S)`` float32, or the reason they could not be read.

    (A NamedTuple, so that the DataLoader's ``pin_memory`` pins the frames.)
    """

    job: int
    batch: int
    video: torch.Tensor | None
    error: str | None = None


class WindowBatches(Dataset):
    """Batches of windows of every job, job after job; ``[i]`` decodes the frames of one batch with one seek.

    An unreadable video gives a batch with ``error`` set (the caller applies the error policy), not an exception, so
    the message reaches the main process intact from a DataLoader worker.
    """

    def __init__(self, jobs: list[Job], batch_size: int, transform: EvalTransform) -> None:
        self.jobs, self.batch_size, self.transform = jobs, batch_size, transform
        self.index = [(j, k) for j, job in enumerate(jobs) for k in range(job.num_batches(batch_size))]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> WindowBatch:
        j, k = self.index[i]
        job = self.jobs[j]
        if job.plan is None or job.item.video is None:
            raise ValueError(f"{job.item.id}: a text-only job has no windows to read")
        times = job.plan.times[k * self.batch_size : (k + 1) * self.batch_size]  # (b, F)
        try:
            frames = read_frames(job.item.video, times.reshape(-1))  # (b*F, H, W, 3)
        except VideoReadError as e:
            return WindowBatch(j, k, None, str(e))
        clip = self.transform(frames)  # (b*F, 3, S, S); the eval transform is the same for every frame
        return WindowBatch(j, k, clip.view(times.shape[0], times.shape[1], *clip.shape[1:]))


def feature_dim(model, cfg: ExtractConfig) -> int:
    """Width of the saved feature vectors for ``cfg.mode``."""
    m = model.cfg
    if cfg.mode == "video":
        return m.embed_dim if cfg.video.project else m.video.width
    if cfg.mode == "text":
        return m.embed_dim if cfg.text.project else m.text.width
    return m.video.width


class FeatureExtractor:
    """The model passes of every mode, under ``torch.no_grad`` and the configured autocast precision."""

    def __init__(self, model, cfg: ExtractConfig, device: torch.device, tokenizer=None) -> None:
        self.model, self.cfg, self.device, self.tokenizer = model.eval(), cfg, device, tokenizer
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(cfg.precision)
        if dtype == torch.float16 and device.type == "cpu":
            log.info("precision=fp16 is for GPUs; computing in fp32 on the CPU")
            dtype = None
        self._autocast = (
            (lambda: torch.autocast(device.type, dtype=dtype)) if dtype is not None else contextlib.nullcontext
        )

    # ------------------------------------------------------------------------------------------------ texts
    def tokenize(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """``input_ids``, ``attention_mask`` ``(Q, L)`` on the device, padded to ``text.max_length``."""
        if self.tokenizer is None:
            raise ValueError("texts need a tokenizer")
        if self.cfg.text.lowercase:
            texts = [t.strip().lower() for t in texts]
        enc = self.tokenizer(texts, max_length=self.cfg.text.max_length, padding="max_length")
        return enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device)

    @torch.no_grad()
    def text_features(self, texts: list[str]) -> dict[str, np.ndarray]:
        """``features (Q, D)``; with ``text.tokens`` also ``text_tokens (Q, L, Dt)`` and ``text_mask (Q, L)``."""
        ids, mask = self.tokenize(texts)
        t = self.cfg.text
        with self._autocast():
            out = {"features": self.model.encode_text(ids, mask, normalize=t.normalize, project=t.project)}
            if t.tokens:
                out["text_tokens"] = self.model.text_model(ids, mask)
        arrays = {k: v.float().cpu().numpy() for k, v in out.items()}
        if t.tokens:
            arrays["text_mask"] = mask.cpu().numpy().astype(np.int8)
        return arrays

    @torch.no_grad()
    def query_states(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """What fused passes need of a clip's queries, computed once: lower-layer text states and masks."""
        ids, mask = self.tokenize(texts)
        with self._autocast():
            lower = self.model.text_lower(ids, mask)  # (Q, L, Dt)
            tokens = self.model.text_model(ids, mask) if self.cfg.fused.text_tokens else None
        return {"lower": lower, "mask": mask, "tokens": tokens}

    # ------------------------------------------------------------------------------------------------ video
    @torch.no_grad()
    def video_features(self, video: torch.Tensor) -> torch.Tensor:
        """Dual video features of windows ``(B, F, 3, H, W) -> (B, D)`` float32 on the CPU."""
        v = self.cfg.video
        with self._autocast():
            x = self.model.encode_video(
                video.to(self.device, non_blocking=True), normalize=v.normalize, project=v.project
            )
        return x.float().cpu()

    @torch.no_grad()
    def fused_features(self, video: torch.Tensor, queries: dict[str, torch.Tensor]) -> torch.Tensor:
        """Windows ``(B, F, 3, H, W)`` fused with each of ``Q`` queries -> ``(Q, B, D)`` float32 on the CPU."""
        video = video.to(self.device, non_blocking=True)
        b, num_frames = video.shape[:2]
        pool = self.cfg.fused.pool
        out = []
        with self._autocast():
            lower = self.model.video_lower(video)  # (B, 1 + F*P, Dv), shared by every query
            for text, mask in zip(queries["lower"], queries["mask"]):
                fused = self.model.fuse_upper(
                    lower,
                    text.unsqueeze(0).expand(b, -1, -1),
                    mask.unsqueeze(0).expand(b, -1),
                    num_frames,
                    video_out="cls" if pool == "cls" else "all",
                ).video
                out.append(fused[:, 0] if pool == "cls" else fused[:, 1:].mean(dim=1))
        return torch.stack(out).float().cpu()
