"""Writers that turn a planned synthetic world into files in the official formats.

Each writer is ``writer(world, out_dir) -> {name: relative path}``; :data:`WRITERS` lists them in order (the
tokenizer writer reads nothing from disk, so the order only matters for the manifest). To add a dataset format
(EK-100, Charades-Ego, ...), add a function here and register it in :data:`WRITERS`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from egovlp.data.egoclip_table import write_egoclip_csv
from egovlp.data.synthetic.charades_ego import write_charades_ego
from egovlp.data.synthetic.detections import write_detections
from egovlp.data.synthetic.egotaskqa import write_egotaskqa
from egovlp.data.synthetic.epic_mir import write_epic_mir
from egovlp.data.synthetic.episodic import write_episodic
from egovlp.data.synthetic.qfvs import write_qfvs
from egovlp.data.synthetic.world import Event, World
from egovlp.data.taxonomy import write_taxonomy
from egovlp.data.text import clean_narration
from egovlp.data.tokenizer import Tokenizer

__all__ = ["WRITERS", "egoclip_row", "write_egoclip", "write_egomcq", "write_narrations", "write_taxonomies"]

Writer = Callable[[World, Path], dict[str, str]]


def egoclip_row(world: World, e: Event) -> dict:
    """The EgoClip fields of an action (tags as Python-list literals, times with 6 decimals)."""
    video = world.videos[e.video]
    return {
        "clip_idx": e.clip_idx,
        "video_uid": video.uid,
        "video_dur": f"{video.duration:.6f}",
        "narration_source": "narration_pass_1",
        "narration_ind": e.index,
        "narration_time": f"{e.narration_time:.6f}",
        "clip_start": f"{e.clip_start:.6f}",
        "clip_end": f"{e.clip_end:.6f}",
        "clip_text": world.narration(e),
        "tag_verb": str([e.verb]),
        "tag_noun": str([world.noun(e)]),
    }


def write_egoclip(world: World, out: Path) -> dict[str, str]:
    """``egoclip.csv``: the training actions (TAB-separated, official columns), in (video, time) order."""
    rows = sorted((e for v in world.videos for e in v.events if not e.held_out), key=lambda e: e.clip_idx)
    write_egoclip_csv(out / "egoclip.csv", (egoclip_row(world, e) for e in rows))
    return {"egoclip": "egoclip.csv"}


def _json_row(world: World, e: Event) -> dict:
    row = egoclip_row(world, e)
    for key in ("video_dur", "narration_time", "clip_start", "clip_end"):
        row[key] = float(row[key])
    return row


def write_egomcq(world: World, out: Path) -> dict[str, str]:
    """``egomcq.json``: ``{"<i>": {"query", "choices": {"0".."4"}, "answer", "types"}}`` over held-out actions."""
    data = {}
    for i, q in enumerate(world.questions):
        answer = world.event(q.options[q.answer])
        data[str(i)] = {
            "query": _json_row(world, answer),
            "choices": {str(k): _json_row(world, world.event(ref)) for k, ref in enumerate(q.options)},
            "answer": q.answer,
            "types": q.type,
        }
    with open(out / "egomcq.json", "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1)
    return {"egomcq": "egomcq.json"}


def write_narrations(world: World, out: Path) -> dict[str, str]:
    """``narration.json`` in Ego4D's layout (all actions, held-out ones included): the raw annotation from which
    ``egovlp data build-egoclip`` rebuilds an EgoClip table."""
    fps = world.config.fps
    data = {}
    for v in world.videos:
        narrations = [
            {
                "timestamp_sec": round(e.narration_time, 6),
                "timestamp_frame": round(e.narration_time * fps),
                "narration_text": world.narration(e),
                "annotation_uid": f"synthetic-{v.uid[:8]}-{e.index}",
            }
            for e in v.events
        ]
        data[v.uid] = {"status": "complete", "narration_pass_1": {"narrations": narrations, "summaries": []}}
    with open(out / "narration.json", "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1)
    return {"narrations": "narration.json"}


def write_taxonomies(world: World, out: Path) -> dict[str, str]:
    """``narration_verb_taxonomy.csv`` and ``narration_noun_taxonomy.csv`` (Ego4D's ``label,group`` format)."""
    write_taxonomy(
        out / "narration_verb_taxonomy.csv", [v.label for v in world.verbs], [list(v.synonyms) for v in world.verbs]
    )
    nouns = list(world.shapes)
    write_taxonomy(out / "narration_noun_taxonomy.csv", nouns, [[n, n + "s"] for n in nouns])
    return {"verb_taxonomy": "narration_verb_taxonomy.csv", "noun_taxonomy": "narration_noun_taxonomy.csv"}


def write_tokenizer(world: World, out: Path) -> dict[str, str]:
    """``tokenizer/``: a byte-level BPE trained on the cleaned narrations of every action."""
    texts = [clean_narration(world.narration(e)) for v in world.videos for e in v.events]
    Tokenizer.train(texts, world.config.tokenizer_vocab_size, out / "tokenizer", min_frequency=1)
    return {"tokenizer": "tokenizer"}


WRITERS: dict[str, Writer] = {
    "egoclip": write_egoclip,
    "egomcq": write_egomcq,
    "narrations": write_narrations,
    "taxonomies": write_taxonomies,
    "tokenizer": write_tokenizer,
    "epic_mir": write_epic_mir,  # epic/ (SynthConfig.epic)
    "charades_ego": write_charades_ego,  # charades/ (SynthConfig.charades)
    "egotaskqa": write_egotaskqa,  # egotaskqa/ (SynthConfig.egotaskqa)
    "episodic": write_episodic,  # episodic/ (SynthConfig.episodic): Ego4D NLQ + MQ
    "qfvs": write_qfvs,  # qfvs/ (SynthConfig.qfvs): UT-Egocentric QFVS layout
    "detections": write_detections,  # detections.json + objects_vocab.txt: the EgoClip clips' objects (OA-Trans)
}
