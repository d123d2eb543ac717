"""Extraction in every mode on tiny videos with a tiny random model: batched features equal one window at a time."""

import json

import numpy as np
import pytest
import torch

from egovlp.data.video_io import read_clip, read_frames_at
from egovlp.features import collect_items, extract_features, read_features, read_manifest
from egovlp.features.sources import VideoRef, read_frames
from egovlp.features.windows import plan_windows

from .conftest import decode_index
from .helpers import make_config, reference_fused, reference_video

ATOL = 2e-5


def _tokens(tokenizer, texts, lowercase=False, max_length=30):
    texts = [t.strip().lower() for t in texts] if lowercase else texts
    enc = tokenizer(texts, max_length=max_length, padding="max_length")
    return enc["input_ids"], enc["attention_mask"]


def test_frames_read_for_windows_are_the_planned_ones(fx):
    cfg = make_config(fx, "unused")
    plan = plan_windows(0.0, 6.4, 10.0, cfg.window)  # a.mp4: 64 frames at 10 fps, 8-frame windows
    assert plan.num_windows == 8
    frames = read_frames(VideoRef("file", str(fx.videos / "a.mp4")), plan.times.reshape(-1))
    got = np.array([decode_index(f) for f in frames]).reshape(8, 4)
    np.testing.assert_array_equal(got, np.arange(8)[:, None] * 8 + [1, 3, 5, 7])
    # chunked (4 s chunks): windows across the chunk boundary at frame 40, times in any order (shift mode)
    ref = VideoRef("chunked", str(fx.chunked), "vid1", 4.0)
    plan = plan_windows(0.0, 6.5, 10.0, make_config(fx, "unused", "window.last=shift").window)
    frames = read_frames(ref, plan.times.reshape(-1))
    got = np.array([decode_index(f) for f in frames]).reshape(plan.num_windows, 4)
    assert got[4].tolist() == [33, 35, 37, 39] and got[5].tolist() == [41, 43, 45, 47]
    assert got[-1].tolist() == [58, 60, 62, 64]  # shifted back to end at the last frame (64)


def test_video_mode_on_a_folder(fx, tiny, tmp_path):
    cfg = make_config(fx, tmp_path)
    result = extract_features(cfg, tiny)
    assert sorted(result.extracted) == ["a", "sub/b"] and not result.skipped and not result.failed
    a = read_features(tmp_path / "a.safetensors")
    assert a.features.shape == (8, 64) and a.features.dtype == np.float32
    np.testing.assert_allclose(a.arrays["window_start"], np.arange(8) * 0.8)
    b = read_features(tmp_path / "sub" / "b.safetensors")  # 37 frames at 8 fps: 4 whole windows + 1 padded
    assert b.features.shape == (5, 64)
    assert b.arrays["window_end"][-1] == pytest.approx(37 / 8)
    assert b.entry["fps"] == 8 and b.entry["duration"] == pytest.approx(37 / 8)
    assert b.entry["features_per_second"] == pytest.approx(1.0)
    # fast path (3 windows per batch, one seek per batch) == reference (one window at a time, its own read)
    for entry, path in ((a, fx.videos / "a.mp4"), (b, fx.videos / "sub" / "b.mp4")):
        plan = plan_windows(0.0, entry.entry["duration"], entry.entry["fps"], cfg.window)
        for i, times in enumerate(plan.times):
            expected = reference_video(tiny, read_frames_at(path, times))
            np.testing.assert_allclose(entry.features[i], expected.numpy(), atol=ATOL)


def test_video_mode_unprojected_normalised(fx, tiny, tmp_path):
    cfg = make_config(fx, tmp_path, "video.project=false", "video.normalize=true", "source.extensions=[mp4]")
    extract_features(cfg, tiny)
    a = read_features(tmp_path / "a.safetensors")
    np.testing.assert_allclose(np.linalg.norm(a.features, axis=1), 1.0, atol=1e-5)
    times = plan_windows(0.0, 6.4, 10.0, cfg.window).times[3]
    expected = reference_video(tiny, read_frames_at(fx.videos / "a.mp4", times), project=False, normalize=True)
    np.testing.assert_allclose(a.features[3], expected.numpy(), atol=ATOL)


