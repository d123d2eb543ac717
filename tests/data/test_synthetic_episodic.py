"""The synthetic world's episodic-memory sets (Ego4D NLQ v1 and MQ layouts) read back by the real readers."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest

from egovlp.data.moments import load_moments
from egovlp.data.nlq import load_nlq
from egovlp.data.synthetic import SynthConfig, plan_world
from egovlp.data.synthetic.downstream import downstream_videos
from egovlp.data.synthetic.episodic import write_episodic
from egovlp.data.video_io import probe
from egovlp.errors import ConfigError

QUERY = re.compile(r"when did I (last )?(pick up|put down|pull|push) the (\w+) (cube|ball|cone|ring|cross)\?")


@pytest.fixture(scope="module")
def episodic(small_world):
    assert "episodic" in small_world.files
    return small_world["episodic"]


def _world_videos(small_world):
    cfg = SynthConfig(**json.loads((small_world["manifest"]).read_text())["config"])
    world = plan_world(cfg)
    return cfg, downstream_videos(world, "episodic", cfg.episodic_videos, cfg.episodic_video_seconds)


@pytest.mark.parametrize("split", ["train", "val"])
def test_nlq_files_read_back_with_answer_windows(small_world, episodic, split):
    cfg, videos = _world_videos(small_world)
    ann = load_nlq(episodic / f"nlq_{split}.json")
    assert ann.has_windows and ann.num_without_query == 1 and ann.num_clamped == 0
    expected = cfg.episodic_videos - cfg.episodic_val_videos - cfg.episodic_test_videos if split == "train" else 1
    assert len(ann.clips) == expected
    by_uid = {v.uid: v for v in videos}
    raw = json.loads((episodic / f"nlq_{split}.json").read_text())
    for q in ann.queries:
        m = QUERY.fullmatch(q.query)
        assert m, q.query
        clip = ann.clips[q.clip_uid]
        video = by_uid[q.video_uid]
        assert clip.video_start_sec > 0 and clip.video_end_sec == pytest.approx(video.duration)
        start, end = q.window
        assert 0 <= start < end <= q.clip_duration
        # the window is the action's motion, moved to clip time; the action has the query's verb
        match = [e for e in video.events if abs(e.start - clip.video_start_sec - start) < 2e-3]
        assert len(match) == 1 and abs(match[0].end - clip.video_start_sec - end) < 2e-3
    # (clip, query text) pairs are unique: every query has one answer in its clip
    assert len({(q.clip_uid, q.query) for q in ann.queries}) == len(ann.queries)
    assert any(q.query.startswith("when did I last") for q in ann.queries) or split == "val"
    for v in raw["videos"]:
        assert (episodic / "videos" / f"{v['video_uid']}.mp4").is_file()


def test_nlq_test_file_has_no_windows(episodic):
    ann = load_nlq(episodic / "nlq_test_unannotated.json")
    assert not ann.has_windows and all(q.window is None for q in ann.queries) and ann.num_without_query == 1
    raw = json.loads((episodic / "nlq_test_unannotated.json").read_text())
    lqs = [lq for v in raw["videos"] for c in v["clips"] for a in c["annotations"] for lq in a["language_queries"]]
    assert not any("clip_start_sec" in lq for lq in lqs) and sum("query" not in lq for lq in lqs) == 1


def test_moments_files_read_back(small_world, episodic):
    cfg, videos = _world_videos(small_world)
    verbs = sorted(v.label for v in cfg.verbs)
    nlq = load_nlq(episodic / "nlq_train.json")
    train = load_moments(episodic / "moments_train.json")
    val = load_moments(episodic / "moments_val.json", classes=train.classes)
    assert list(train.classes) == verbs and train.num_non_primary > 0 and train.num_clamped == 0
    assert {c.clip_uid for c in train.clips} == set(nlq.clips)  # the same clips as NLQ
    by_uid = {v.uid: v for v in videos}
    for clip in train.clips + val.clips:
        video = by_uid[clip.video_uid]
        inside = [e for e in video.events if e.start >= clip.video_start_sec]
        assert len(clip.segments) == len(inside) >= 10
        for (s, e), name, ev in zip(clip.segments, clip.label_names, inside):
            assert name == cfg.verbs[ev.verb].label
            assert s == pytest.approx(ev.start - clip.video_start_sec, abs=2e-3) and e <= clip.duration
    test = load_moments(episodic / "moments_test_unannotated.json")
    assert len(test.clips) == cfg.episodic_test_videos and test.num_segments == 0


def test_videos_are_whole_and_cover_the_clips(episodic):
    ann = load_nlq(episodic / "nlq_val.json")
    for clip in ann.clips.values():
        info = probe(episodic / "videos" / f"{clip.video_uid}.mp4")
        assert info.fps == 8 and info.duration == pytest.approx(clip.video_end_sec, abs=0.2)


def test_deterministic_and_switchable(small_world, tmp_path):
    cfg, _ = _world_videos(small_world)
    small = dataclasses.replace(cfg, episodic_videos=3, episodic_video_seconds=26.0)
    world = plan_world(small)
    assert write_episodic(world, tmp_path / "a") == {"episodic": "episodic"}
    write_episodic(world, tmp_path / "b")
    for name in ("nlq_train.json", "moments_val.json", "nlq_test_unannotated.json"):
        assert (tmp_path / "a" / "episodic" / name).read_bytes() == (tmp_path / "b" / "episodic" / name).read_bytes()
    assert write_episodic(plan_world(dataclasses.replace(small, episodic=False)), tmp_path / "c") == {}
    assert not (tmp_path / "c").exists()


def test_config_checks_the_splits():
    with pytest.raises(ConfigError, match="episodic_val_videos"):
        SynthConfig(episodic_videos=2).validate()
    with pytest.raises(ConfigError, match="episodic_video_seconds"):
        SynthConfig(episodic_video_seconds=10.0).validate()
