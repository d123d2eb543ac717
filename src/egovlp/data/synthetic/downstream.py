"""What the downstream writers (EK-100 MIR, Charades-Ego) share: their own videos of the world, rendered whole.

Each downstream set plans new videos with the world's machinery (:func:`~egovlp.data.synthetic.world.plan_videos`:
same verbs, objects, scenes and renderer) from its own seeded generator, so switching a set on or off never changes
the world's EgoClip / EgoMCQ files, and renders them as whole (unchunked) files, several processes at a time.
"""

from __future__ import annotations

import multiprocessing
import os
import zlib
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from egovlp.data.synthetic.render import write_video
from egovlp.data.synthetic.world import Video, World, plan_videos

__all__ = ["action_text", "downstream_videos", "render_videos"]


def downstream_videos(world: World, name: str, count: int, seconds: float) -> tuple[Video, ...]:
    """``count`` new videos of about ``seconds`` for the downstream set ``name`` (deterministic per seed and name)."""
    rng = np.random.default_rng([world.config.seed, zlib.crc32(name.encode())])
    return plan_videos(world.config, rng, count, seconds)


def action_text(world: World, video: Video, verb: int, prop: int) -> tuple[str, str, str]:
    """``(verb base form, colour, shape)`` of an action, e.g. ``("pick up", "red", "cube")``."""
    shape, colour = video.props[prop]
    return world.verbs[verb].base, world.colours[colour][0], world.shapes[shape]


def render_videos(world: World, jobs: Sequence[tuple[Video, Path]]) -> None:
    """Render every ``(video, path)`` as one mp4, in up to ``world.config.workers`` processes."""
    workers = max(1, min(world.config.workers, len(jobs), os.cpu_count() or 1))
    if workers == 1:
        for video, path in jobs:
            write_video(world, video, path)
        return
    # fork: the children only run numpy and PyAV; spawn would re-import torch in every child.
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method)) as pool:
        for future in [pool.submit(write_video, world, video, path) for video, path in jobs]:
            future.result()
