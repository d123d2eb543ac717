"""Clip transforms in plain torch: one random crop / flip for all frames of a clip, uint8 until normalisation.

Input: a uint8 clip ``(F, H, W, 3)`` (what the reader returns) or ``(F, 3, H, W)``, numpy or torch.
Output: float32 ``(F, 3, size, size)``, ImageNet-normalised.

* :func:`train_transform`: random resized crop (area ``scale``, aspect ratio 3/4-4/3, as torchvision's
  RandomResizedCrop draws it), optional horizontal flip, normalise.
* :func:`eval_transform`: the official evaluation pipeline "resize short side to 256, center crop 256, resize to
  224" by default (i.e. the centre square of the short side, resized), or the ImageNet-style "resize short side to
  256, center crop 224" with ``crop=size``. Both are one crop and one resize here.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "EvalTransform",
    "TrainTransform",
    "as_clip_tensor",
    "eval_transform",
    "normalize",
    "resized_crop",
    "train_transform",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def as_clip_tensor(clip: np.ndarray | torch.Tensor) -> torch.Tensor:
    """A uint8 clip as a ``(F, 3, H, W)`` tensor; accepts ``(F, H, W, 3)`` or ``(F, 3, H, W)``."""
    clip = torch.as_tensor(clip)
    if clip.dtype != torch.uint8:
        raise TypeError(f"clip must be uint8, got {clip.dtype}")
    if clip.ndim != 4:
        raise ValueError(f"clip must be (F, H, W, 3) or (F, 3, H, W), got shape {tuple(clip.shape)}")
    if clip.shape[1] != 3 and clip.shape[-1] == 3:
        clip = clip.permute(0, 3, 1, 2)
    elif clip.shape[1] != 3:
        raise ValueError(f"clip must be (F, H, W, 3) or (F, 3, H, W), got shape {tuple(clip.shape)}")
    return clip.contiguous()


def resized_crop(clip: torch.Tensor, top: int, left: int, height: int, width: int, size: int) -> torch.Tensor:
    """Crop ``(F, 3, H, W)`` uint8 to the box and resize it to ``size x size`` (bilinear, antialiased), uint8."""
    crop = clip[:, :, top : top + height, left : left + width]
    if crop.shape[-2:] == (size, size):
        return crop.contiguous()
    return F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def normalize(clip: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """uint8 ``(F, 3, H, W)`` -> float32 ``(x / 255 - mean) / std``."""
    m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return (clip.float().div_(255) - m) / s


def _uniform(low: float, high: float, generator: torch.Generator | None) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def _randint(high: int, generator: torch.Generator | None) -> int:
    """Uniform integer in ``[0, high]``."""
    return int(torch.randint(0, high + 1, (), generator=generator))


def random_crop_box(
    height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float], generator: torch.Generator | None
) -> tuple[int, int, int, int]:
    """``(top, left, h, w)`` of a random crop with area fraction in ``scale`` and aspect ratio in ``ratio``.

    Ten tries as torchvision's RandomResizedCrop; then the centre crop with the ratio clamped into ``ratio``.
    """
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * _uniform(scale[0], scale[1], generator)
        aspect = math.exp(_uniform(log_ratio[0], log_ratio[1], generator))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            return _randint(height - h, generator), _randint(width - w, generator), h, w
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        h, w = height, round(height * ratio[1])
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


class TrainTransform:
    """Random resized crop + optional horizontal flip + normalise, the same for every frame of a clip."""

    def __init__(
        self,
        size: int,
        scale: tuple[float, float] = (0.5, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        hflip: bool = True,
    ) -> None:
        self.size, self.hflip = int(size), bool(hflip)
        self.scale: tuple[float, float] = (float(scale[0]), float(scale[1]))  # lists from YAML become tuples
        self.ratio: tuple[float, float] = (float(ratio[0]), float(ratio[1]))

    def __call__(self, clip: np.ndarray | torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """uint8 clip -> float32 ``(F, 3, size, size)``; randomness from ``generator`` (torch's global one if None)."""
        clip = as_clip_tensor(clip)
        top, left, h, w = random_crop_box(clip.shape[-2], clip.shape[-1], self.scale, self.ratio, generator)
        clip = resized_crop(clip, top, left, h, w, self.size)
        if self.hflip and float(torch.rand((), generator=generator)) < 0.5:
            clip = clip.flip(-1)
        return normalize(clip)

    def __repr__(self) -> str:
        return f"TrainTransform(size={self.size}, scale={self.scale}, ratio={self.ratio}, hflip={self.hflip})"


class EvalTransform:
    """Resize the short side to ``resize``, center crop ``crop x crop``, resize to ``size``, normalise."""

    def __init__(self, size: int, resize: int | None = None, crop: int | None = None) -> None:
        self.size = int(size)
        self.resize = int(resize) if resize is not None else round(size * 256 / 224)
        self.crop = int(crop) if crop is not None else self.resize
        if self.crop > self.resize:
            raise ValueError(f"crop ({self.crop}) must not exceed resize ({self.resize})")

    def __call__(self, clip: np.ndarray | torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """uint8 clip -> float32 ``(F, 3, size, size)``; deterministic (``generator`` is ignored)."""
        clip = as_clip_tensor(clip)
        height, width = clip.shape[-2:]
        # The centre crop, mapped back to input pixels: one crop and one resize instead of resize-crop-resize.
        side = max(1, round(min(height, width) * self.crop / self.resize))
        clip = resized_crop(clip, (height - side) // 2, (width - side) // 2, side, side, self.size)
        return normalize(clip)

    def __repr__(self) -> str:
        return f"EvalTransform(size={self.size}, resize={self.resize}, crop={self.crop})"


def train_transform(size: int, scale: tuple[float, float] = (0.5, 1.0), hflip: bool = True) -> TrainTransform:
    """Pre-training augmentation: RandomResizedCrop(size, scale) + horizontal flip (switchable) + ImageNet norm."""
    return TrainTransform(size, scale=scale, hflip=hflip)


def eval_transform(size: int, resize: int | None = None, crop: int | None = None) -> EvalTransform:
    """Evaluation transform; ``resize`` defaults to ``size * 256 / 224`` and ``crop`` to ``resize`` (official)."""
    return EvalTransform(size, resize=resize, crop=crop)
