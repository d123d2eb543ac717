"""Index building: contents, thumbnails, resume after an interruption, incremental adds, refusals."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image

from egovlp.errors import ConfigError, DataError
from egovlp.features.sources import probe_video
from egovlp.models.weights import load_model
from egovlp.search import VideoIndex, build_index, collect_videos
from egovlp.search import build as build_module
from egovlp.search.store import read_embeddings

from .conftest import index_config


def test_index_holds_every_window_with_its_thumbnail(built, videos):
    out, result = built
    index = VideoIndex.open(out)
    assert len(result.added) == 3 and result.skipped == [] and result.failed == {}
    assert index.num_windows == result.num_windows == result.num_new_windows
    kinds = sorted(v.kind for v in index.videos)
    assert kinds == ["chunked", "file", "file"]
    for v, video in enumerate(index.videos):
        _, duration = probe_video(video.ref)
        rows = np.flatnonzero(index.window_video == v)
        n = math.ceil(duration - 2.0 - 1e-6) + 1  # 2 s windows every second, the last shifted back to the end
        assert len(rows) == video.num_windows == n
        assert rows[0] == video.first_window and np.all(np.diff(rows) == 1)
        want = np.append(np.arange(n - 1.0), duration - 2.0) if duration - 2.0 > n - 2 + 1e-6 else np.arange(n)
        np.testing.assert_allclose(index.window_start[rows], want, atol=1e-6)
        assert index.window_end[rows].max() == pytest.approx(duration)
        emb, *_ = read_embeddings(out / "embeddings" / f"{video.id}.npz")
        np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)  # normalised
    for i in (0, index.num_windows - 1):
        with Image.open(index.thumbnail_path(i)) as img:
            assert img.format == "JPEG" and img.width == 160
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] and manifest["index"]["kind"] == "exact"
    assert manifest["settings"]["window"]["size"] == 2.0 and len(manifest["settings"]["model"]["sha256"]) == 64


def test_the_stored_embeddings_are_the_models(built, model):
    """Window 3 of the chunked video: its stored embedding equals encode_video of its frames."""
    import torch

    from egovlp.data.transforms import eval_transform
    from egovlp.features.sources import read_frames

    index = VideoIndex.open(built[0])
    v = next(i for i, video in enumerate(index.videos) if video.kind == "chunked")
    row = index.videos[v].first_window + 3
    frames = read_frames(index.videos[v].ref, index.frame_times(row))
    clip = eval_transform(model.cfg.video.img_size)(frames)[None]
    with torch.no_grad():
        want = model.eval().encode_video(clip, normalize=True)[0].numpy()
    got = index.ann.reconstruct(row)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_resume_after_an_interruption(tmp_path, videos, weights, model, built, monkeypatch):
    out = tmp_path / "idx"
    cfg = index_config(out, weights)
    real_save = build_module._Embedder.save
    calls = []

    def save_then_die(self, job, embeddings):
        if calls:
            raise KeyboardInterrupt  # killed while the second video is being saved
        calls.append(job.vid)
        real_save(self, job, embeddings)

    monkeypatch.setattr(build_module._Embedder, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        build_index(cfg, [str(v) for v in videos], model)
    with pytest.raises(DataError, match="not finished"):
        VideoIndex.open(out)
    monkeypatch.setattr(build_module._Embedder, "save", real_save)
    result = build_index(cfg, [str(v) for v in videos], model)
    assert result.skipped == calls and len(result.added) == 2
    resumed, fresh = VideoIndex.open(out), VideoIndex.open(built[0])
    assert [v.id for v in resumed.videos] == [v.id for v in fresh.videos]
    np.testing.assert_allclose(resumed.ann.reconstruct_n(0, resumed.num_windows),
                               fresh.ann.reconstruct_n(0, fresh.num_windows), atol=1e-6)  # fmt: skip


def test_incremental_add_keeps_the_old_videos(tmp_path, videos, weights, model):
    out = tmp_path / "idx"
    cfg = index_config(out, weights)
    first = build_index(cfg, [str(videos[0])], model)
    before = VideoIndex.open(out)
    old = before.ann.reconstruct_n(0, before.num_windows)
    second = build_index(cfg, [str(videos[0]), str(videos[1])], model)  # the first again, and a new one
    assert second.skipped == first.added and len(second.added) == 1
    after = VideoIndex.open(out)
    assert after.num_windows == first.num_windows + second.num_new_windows
    np.testing.assert_allclose(after.ann.reconstruct_n(0, before.num_windows), old)
    third = build_index(cfg, [str(videos[1])], model)  # naming only the new one keeps the old one in the index
    assert third.added == [] and VideoIndex.open(out).num_windows == after.num_windows


def test_another_model_or_window_setting_is_refused(tmp_path, videos, weights, other_weights, model):
    out = tmp_path / "idx"
    build_index(index_config(out, weights), [str(videos[0])], model)
    other = load_model(other_weights, num_frames=4)
    with pytest.raises(ConfigError, match=r"another model or window setting .*model\.name: 'tiny.safetensors'"):
        build_index(index_config(out, other_weights), [str(videos[1])], other)
    with pytest.raises(ConfigError, match=r"window\.stride: 1\.0 -> 0\.5"):
        build_index(index_config(out, weights, "", "window.stride=0.5"), [str(videos[1])], model)
    assert len(VideoIndex.open(out).videos) == 1  # nothing was added


def test_inputs(tmp_path, videos):
    with pytest.raises(DataError, match="no such video file or folder"):
        collect_videos([str(tmp_path / "missing.mp4")], ["mp4"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no video files"):
        collect_videos([str(tmp_path / "empty")], ["mp4"])
    # a folder holding files and chunked folders, and the same video named twice
    found = collect_videos([str(videos[2].parent), str(videos[2])], ["mp4"])
    assert all(ref.kind == "chunked" for _, ref in found) and len(found) == len({i for i, _ in found}) == 5
    found_files = collect_videos([str(videos[0].parent)], ["mp4"])
    assert {ref.kind for _, ref in found_files} == {"file"}


def test_unreadable_video_policy(tmp_path, videos, weights, model):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    with pytest.raises(Exception, match="bad.mp4"):
        build_index(index_config(tmp_path / "a", weights), [str(bad)], model)
    result = build_index(index_config(tmp_path / "b", weights, "", "on_error=skip"), [str(bad), str(videos[0])], model)
    assert list(result.failed) == [collect_videos([str(bad)], ["mp4"])[0][0]] and len(result.added) == 1
