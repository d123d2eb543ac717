"""The synthetic QFVS set and the QFVS shot readers: layout, tags against the renderer, oracle design, frames
folder vs video file, and the errors for missing videos and too few frames."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from egovlp.data.qfvs import load_qfvs
from egovlp.data.qfvs_shots import ShotReader, find_shot_source
from egovlp.data.synthetic import SynthConfig, plan_world
from egovlp.data.synthetic.qfvs import oracle_summary, qfvs_world, shot_concepts, write_qfvs
from egovlp.data.video_io import probe
from egovlp.errors import ConfigError, DataError

CFG = SynthConfig(seed=2, num_shapes=3, num_colours=3, qfvs_videos=2, qfvs_video_seconds=90.0, qfvs_event_seconds=8.0,
                  qfvs_props_per_video=4, workers=1)  # fmt: skip


@pytest.fixture(scope="module")
def qfvs(tmp_path_factory):
    out = tmp_path_factory.mktemp("qfvs")
    world = plan_world(CFG)
    assert write_qfvs(world, out) == {"qfvs": "qfvs"}
    return world, out / "qfvs"


def test_layout_reads_back(qfvs):
    world, root = qfvs
    videos = load_qfvs(root)
    assert [v.name for v in videos] == ["P01", "P02"]
    for v in videos:
        assert v.concepts is not None and v.concepts.shape == (v.num_shots, 48)
        assert not v.concepts[:, 3:].any()  # only the 3 shape columns are used
        for tags, row in zip(v.shot_tags, v.concepts):  # P0X.txt and Tags.mat say the same
            assert {world.shapes.index(t) for t in tags} == set(np.flatnonzero(row))
        info = probe(root / "videos" / f"{v.name}.mp4")
        assert info.fps == 1 and v.num_shots == round(info.duration) // 5
        assert set(v.oracle) <= {("cube", "ball"), ("cube", "cone"), ("ball", "cone")} and v.oracle
        for (c1, c2), shots in v.oracle.items():
            assert len(shots) == max(2, round(0.04 * v.num_shots))
            has_both = [s for s in range(v.num_shots) if {c1, c2} <= set(v.shot_tags[s])]
            if len(has_both) >= len(shots):  # shots showing both concepts come first
                assert set(shots) <= set(has_both)


def test_tags_are_the_objects_drawn(qfvs):
    """A shot's tags hold the shape of every object the renderer painted in its frames (objects of a colour no
    other object of the video has, so the colour tells which one)."""
    world, _ = qfvs
    sub = qfvs_world(world)
    from egovlp.data.synthetic.downstream import downstream_videos
    from egovlp.data.synthetic.render import VideoRenderer

    video = downstream_videos(sub, "qfvs", CFG.qfvs_videos, CFG.qfvs_video_seconds)[0]
    renderer = VideoRenderer(sub, video)
    concepts = shot_concepts(sub, video)
    colours = [c for _, c in video.props]
    unique = [(shape, c) for shape, c in video.props if colours.count(c) == 1]  # a colour that names its object
    assert unique
    for s in range(len(concepts)):
        drawn = set()
        for t in range(5 * s, 5 * s + 5):
            frame = renderer.frame(float(t)).astype(int)
            for shape, colour in unique:
                rgb = np.array(world.colours[colour][1])
                if (np.abs(frame - rgb).max(-1) < 8).sum() > 4:
                    drawn.add(shape)
        assert drawn <= concepts[s], (s, drawn, concepts[s])


def test_oracle_prefers_both_then_either():
    rng = np.random.default_rng(0)
    concepts = [{0}, {0, 1}, {0, 1}, {0, 1}, {2}, {1}, {0, 1}, {2}, {2}, {2}]
    assert oracle_summary(concepts, 0, 1, rng) == [2, 6]  # the middles of the two runs showing both
    assert oracle_summary([{2}] * 10, 0, 1, rng) == []
    assert oracle_summary(concepts, 0, 2, rng) == [2, 7]  # no shot shows both: the middles of the runs of either


def test_frames_folder_equals_the_video(qfvs, tmp_path):
    _, root = qfvs
    video = ShotReader(find_shot_source(root, "P01"), 3).read(0, 3)  # (3, 5, H, W, 3)
    folder = tmp_path / "video_frames" / "P01"
    folder.mkdir(parents=True)
    for k, frame in enumerate(video.reshape(-1, *video.shape[2:])[:13]):  # the last shot misses 2 frames
        Image.fromarray(frame).save(folder / f"{k + 1}.png")
    frames = ShotReader(find_shot_source(tmp_path, "P01"), 3).read(1, 3)
    np.testing.assert_array_equal(frames[0], video[1])
    np.testing.assert_array_equal(frames[1][:3], video[2][:3])
    np.testing.assert_array_equal(frames[1][3], video[2][2])  # the missing frames repeat the last one
    with pytest.raises(DataError, match="13 frames, but 4 shots need 20"):
        ShotReader(folder, 4)
    with pytest.raises(DataError, match="QFVS video P09: no frames folder or video file"):
        find_shot_source(tmp_path, "P09")


def test_qfvs_config_is_checked():
    with pytest.raises(ConfigError, match="qfvs_videos must be >= 2"):
        SynthConfig(qfvs_videos=1).validate()
    with pytest.raises(ConfigError, match="qfvs_video_seconds"):
        SynthConfig(qfvs_video_seconds=30.0).validate()
    SynthConfig(qfvs=False, qfvs_videos=1).validate()
