"""``egovlp index`` and ``egovlp search`` end to end on two synthetic videos (a file and a chunked one)."""

from __future__ import annotations

import json

from egovlp.cli.main import main


def test_index_then_search(tmp_path, videos, weights, small_world, capsys):
    out = tmp_path / "idx"
    argv = ["index", str(videos[0]), "progress=false", str(videos[2]), "--checkpoint", str(weights), "--out", str(out),
            "--tokenizer", str(small_world["tokenizer"]), "--index", "hnsw"]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "indexed 2 video(s)" in printed and "0 done before" in printed and "(hnsw index)" in printed
    assert main(argv) == 0  # again: nothing to do
    assert "indexed 0 video(s) (0 windows), 2 done before" in capsys.readouterr().out

    assert main(["search", str(out), "C picks up the red cube", "--top-k", "3", "--json", "--rerank", "4"]) == 0
    result = json.loads(capsys.readouterr().out)
    moments = result["moments"]
    assert [m["rank"] for m in moments] == [1, 2, 3]
    assert {m["kind"] for m in moments} <= {"file", "chunked"} and moments[0]["vtm"] is not None
    assert all(m["end"] - m["start"] <= 8.0 + 1e-6 for m in moments) and (out / moments[0]["thumbnail"]).is_file()

    assert main(["search", str(out), "C opens the box", "--top-k", "2"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["#", "video", "start-end", "(s)", "score", "cosine"] and len(table) == 3


def test_errors_are_one_line(tmp_path, videos, weights, capsys):
    assert main(["search", str(tmp_path), "anything"]) == 1
    assert "no manifest.json" in capsys.readouterr().err
    out = tmp_path / "idx"
    assert main(["index", str(videos[0]), "progress=false", "--checkpoint", str(weights), "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["search", str(out), "anything"]) == 1  # no tokenizer was recorded
    assert "give --tokenizer" in capsys.readouterr().err
    assert main(["index", str(videos[0]), "--window-size", "3", "--checkpoint", str(weights), "--out", str(out)]) == 1
    assert "window.size: 2.0 -> 3.0" in capsys.readouterr().err
