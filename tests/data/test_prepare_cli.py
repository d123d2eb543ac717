"""Video preparation (resize + chunk, resumable) and the ``egovlp data`` commands."""

from __future__ import annotations

import json

import numpy as np
import pytest

from egovlp.cli.main import main
from egovlp.data.prepare import chunk_video, output_size, prepare_videos
from egovlp.data.video_io import probe, read_clip
from egovlp.errors import DataError, VideoReadError

from .conftest import INDEX_FPS, decode_index

FPS = float(INDEX_FPS)


def test_output_size_keeps_aspect_and_even_sides():
    assert output_size(1920, 1080, 256) == (456, 256)
    assert output_size(1080, 1920, 256) == (256, 456)
    assert output_size(80, 48, 32) == (54, 32)


def test_chunks_are_resized_exact_and_resumable(tmp_path, index_video):
    src = tmp_path / "src"
    src.mkdir()
    (src / "uid-a.mp4").write_bytes(index_video.read_bytes())  # 100 frames at 12.5 fps = 8 s
    dst = tmp_path / "dst"
    stats = prepare_videos(src, dst, short_side=32, chunk_seconds=3.0, progress=False)
    assert (stats.videos, stats.chunks_written, stats.chunks_skipped) == (1, 3, 0)
    info = probe(dst / "uid-a" / "0.mp4")
    assert (info.width, info.height) == (54, 32) and info.fps == pytest.approx(12.5)
    # Frames keep their times across the cut: read 2.5-3.5 s through the chunk boundary at 3 s.
    clip = read_clip(dst, "uid-a", 2.5, 3.5, 4, "uniform", 3.0)
    assert [decode_index(f) for f in clip] == [int(t * FPS) for t in (2.625, 2.875, 3.125, 3.375)]
    (dst / "uid-a" / "1.mp4").unlink()
    assert chunk_video(src / "uid-a.mp4", dst / "uid-a", 32, 3.0) == (1, 2)  # only the missing chunk is redone
    clip = read_clip(dst, "uid-a", 3.0, 6.0, 3, "uniform", 3.0)
    assert [decode_index(f) for f in clip] == [int(t * FPS) for t in (3.5, 4.5, 5.5)]
    assert not list((dst / "uid-a").glob(".*tmp*"))


def test_bad_source_is_counted(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "broken.mp4").write_bytes(b"not a video")
    stats = prepare_videos(src, tmp_path / "dst", progress=False)
    assert stats.failed == 1
    with pytest.raises(VideoReadError, match="broken.mp4"):
        prepare_videos(src, tmp_path / "dst", progress=False, stop_on_error=True)


def test_cli_synth_and_build_egoclip(tmp_path, capsys):
    out = tmp_path / "w"
    args = ["data", "synth", "--out", str(out), "num_videos=5", "video_seconds=60", "chunk_seconds=20",
            "num_mcq_inter=3", "num_mcq_intra=3", "mcq_pairs_per_video=3", "tokenizer_vocab_size=280"]  # fmt: skip
    assert main(args) == 0
    assert "EgoClip clips" in capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["num_videos"] == 5 and manifest["num_mcq"] == {"inter": 3, "intra": 3}
    csv = tmp_path / "rebuilt.csv"
    assert main(["data", "build-egoclip", "--narrations", str(out / "narration.json"), "--verb-taxonomy",
                 str(out / "narration_verb_taxonomy.csv"), "--noun-taxonomy", str(out / "narration_noun_taxonomy.csv"),
                 "--out", str(csv)]) == 0  # fmt: skip
    assert csv.read_text().startswith("clip_idx\tvideo_uid\t")


def test_cli_reports_bad_config_keys(tmp_path, capsys):
    assert main(["data", "synth", "--out", str(tmp_path), "num_vidoes=3"]) == 1
    assert "did you mean 'num_videos'" in capsys.readouterr().err


def test_cli_prepare_videos(tmp_path, index_video, capsys):
    src = tmp_path / "src"
    src.mkdir()
    (src / "v.mp4").write_bytes(index_video.read_bytes())
    assert main(["data", "prepare-videos", "--src", str(src), "--dst", str(tmp_path / "d"), "--short-side", "32",
                 "--chunk-seconds", "5"]) == 0  # fmt: skip
    assert "2 chunks written" in capsys.readouterr().out
    frames = read_clip(tmp_path / "d", "v", 7.0, 7.5, 1, "uniform", 5.0)
    assert np.all(frames.shape[1:3] == (32, 54))


def test_prepare_records_the_chunk_length_and_refuses_another(tmp_path, index_video):
    src = tmp_path / "src"
    src.mkdir()
    (src / "uid-a.mp4").write_bytes(index_video.read_bytes())
    dst = tmp_path / "dst"
    prepare_videos(src, dst, short_side=32, chunk_seconds=3.0, progress=False)
    assert json.loads((dst / "chunks.json").read_text()) == {"chunk_seconds": 3.0}
    clip = read_clip(dst, "uid-a", 2.5, 3.5, 4, "uniform", 0)  # auto: 3 s from chunks.json
    assert [decode_index(f) for f in clip] == [int(t * FPS) for t in (2.625, 2.875, 3.125, 3.375)]
    with pytest.raises(DataError, match=r"dst/chunks\.json: .*dst holds 3 s chunks, not 5 s"):
        prepare_videos(src, dst, short_side=32, chunk_seconds=5.0, progress=False)
    assert prepare_videos(src, dst, short_side=32, chunk_seconds=3.0, progress=False).chunks_skipped == 3  # resume
    with pytest.raises(VideoReadError, match=r"chunk length looks wrong: chunk_seconds=600 is configured but"):
        read_clip(dst, "uid-a", 2.5, 3.5, 4, "uniform", 600.0)
