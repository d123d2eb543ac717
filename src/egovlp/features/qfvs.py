"""QFVS shot features from the frozen fusion encoder, computed once per (video, prompt) and kept (downstream.md §4).

For a shot (5 frames at 1 fps) and a prompt (``"There is a {c1}"``, ``"There is a {c2}"``, ``"There is a {c1} and a
{c2}"``, up to 15 tokens, padded to 15 as the release)::

    v = video_lower(shot)                    # (1 + F*P, Dv)  the unfused lower video blocks, once per shot
    t = text_lower(prompt)                   # (15, Dt)       the unfused lower text layers, once per prompt
    feature = cross_modal_video_transform(fuse_upper(v, t).video[0])   # the fused, normed video CLS -> (Dt,)

(a model without the VTM head keeps the normed fused CLS, ``(Dv,)``). The KTS features of a shot are the CLS of
``v`` (query-independent, so one segmentation per video). The video tower runs once per shot block for every
missing prompt of the video together; :class:`ShotFeatureCache` keeps every ``(video, prompt)`` result, so folds and
epochs reuse them (``cache.video_passes`` counts the shot blocks encoded). Every rank computes every video's
features (they are small next to the model).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from egovlp.data.qfvs_shots import SHOT_FRAMES, QFVSShotBlocks, ShotReader, find_shot_source
from egovlp.data.tokenizer import Tokenizer

log = logging.getLogger(__name__)

__all__ = ["ShotFeatureCache", "VideoFeatures", "fused_shot_features", "query_prompts", "shot_frame_index"]

PROMPT_MAX_LENGTH = 15  # release


def query_prompts(c1: str, c2: str) -> tuple[str, str, str]:
    """The release's three prompts of a query: concept 1, concept 2 and both."""
    return f"There is a {c1}", f"There is a {c2}", f"There is a {c1} and a {c2}"


def shot_frame_index(num_frames: int) -> list[int]:
    """Which of a shot's 5 frames the model sees at ``num_frames`` (1-5): the middles of equal parts."""
    if not 1 <= num_frames <= SHOT_FRAMES:
        raise ValueError(f"a QFVS shot has {SHOT_FRAMES} frames; num_frames must be 1-{SHOT_FRAMES}, got {num_frames}")
    return [int((k + 0.5) * SHOT_FRAMES / num_frames) for k in range(num_frames)]


@torch.no_grad()
def fused_shot_features(
    model: Any, shots: torch.Tensor, text: torch.Tensor, mask: torch.Tensor, max_sequences: int = 64
) -> tuple[torch.Tensor, torch.Tensor]:
    """KTS and fused features of ``shots (n, F, 3, H, W)`` with every prompt of ``text (P, L, Dt)`` (lower text
    states) and ``mask (P, L)``.

    Returns:
        ``kts (n, Dv)`` the lower video CLS, and ``fused (P, n, D)`` the per-prompt shot features.
    """
    lower = model.video_lower(shots)  # (n, T, Dv)
    n, p = lower.shape[0], text.shape[0]
    transform = getattr(model, "cross_modal_video_transform", None)
    per_call = max(1, max_sequences // max(n, 1))  # prompts per fused call
    out = []
    for a in range(0, p, per_call):
        b = min(a + per_call, p)
        video = lower[None].expand(b - a, *lower.shape).reshape(-1, *lower.shape[1:])  # (k * n, T, Dv)
        t = text[a:b, None].expand(-1, n, -1, -1).reshape(-1, *text.shape[1:])  # (k * n, L, Dt)
        m = mask[a:b, None].expand(-1, n, -1).reshape(-1, mask.shape[1])
        cls = model.fuse_upper(video, t, m, shots.shape[1], video_out="cls").video[:, 0]  # (k * n, Dv), normed
        feature = transform(cls) if transform is not None else cls
        out.append(feature.reshape(b - a, n, -1))
    return lower[:, 0], torch.cat(out)


@dataclass
class VideoFeatures:
    """``kts``: ``(S, Dv)`` float32 KTS features; ``prompts[text]``: ``(S, D)`` float32 fused shot features."""

    kts: np.ndarray | None = None
    prompts: dict[str, torch.Tensor] = field(default_factory=dict)


class ShotFeatureCache:
    """Fused shot features of ``(video, prompt)`` pairs, each computed once.

    Args:
        model: the fusion encoder (kept in eval mode while extracting; its weights are not changed).
        transform: ``(clip (5, H, W, 3) uint8, generator) -> (5, 3, size, size)``; the centre crop by default.
        crop_seed: a random transform's seed (its crops repeat per shot), None for a deterministic transform.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Tokenizer,
        video_root: str,
        transform: Callable,
        device: torch.device,
        num_frames: int = SHOT_FRAMES,
        block: int = 16,
        max_sequences: int = 64,
        crop_seed: int | None = None,
        num_workers: int = 0,
    ) -> None:
        self.model, self.tokenizer, self.video_root, self.transform = model, tokenizer, video_root, transform
        self.device, self.block, self.max_sequences, self.crop_seed = device, block, max_sequences, crop_seed
        self.frame_index = shot_frame_index(num_frames)
        self.num_workers = num_workers
        self.videos: dict[str, VideoFeatures] = {}
        self.video_passes = 0  # shot blocks run through the video tower (the expensive part)

    def get(self, video: str, num_shots: int, prompts: Sequence[str]) -> VideoFeatures:
        """The features of ``video`` with (at least) ``prompts``, computing only the missing ones."""
        entry = self.videos.setdefault(video, VideoFeatures())
        missing = [p for p in dict.fromkeys(prompts) if p not in entry.prompts]
        if missing or entry.kts is None:
            self._extract(video, num_shots, missing, entry)
        return entry

    @torch.no_grad()
    def _extract(self, video: str, num_shots: int, prompts: list[str], entry: VideoFeatures) -> None:
        model = self.model
        was_training = model.training
        model.eval()
        try:
            tokens = self.tokenizer(prompts or ["."], max_length=PROMPT_MAX_LENGTH, padding="max_length")
            ids, mask = tokens["input_ids"].to(self.device), tokens["attention_mask"].to(self.device)
            text = model.text_lower(ids, mask)  # (P, L, Dt)
            reader = ShotReader(find_shot_source(self.video_root, video), num_shots)
            blocks = QFVSShotBlocks(reader, self.transform, self.block, self.crop_seed)
            loader = DataLoader(blocks, batch_size=None, num_workers=self.num_workers)
            kts, fused = [], []
            with model.frames(len(self.frame_index)):
                for item in loader:
                    shots = item["shots"][:, self.frame_index].to(self.device)  # (n, F, 3, H, W)
                    k, f = fused_shot_features(model, shots, text, mask, self.max_sequences)
                    kts.append(k.float().cpu())
                    fused.append(f.float().cpu())
                    self.video_passes += 1
        finally:
            model.train(was_training)
        entry.kts = torch.cat(kts).numpy()
        features = torch.cat(fused, dim=1)  # (P, S, D)
        for i, prompt in enumerate(prompts):
            entry.prompts[prompt] = features[i].contiguous()
        log.info("QFVS %s: features of %d shots x %d prompts", video, num_shots, len(prompts))