def test_chunked_layout(fx, tiny, tmp_path):
    cfg = make_config(
        fx, tmp_path, f"source.chunked_root={fx.chunked}", f"source.uids={fx.uids}", "source.chunk_seconds=4"
    )
    result = extract_features(cfg, tiny)
    assert result.extracted == ["vid1"]
    f = read_features(tmp_path / "vid1.safetensors")
    assert f.entry["duration"] == pytest.approx(6.5) and f.features.shape == (9, 64)  # 8 whole + 1 padded
    for i in (0, 4, 5, 7):  # window 4 ends and window 5 starts at the chunk boundary (4 s)
        start, end = f.arrays["window_start"][i], f.arrays["window_end"][i]
        frames = read_clip(fx.chunked, "vid1", start, end, 4, "uniform", chunk_seconds=4.0)
        np.testing.assert_allclose(f.features[i], reference_video(tiny, frames).numpy(), atol=ATOL)


def test_annotation_clips_in_video_mode(fx, tiny, tmp_path):
    cfg = make_config(fx, tmp_path, f"source.annotations={fx.nlq}", f"source.video_root={fx.videos}")
    result = extract_features(cfg, tiny)
    assert sorted(result.extracted) == ["clip-1", "clip-2"]
    clip = read_features(tmp_path / "clip-1.safetensors")
    assert clip.entry["offset"] == 1.0 and clip.entry["duration"] == pytest.approx(4.3)
    assert clip.features.shape == (6, 64)  # 4.3 s in 0.8 s windows: 5 whole + 1 padded
    np.testing.assert_allclose(clip.arrays["window_start"], np.arange(6) * 0.8)  # clip time
    times = plan_windows(1.0, 5.3, 10.0, cfg.window).times
    frames = read_frames_at(fx.videos / "a.mp4", times[2])
    assert [decode_index(x) for x in frames] == [27, 29, 31, 33]  # video time 2.6-3.4 s
    np.testing.assert_allclose(clip.features[2], reference_video(tiny, frames).numpy(), atol=ATOL)
    assert "queries" not in clip.entry


def test_text_mode(fx, tiny, tokenizer, tmp_path):
    cfg = make_config(fx, tmp_path, "mode=text", f"source.annotations={fx.nlq}", "text.tokens=true")
    result = extract_features(cfg, tiny, tokenizer)
    assert sorted(result.extracted) == ["clip-1", "clip-2"]
    f = read_features(tmp_path / "clip-1.safetensors")
    texts = [q["text"] for q in f.entry["queries"]]
    assert [q["key"] for q in f.entry["queries"]] == ["ann-1/0", "ann-1/2"]  # the query without text is left out
    assert texts == ["Where was the red ball?", "what did I put in the box"]
    ids, mask = _tokens(tokenizer, texts)
    with torch.no_grad():
        for q in range(2):  # one text at a time
            expected = tiny.encode_text(ids[q : q + 1], mask[q : q + 1])[0]
            np.testing.assert_allclose(f.features[q], expected.numpy(), atol=ATOL)
        tokens = tiny.text_model(ids, mask)
    assert f.arrays["text_tokens"].shape == (2, 30, 64) and f.arrays["text_mask"].shape == (2, 30)
    np.testing.assert_allclose(f.arrays["text_tokens"], tokens.numpy(), atol=ATOL)
    np.testing.assert_array_equal(f.arrays["text_mask"], mask.numpy())


def test_text_mode_from_a_text_list(fx, tiny, tokenizer, tmp_path):
    lines = tmp_path / "prompts.txt"
    lines.write_text("the red ball\n\nopen the door\n")
    cfg = make_config(fx, tmp_path / "out", "mode=text", f"source.annotations={lines}", "format=npy")
    extract_features(cfg, tiny, tokenizer)
    f = read_features(tmp_path / "out" / "prompts.npy")
    assert f.features.shape == (2, 64) and [q["key"] for q in f.entry["queries"]] == ["0", "2"]


