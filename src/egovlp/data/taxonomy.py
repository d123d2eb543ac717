"""Ego4D narration taxonomies (verb and noun classes) and tagging narrations with them.

File format (Ego4D's ``narration_verb_taxonomy.csv`` / ``narration_noun_taxonomy.csv``): comma-separated with a
header ``label,group``; the class id is the row index (0-based); ``label`` names the class (e.g.
``take_(pick,_grab,_get)``) and ``group`` is a Python-list literal of the words or phrases that belong to it
(e.g. ``['grab', 'grabs', 'pick', 'picks']``). An ``id`` column, if present, must equal the row index.

Tagging (:meth:`Taxonomy.tag`) is a heuristic: the cleaned, lower-cased narration is split into words and every
group phrase found as a run of whole words is a match (longest phrases first, matches do not overlap); a plural or
third-person ``-s``/``-es`` is also tried stripped when the exact word is not in any group.
"""

from __future__ import annotations

import ast
import csv
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from egovlp.data.text import clean_narration
from egovlp.errors import DataError

__all__ = ["Taxonomy", "load_taxonomy", "write_taxonomy"]

_WORD = re.compile(r"[a-z0-9'/-]+")


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


@dataclass
class Taxonomy:
    """Classes ``labels[i]`` with synonym groups ``groups[i]``."""

    labels: list[str]
    groups: list[list[str]]
    path: str = "<memory>"
    _phrases: dict[tuple[str, ...], int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for i, (label, group) in enumerate(zip(self.labels, self.groups)):
            for phrase in [label.split("_(")[0].replace("_", " "), *group]:
                words = tuple(_words(phrase))
                if words:
                    self._phrases.setdefault(words, i)
        self._longest = max((len(p) for p in self._phrases), default=1)

    def __len__(self) -> int:
        return len(self.labels)

    def _lookup(self, words: list[str]) -> int | None:
        cls = self._phrases.get(tuple(words))
        if cls is None and words and len(words[-1]) > 3 and words[-1].endswith("s"):
            last = words[-1]
            for stem in (last[:-2], last[:-1]) if last.endswith("es") else (last[:-1],):
                cls = self._phrases.get((*words[:-1], stem))
                if cls is not None:
                    break
        return cls

    def tag(self, narration: str) -> list[int]:
        """Class ids mentioned in ``narration``, in order of appearance, without repeats."""
        words = _words(clean_narration(narration, unsure=""))
        found: list[int] = []
        i = 0
        while i < len(words):
            for n in range(min(self._longest, len(words) - i), 0, -1):
                cls = self._lookup(words[i : i + n])
                if cls is not None:
                    if cls not in found:
                        found.append(cls)
                    i += n
                    break
            else:
                i += 1
        return found


def load_taxonomy(path: str | os.PathLike) -> Taxonomy:
    """Read a ``label,group`` taxonomy CSV (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such taxonomy file")
    labels: list[str] = []
    groups: list[list[str]] = []
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or "label" not in reader.fieldnames:
            raise DataError(
                f"{path}:1: a taxonomy needs a header with a 'label' column (and 'group'), got {reader.fieldnames}"
            )
        for row in reader:
            where = f"{path}:{reader.line_num}"
            if "id" in row and row["id"] not in (None, "") and row["id"].strip() != str(len(labels)):
                raise DataError(f"{where}: column 'id' is {row['id']!r} but the row index is {len(labels)}")
            try:
                group = ast.literal_eval(row.get("group") or "[]")  # a literal only, never code
            except (ValueError, SyntaxError):
                raise DataError(f"{where}: column 'group' is not a list literal: {row.get('group')!r}") from None
            if not isinstance(group, list) or not all(isinstance(g, str) for g in group):
                raise DataError(f"{where}: column 'group' must be a list of strings, got {row.get('group')!r}")
            labels.append(row["label"])
            groups.append(group)
    return Taxonomy(labels, groups, str(path))


def write_taxonomy(path: str | os.PathLike, labels: list[str], groups: list[list[str]]) -> None:
    """Write a ``label,group`` taxonomy CSV."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["label", "group"])
        for label, group in zip(labels, groups):
            writer.writerow([label, repr(list(group))])
