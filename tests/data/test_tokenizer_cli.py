"""``egovlp data tokenizer``: trains on a text file or an EgoClip CSV, writes the folder, reports, refuses bad input."""

from __future__ import annotations

import json

import pytest

from egovlp.cli.main import main
from egovlp.data.egoclip_table import write_egoclip_csv
from egovlp.data.tokenizer import BPETokenizer, Tokenizer, WordPieceTokenizer

LINES = ["C picks up the zyzzyva", "C puts down the quokka", "man X opens the fridge"] * 10


def _egoclip_rows(texts):
    for i, text in enumerate(texts):
        yield {
            "clip_idx": i, "video_uid": "v0", "video_dur": 100.0, "narration_source": "narration_pass_1",
            "narration_ind": i, "narration_time": float(i), "clip_start": float(i), "clip_end": i + 1.0,
            "clip_text": text, "tag_verb": [0], "tag_noun": [0],
        }  # fmt: skip


def test_text_file_to_bpe(tmp_path, capsys):
    corpus = tmp_path / "texts.txt"
    corpus.write_text("\n\n".join(LINES) + "\n   \n", encoding="utf-8")  # blank lines are not texts
    out = tmp_path / "tok"
    assert main(["data", "tokenizer", "--corpus", str(corpus), "--vocab-size", "400", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    tok = Tokenizer.from_dir(out)
    assert isinstance(tok, BPETokenizer)
    assert f"wrote a bpe tokenizer of {tok.vocab_size} tokens, trained on 30 texts of {corpus}, to {out}" in printed
    assert "(tokenizer.json, vocab.json, merges.txt)" in printed
    assert "special ids: <s> 0, <pad> 1, </s> 2, <unk> 3, <mask> 4" in printed
    assert f"model.text.vocab_size={tok.vocab_size}" in printed and "model.text.pad_token_id=1" in printed
    vocab = json.loads((out / "vocab.json").read_text())
    assert "Ġzyzzyva" in vocab and "Ġquokka" in vocab  # learnt from the corpus (each word seen 10 times)


def test_egoclip_csv_to_wordpiece_uses_cleaned_narrations(tmp_path, capsys):
    corpus = tmp_path / "egoclip.csv"
    write_egoclip_csv(corpus, _egoclip_rows([f"#C {t} #unsure" for t in LINES]))
    out = tmp_path / "wp"
    argv = ["data", "tokenizer", "--corpus", str(corpus), "--vocab-size", "200", "--out", str(out)]
    assert main([*argv, "--kind", "wordpiece", "--min-frequency", "5"]) == 0
    printed = capsys.readouterr().out
    tok = Tokenizer.from_dir(out)
    assert isinstance(tok, WordPieceTokenizer)
    assert "trained on 30 texts" in printed and "special ids: [PAD] 0, [UNK] 1, [CLS] 2, [SEP] 3, [MASK] 4" in printed
    vocab = (out / "vocab.txt").read_text().split("\n")
    assert "zyzzyva" in vocab and "something" in vocab  # #unsure -> something
    assert "#" not in vocab and "unsure" not in vocab  # tags removed before training
    assert tok.encode("C picks up the quokka") == [vocab.index(w) for w in ["c", "picks", "up", "the", "quokka"]]


def test_errors_name_the_file(tmp_path, capsys):
    def run(*extra):
        out = ["--out", str(tmp_path / "tok")] if "--out" not in extra else []
        return main(["data", "tokenizer", "--vocab-size", "300", *out, *extra])

    assert run("--corpus", str(tmp_path / "missing.txt")) == 1
    assert f"error: text corpus not found: {tmp_path / 'missing.txt'}" in capsys.readouterr().err
    blank = tmp_path / "blank.txt"
    blank.write_text("\n  \n\n")
    assert run("--corpus", str(blank)) == 1
    assert f"error: {blank}: the corpus holds no text" in capsys.readouterr().err
    header_only = tmp_path / "egoclip.csv"
    write_egoclip_csv(header_only, [])
    assert run("--corpus", str(header_only)) == 1
    assert f"{header_only}" in capsys.readouterr().err
    assert not (tmp_path / "tok").exists()
    good = tmp_path / "good.txt"
    good.write_text("\n".join(LINES))
    assert main(["data", "tokenizer", "--corpus", str(good), "--vocab-size", "0", "--out", str(tmp_path / "t")]) == 1
    assert "--vocab-size must be >= 1, got 0" in capsys.readouterr().err


def test_existing_tokenizer_needs_force_and_is_replaced_whole(tmp_path, capsys):
    corpus = tmp_path / "texts.txt"
    corpus.write_text("\n".join(LINES))
    out = tmp_path / "tok"
    argv = ["data", "tokenizer", "--corpus", str(corpus), "--vocab-size", "300", "--out", str(out)]
    assert main(argv) == 0
    assert main([*argv, "--kind", "wordpiece"]) == 1
    assert "already holds a tokenizer (tokenizer.json, vocab.json, merges.txt); pass --force" in capsys.readouterr().err
    assert isinstance(Tokenizer.from_dir(out), BPETokenizer)
    assert main([*argv, "--kind", "wordpiece", "--force"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["tokenizer.json", "vocab.txt"]  # no stale BPE files
    assert isinstance(Tokenizer.from_dir(out), WordPieceTokenizer)


def test_help_lists_the_command(capsys):
    with pytest.raises(SystemExit):
        main(["data", "tokenizer", "--help"])
    assert "--kind {bpe,wordpiece}" in capsys.readouterr().out
