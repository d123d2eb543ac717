"""EgoTaskQA question-answer files: ``formatted_{split}_qas_encode.json`` and ``answer_set.txt``.

A split folder (``Data/qa/direct`` or ``Data/qa/indirect``) holds ``formatted_{train,val,test}_qas_encode.json``,
each a JSON list of records::

    {"interval": "<video stem>", "question": str, "answer": str, "answer_encode": int, "type": "open" | "binary",
     "category": str, "semantic": str, "reasoning_type": "descriptive$intent", ...}

``answer_set.txt`` (in the split folder, or its parent) has one answer per line; the line index is the class id
and the number of lines is the classifier's output size. ``all_reasoning_types.txt`` (optional, same places) lists
every reasoning-type name, so that a type without questions can still be reported. The video of a record is
``<video_root>/qa_videos/<interval>.mp4``.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import Any

from egovlp.data.json_records import read_json
from egovlp.errors import DataError

log = logging.getLogger(__name__)

__all__ = [
    "QA_SPLITS",
    "QA_TYPES",
    "EgoTaskQASplit",
    "QARecord",
    "egotaskqa_video_path",
    "load_answer_set",
    "load_egotaskqa",
    "load_qa_records",
    "load_reasoning_types",
]

QA_SPLITS = ("train", "val", "test")
QA_TYPES = ("open", "binary")


@dataclass(frozen=True)
class QARecord:
    """One EgoTaskQA question; ``index`` is its position in the JSON list, ``answer_id`` the class id."""

    index: int
    interval: str
    question: str
    answer: str
    answer_id: int
    type: str  # "open" | "binary"
    category: str
    semantic: str
    reasoning_types: tuple[str, ...]


@dataclass(frozen=True)
class EgoTaskQASplit:
    """The records of one split with the answer vocabulary and the known reasoning-type names."""

    split: str
    path: str
    records: tuple[QARecord, ...]
    answers: tuple[str, ...]
    reasoning_type_names: tuple[str, ...]  # from all_reasoning_types.txt, then any others seen, in order

    @property
    def num_answers(self) -> int:
        return len(self.answers)

    def video_path(self, video_root: str | os.PathLike, record: QARecord) -> str:
        return egotaskqa_video_path(video_root, record.interval)


def egotaskqa_video_path(video_root: str | os.PathLike, interval: str) -> str:
    """``<video_root>/qa_videos/<interval>.mp4``."""
    return os.path.join(str(video_root), "qa_videos", f"{interval}.mp4")


def _read_lines(path: str, what: str) -> list[str]:
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such {what} file")
    with open(path, encoding="utf-8") as f:
        return f.read().splitlines()


def load_answer_set(path: str | os.PathLike) -> tuple[str, ...]:
    """Answers of ``answer_set.txt`` by class id (line index); an empty line (but trailing ones) is an error."""
    p = str(path)
    lines = [line.strip() for line in _read_lines(p, "EgoTaskQA answer set")]
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        raise DataError(f"{p}: no answers")
    for i, line in enumerate(lines):
        if not line:
            raise DataError(f"{p}:{i + 1}: empty answer")
    return tuple(lines)


def load_reasoning_types(path: str | os.PathLike) -> tuple[str, ...]:
    """Names of ``all_reasoning_types.txt``, one a line (blank lines skipped)."""
    return tuple(line.strip() for line in _read_lines(str(path), "EgoTaskQA reasoning types") if line.strip())


def _string(record: dict, key: str, where: str, allow_empty: bool = True) -> str:
    if key not in record:
        raise DataError(f"{where}: missing field '{key}'")
    value = record[key]
    if not isinstance(value, str) or (not allow_empty and not value.strip()):
        kind = "a string" if allow_empty else "a non-empty string"
        raise DataError(f"{where}: field '{key}' must be {kind}, got {json.dumps(value)}")
    return value


def _parse_record(i: int, record: Any, path: str, answers: tuple[str, ...], lookup: dict[str, int]) -> QARecord:
    where = f"{path}: record {i}"
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}")
    interval = _string(record, "interval", where, allow_empty=False)
    if "/" in interval or "\\" in interval or interval in (".", ".."):
        raise DataError(f"{where}: field 'interval' must be a video file stem, got {interval!r}")
    question = _string(record, "question", where, allow_empty=False)
    answer = _string(record, "answer", where)
    if "answer_encode" not in record:
        raise DataError(f"{where}: missing field 'answer_encode'")
    answer_id = record["answer_encode"]
    if isinstance(answer_id, bool) or not isinstance(answer_id, int) or not 0 <= answer_id < len(answers):
        raise DataError(f"{where}: field 'answer_encode' must be an int in [0, {len(answers)}), got {answer_id!r}")
    if answer.strip() in lookup and answers[answer_id] != answer.strip():
        raise DataError(
            f"{where}: field 'answer_encode' is {answer_id} ({answers[answer_id]!r}) but answer {answer!r} is "
            f"class {lookup[answer.strip()]} of the answer set"
        )
    qtype = _string(record, "type", where)
    if qtype not in QA_TYPES:
        raise DataError(f"{where}: field 'type' must be one of {list(QA_TYPES)}, got {qtype!r}")
    reasoning = _string(record, "reasoning_type", where, allow_empty=False)
    names = tuple(r.strip() for r in reasoning.split("$"))
    if any(not r for r in names):
        raise DataError(f"{where}: field 'reasoning_type' has an empty name in {reasoning!r}")
    category, semantic = _string(record, "category", where), _string(record, "semantic", where)
    return QARecord(i, interval, question, answer, answer_id, qtype, category, semantic, names)


def load_qa_records(json_path: str | os.PathLike, answers: tuple[str, ...]) -> tuple[QARecord, ...]:
    """Parse and check a ``formatted_*_qas_encode.json`` file against the answer set ``answers``.

    Raises :class:`DataError` naming the file, the record index and the field for a malformed record
    (a missing field, a wrong type, an ``answer_encode`` out of range or naming another answer than ``answer``
    when the answer text is in the answer set, an unknown ``type``, an empty reasoning type).
    """
    path = str(json_path)
    data = read_json(path, "EgoTaskQA")
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of question records")
    if not data:
        raise DataError(f"{path}: no question records (an empty list)")
    lookup: dict[str, int] = {}
    for k, a in enumerate(answers):
        lookup.setdefault(a, k)
    records = tuple(_parse_record(i, r, path, answers, lookup) for i, r in enumerate(data))
    unknown = sum(r.answer.strip() not in lookup for r in records)
    if unknown:
        log.warning("%s: %d answers are not in the answer set (checked by class id only)", path, unknown)
    return records


def _find(split_dir: str, name: str) -> str | None:
    for folder in (split_dir, os.path.dirname(os.path.abspath(split_dir))):
        candidate = os.path.join(folder, name)
        if os.path.isfile(candidate):
            return candidate
    return None


def load_egotaskqa(
    split_dir: str | os.PathLike, split: str, answer_set: str | os.PathLike | None = None
) -> EgoTaskQASplit:
    """Read ``<split_dir>/formatted_<split>_qas_encode.json`` with ``answer_set.txt``.

    ``answer_set``: the answer file (default: ``answer_set.txt`` in ``split_dir`` or its parent).
    """
    folder = str(split_dir)
    if split not in QA_SPLITS:
        raise DataError(f"EgoTaskQA split must be one of {list(QA_SPLITS)}, got {split!r}")
    answer_path = str(answer_set) if answer_set is not None else _find(folder, "answer_set.txt")
    if answer_path is None:
        raise DataError(f"{folder}: no answer_set.txt here or in the parent folder")
    answers = load_answer_set(answer_path)
    json_path = os.path.join(folder, f"formatted_{split}_qas_encode.json")
    records = load_qa_records(json_path, answers)
    types_path = _find(folder, "all_reasoning_types.txt")
    names = list(load_reasoning_types(types_path)) if types_path is not None else []
    seen = set(names)
    for r in records:
        for name in r.reasoning_types:
            if name not in seen:
                seen.add(name)
                names.append(name)
    return EgoTaskQASplit(split, json_path, records, answers, tuple(names))
