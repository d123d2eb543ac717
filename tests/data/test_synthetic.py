"""The synthetic world: files in the official formats, determinism, motions, EgoMCQ design, round trips."""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import pytest

from egovlp.data.egoclip_table import load_egoclip
from egovlp.data.egomcq import load_egomcq
from egovlp.data.narrations import build_egoclip
from egovlp.data.synthetic import SynthConfig, plan_world
from egovlp.data.synthetic.render import VideoRenderer
from egovlp.data.taxonomy import load_taxonomy
from egovlp.data.tokenizer import Tokenizer
from egovlp.data.video_io import probe, read_clip
from egovlp.errors import ConfigError

from .conftest import SMALL_WORLD

NARRATION = re.compile(r"#C C (picks up|puts down|pulls|pushes|turns on|turns off) the (\w+) (\w+)")


def test_files_and_manifest(small_world):
    root = small_world.root
    for name in ("egoclip.csv", "egomcq.json", "narration.json", "narration_verb_taxonomy.csv",
                 "narration_noun_taxonomy.csv", "tokenizer/tokenizer.json", "tokenizer/vocab.json",
                 "tokenizer/merges.txt", "manifest.json", "README.txt"):  # fmt: skip
        assert (root / name).is_file(), name
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["chunk_seconds"] == 10.0 and manifest["num_videos"] == 5
    assert manifest["num_verbs"] == len(load_taxonomy(small_world["verb_taxonomy"])) == 4
    assert manifest["num_nouns"] == len(load_taxonomy(small_world["noun_taxonomy"])) == 5
    assert manifest["num_mcq"] == {"inter": 8, "intra": 8} and manifest["num_clips"] == small_world.num_clips
    for v in manifest["videos"]:
        chunks = sorted((root / "videos" / v["video_uid"]).glob("*.mp4"))
        assert [c.name for c in chunks] == [f"{k}.mp4" for k in range(len(chunks))]
        assert len(chunks) == int(np.ceil(v["duration"] / 10.0))
        info = probe(chunks[0])
        assert info.fps == 8 and (info.width, info.height) == (80, 64) and info.duration == pytest.approx(10.0)


def test_egoclip_rows(small_world):
    table = load_egoclip(small_world["egoclip"])
    assert len(table) == small_world.num_clips and table.clip_idx.tolist() == list(range(len(table)))
    for i in range(len(table)):
        row = table.row(i)
        assert NARRATION.fullmatch(row["clip_text"]), row["clip_text"]
        assert len(row["tag_verb"]) == 1 and len(row["tag_noun"]) == 1
        assert 0 <= row["clip_start"] < row["narration_time"] < row["clip_end"] <= row["video_dur"]
    chunk = np.floor(table.clip_start / 10.0) != np.floor(table.clip_end / 10.0)
    assert chunk.any()  # some clips span two chunks
    gaps = np.diff(table.narration_time[table.video == 0])
    assert gaps.std() > 0.2  # irregular narration times


def test_mcq_design(small_world):
    world = plan_world(SMALL_WORLD)
    train = {
        (r["video_uid"], r["clip_start"])
        for r in map(load_egoclip(small_world["egoclip"]).row, range(small_world.num_clips))
    }
    for q in load_egomcq(small_world["egomcq"]):
        uids = [o[0] for o in q.options]
        texts = [o[3] for o in q.options]
        assert len(set(texts)) == 5  # every option says something different
        assert not any((uid, round(s, 6)) in train for uid, s, _, _ in q.options)  # held out of EgoClip
        if q.type == 1:
            assert len(set(uids)) == 5
        else:
            assert len(set(uids)) == 1
            verb, colour, shape = NARRATION.fullmatch(q.text).groups()
            twin = {"picks up": "puts down", "puts down": "picks up", "pulls": "pushes", "pushes": "pulls"}[verb]
            assert f"#C C {twin} the {colour} {shape}" in texts
    assert len(world.questions) == 16


def test_world_is_deterministic_and_seed_dependent():
    assert plan_world(SMALL_WORLD) == plan_world(SMALL_WORLD)
    other = plan_world(dataclasses.replace(SMALL_WORLD, seed=4))
    assert other.videos[0].uid != plan_world(SMALL_WORLD).videos[0].uid


def _object_pixels(frame: np.ndarray, rgb, tol: int = 40) -> np.ndarray:
    return np.argwhere(np.all(np.abs(frame.astype(int) - np.array(rgb)) < tol, axis=-1))


