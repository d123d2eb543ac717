"""Frame sampling in time: F equal segments of a clip, a random time in each (training) or the middles (evaluation).

Sampling works in seconds, not frame indices, so it does not depend on the frame rate; the reader maps each time to
the frame shown at that time. A clip shorter than F frames gives repeated frames, never an error.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["SAMPLE_MODES", "sample_times", "worker_rng"]

SAMPLE_MODES = ("rand", "uniform")


def sample_times(
    start: float, end: float, num_frames: int, sample: str = "uniform", rng: np.random.Generator | None = None
) -> np.ndarray:
    """Times (seconds, ascending) of ``num_frames`` frames in ``[start, end]``: ``(F,)`` float64.

    ``[start, end]`` is split into F equal segments. ``"rand"`` draws one uniform time in each segment (from
    ``rng``, a fresh unseeded generator if None); ``"uniform"`` takes each segment's middle. ``start`` is clamped at
    0 and ``end`` at ``start`` (as the official loader clamps negative times).
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if sample not in SAMPLE_MODES:
        raise ValueError(f"sample must be one of {SAMPLE_MODES}, got {sample!r}")
    start = max(float(start), 0.0)
    end = max(float(end), start)
    edges = np.linspace(start, end, num_frames + 1)
    lo, hi = edges[:-1], edges[1:]
    if sample == "uniform":
        return (lo + hi) / 2
    rng = rng if rng is not None else np.random.default_rng()
    return lo + rng.random(num_frames) * (hi - lo)


def worker_rng() -> np.random.Generator:
    """A numpy generator seeded from torch's random stream.

    In a DataLoader worker torch's stream is seeded with the worker seed (base seed + worker id, drawn from the
    main process's generator each epoch), and in the main process it follows ``torch.manual_seed``; so a draw
    here makes runs reproducible for a fixed seed and worker count, and differs between workers and epochs.
    """
    return np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))
