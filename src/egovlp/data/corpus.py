"""Text corpora for tokenizers and text-only MLM: an EgoClip CSV's narrations or a file of one text per line."""

from __future__ import annotations

import os
from pathlib import Path

from egovlp.data.egoclip_table import load_egoclip
from egovlp.data.text import clean_narration
from egovlp.errors import DataError

__all__ = ["read_corpus"]


def read_corpus(path: str | os.PathLike, max_rows: int = 0) -> list[str]:
    """Texts of ``path``: an EgoClip CSV (``.csv``/``.tsv``: its ``clip_text`` column through
    :func:`~egovlp.data.text.clean_narration`) or a UTF-8 text file (one text per non-empty line, stripped).

    Args:
        max_rows: read at most this many rows or lines (0: all).

    Raises :class:`DataError` naming the file when it is missing or holds no text.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"text corpus not found: {path}")
    if path.suffix.lower() in (".csv", ".tsv"):
        table = load_egoclip(path, max_rows=max_rows or None)
        texts = [clean_narration(table.text(i)) for i in range(len(table))]
    else:
        try:
            content = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise DataError(f"{path}: not a UTF-8 text file ({e})") from None
        texts = [line for line in (raw.strip() for raw in content.splitlines()) if line]
        texts = texts[:max_rows] if max_rows else texts
    if not any(texts):
        raise DataError(f"{path}: the corpus holds no text")
    return texts
