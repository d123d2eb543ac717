"""The synthetic world's episodic-memory sets: Ego4D NLQ v1 and MQ files over long videos (``episodic/``).

::

    episodic/videos/<video_uid>.mp4                      whole long videos of many narrated actions (layout=files)
    episodic/nlq_{train,val,test_unannotated}.json       NLQ v1 layout (downstream §2); test without answer windows
    episodic/moments_{train,val,test_unannotated}.json   MQ layout (downstream §3); test without labels

Each video (``episodic_video_seconds``, new videos of the world) holds one clip: the video from a small offset
(``video_start_sec`` > 0, so that clip-relative and video times differ) to its end. Actions that start before the
clip are left out of it. Videos are split by video: train, then the last ``episodic_val_videos +
episodic_test_videos`` are val, then test.

NLQ: one query per action whose (verb, object) happens once in the clip, ``"when did I pick up the red cube?"``; for
a (verb, object) done several times, the last time is asked, ``"when did I last pick up the red cube?"``. The answer
window is the action's motion, in seconds from the clip start. Queries are grouped into annotations of at most
:data:`QUERIES_PER_ANNOTATION`; every split's first annotation ends with one language query without ``query`` text,
as a few real ones are (readers skip and count it).

MQ: one primary label per action in the clip, named by its verb's taxonomy label (``pick_up``, ``put_down``, ...)
with clip-relative ``start_time`` / ``end_time``; every fourth action also has a non-primary label (its object's
shape) that readers drop by default.
"""

from __future__ import annotations

import json
import uuid
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from egovlp.data.synthetic.downstream import action_text, downstream_videos, render_videos
from egovlp.data.synthetic.world import Event, Video, World

__all__ = ["EPISODIC_SPLITS", "QUERIES_PER_ANNOTATION", "episodic_clip", "nlq_query_text", "write_episodic"]

EPISODIC_SPLITS = ("train", "val", "test_unannotated")
QUERIES_PER_ANNOTATION = 5


def _uid(rng: np.random.Generator) -> str:
    return str(uuid.UUID(bytes=rng.bytes(16), version=4))


def episodic_clip(world: World, video: Video, rng: np.random.Generator) -> tuple[float, tuple[Event, ...]]:
    """``(clip start in the video, the clip's actions)``: the clip starts 0.5-3 s in (a whole frame)."""
    fps = world.config.fps
    offset = round(float(rng.uniform(0.5, 3.0)) * fps) / fps
    return offset, tuple(e for e in video.events if e.start >= offset)


def nlq_query_text(world: World, video: Video, e: Event, last: bool) -> tuple[str, str, str]:
    """``(query, object, verb)`` of an action: ``"when did I pick up the red cube?"`` (``"... last ..."``)."""
    base, colour, shape = action_text(world, video, e.verb, e.prop)
    obj = f"the {colour} {shape}"
    verb = world.verbs[e.verb]
    phrase = f"{base.split()[0]} {obj} {verb.particle}" if verb.particle else f"{base} {obj}"
    return f"when did I {'last ' if last else ''}{phrase}?", obj, base


def _nlq_query(world: World, video: Video, e: Event, offset: float, last: bool, annotated: bool) -> dict[str, Any]:
    query, obj, verb = nlq_query_text(world, video, e, last)
    fps = world.config.fps
    start, end = round(e.start - offset, 3), round(e.end - offset, 3)
    out: dict[str, Any] = {}
    if annotated:
        out = {"clip_start_sec": start, "clip_end_sec": end, "video_start_sec": round(e.start, 3),
               "video_end_sec": round(e.end, 3), "video_start_frame": round(e.start * fps),
               "video_end_frame": round(e.end * fps)}  # fmt: skip
    template = "Objects: When did I [verb] object X?"
    return {**out, "template": template, "query": query, "slot_x": obj, "verb_x": verb, "slot_y": None,
            "verb_y": None, "raw_tags": [template, query, obj, verb]}  # fmt: skip


