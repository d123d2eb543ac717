"""No silent drops: queries without text, runs where nothing can be read, missing or short chunks, folders without
a first chunk are logged, counted and reported, never dropped quietly."""

import copy
import json
import shutil
from fractions import Fraction

import pytest

from egovlp.cli.main import main
from egovlp.errors import VideoReadError
from egovlp.features import extract_features, read_features, read_manifest

from .conftest import NLQ, write_index_video
from .helpers import make_config

SMALL = ["window.num_frames=4", "window.size=8", "window.stride=8", "progress=false", "num_workers=0"]


# ------------------------------------------------------------------------------------------ queries without text
def _nlq_with_a_textless_clip(tmp_path):
    data = copy.deepcopy(NLQ)
    data["videos"][0]["clips"].append(
        {
            "clip_uid": "clip-3",
            "video_start_sec": 0.0,
            "video_end_sec": 1.0,
            "annotations": [{"annotation_uid": "ann-3", "language_queries": [{"query": "  "}, {"template": "x"}]}],
        }
    )
    path = tmp_path / "nlq3.json"
    path.write_text(json.dumps(data))
    return path


def test_queries_without_text_are_logged_and_counted(fx, tiny, tokenizer, tmp_path, caplog):
    nlq = _nlq_with_a_textless_clip(tmp_path)
    out = tmp_path / "out"
    cfg = make_config(fx, out, "mode=text", f"source.annotations={nlq}")
    with caplog.at_level("WARNING", logger="egovlp"):
        result = extract_features(cfg, tiny, tokenizer)
    assert sorted(result.extracted) == ["clip-1", "clip-2"]
    assert result.queries_without_text == {"clip-1": ["ann-1/1"], "clip-3": ["ann-3/0", "ann-3/1"]}
    assert result.items_without_text == ["clip-3"]
    lines = [r.getMessage() for r in caplog.records]
    assert any(
        "nlq3.json" in m and "clip-1" in m and "annotation ann-1" in m and "query 1" in m and "no query text" in m
        for m in lines
    ), lines
    assert any("clip-3" in m and "left out" in m for m in lines), lines
    manifest = read_manifest(out)
    assert manifest["num_queries_without_text"] == 3 and manifest["num_items_without_text"] == 1
    assert manifest["queries_without_text"] == {"clip-1": ["ann-1/1"], "clip-3": ["ann-3/0", "ann-3/1"]}
    assert manifest["items_without_text"] == ["clip-3"] and sorted(manifest["videos"]) == ["clip-1", "clip-2"]


def test_queries_without_text_in_the_cli_summary(fx, tmp_path, capsys):
    argv = [
        "extract", "--mode", "text", "--checkpoint", str(fx.checkpoint), "--tokenizer", str(fx.tokenizer),
        "--annotations", str(fx.nlq), "--out", str(tmp_path / "out"), *SMALL,
    ]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "2 feature file(s) written" in printed and "1 query without text left out" in printed


def test_video_mode_needs_no_query_text(fx, tiny, tmp_path):
    """MQ files have no queries; in video mode nothing is counted and no clip is left out."""
    nlq = _nlq_with_a_textless_clip(tmp_path)
    cfg = make_config(fx, tmp_path / "out", f"source.annotations={nlq}", f"source.video_root={fx.videos}")
    result = extract_features(cfg, tiny)
    assert sorted(result.extracted) == ["clip-1", "clip-2", "clip-3"] and result.queries_without_text == {}
    assert read_manifest(tmp_path / "out")["num_queries_without_text"] == 0


# ------------------------------------------------------------------------------------------ nothing readable
def test_run_where_no_video_can_be_read_is_an_error(fx, tiny, tokenizer, tmp_path):
    empty = tmp_path / "no_videos"
    empty.mkdir()
    out = tmp_path / "out"
    cfg = make_config(
        fx, out, "mode=fused", f"source.annotations={fx.nlq}", f"source.video_root={empty}", "on_error=skip"
    )
    with pytest.raises(VideoReadError, match=r"no video could be read: all 2 item\(s\) failed.*clip-1: .*a\.mp4"):
        extract_features(cfg, tiny, tokenizer)
    manifest = read_manifest(out)  # still written, listing every failure
    assert manifest["num_failed"] == 2 and manifest["num_videos"] == 0