@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_fused_mode(fx, tiny, tokenizer, tmp_path, pool):
    cfg = make_config(
        fx, tmp_path, "mode=fused", f"source.annotations={fx.nlq}", f"source.video_root={fx.videos}",
        f"fused.pool={pool}", "text.lowercase=true",
    )  # fmt: skip
    result = extract_features(cfg, tiny, tokenizer)
    assert sorted(result.extracted) == ["clip-1", "clip-2"]
    f = read_features(tmp_path / "clip-1.safetensors")
    assert f.features.shape == (2, 6, 64)  # (queries, windows, video width)
    texts = [q["text"] for q in f.entry["queries"]]
    ids, mask = _tokens(tokenizer, texts, lowercase=True)
    times = plan_windows(1.0, 5.3, 10.0, cfg.window).times
    for w in (0, 4, 5):  # 0, 4: first windows of the batches of 3; 5: the padded last one
        frames = read_frames_at(fx.videos / "a.mp4", times[w])
        for q in range(2):
            expected = reference_fused(tiny, frames, ids[q], mask[q], pool)
            np.testing.assert_allclose(f.features[q, w], expected.numpy(), atol=ATOL)
    assert not np.allclose(f.features[0], f.features[1], atol=1e-3)  # the query matters
    with torch.no_grad():
        np.testing.assert_allclose(f.arrays["text_tokens"], tiny.text_model(ids, mask).numpy(), atol=ATOL)
    manifest = read_manifest(tmp_path)
    assert manifest["videos"]["clip-1"]["shape"] == [2, 6, 64] and manifest["model"]["feature_dim"] == 64


def test_npy_and_float16(fx, tiny, tmp_path):
    cfg = make_config(fx, tmp_path, "format=npy", "dtype=float16", "source.extensions=[MP4]")
    extract_features(cfg, tiny)
    assert sorted(p.name for p in tmp_path.glob("a*")) == [
        "a.json", "a.npy", "a.window_end.npy", "a.window_start.npy"
    ]  # fmt: skip
    f = read_features(tmp_path / "a.npy")
    assert f.features.dtype == np.float16 and f.features.shape == (8, 64)
    assert f.arrays["window_start"].dtype == np.float64
    reference = read_features(_extract_fp32(fx, tiny, tmp_path / "fp32") / "a.safetensors").features
    np.testing.assert_allclose(f.features.astype(np.float32), reference, rtol=2e-3, atol=2e-3)


def _extract_fp32(fx, tiny, out):
    extract_features(make_config(fx, out), tiny)
    return out


def test_ranks_split_the_items(fx, tiny, tmp_path):
    """Two ranks (run one after the other): disjoint items, rank 0 writes one manifest with all of them."""
    cfg = make_config(fx, tmp_path, f"source.annotations={fx.nlq}", f"source.video_root={fx.videos}")
    sent = []
    r1 = extract_features(cfg, tiny, rank=1, world_size=2, gather=lambda x: sent.append(x) or [x])
    assert r1.manifest is None
    r0 = extract_features(cfg, tiny, rank=0, world_size=2, gather=lambda x: [x, *sent])
    assert r1.extracted == ["clip-2"]  # rank 1: its own items; rank 0: everyone's
    assert r0.extracted == ["clip-1", "clip-2"] and sent[0][2] == ["clip-2"]
    manifest = json.loads(r0.manifest.read_text())
    assert sorted(manifest["videos"]) == ["clip-1", "clip-2"] and manifest["complete"] is True


def test_items_are_collected_in_a_fixed_order(fx):
    cfg = make_config(fx, "unused", f"source.videos={fx.videos}")
    assert [it.id for it in collect_items(cfg.source, "video")] == ["a", "sub/b"]


def test_text_mode_from_narrations_in_batches(fx, tiny, tokenizer, tmp_path):
    narrations = {
        "v1": {"narration_pass_1": {"narrations": [
            {"timestamp_sec": 1.5 * i, "narration_text": f"#C C opens door {i}"} for i in range(5)
        ]}},
    }  # fmt: skip
    path = tmp_path / "narration.json"
    path.write_text(json.dumps(narrations))
    outs = {}
    for batch in (2, 32):
        cfg = make_config(fx, tmp_path / str(batch), "mode=text", f"source.annotations={path}", f"batch_size={batch}")
        extract_features(cfg, tiny, tokenizer)
        outs[batch] = read_features(tmp_path / str(batch) / "v1.safetensors")
    assert outs[2].features.shape == (5, 64)
    np.testing.assert_allclose(outs[2].features, outs[32].features, atol=ATOL)
    assert outs[2].entry["queries"][3] == {"key": "narration_pass_1/3", "text": "#C C opens door 3", "time": 4.5}
