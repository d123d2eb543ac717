"""``egovlp serve`` refuses what it cannot serve with one line, before listening."""

from __future__ import annotations

import pytest

from egovlp.cli.main import main


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{missing}"], "no manifest.json; build an index there with `egovlp index"),
        (["{index}", "--port", "0"], "--port must be in 1-65535, got 0"),
        (["{index}", "--checkpoint", "{missing}/w.safetensors"], "w.safetensors (recorded in"),
    ],
)
def test_what_cannot_be_served_is_one_line(index, tmp_path, capsys, args, message):
    argv = [a.format(index=index.root, missing=tmp_path / "nothing") for a in args]
    assert main(["serve", *argv]) == 1
    err = capsys.readouterr().err
    assert err.startswith("egovlp serve: error: ") and message in err, err


def test_serve_help_names_the_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = capsys.readouterr().out
    assert "default 127.0.0.1" in out and "--tokenizer" in out and "INDEX_DIR" in out
