"""The synthetic world: files in the official formats, determinism, motions, EgoMCQ design, round trips."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re

import numpy as np
import pytest

from egovlp.data.egoclip_table import load_egoclip
from egovlp.data.egomcq import load_egomcq
from egovlp.data.narrations import build_egoclip
from egovlp.data.synthetic import SynthConfig, plan_world
from egovlp.data.synthetic.charades_ego import charades_class_names
from egovlp.data.synthetic.downstream import action_text
from egovlp.data.synthetic.render import VideoRenderer
from egovlp.data.synthetic.writers import egoclip_row
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
    uids = {p.name for p in (tmp_path / "w" / "videos").iterdir() if p.is_dir()}
    other = generate(tmp_path / "w", dataclasses.replace(tiny, seed=1))
    assert {p.name for p in (tmp_path / "w" / "videos").iterdir() if p.is_dir()}.isdisjoint(uids)
    assert other.num_videos == 2 and len(uids) == 2
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="not empty and holds no synthetic world"):
        generate(tmp_path / "mine", tiny)


def _plan_digest(cfg: SynthConfig) -> str:
    """sha256 of everything a plan decides: EgoClip rows of every action, questions, scenes, object placements."""
    world = plan_world(cfg)
    rows = [egoclip_row(world, e) for v in world.videos for e in v.events]
    questions = [dataclasses.astuple(q) for q in world.questions]
    scenes = [dataclasses.astuple(v.scene) for v in world.videos]
    placements = [(e.x_offset, e.amplitude, e.distractors, e.held_out) for v in world.videos for e in v.events]
    text = json.dumps([rows, questions, scenes, placements], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def test_default_worlds_are_unchanged():
    """The demo and its documented numbers depend on the default world: these digests were taken before the
    rendering knobs and verb sets were added (a change to them must be deliberate, with the docs re-measured)."""
    assert _plan_digest(SynthConfig()) == "7d2eb9a6c99585e6620f3bb961e20f54a1560f0a4ef82515353d64a7f92cad04"
    assert _plan_digest(SMALL_WORLD) == "eb710d6e0b9fd151ade14e9bbb9adfd3def42781668db61231a4475c37af7217"
    world = plan_world(SynthConfig())
    pixels = hashlib.sha256()
    for v in (0, 7):
        renderer = VideoRenderer(world, world.videos[v])
        for n in range(0, 400, 3):
            pixels.update(renderer.frame(n / 8).tobytes())
    assert pixels.hexdigest() == "e64926b8d963f160098483182c5f4fce278c38cb34cec5daed0f10ff4c069237"
    assert charades_class_names(world)[:6] == [
        "Picking up a cube", "Picking up a ball", "Picking up a cone", "Picking up a ring", "Picking up a cross",
        "Putting down a cube",
    ]  # fmt: skip
    assert [action_text(world, world.videos[0], verb, 0)[0] for verb in range(4)] == [
        "pick up", "put down", "pull", "push"
    ]  # fmt: skip


DIRECTION = re.compile(r"#C C moves the (\w+) (\w+) (up|down|closer|away)")
VARIANT = SynthConfig(width=96, height=64, fps=6, num_videos=8, video_seconds=180.0, verb_set="direction")


def test_direction_verb_set_plans_the_documented_variant():
    world = plan_world(VARIANT)
    assert [v.label for v in world.verbs] == ["move_up", "move_down", "move_closer", "move_away"]
    assert [v.motion for v in world.verbs] == ["rise", "fall", "grow", "shrink"]  # pairs: each the other reversed
    train = [e for v in world.videos for e in v.events if not e.held_out]
    assert 280 <= len(train) <= 330 and len(world.questions) == 300
    for v in world.videos:
        for e in v.events:
            assert DIRECTION.fullmatch(world.narration(e))
    for q in world.questions:
        if q.type == 2:  # the reversed twin is among the options: same object, opposite direction
            answer = world.event(q.options[q.answer])
            twins = [world.event(o) for o in q.options if world.event(o).verb == answer.verb ^ 1]
            assert any(world.shape_colour(t) == world.shape_colour(answer) for t in twins)
    assert plan_world(dataclasses.replace(VARIANT, num_verb_pairs=1)).verbs == world.verbs[:2]  # up / down only


def test_direction_world_files_render_and_rebuild(tmp_path):
    from egovlp.data.synthetic import generate

    cfg = dataclasses.replace(VARIANT, num_videos=5, video_seconds=40.0, mcq_pairs_per_video=3, num_mcq_inter=4,
                              num_mcq_intra=4, epic=False, charades=False, tokenizer_vocab_size=280,
                              camera_shake_pixels=0.0, object_size=0.25)  # fmt: skip
    summary = generate(tmp_path / "w", cfg)
    assert json.loads((tmp_path / "w" / "videos" / "chunks.json").read_text()) == {"chunk_seconds": 30.0}
    uid = plan_world(cfg).videos[0].uid
    info = probe(tmp_path / "w" / "videos" / uid / "0.mp4")
    assert (info.width, info.height, info.fps) == (96, 64, 6) and info.duration == pytest.approx(30.0)
    table = load_egoclip(summary["egoclip"])
    assert all(DIRECTION.fullmatch(table.text(i)) for i in range(len(table)))
    # The taxonomy tags a narration by its direction word, so build-egoclip gives back the world's tags.
    out = tmp_path / "rebuilt.csv"
    build_egoclip(summary["narrations"], load_taxonomy(summary["verb_taxonomy"]),
                  load_taxonomy(summary["noun_taxonomy"]), out)  # fmt: skip
    rebuilt = load_egoclip(out)
    tags = {rebuilt.text(i): rebuilt.verbs(i).tolist() for i in range(len(rebuilt))}
    assert all(tags[table.text(i)] == table.verbs(i).tolist() for i in range(len(table)))
    # Rendering at the new size: the object moves the way its direction word says (object_size 0.25 of 64 px).
    world = plan_world(cfg)
    video = world.videos[0]
    renderer = VideoRenderer(world, video)
    for e in video.events:
        rgb = world.colours[video.props[e.prop][1]][1]
        if any(video.props[d][1] == video.props[e.prop][1] for d in e.distractors):
            continue
        a, b = _object_pixels(renderer.frame(e.start), rgb), _object_pixels(renderer.frame(e.end), rgb)
        direction = DIRECTION.fullmatch(world.narration(e)).group(3)
        if direction in ("up", "down"):
            dy = b[:, 0].mean() - a[:, 0].mean()
            assert dy < -10 if direction == "up" else dy > 10
        else:
            assert len(b) > 2 * len(a) if direction == "closer" else len(a) > 2 * len(b)


def test_verb_set_and_rendering_knobs_are_validated():
    with pytest.raises(ConfigError, match="verb_set must be one of default, direction, got 'sideways'"):
        plan_world(SynthConfig(verb_set="sideways"))
    with pytest.raises(ConfigError, match="num_verb_pairs must be 1-2 for verb_set='direction', got 3"):
        plan_world(SynthConfig(verb_set="direction", num_verb_pairs=3))
    with pytest.raises(ConfigError, match="object_size"):
        plan_world(SynthConfig(object_size=0.0))
    with pytest.raises(ConfigError, match="whole number of frames"):
        plan_world(SynthConfig(fps=7, chunk_seconds=10.5))
    with pytest.raises(ConfigError, match="inter-video EgoMCQ needs num_videos >= 5"):
        plan_world(dataclasses.replace(VARIANT, num_videos=4))
    from egovlp.config import load_config

    with pytest.raises(ConfigError, match=r"config key 'verb_set' must be one of default, direction, got 'up'"):
        load_config(SynthConfig, None, ["verb_set=up"])
    assert load_config(SynthConfig, None, ["verb_set=direction", "fps=6", "width=96"]).verb_set == "direction"


def test_chunk_length_is_recorded_and_an_old_world_gets_it_on_reuse(small_world, tmp_path):
    from egovlp.data.synthetic import generate
    from egovlp.data.video_io import resolve_chunk_seconds

    assert json.loads((small_world["videos"] / "chunks.json").read_text()) == {"chunk_seconds": 10.0}
    assert resolve_chunk_seconds(small_world["videos"], 0) == 10.0
    # read_clip with chunk_seconds=0 reads the recorded 10 s and gives the frames that an explicit 10 gives
    e = plan_world(SMALL_WORLD).videos[1].events[5]
    uid = plan_world(SMALL_WORLD).videos[1].uid
    auto = read_clip(small_world["videos"], uid, e.clip_start, e.clip_end, 3, "uniform", 0)
    assert np.array_equal(auto, read_clip(small_world["videos"], uid, e.clip_start, e.clip_end, 3, "uniform", 10.0))
    # A world made before chunks.json existed (and before verb_set was a field) is reused, and gains the file.
    tiny = SynthConfig(num_videos=2, video_seconds=20.0, chunk_seconds=10.0, num_mcq_inter=0, num_mcq_intra=0,
                       tokenizer_vocab_size=270, workers=1, epic=False, charades=False)  # fmt: skip
    first = generate(tmp_path / "w", tiny)
    manifest_path = tmp_path / "w" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    del manifest["config"]["verb_set"]
    manifest_path.write_text(json.dumps(manifest))
    (tmp_path / "w" / "videos" / "chunks.json").unlink()
    again = generate(tmp_path / "w", tiny)
    assert again.seconds < first.seconds and again.files == first.files  # reused, not regenerated
    assert json.loads((tmp_path / "w" / "videos" / "chunks.json").read_text()) == {"chunk_seconds": 10.0}
