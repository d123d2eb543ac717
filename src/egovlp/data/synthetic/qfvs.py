"""The synthetic world's QFVS set, in the UT-Egocentric layout the QFVS reader takes (``qfvs/``).

::

    qfvs/videos/P0X.mp4                                               1 fps, cut into 5-frame (5 s) shots
    qfvs/Dense_per_shot_tags/P0X/P0X.txt                              per shot: the concepts in view
    qfvs/Dense_per_shot_tags/Tags.mat                                 Tags{1, v}{s, 1}: 1 x 48 0/1 concept vector
    qfvs/Query-Focused_Summaries/Oracle_Summaries/P0X/<c1>_<c2>_oracle.txt   1-based shot ids, one a line

Each video (``qfvs_video_seconds``, new videos of the world rendered at 1 fps) has ``qfvs_props_per_video``
objects; every action shows its handled object and two of the others, and actions last about
``qfvs_event_seconds``, so a shot mostly shows one action's three objects. Concepts are the world's shape nouns
(``cube``, ``ball``, ...): a shot's tags are the shapes of every object drawn in any of its five frames, taken
from the renderer's own choice of action per frame. ``Tags.mat`` rows have the real file's 48 columns; column k is
shape k and the others stay 0 (an all-zero column changes no concept IoU).

The oracle summary of a concept pair ``(c1, c2)`` (``c1`` before ``c2`` in the shape order; a pair that no shot
shows is left out) holds ``max(2, round(0.04 * shots))`` shots: first the middle shot of each run of consecutive
shots showing both concepts (runs in a seeded random order), then the other shots showing both, then the middles
of runs showing either, then the rest showing either. So the oracle is query-focused (both concepts first) and
diverse (one shot per run before a second one).
"""

from __future__ import annotations

import dataclasses
import zlib
from pathlib import Path

import numpy as np

from egovlp.data.synthetic.downstream import downstream_videos, render_videos
from egovlp.data.synthetic.render import VideoRenderer
from egovlp.data.synthetic.world import Video, World

__all__ = ["SHOT_FRAMES", "TAGS_COLUMNS", "oracle_summary", "qfvs_world", "shot_concepts", "write_qfvs"]

SHOT_FRAMES = 5  # frames per shot at 1 fps (UT-Egocentric's 5 s shots)
TAGS_COLUMNS = 48  # the real Tags.mat's concept count
ORACLE_FRACTION = 0.04


def qfvs_world(world: World) -> World:
    """The world whose config plans and renders the QFVS videos: 1 fps, more objects, longer actions."""
    cfg = world.config
    sub = dataclasses.replace(
        cfg,
        fps=1,
        gop_seconds=float(SHOT_FRAMES),
        props_per_video=cfg.qfvs_props_per_video,
        event_seconds_min=0.6 * cfg.qfvs_event_seconds,
        event_seconds_max=1.4 * cfg.qfvs_event_seconds,
    )
    return dataclasses.replace(world, config=sub)


def shot_concepts(world: World, video: Video) -> list[set[int]]:
    """Per complete shot (``duration // 5`` of them): the shape ids of every object drawn in its frames."""
    renderer = VideoRenderer(world, video)  # its ``bounds`` decide which action a frame shows
    shots = round(video.duration) // SHOT_FRAMES
    out = []
    for s in range(shots):
        seen: set[int] = set()
        for t in range(s * SHOT_FRAMES, (s + 1) * SHOT_FRAMES):
            e = video.events[int(np.searchsorted(renderer.bounds, float(t)))]
            seen.update(video.props[p][0] for p in (e.prop, *e.distractors))
        out.append(seen)
    return out


def _runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """``[start, end)`` of every run of True in ``flags``."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], flags.astype(np.int8), [0]])))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2])]


def oracle_summary(concepts: list[set[int]], c1: int, c2: int, rng: np.random.Generator) -> list[int]:
    """0-based oracle shots of the query ``(c1, c2)`` (see the module docstring); empty if no shot shows either."""
    both = np.array([c1 in c and c2 in c for c in concepts])
    either = np.array([c1 in c or c2 in c for c in concepts])
    size = max(2, round(ORACLE_FRACTION * len(concepts)))
    order: list[int] = []
    for flags in (both, either):
        runs = _runs(flags)
        middles = [(a + b - 1) // 2 for a, b in (runs[i] for i in rng.permutation(len(runs)))]
        rest = [int(s) for s in rng.permutation(np.flatnonzero(flags))]
        order += middles + rest
    picked = list(dict.fromkeys(order))[:size]
    return sorted(picked)


def _tags_cell(vectors: list[np.ndarray]) -> np.ndarray:
    """MATLAB's ``Tags{1, v}{s, 1}`` = 1 x 48 double row as scipy writes a cell array."""
    outer = np.empty((1, len(vectors)), dtype=object)
    for v, rows in enumerate(vectors):
        inner = np.empty((len(rows), 1), dtype=object)
        for s, row in enumerate(rows):
            inner[s, 0] = row.astype(np.float64).reshape(1, -1)
        outer[0, v] = inner
    return outer


def write_qfvs(world: World, out: Path) -> dict[str, str]:
    """Write ``qfvs/`` (see the module docstring); nothing when ``config.qfvs`` is off."""
    import scipy.io

    cfg = world.config
    if not cfg.qfvs:
        return {}
    root = out / "qfvs"
    sub = qfvs_world(world)
    videos = downstream_videos(sub, "qfvs", cfg.qfvs_videos, cfg.qfvs_video_seconds)
    names = [f"P{i + 1:02d}" for i in range(len(videos))]
    render_videos(sub, [(v, root / "videos" / f"{name}.mp4") for v, name in zip(videos, names)])
    rng = np.random.default_rng([cfg.seed, zlib.crc32(b"qfvs-oracle")])
    shapes = world.shapes
    vectors = []
    for video, name in zip(videos, names):
        concepts = shot_concepts(sub, video)
        tags = root / "Dense_per_shot_tags" / name
        tags.mkdir(parents=True, exist_ok=True)
        lines = [",".join(shapes[k] for k in sorted(c)) for c in concepts]
        (tags / f"{name}.txt").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        matrix = np.zeros((len(concepts), TAGS_COLUMNS), np.uint8)
        for s, c in enumerate(concepts):
            matrix[s, sorted(c)] = 1
        vectors.append(matrix)
        oracle_dir = root / "Query-Focused_Summaries" / "Oracle_Summaries" / name
        oracle_dir.mkdir(parents=True, exist_ok=True)
        for c1 in range(len(shapes)):
            for c2 in range(c1 + 1, len(shapes)):
                shots = oracle_summary(concepts, c1, c2, rng)
                if shots:
                    text = "".join(f"{s + 1}\n" for s in shots)
                    (oracle_dir / f"{shapes[c1]}_{shapes[c2]}_oracle.txt").write_text(text, encoding="utf-8")
    scipy.io.savemat(str(root / "Dense_per_shot_tags" / "Tags.mat"), {"Tags": _tags_cell(vectors)})
    return {"qfvs": "qfvs"}
