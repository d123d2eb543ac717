"""The synthetic world's EgoTaskQA set, in the release's layout (``egotaskqa/``).

::

    egotaskqa/Data/qa/direct/formatted_{train,val,test}_qas_encode.json   question records (release fields)
    egotaskqa/Data/qa/answer_set.txt                                      one answer per line (class id = line)
    egotaskqa/Data/qa/all_reasoning_types.txt                             reasoning-type names
    egotaskqa/qa_videos/<interval>.mp4                                    one short video per interval

Each video (``egotaskqa_video_seconds``, new videos of the world) holds a few narrated actions; its questions can
only be answered from the video, and several only from the ORDER or the DIRECTION of its motions:

============================================================  ======  ======================
question                                                      type    reasoning_type
============================================================  ======  ======================
what does C do with the red cube?                 -> pick up  open    descriptive
which object does C pick up?                      -> red cube open    object
does C put down the red cube?  (its reversed twin) -> no      binary  descriptive
what does C do after C picks up the red cube?     -> push     open    temporal$descriptive
does C push the blue ball before C picks up the red cube? -> no binary temporal
============================================================  ======  ======================

A question that the video would make ambiguous (the same object handled twice, the same verb on two objects) is not
asked. ``all_reasoning_types.txt`` also lists ``predictive``, which no question has, so that the per-type report of
a type without questions is exercised. Videos are split by video: train, then the last ``egotaskqa_val_videos +
egotaskqa_test_videos`` are val, then test. Only the ``direct`` split is written (the reader takes either folder).
"""

from __future__ import annotations

import itertools
import json
import zlib
from pathlib import Path

import numpy as np

from egovlp.data.synthetic.downstream import action_text, downstream_videos, render_videos
from egovlp.data.synthetic.world import Event, Video, World

__all__ = ["REASONING_TYPES", "egotaskqa_answer_set", "egotaskqa_questions", "write_egotaskqa"]

REASONING_TYPES = ("descriptive", "object", "temporal", "predictive")


def egotaskqa_answer_set(world: World) -> list[str]:
    """``yes``, ``no``, every verb's base form, then every (colour, shape) object name."""
    objects = [f"{c} {s}" for c, _ in world.colours for s in world.shapes]
    return ["yes", "no", *dict.fromkeys(v.base for v in world.verbs), *objects]


def _record(interval: str, question: str, answer: str, qtype: str, category: str, reasoning: str) -> dict:
    return {"interval": interval, "question": question, "answer": answer, "type": qtype, "category": category,
            "semantic": category, "reasoning_type": reasoning}  # fmt: skip


def _phrase(world: World, video: Video, e: Event, verb: int | None = None) -> str:
    """``"pick up the red cube"`` (base form) for event ``e``, optionally with another verb."""
    base, colour, shape = action_text(world, video, e.verb if verb is None else verb, e.prop)
    return f"{base} the {colour} {shape}"


def _third(world: World, video: Video, e: Event) -> str:
    """``"picks up the red cube"`` (the narration's form)."""
    _, colour, shape = action_text(world, video, e.verb, e.prop)
    return world.verbs[e.verb].phrase(f"{colour} {shape}")


def egotaskqa_questions(world: World, video: Video, interval: str, rng: np.random.Generator) -> list[dict]:
    """The unambiguous questions of one video (records without ``answer_encode``), in a fixed order."""
    events = sorted(video.events, key=lambda e: e.start)
    obj_count: dict[int, int] = {}
    verb_count: dict[str, int] = {}
    said = {(world.verbs[e.verb].base, e.prop) for e in events}
    for e in events:
        obj_count[e.prop] = obj_count.get(e.prop, 0) + 1
        verb_count[world.verbs[e.verb].base] = verb_count.get(world.verbs[e.verb].base, 0) + 1
    out = []
    for e in events:
        base, colour, shape = action_text(world, video, e.verb, e.prop)
        obj = f"{colour} {shape}"
        if obj_count[e.prop] == 1:
            out.append(_record(interval, f"what does C do with the {obj}?", base, "open", "action", "descriptive"))
        if verb_count[base] == 1:
            out.append(_record(interval, f"which object does C {base}?", obj, "open", "object", "object"))
        twin = e.verb ^ 1  # the time-reversed verb: only the direction of the motion tells them apart
        if rng.random() < 0.5 and (world.verbs[twin].base, e.prop) not in said:
            q = f"does C {_phrase(world, video, e, twin)}?"
            out.append(_record(interval, q, "no", "binary", "action", "descriptive"))
        else:
            out.append(
                _record(interval, f"does C {_phrase(world, video, e)}?", "yes", "binary", "action", "descriptive")
            )
    unique = len(said) == len(events)
    for first, then in itertools.pairwise(events):
        if not unique:
            break
        q = f"what does C do after C {_third(world, video, first)}?"
        base = world.verbs[then.verb].base
        out.append(_record(interval, q, base, "open", "order", "temporal$descriptive"))
        a, b, answer = (first, then, "yes") if rng.random() < 0.5 else (then, first, "no")
        q = f"does C {_phrase(world, video, a)} before C {_third(world, video, b)}?"
        out.append(_record(interval, q, answer, "binary", "order", "temporal"))
    return out


def write_egotaskqa(world: World, out: Path) -> dict[str, str]:
    """Write ``egotaskqa/`` (see the module docstring); nothing when ``config.egotaskqa`` is off."""
    cfg = world.config
    if not cfg.egotaskqa:
        return {}
    root = out / "egotaskqa"
    videos = downstream_videos(world, "egotaskqa", cfg.egotaskqa_videos, cfg.egotaskqa_video_seconds)
    intervals = [f"synth_{i:03d}" for i in range(len(videos))]
    render_videos(world, [(v, root / "qa_videos" / f"{name}.mp4") for v, name in zip(videos, intervals)])
    answers = egotaskqa_answer_set(world)
    ids = {a: i for i, a in enumerate(answers)}
    rng = np.random.default_rng([cfg.seed, zlib.crc32(b"egotaskqa-questions")])
    per_video = [egotaskqa_questions(world, v, name, rng) for v, name in zip(videos, intervals)]
    first_val = cfg.egotaskqa_videos - cfg.egotaskqa_val_videos - cfg.egotaskqa_test_videos
    first_test = cfg.egotaskqa_videos - cfg.egotaskqa_test_videos
    qa = root / "Data" / "qa"
    (qa / "direct").mkdir(parents=True, exist_ok=True)
    for split, (lo, hi) in {"train": (0, first_val), "val": (first_val, first_test),
                            "test": (first_test, len(videos))}.items():  # fmt: skip
        records = [{**r, "answer_encode": ids[r["answer"]]} for qs in per_video[lo:hi] for r in qs]
        with open(qa / "direct" / f"formatted_{split}_qas_encode.json", "w", encoding="utf-8") as f:
            json.dump(records, f, indent=0)
    (qa / "answer_set.txt").write_text("\n".join(answers) + "\n", encoding="utf-8")
    (qa / "all_reasoning_types.txt").write_text("\n".join(REASONING_TYPES) + "\n", encoding="utf-8")
    return {"egotaskqa": "egotaskqa"}