def test_cli_exits_non_zero_when_no_video_can_be_read(fx, tmp_path, capsys):
    empty = tmp_path / "no_videos"
    empty.mkdir()
    argv = [
        "extract", "--mode", "fused", "--checkpoint", str(fx.checkpoint), "--tokenizer", str(fx.tokenizer),
        "--annotations", str(fx.nlq), "--video-root", str(empty), "--out", str(tmp_path / "out"), *SMALL,
        "on_error=skip",
    ]  # fmt: skip
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert "egovlp extract: error: no video could be read" in captured.err
    assert "clip-1" in captured.err and "clip-2" in captured.err and "Traceback" not in captured.err
    assert "feature file(s) written" not in captured.out


def test_cli_counts_some_unreadable_videos_at_the_end(fx, tmp_path, capsys):
    folder = tmp_path / "videos"
    folder.mkdir()
    shutil.copy(fx.videos / "a.mp4", folder / "good.mp4")
    (folder / "garbage.mp4").write_bytes(b"not a video" * 20)
    argv = ["extract", "--checkpoint", str(fx.checkpoint), "--videos", str(folder), "--out", str(tmp_path / "out")]
    assert main([*argv, *SMALL, "on_error=skip"]) == 0
    printed = capsys.readouterr().out
    assert "1 feature file(s) written" in printed and "1 unreadable" in printed
    assert read_manifest(tmp_path / "out")["num_failed"] == 1


# ------------------------------------------------------------------------------------------ chunked videos
def _chunked_copy(fx, tmp_path, layout):
    """A chunked root whose videos have the fixture's chunks ``0.mp4`` / ``1.mp4`` under the names in ``layout``."""
    root = tmp_path / "chunked"
    for uid, names in layout.items():
        (root / uid).mkdir(parents=True)
        for k, name in enumerate(names):
            if name:
                shutil.copy(fx.chunked / "vid1" / f"{k}.mp4", root / uid / name)
    return root


def _chunked_config(fx, out, root, *extra):
    return make_config(fx, out, f"source.chunked_root={root}", "source.chunk_seconds=4", *extra)


def test_missing_middle_chunk_stops_under_raise(fx, tiny, tmp_path):
    root = _chunked_copy(fx, tmp_path, {"vid": ["0.mp4", "2.mp4"]})  # 1.mp4 missing
    with pytest.raises(VideoReadError, match=r"vid/1\.mp4: missing chunk"):
        extract_features(_chunked_config(fx, tmp_path / "out", root), tiny)


def test_missing_middle_chunk_is_listed_as_failed_under_skip(fx, tiny, tmp_path, caplog):
    root = _chunked_copy(fx, tmp_path, {"vid": ["0.mp4", "2.mp4"], "whole": ["0.mp4", "1.mp4"]})
    out = tmp_path / "out"
    with caplog.at_level("WARNING", logger="egovlp"):
        result = extract_features(_chunked_config(fx, out, root, "on_error=skip"), tiny)
    assert result.extracted == ["whole"] and list(result.failed) == ["vid"]
    assert "1.mp4: missing chunk" in result.failed["vid"] and "skipping vid" in caplog.text
    assert read_manifest(out)["failed"]["vid"]["status"] == "failed"
    assert read_features(out / "whole.safetensors").entry["duration"] == pytest.approx(6.5)


def test_short_chunk_that_is_not_the_last_is_diagnosed(fx, tiny, tmp_path):
    root = tmp_path / "chunked"
    write_index_video(root / "vid" / "0.mp4", 0, 20, Fraction(10))  # 2 s of a 4 s chunk
    shutil.copy(fx.chunked / "vid1" / "1.mp4", root / "vid" / "1.mp4")
    with pytest.raises(VideoReadError, match=r"vid/0\.mp4: chunk 0 lasts 2\.00 s.*chunk_seconds=4"):
        extract_features(_chunked_config(fx, tmp_path / "out", root), tiny)


def test_folder_without_a_first_chunk_is_listed_and_reported(fx, tiny, tmp_path):
    root = _chunked_copy(fx, tmp_path, {"vid1": ["0.mp4", "1.mp4"], "vid2": [None, "1.mp4"]})
    out = tmp_path / "out"
    result = extract_features(_chunked_config(fx, out, root, "on_error=skip"), tiny)
    assert result.extracted == ["vid1"] and list(result.failed) == ["vid2"]
    assert "vid2/0.mp4" in result.failed["vid2"] and "first chunk" in result.failed["vid2"]
    with pytest.raises(VideoReadError, match=r"vid2/0\.mp4: no such video file \(first chunk"):
        extract_features(_chunked_config(fx, tmp_path / "out2", root), tiny)
