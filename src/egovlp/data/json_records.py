"""Reading annotation files made of JSON records: the file, its fields and time windows, each checked with a
:class:`~egovlp.errors.DataError` that names the file and where in it (shared by the NLQ, MQ, EgoMCQ and EgoTaskQA
readers), and atomic JSON writing for submission files."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from egovlp.errors import DataError
from egovlp.utils.files import atomic_write

__all__ = ["SUBMISSION_VERSION", "array", "clamp_window", "field", "number", "read_json", "text", "write_json"]

SUBMISSION_VERSION = "1.0"  # the "version" of the Ego4D challenge submission files


def read_json(path: str | os.PathLike, what: str) -> Any:
    """Load a JSON file; :class:`DataError` naming the file (and line:column for invalid JSON) otherwise."""
    name = str(path)
    if not os.path.isfile(name):
        raise DataError(f"{name}: no such {what} file")
    try:
        with open(name, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(f"{name}:{e.lineno}:{e.colno}: invalid JSON: {e.msg}") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{name}: not UTF-8 text ({e.reason})") from None


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Write ``data`` as JSON atomically (never a torn file); returns the path."""

    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f)

    return atomic_write(Path(path), write)


def field(entry: Any, key: str, where: str) -> Any:
    """``entry[key]``, or a :class:`DataError` saying ``where`` the field is missing."""
    if not isinstance(entry, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(entry).__name__}")
    if key not in entry:
        raise DataError(f"{where}: missing field '{key}'")
    return entry[key]


def number(entry: Any, key: str, where: str) -> float:
    """A finite number field (bools and strings are errors)."""
    value = field(entry, key, where)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise DataError(f"{where}: field '{key}' must be a finite number, got {json.dumps(value)}")
    return float(value)


def text(entry: Any, key: str, where: str) -> str:
    """A non-empty string field."""
    value = field(entry, key, where)
    if not isinstance(value, str) or not value:
        raise DataError(f"{where}: field '{key}' must be a non-empty string, got {json.dumps(value)}")
    return value


def array(entry: Any, key: str, where: str) -> list:
    """A JSON list field."""
    value = field(entry, key, where)
    if not isinstance(value, list):
        raise DataError(f"{where}: field '{key}' must be a list, got {type(value).__name__}")
    return value


def clamp_window(start: float, end: float, duration: float, tolerance: float, where: str) -> tuple[float, float, bool]:
    """Check ``start <= end`` and that ``[start, end]`` lies in ``[0, duration]`` up to ``tolerance`` seconds.

    Returns the window clamped into ``[0, duration]`` and whether clamping changed it; a :class:`DataError` naming
    ``where`` for a reversed window or one further out than the tolerance.
    """
    if end < start:
        raise DataError(f"{where}: window end {end:g} s is before its start {start:g} s")
    if start < -tolerance or end > duration + tolerance:
        raise DataError(
            f"{where}: window [{start:g}, {end:g}] s leaves the clip [0, {duration:g}] s "
            f"by more than the tolerance {tolerance:g} s"
        )
    lo, hi = min(max(start, 0.0), duration), min(max(end, 0.0), duration)
    return lo, hi, (lo, hi) != (start, end)
