"""Parsing of EgoClip's ``tag_verb`` / ``tag_noun`` fields: Python-list literals of class ids such as ``[192, 115]``.

Never ``eval``: :func:`parse_tag_list` reads one literal strictly; :func:`parse_tag_column` reads a whole column with
numpy (the fast path of the 3.85 M-row CSV) and returns None when any entry is malformed, so that the caller can
find the bad row with :func:`parse_tag_list` and report it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

__all__ = ["multi_hot", "parse_tag_column", "parse_tag_list"]

_TAG_LIST = re.compile(r"\[\s*(\d+\s*(?:,\s*\d+\s*)*)?\]")
_ALLOWED = str.maketrans("", "", "0123456789, []\n")
_NO_BRACKETS = str.maketrans("", "", "[]")


def parse_tag_list(value: str | Sequence[int]) -> list[int]:
    """``"[192, 115, 12]"`` -> ``[192, 115, 12]``; a list of ints is checked and returned. Raises ValueError."""
    if isinstance(value, (list, tuple)):
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value):
            raise ValueError(f"expected a list of non-negative ints, got {value!r}")
        return list(value)
    text = str(value).strip()
    match = _TAG_LIST.fullmatch(text)
    if match is None:
        raise ValueError(f"expected a list literal of non-negative ints like [3, 17], got {value!r}")
    inner = match.group(1)
    return [int(v) for v in inner.split(",")] if inner else []


def parse_tag_column(column: Sequence[str]) -> tuple[np.ndarray, np.ndarray] | None:
    """All lists of a column at once: ``(values (total,) int32, offsets (N + 1,) int64)``; None if any is malformed.

    Row ``i`` holds ``values[offsets[i]:offsets[i + 1]]``.
    """
    n = len(column)
    joined = "\n".join(column)
    if joined.translate(_ALLOWED):  # a character other than digits, commas, spaces and brackets
        return None
    compact = "\n" + joined.replace(" ", "") + "\n"  # each row must be "[...]" up to spaces
    if compact.count("[") != n or compact.count("\n[") != n or compact.count("]") != n or compact.count("]\n") != n:
        return None
    # Spaces stay in for the digit runs, so that "[1 2]" is two numbers without a comma (malformed).
    b = np.frombuffer(joined.translate(_NO_BRACKETS).encode("ascii"), dtype=np.uint8)
    row = np.cumsum(b == ord("\n"))  # row id of every byte
    digit = (b >= ord("0")) & (b <= ord("9"))
    start = digit & ~np.concatenate(([False], digit[:-1]))
    counts = np.bincount(row[start], minlength=n)
    commas = np.bincount(row[b == ord(",")], minlength=n)
    if not np.array_equal(commas, np.maximum(counts - 1, 0)):  # "1 2", "[,]", "[1,,2]" ...
        return None
    # Integer value of every digit run: sum of digit * 10^(distance to the run's last digit).
    end = digit & ~np.concatenate((digit[1:], [False]))
    run_end = np.flatnonzero(end)
    pos = np.flatnonzero(digit)
    run = np.cumsum(start[pos]) - 1  # run id of every digit
    exponent = run_end[run] - pos
    if exponent.size and exponent.max() > 9:
        return None  # absurdly large ids
    weights = (b[pos] - ord("0")).astype(np.float64) * 10.0**exponent
    values = np.rint(np.bincount(run, weights=weights, minlength=len(run_end))).astype(np.int64)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return values.astype(np.int32), offsets


def multi_hot(ids: Sequence[int] | np.ndarray, size: int) -> np.ndarray:
    """``(size,)`` float32 vector with ones at ``ids``."""
    out = np.zeros(size, dtype=np.float32)
    out[np.asarray(ids, dtype=np.int64)] = 1.0
    return out
