"""From detector outputs to each clip's ranked detections in seconds: score filter, top-k, decode, Soft-NMS.

Per clip (ActionFormer's inference): every point's sigmoid class scores ``(P, C)`` above ``pre_nms_thresh``, the
``pre_nms_topk`` best (point, class) pairs, their segments decoded (:func:`~egovlp.episodic.targets.decode_segments`)
and those shorter than ``min_length`` grid steps dropped, then mapped to seconds ``t0 + dt * (p + offset)`` and
clipped to ``[0, duration]``, then per-class Soft-NMS (:func:`~egovlp.episodic.soft_nms.soft_nms`) keeping at most
``max_segments``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch

from egovlp.config import at_least, one_of, rule
from egovlp.episodic.detector import DetectorOutput
from egovlp.episodic.soft_nms import NMS_METHODS, soft_nms
from egovlp.episodic.targets import Points, decode_segments

__all__ = ["ClipDetections", "InferenceConfig", "detect_clips"]


@dataclass(frozen=True)
class InferenceConfig:
    """Post-processing settings (ActionFormer's Ego4D MQ values where it has them)."""

    pre_nms_thresh: float = at_least(0, 0.001)
    pre_nms_topk: int = at_least(1, 5000)
    min_length: float = at_least(0, 0.05)  # grid steps
    nms_method: str = one_of(NMS_METHODS, "gaussian")
    nms_sigma: float = rule(0.5, "must be > 0", lambda v: v > 0)
    iou_threshold: float = rule(0.1, "must be in [0, 1]", lambda v: 0 <= v <= 1)
    min_score: float = at_least(0, 0.001)
    max_segments: int = at_least(1, 2000)  # per clip, over all classes


class ClipDetections(NamedTuple):
    """One clip's detections ranked by score: ``segments (K, 2)`` seconds, ``scores (K,)``, ``labels (K,)``."""

    segments: np.ndarray
    scores: np.ndarray
    labels: np.ndarray


def _clip(points: Points, cls: torch.Tensor, off: torch.Tensor, valid: torch.Tensor, cfg: InferenceConfig):
    """Candidates of one clip before NMS: ``(segments (K, 2) grid, scores (K,), labels (K,))``."""
    num_classes = cls.shape[-1]
    scores = torch.sigmoid(cls.float()) * valid[:, None]  # (P, C)
    flat = scores.flatten()
    keep = torch.nonzero(flat > cfg.pre_nms_thresh).squeeze(1)
    top = flat[keep].topk(min(cfg.pre_nms_topk, keep.numel())).indices
    keep = keep[top]
    point, label = keep // num_classes, keep % num_classes
    seg = decode_segments(points, off.float())[point]  # (K, 2)
    long_enough = (seg[:, 1] - seg[:, 0]) > cfg.min_length
    return seg[long_enough], flat[keep][long_enough], label[long_enough]


@torch.no_grad()
def detect_clips(
    out: DetectorOutput, points: Points, batch: dict[str, Any], cfg: InferenceConfig
) -> list[ClipDetections]:
    """Every clip's detections of a batch (``batch`` from :class:`~egovlp.episodic.mq_data.MQCollate`)."""
    cls = torch.cat(out.cls_logits, dim=1)  # (B, P, C)
    off = torch.cat(out.offsets, dim=1)  # (B, P, 2)
    valid = torch.cat(out.masks, dim=1)  # (B, P)
    results = []
    for b in range(cls.shape[0]):
        seg, score, label = (t.cpu().numpy() for t in _clip(points, cls[b], off[b], valid[b], cfg))
        t0, dt, offset, duration = (float(batch[k][b]) for k in ("t0", "dt", "offset", "duration"))
        seconds = np.clip(t0 + dt * (seg.astype(np.float64) + offset), 0.0, duration)
        kept = soft_nms(seconds, score.astype(np.float64), label, cfg.nms_method, cfg.nms_sigma, cfg.iou_threshold,
                        cfg.min_score, cfg.max_segments)  # fmt: skip
        results.append(ClipDetections(kept.segments, kept.scores, kept.labels))
    return results
