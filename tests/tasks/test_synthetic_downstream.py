"""The synthetic world's EK-100 MIR and Charades-Ego sets: official layouts read back by the real loaders."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest

from egovlp.data.charades import load_charades_ego
from egovlp.data.epic_mir import load_epic_mir
from egovlp.data.synthetic import SynthConfig, plan_world
from egovlp.data.synthetic.charades_ego import charades_class_names, write_charades_ego
from egovlp.data.synthetic.downstream import downstream_videos
from egovlp.data.synthetic.epic_mir import write_epic_mir
from egovlp.data.video_io import probe
from egovlp.errors import ConfigError

EPIC_TEXT = re.compile(r"(pick up|put down|pull|push) (\w+) (cube|ball|cone|ring|cross)")


@pytest.mark.parametrize("split", ["train", "test"])
def test_epic_files_read_back(world, split):
    cfg = SynthConfig()
    root = world["epic"]
    built = load_epic_mir(root, split, relevancy="build")
    pickled = load_epic_mir(root, split, relevancy="pickle")  # restricted unpickler: numpy only
    np.testing.assert_array_equal(built.relevancy, pickled.relevancy)
    assert set(np.unique(built.relevancy)) <= {0.0, 0.5, 1.0}
    assert len(built.sentences) == len(set(built.texts)) < len(built.clips)  # one per distinct narration
    videos = {(c.participant_id, c.video_id) for c in built.clips}
    expected = cfg.epic_test_videos if split == "test" else cfg.epic_videos - cfg.epic_test_videos
    assert len(videos) == expected
    for i, clip in enumerate(built.clips):
        assert EPIC_TEXT.fullmatch(clip.narration) and clip.all_noun_classes == (clip.noun_class,)
        assert clip.narration_id.startswith(clip.video_id + "_") and clip.video_id.startswith(clip.participant_id)
        assert clip.start_frame == round(clip.start_sec * 8) and 0 <= clip.start_sec < clip.stop_sec
        assert built.video_path(root / "videos", i).is_file()
    info = probe(built.video_path(root / "videos", len(built.clips) - 1))
    assert built.clips[-1].stop_sec <= info.duration and info.fps == 8
    # every clip has at least one fully relevant sentence (its own narration's)
    assert (built.relevancy.max(axis=1) == 1.0).all()


def test_charades_files_read_back(world):
    world_plan = plan_world(SynthConfig())
    names = charades_class_names(world_plan)
    assert len(names) == 4 * 5 and names[0] == "Picking up a cube"
    for split, count in (("train", 20), ("test", 12)):
        ann = load_charades_ego(world["charades"], split)
        assert len(ann) == count and ann.class_names == tuple(names)
        assert all(v.id.endswith("EGO") and v.actions for v in ann.videos)
        labels = ann.labels()
        assert labels.shape == (count, 20) and labels.sum(axis=1).min() >= 1
        for i, video in enumerate(ann.videos):
            assert all(0 <= a.start < a.end <= video.length for a in video.actions)
            assert ann.video_path(world["charades"] / "videos", i).is_file()
    assert len(ann.action_segments()) >= count


def test_downstream_sets_are_deterministic_and_independent():
    base = plan_world(SynthConfig())
    again = plan_world(SynthConfig())
    assert downstream_videos(base, "epic", 3, 20.0) == downstream_videos(again, "epic", 3, 20.0)
    assert downstream_videos(base, "epic", 3, 20.0) != downstream_videos(base, "charades", 3, 20.0)
    # switching a downstream set off changes nothing in the world's own plan
    assert plan_world(SynthConfig(epic=False, charades=False)).videos == base.videos


def test_switched_off_sets_write_nothing(tmp_path):
    world = plan_world(SynthConfig(epic=False, charades=False))
    assert write_epic_mir(world, tmp_path) == {} and write_charades_ego(world, tmp_path) == {}
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("change", [{"epic_test_videos": 6}, {"epic_test_videos": 0}, {"charades_video_seconds": 5.0}])
def test_invalid_downstream_sizes(change):
    with pytest.raises(ConfigError):
        dataclasses.replace(SynthConfig(), **change).validate()
