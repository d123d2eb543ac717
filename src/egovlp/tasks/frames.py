"""Evaluate a model at another frame count than it was trained with, without copying it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from egovlp.models.video import resize_temporal_embed


@contextmanager
def frames_for_eval(model, num_frames: int) -> Iterator[None]:
    """Temporarily give ``model`` a temporal embedding for ``num_frames`` (interpolated when longer, as the release).

    Fewer frames need nothing: the tower slices its temporal embedding.
    """
    embed = model.video_model.temporal_embed
    if num_frames <= embed.shape[1]:
        yield
        return
    original = embed.data
    embed.data = resize_temporal_embed(original, num_frames)
    try:
        yield
    finally:
        embed.data = original
