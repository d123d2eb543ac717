"""Unreadable videos: a clear error naming the file, or with on_error=skip, logged and listed as failed."""

import shutil

import av
import pytest

from egovlp.errors import ConfigError, DataError, VideoReadError
from egovlp.features import extract_features, read_manifest

from .helpers import make_config


def _faststart_cut(src_path, dst_path, keep=0.5):
    """A copy of ``src_path`` with its header moved to the front and its media data cut: it opens, then fails."""
    full = dst_path.with_name("full_" + dst_path.name)
    with av.open(str(src_path)) as src, av.open(str(full), "w", format="mp4", options={"movflags": "faststart"}) as dst:
        out = dst.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is not None:
                packet.stream = out
                dst.mux(packet)
    data = full.read_bytes()
    dst_path.write_bytes(data[: int(len(data) * keep)])
    full.unlink()


@pytest.fixture
def bad_folder(fx, tmp_path):
    folder = tmp_path / "videos"
    folder.mkdir()
    shutil.copy(fx.videos / "a.mp4", folder / "good.mp4")
    (folder / "garbage.mp4").write_bytes(b"this is not a video" * 50)
    _faststart_cut(fx.videos / "a.mp4", folder / "truncated.mp4")
    return folder


def test_unreadable_video_stops_with_its_name(fx, tiny, tmp_path, bad_folder):
    cfg = make_config(fx, tmp_path / "out", f"source.videos={bad_folder}")
    with pytest.raises(VideoReadError, match=r"garbage\.mp4: cannot open video"):
        extract_features(cfg, tiny)


def test_video_failing_while_decoding_stops_with_its_name(fx, tiny, tmp_path, bad_folder):
    (bad_folder / "garbage.mp4").unlink()
    cfg = make_config(fx, tmp_path / "out", f"source.videos={bad_folder}")
    with pytest.raises(VideoReadError, match=r"truncated\.mp4: (file is truncated|decoding failed)"):
        extract_features(cfg, tiny)


def test_skip_policy_lists_failures(fx, tiny, tmp_path, bad_folder, caplog):
    out = tmp_path / "out"
    cfg = make_config(fx, out, f"source.videos={bad_folder}", "on_error=skip")
    with caplog.at_level("WARNING", logger="egovlp"):
        result = extract_features(cfg, tiny)
    assert result.extracted == ["good"] and sorted(result.failed) == ["garbage", "truncated"]
    assert "skipping garbage" in caplog.text and "skipping truncated" in caplog.text
    manifest = read_manifest(out)
    assert sorted(manifest["videos"]) == ["good"] and manifest["num_failed"] == 2
    assert manifest["failed"]["truncated"]["status"] == "failed"
    assert "truncated.mp4" in manifest["failed"]["truncated"]["error"]
    assert not (out / "garbage.safetensors").exists() and not (out / "truncated.safetensors").exists()
    # a later run retries the failed ones (still failing) and keeps the good one
    again = extract_features(cfg, tiny)
    assert again.skipped == ["good"] and sorted(again.failed) == ["garbage", "truncated"]


def test_missing_video_of_an_annotation(fx, tiny, tmp_path):
    cfg = make_config(fx, tmp_path, f"source.annotations={fx.nlq}", f"source.video_root={tmp_path}")
    with pytest.raises(VideoReadError, match=r"a\.mp4: no such video file"):
        extract_features(cfg, tiny)


def test_input_errors(fx, tiny, tmp_path):
    with pytest.raises(ConfigError, match="exactly one input"):
        extract_features(
            make_config(fx, tmp_path, f"source.chunked_root={fx.chunked}", f"source.videos={fx.videos}"), tiny
        )
    with pytest.raises(ConfigError, match="needs tokenizer"):
        extract_features(make_config(fx, tmp_path, "mode=text", f"source.annotations={fx.nlq}", "tokenizer=''"), tiny)
    with pytest.raises(ConfigError, match="mode=fused needs texts"):
        extract_features(make_config(fx, tmp_path, "mode=fused"), tiny)
    with pytest.raises(DataError, match="no video files"):
        extract_features(make_config(fx, tmp_path, f"source.videos={fx.tokenizer}"), tiny)
    with pytest.raises(DataError, match="no such video-uid list"):
        extract_features(make_config(fx, tmp_path, f"source.chunked_root={fx.chunked}", "source.uids=nope.txt"), tiny)