def _nlq_annotations(
    world: World, video: Video, events: tuple[Event, ...], offset: float, annotated: bool, rng: np.random.Generator
) -> list[dict[str, Any]]:
    keys = [(e.verb, e.prop) for e in events]
    last_of = {k: e for k, e in zip(keys, events)}  # each (verb, object): its last action
    asked = sorted(((e, keys.count(k) > 1) for k, e in last_of.items()), key=lambda pair: pair[0].start)
    queries = [_nlq_query(world, video, e, offset, last, annotated) for e, last in asked]
    order = rng.permutation(len(queries))
    queries = [queries[i] for i in order]
    groups = [queries[i : i + QUERIES_PER_ANNOTATION] for i in range(0, len(queries), QUERIES_PER_ANNOTATION)]
    return [{"annotation_uid": _uid(rng), "language_queries": g} for g in groups]


def _clip_fields(clip_uid: str, offset: float, video: Video, fps: int) -> dict[str, Any]:
    duration = round(video.duration - offset, 3)
    return {"clip_uid": clip_uid, "source_clip_uid": clip_uid, "video_start_sec": offset,
            "video_end_sec": video.duration, "video_start_frame": round(offset * fps),
            "video_end_frame": round(video.duration * fps), "clip_start_sec": 0.0, "clip_end_sec": duration,
            "clip_start_frame": 0, "clip_end_frame": round(duration * fps)}  # fmt: skip


def _moment_labels(world: World, video: Video, events: tuple[Event, ...], offset: float) -> list[dict[str, Any]]:
    labels = []
    for k, e in enumerate(events):
        times = {"start_time": round(e.start - offset, 3), "end_time": round(e.end - offset, 3)}
        fps = world.config.fps
        frames = {"video_start_time": round(e.start, 3), "video_end_time": round(e.end, 3),
                  "video_start_frame": round(e.start * fps), "video_end_frame": round(e.end * fps)}  # fmt: skip
        labels.append({**times, **frames, "label": world.verbs[e.verb].label, "primary": True})
        if k % 4 == 3:
            shape = world.shapes[video.props[e.prop][0]]
            labels.append({**times, **frames, "label": f"touch_{shape}", "primary": False})
    return labels


def _write(path: Path, data: dict) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1)


def write_episodic(world: World, out: Path) -> dict[str, str]:
    """Write ``episodic/`` (see the module docstring); nothing when ``config.episodic`` is off."""
    cfg = world.config
    if not cfg.episodic:
        return {}
    root = out / "episodic"
    videos = downstream_videos(world, "episodic", cfg.episodic_videos, cfg.episodic_video_seconds)
    render_videos(world, [(v, root / "videos" / f"{v.uid}.mp4") for v in videos])
    rng = np.random.default_rng([cfg.seed, zlib.crc32(b"episodic-annotations")])
    first_val = cfg.episodic_videos - cfg.episodic_val_videos - cfg.episodic_test_videos
    first_test = cfg.episodic_videos - cfg.episodic_test_videos
    bounds = {"train": (0, first_val), "val": (first_val, first_test), "test_unannotated": (first_test, len(videos))}
    for split, (lo, hi) in bounds.items():
        annotated = split != "test_unannotated"
        nlq_videos: list[dict[str, Any]] = []
        mq_videos: list[dict[str, Any]] = []
        for video in videos[lo:hi]:
            offset, events = episodic_clip(world, video, rng)
            clip = _clip_fields(_uid(rng), offset, video, cfg.fps)
            annotations = _nlq_annotations(world, video, events, offset, annotated, rng)
            nlq_videos.append({"video_uid": video.uid, "clips": [{**clip, "annotations": annotations}]})
            mq_annotations = [{"labels": _moment_labels(world, video, events, offset)}] if annotated else []
            mq_clip = {**clip, "annotations": mq_annotations}
            mq_videos.append({"video_uid": video.uid, "duration_sec": video.duration, "split": split.split("_")[0],
                              "clips": [mq_clip]})  # fmt: skip
        first = nlq_videos[0]["clips"][0]["annotations"][0]["language_queries"]
        no_text = {k: v for k, v in first[0].items() if k != "query"}  # as a few real queries: no 'query' field
        first.append(no_text)
        _write(root / f"nlq_{split}.json", {"version": "v1", "date": "synthetic", "description": "NLQ synthetic",
                                            "videos": nlq_videos})  # fmt: skip
        _write(root / f"moments_{split}.json", {"version": "v1", "date": "synthetic",
                                                "description": "MQ synthetic", "videos": mq_videos})  # fmt: skip
    return {"episodic": "episodic"}
