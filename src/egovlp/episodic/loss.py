"""The detector's training loss: targets of every point (:func:`~egovlp.episodic.targets.assign_targets`), a sigmoid
focal loss on the class scores and a 1-D DIoU loss on the positive points' offsets.

::

    loss = (focal(cls_logits[valid], cls_target[valid]) + reg_weight * diou(offsets[pos], reg_target[pos])) / norm

``valid`` are the real (unpadded) points of the batch, ``pos`` those with a target class, ``norm`` ActionFormer's
running mean of the number of positives, ``norm <- m * norm + (1 - m) * max(#pos, 1)`` (``m = 0.9``, from 100);
label smoothing ``e`` turns a target ``y`` into ``y (1 - e) + e / (C + 1)``. A pure function plus a thin module
that keeps the running normaliser as a buffer (so it is saved with the head and resumes exactly).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from egovlp.config import at_least, rule
from egovlp.episodic.detector import DetectorOutput
from egovlp.episodic.targets import Points, assign_targets, diou_loss_1d, sigmoid_focal_loss

__all__ = ["DetectionLoss", "DetectionLossConfig", "batch_targets", "detection_losses"]


@dataclass(frozen=True)
class DetectionLossConfig:
    """ActionFormer's loss settings."""

    focal_alpha: float = 0.25  # < 0: no class weighting
    focal_gamma: float = at_least(0, 2.0)
    reg_weight: float = at_least(0, 1.0)
    center_radius: float = 1.5  # centre sampling radius in strides (<= 0: the whole segment)
    label_smoothing: float = rule(0.0, "must be in [0, 1)", lambda v: 0 <= v < 1)
    normalizer_momentum: float = rule(0.9, "must be in [0, 1)", lambda v: 0 <= v < 1)
    initial_normalizer: float = rule(100.0, "must be > 0", lambda v: v > 0)


def batch_targets(
    points: Points, segments: list[torch.Tensor], labels: list[torch.Tensor], num_classes: int, center_radius: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """``cls_target (B, P, C)`` and ``reg_target (B, P, 2)`` of a batch (per clip: segments ``(N, 2)`` grid units,
    labels ``(N,)``)."""
    pairs = [assign_targets(points, s.float(), lab, num_classes, center_radius) for s, lab in zip(segments, labels)]
    return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])


def detection_losses(
    out: DetectorOutput,
    cls_target: torch.Tensor,
    reg_target: torch.Tensor,
    normalizer: float | torch.Tensor,
    cfg: DetectionLossConfig,
) -> dict[str, torch.Tensor]:
    """``{"loss", "cls_loss", "reg_loss", "num_pos"}`` (0-d) of a batch; targets from :func:`batch_targets`."""
    cls = torch.cat(out.cls_logits, dim=1).float()  # (B, P, C)
    off = torch.cat(out.offsets, dim=1).float()  # (B, P, 2)
    valid = torch.cat(out.masks, dim=1)  # (B, P)
    positive = valid & (cls_target.sum(-1) > 0)
    target = cls_target[valid]
    if cfg.label_smoothing > 0:
        target = target * (1 - cfg.label_smoothing) + cfg.label_smoothing / (cls.shape[-1] + 1)
    cls_loss = sigmoid_focal_loss(cls[valid], target, cfg.focal_alpha, cfg.focal_gamma) / normalizer
    reg_loss = diou_loss_1d(off[positive], reg_target[positive]) / normalizer
    num_pos = positive.sum().to(cls.dtype)
    return {"loss": cls_loss + cfg.reg_weight * reg_loss, "cls_loss": cls_loss, "reg_loss": reg_loss,
            "num_pos": num_pos}  # fmt: skip


class DetectionLoss(nn.Module):
    """:func:`detection_losses` with the running normaliser (updated in training mode, before the loss uses it)."""

    def __init__(self, cfg: DetectionLossConfig, num_classes: int) -> None:
        super().__init__()
        self.cfg, self.num_classes = cfg, num_classes
        self.normalizer: torch.Tensor
        self.register_buffer("normalizer", torch.tensor(float(cfg.initial_normalizer), dtype=torch.float64))

    def forward(
        self, out: DetectorOutput, points: Points, segments: list[torch.Tensor], labels: list[torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        cls_target, reg_target = batch_targets(points, segments, labels, self.num_classes, self.cfg.center_radius)
        if self.training:
            valid = torch.cat(out.masks, dim=1)
            num_pos = float((valid & (cls_target.sum(-1) > 0)).sum())
            m = self.cfg.normalizer_momentum
            self.normalizer.mul_(m).add_((1 - m) * max(num_pos, 1.0))
        return detection_losses(out, cls_target, reg_target, self.normalizer.float(), self.cfg)