def test_motions_are_what_the_verbs_say():
    world = plan_world(dataclasses.replace(SMALL_WORLD, camera_shake_pixels=0.0))
    seen = set()
    for video in world.videos:
        renderer = VideoRenderer(world, video)
        for e in video.events:
            motion = world.verbs[e.verb].motion
            _shape, colour = video.props[e.prop]
            rgb = world.colours[colour][1]
            if any(video.props[d][1] == colour for d in e.distractors) or motion in seen:
                continue  # keep it simple: only the handled object has this colour
            first, last = renderer.frame(e.start), renderer.frame(e.end)
            a, b = _object_pixels(first, rgb), _object_pixels(last, rgb)
            if motion in ("rise", "fall"):
                dy = b[:, 0].mean() - a[:, 0].mean()
                assert (dy < -10) if motion == "rise" else (dy > 10)
            elif motion in ("grow", "shrink"):
                assert (len(b) > 2 * len(a)) if motion == "grow" else (len(a) > 2 * len(b))
            seen.add(motion)
    assert seen == {"rise", "fall", "grow", "shrink"}


def test_decoded_video_matches_the_render(small_world):
    world = plan_world(SMALL_WORLD)
    video = world.videos[1]
    e = video.events[5]
    clip = read_clip(small_world["videos"], video.uid, e.clip_start, e.clip_end, 3, "uniform", 10.0)
    renderer = VideoRenderer(world, video)
    times = np.linspace(e.clip_start, e.clip_end, 7)[1::2]
    for frame, t in zip(clip, times):
        rendered = renderer.frame(np.floor(t * 8) / 8)  # the frame shown at t
        assert np.abs(frame.astype(int) - rendered).mean() < 6


def test_build_egoclip_from_the_worlds_narrations(small_world, tmp_path):
    out = tmp_path / "rebuilt.csv"
    verbs, nouns = load_taxonomy(small_world["verb_taxonomy"]), load_taxonomy(small_world["noun_taxonomy"])
    build_egoclip(small_world["narrations"], verbs, nouns, out)
    rebuilt = load_egoclip(out)
    original = load_egoclip(small_world["egoclip"])
    tags = {rebuilt.text(i): (rebuilt.verbs(i).tolist(), rebuilt.nouns(i).tolist()) for i in range(len(rebuilt))}
    for i in range(len(original)):
        assert tags[original.text(i)] == (original.verbs(i).tolist(), original.nouns(i).tolist())


def test_tokenizer_covers_the_narrations(small_world):
    tok = Tokenizer.from_dir(small_world["tokenizer"])
    table = load_egoclip(small_world["egoclip"])
    ids = tok([table.text(i) for i in range(20)], max_length=15)["input_ids"]
    assert not (ids == tok.unk_id).any() and (ids[:, 1:] == tok.eos_id).any(1).all()  # no truncation at 15


def test_impossible_configs_are_rejected():
    with pytest.raises(ConfigError, match="num_verb_pairs"):
        plan_world(SynthConfig(num_verb_pairs=4))
    with pytest.raises(ConfigError, match="whole number of frames"):
        plan_world(SynthConfig(fps=8, chunk_seconds=10.05))
    with pytest.raises(ConfigError, match="type-2 EgoMCQ"):
        plan_world(dataclasses.replace(SMALL_WORLD, mcq_pairs_per_video=1))


def test_generate_reuses_replaces_and_refuses(tmp_path):
    from egovlp.data.synthetic import generate
    from egovlp.errors import DataError

    tiny = SynthConfig(num_videos=2, video_seconds=20.0, chunk_seconds=10.0, num_mcq_inter=0, num_mcq_intra=0,
                       tokenizer_vocab_size=270, workers=1)  # fmt: skip
    first = generate(tmp_path / "w", tiny)
    again = generate(tmp_path / "w", dataclasses.replace(tiny, workers=2))
    assert again.files == first.files and again.num_clips == first.num_clips
    uids = {p.name for p in (tmp_path / "w" / "videos").iterdir()}
    other = generate(tmp_path / "w", dataclasses.replace(tiny, seed=1))
    assert {p.name for p in (tmp_path / "w" / "videos").iterdir()}.isdisjoint(uids) and other.num_videos == 2
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="not empty and holds no synthetic world"):
        generate(tmp_path / "mine", tiny)
