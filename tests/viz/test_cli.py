"""``egovlp visualize`` writes one PNG grid (a row per word and the sentence, a column per frame) and refuses a
missing video, a bad time range or a layer that is not fused with one line naming the problem."""

from __future__ import annotations

import pytest

from egovlp.cli.main import main

TEXT = "#C C tightens the bolt"


def visualize(weights, tokenizer_dir, video, out, *extra: str) -> int:
    return main(
        ["visualize", str(video), "--checkpoint", str(weights), "--tokenizer", str(tokenizer_dir), "--text", TEXT,
         "--out", str(out), *extra]
    )  # fmt: skip


def test_the_command_writes_a_png_grid(weights, tokenizer_dir, video_file, tmp_path, capsys):
    from matplotlib.image import imread

    out = tmp_path / "maps" / "map.png"
    assert visualize(weights, tokenizer_dir, video_file, out, "--start", "0.5", "--end", "2.5") == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = imread(out)
    assert image.shape[0] > image.shape[1] * 0.9  # 6 rows (5 words + sentence) of 4 frames: taller than wide-ish
    assert "5 word(s) and the sentence over 4 frames" in capsys.readouterr().out
    one = tmp_path / "layer3.png"
    assert visualize(weights, tokenizer_dir, video_file, one, "--start", "0", "--end", "3", "--layer", "3") == 0
    assert one.read_bytes() != out.read_bytes()


@pytest.mark.parametrize(
    ("video", "times", "message"),
    [
        ("missing.mp4", ("0", "1"), "missing.mp4: no such video"),
        (None, ("2", "1"), "0 <= start < end, got 2-1 s"),
        (None, ("-1", "1"), "0 <= start < end"),
        (None, ("9", "10"), "start 9 s is past the end of the video (3.00 s)"),
        (None, ("nan", "1"), "0 <= start < end"),
    ],
)
def test_bad_input_is_one_clear_line(weights, tokenizer_dir, video_file, tmp_path, capsys, video, times, message):
    path = tmp_path / video if video else video_file
    out = tmp_path / "map.png"
    assert visualize(weights, tokenizer_dir, path, out, "--start", times[0], "--end", times[1]) == 1
    err = capsys.readouterr().err
    assert err.startswith("egovlp visualize: error: ") and message in err, err
    assert str(path) in err and not out.exists()


def test_a_layer_that_is_not_fused_is_refused(weights, tokenizer_dir, video_file, tmp_path, capsys):
    out = tmp_path / "map.png"
    assert visualize(weights, tokenizer_dir, video_file, out, "--start", "0", "--end", "1", "--layer", "0") == 1
    assert "layer 0 is not a fused layer of egovlpv2-tiny: choose one of 2, 3" in capsys.readouterr().err
