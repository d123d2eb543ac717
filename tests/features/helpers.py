"""Helpers of the feature tests: configs pointed at the fixture, and one-window-at-a-time reference features."""

from __future__ import annotations

import torch

from egovlp.config import load_config
from egovlp.data.transforms import eval_transform
from egovlp.features import ExtractConfig

# Small windows so that the fixture's few seconds of video give several windows and batches.
BASE = (
    "window.num_frames=4",
    "window.size=8",
    "window.stride=8",
    "window.last=pad",
    "batch_size=3",
    "num_workers=0",
    "progress=false",
)


def make_config(fx, out_dir, *overrides: str) -> ExtractConfig:
    """An :class:`ExtractConfig` for the fixture's weights writing to ``out_dir``; ``overrides`` as on the CLI.

    The input is the fixture's video folder unless an override names another.
    """
    inputs = ("source.videos=", "source.chunked_root=", "source.annotations=")
    source = [] if any(o.startswith(inputs) for o in overrides) else [f"source.videos={fx.videos}"]
    values = [f"checkpoint={fx.checkpoint}", f"out_dir={out_dir}", f"tokenizer={fx.tokenizer}", *BASE, *source]
    values += overrides
    return load_config(ExtractConfig, overrides=values)


def window_clip(frames) -> torch.Tensor:
    """uint8 ``(F, H, W, 3)`` frames of one window -> the model input ``(1, F, 3, 32, 32)``."""
    return eval_transform(32)(frames).unsqueeze(0)


@torch.no_grad()
def reference_video(model, frames, project=True, normalize=False) -> torch.Tensor:
    """The dual video feature of one window, ``(D,)``."""
    return model.encode_video(window_clip(frames), normalize=normalize, project=project)[0]


@torch.no_grad()
def reference_fused(model, frames, ids, mask, pool="cls") -> torch.Tensor:
    """One window fused with one query through the plain ``fuse`` pass, ``(Dv,)``."""
    video = model.fuse(window_clip(frames), ids[None], mask[None], video_out="all").video[0]
    return video[0] if pool == "cls" else video[1:].mean(dim=0)
