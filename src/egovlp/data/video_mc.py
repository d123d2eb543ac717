"""Multiple-choice video QA in All-in-one's MSRVTT-MC format: which of K sentences describes a whole video.

The release reads ``msrvtt_mc_test.jsonl``: one JSON object per line, ``{"clip_name": "video7010", "options":
["a man ...", ...], "answer": 2}`` with the video at ``<videos>/<clip_name>.mp4``; it scores every option with the
joint model's VTM score and answers with the highest (zero-shot, families.md §4d). This module reads that format
(JSON lines, or a JSON list of the same objects), and the same questions as a CSV / TSV table with a header
``clip_name, answer, option_0, ..., option_{K-1}`` (one question per row; a ``.tsv`` file is tab-separated), with
errors naming the file, line and field, and loads the videos
(F frames at the middles of F equal segments of the whole video, as the release's test sampling).
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from egovlp.data.bad_input import BadInputPolicy
from egovlp.data.json_records import array, number, read_json, text
from egovlp.data.tokenizer import Tokenizer
from egovlp.data.video_io import probe, read_video_clip
from egovlp.errors import DataError, VideoReadError

__all__ = ["MCQuestion", "VideoMCCollate", "VideoMCDataset", "load_video_mc"]

Transform = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class MCQuestion:
    clip_name: str  # the video is <video_root>/<clip_name>.mp4
    options: tuple[str, ...]
    answer: int  # index into options


def _question(entry: Any, where: str) -> MCQuestion:
    clip = text(entry, "clip_name", where)
    options = array(entry, "options", where)
    if len(options) < 2 or not all(isinstance(o, str) and o for o in options):
        raise DataError(f"{where}: field 'options' must be a list of at least 2 non-empty strings")
    answer = number(entry, "answer", where)
    if answer != int(answer) or not 0 <= answer < len(options):
        raise DataError(f"{where}: field 'answer' must be an option index in 0..{len(options) - 1}, got {answer:g}")
    return MCQuestion(clip, tuple(options), int(answer))


_OPTION = re.compile(r"option_(\d+)")


def _csv_entries(name: str) -> list[tuple[Any, str]]:
    """``({clip_name, options, answer}, "file:line")`` per row of a CSV / TSV question table."""
    if not os.path.isfile(name):
        raise DataError(f"{name}: no such multiple-choice file")
    with open(name, encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t" if name.endswith(".tsv") else ",")
        header = next(reader, None)
        if header is None:
            raise DataError(f"{name}: empty file (expected a header: clip_name, answer, option_0, option_1, ...)")
        header = [h.strip() for h in header]
        option_cols = sorted((int(m.group(1)), i) for i, h in enumerate(header) if (m := _OPTION.fullmatch(h)))
        missing = [c for c in ("clip_name", "answer") if c not in header]
        if missing or len(option_cols) < 2 or [k for k, _ in option_cols] != list(range(len(option_cols))):
            raise DataError(
                f"{name}:1: the header must name clip_name, answer and option_0, option_1, ... (consecutive), "
                f"got {header}"
            )
        clip_col, answer_col = header.index("clip_name"), header.index("answer")
        entries = []
        for line, row in enumerate(reader, 2):
            if not any(cell.strip() for cell in row):
                continue
            where = f"{name}:{line}"
            if len(row) != len(header):
                raise DataError(f"{where}: {len(row)} fields, the header has {len(header)}")
            try:
                answer: Any = int(row[answer_col])
            except ValueError:
                raise DataError(f"{where}: field 'answer' must be an option index, got {row[answer_col]!r}") from None
            options = [row[i] for _, i in option_cols]
            entries.append(({"clip_name": row[clip_col], "options": options, "answer": answer}, where))
    return entries


def load_video_mc(path: str | os.PathLike) -> list[MCQuestion]:
    """The questions of a ``.jsonl`` (one object per line), ``.json`` (a list of objects) or ``.csv`` / ``.tsv``
    (a header ``clip_name, answer, option_0, ...``, one question per row) file.

    Every question must have the same number of options (MSRVTT-MC: 5). :class:`DataError` names the file and the
    line (JSON lines) or item (JSON list) of a bad record.
    """
    name = str(path)
    entries: list[tuple[Any, str]] = []
    if Path(name).suffix in (".csv", ".tsv"):
        entries = _csv_entries(name)
    elif Path(name).suffix == ".jsonl":
        if not os.path.isfile(name):
            raise DataError(f"{name}: no such multiple-choice file")
        with open(name, encoding="utf-8") as f:
            for number_, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    entries.append((json.loads(line), f"{name}:{number_}"))
                except json.JSONDecodeError as e:
                    raise DataError(f"{name}:{number_}: invalid JSON: {e.msg}") from None
    else:
        data = read_json(name, "multiple-choice")
        if not isinstance(data, list):
            raise DataError(f"{name}: expected a JSON list of questions (or a .jsonl file), got {type(data).__name__}")
        entries = [(entry, f"{name}: question {i}") for i, entry in enumerate(data)]
    questions = [_question(entry, where) for entry, where in entries]
    if not questions:
        raise DataError(f"{name}: no questions")
    counts = {len(q.options) for q in questions}
    if len(counts) > 1:
        raise DataError(f"{name}: every question must have the same number of options, found {sorted(counts)}")
    return questions


class VideoMCDataset(Dataset):
    """Items ``video (F, 3, S, S)``, ``index``, ``answer``, ``options`` (a tuple of K strings)."""

    def __init__(
        self,
        questions: Sequence[MCQuestion],
        video_root: str | os.PathLike,
        num_frames: int,
        transform: Transform | None = None,
        bad_input: str = "raise",
    ) -> None:
        self.questions, self.video_root, self.num_frames = list(questions), str(video_root), int(num_frames)
        self.transform, self.policy = transform, BadInputPolicy(bad_input)

    def __len__(self) -> int:
        return len(self.questions)

    def _load(self, i: int) -> dict[str, Any]:
        q = self.questions[i]
        path = os.path.join(self.video_root, q.clip_name + ".mp4")
        duration = probe(path).duration
        if not duration:
            raise VideoReadError(f"{path}: unknown duration [question {i}]")
        frames = read_video_clip(path, 0.0, duration, self.num_frames, "uniform")
        video = self.transform(frames, None) if self.transform is not None else torch.from_numpy(frames)
        return {"video": video, "index": i, "answer": q.answer, "options": q.options}

    def __getitem__(self, i: int) -> dict[str, Any] | None:
        return self.policy.load(lambda: self._load(i), f"multiple-choice question {i}")


class VideoMCCollate:
    """Batch of ``video (B, F, 3, S, S)``, ``input_ids`` / ``attention_mask`` ``(B * K, L)`` (question-major: the
    K options of question 0, then question 1, ...), ``index`` / ``answer`` ``(B,)``, ``num_skipped``."""

    def __init__(self, tokenizer: Tokenizer, max_length: int | None = 40) -> None:
        self.tokenizer, self.max_length = tokenizer, max_length

    def __call__(self, batch: Sequence[dict[str, Any] | None]) -> dict[str, Any]:
        items = [b for b in batch if b is not None]
        out: dict[str, Any] = {"num_skipped": len(batch) - len(items)}
        if not items:
            return out
        texts = [option for it in items for option in it["options"]]
        out.update(self.tokenizer(texts, max_length=self.max_length))
        out["video"] = torch.stack([it["video"] for it in items])
        out["index"] = torch.tensor([it["index"] for it in items], dtype=torch.long)
        out["answer"] = torch.tensor([it["answer"] for it in items], dtype=torch.long)
        return out
