"""EgoMCQ evaluation dataset: a narration and 5 candidate clips, one of which it describes.

``egomcq.json``: ``{"<index>": {"query": {EgoClip row fields}, "choices": {"0": {...}, ..., "4": {...}},
"answer": int, "types": 1 | 2}, ...}``; type 1 = inter-video (options from 5 videos), 2 = intra-video (options from
one video). Options are EgoClip-style clips (``video_uid``, ``clip_start``, ``clip_end``) read from the chunked
layout with evaluation (segment-middle) sampling.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset

from egovlp.data.bad_input import BadInputPolicy
from egovlp.data.json_records import read_json
from egovlp.data.sampling import worker_rng
from egovlp.data.text import clean_narration
from egovlp.data.video_io import read_clip, resolve_chunk_seconds
from egovlp.errors import DataError, VideoReadError

log = logging.getLogger(__name__)

__all__ = ["EgoMCQDataset", "MCQuestion", "load_egomcq"]


@dataclass(frozen=True)
class MCQuestion:
    """One EgoMCQ question: the query narration, option clips ``(video_uid, start, end, text)``, answer, type."""

    index: int
    text: str
    options: tuple[tuple[str, float, float, str], ...]
    answer: int
    type: int


def _field(entry: dict, key: str, where: str) -> Any:
    if not isinstance(entry, dict) or key not in entry:
        raise DataError(f"{where}: missing field '{key}'")
    return entry[key]


def _number(entry: dict, key: str, where: str) -> float:
    value = _field(entry, key, where)
    try:
        return float(value)
    except (TypeError, ValueError):
        raise DataError(f"{where}: field '{key}' must be a number, got {value!r}") from None


def _text(entry: dict, where: str, required: bool = True) -> str:
    """The ``clip_text`` of a query or option: a string (JSON null or a number is an error, not the text "None")."""
    if not required and isinstance(entry, dict) and "clip_text" not in entry:
        return ""
    value = _field(entry, "clip_text", where)
    if not isinstance(value, str):
        raise DataError(f"{where}: field 'clip_text' must be a string, got {json.dumps(value)}")
    return value


def _parse_question(key: str, q: Any, path: str) -> MCQuestion:
    where = f"{path}: question {key!r}"
    try:
        index = int(key)
    except ValueError:
        raise DataError(f"{where}: keys must be integer strings") from None
    text = _text(_field(q, "query", where), f"{where} ['query']")
    choices = _field(q, "choices", where)
    if not isinstance(choices, dict) or not choices:
        raise DataError(f"{where}: 'choices' must be a non-empty mapping of option index to clip")
    options = []
    for ck in sorted(choices, key=lambda c: int(c) if str(c).isdigit() else -1):
        cw = f"{where} ['choices'][{ck!r}]"
        c = choices[ck]
        uid = _field(c, "video_uid", cw)
        if not isinstance(uid, str) or not uid:
            raise DataError(f"{cw}: 'video_uid' must be a non-empty string")
        options.append((uid, _number(c, "clip_start", cw), _number(c, "clip_end", cw), _text(c, cw, required=False)))
    answer, qtype = _field(q, "answer", where), _field(q, "types", where)
    if not isinstance(answer, int) or not 0 <= answer < len(options):
        raise DataError(f"{where}: 'answer' must be an int in [0, {len(options)}), got {answer!r}")
    if qtype not in (1, 2):
        raise DataError(f"{where}: 'types' must be 1 (inter-video) or 2 (intra-video), got {qtype!r}")
    return MCQuestion(index, text, tuple(options), answer, qtype)


def load_egomcq(json_path: str | os.PathLike) -> list[MCQuestion]:
    """Parse and check ``egomcq.json``; questions sorted by their integer key.

    Raises :class:`DataError` naming the file, the question key and the field for a malformed question (a query
    ``clip_text`` that is missing or not a string, e.g. ``null``; an option ``clip_text`` that is not a string, ...)
    and for a file without questions.
    """
    path = str(json_path)
    data = read_json(path, "EgoMCQ")
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object of questions keyed by index")
    if not data:
        raise DataError(f"{path}: no questions (an empty JSON object)")
    questions = [_parse_question(k, v, path) for k, v in data.items()]
    return sorted(questions, key=lambda q: q.index)


class EgoMCQDataset(Dataset):
    """EgoMCQ questions as evaluation samples.

    Args:
        json_path: ``egomcq.json``.
        video_root: folder of ``<video_uid>/<k>.mp4`` chunks.
        num_frames: frames per option clip (F).
        transform: ``transform(clip_uint8, generator) -> (F, 3, H, W)``, e.g.
            :func:`~egovlp.data.transforms.eval_transform`.
        reverse_frames: reverse the frame order of every option clip (a probe of whether a model reads motion).
        bad_input: ``"raise"`` or ``"skip"`` (return None, counted in :attr:`num_skipped`) for unreadable videos.

    Items are dicts: ``text`` (cleaned query narration), ``video (5, F, 3, H, W)``, ``answer`` int, ``type`` int
    (1 inter, 2 intra), ``index`` int (the JSON key), ``option_text`` list of the options' cleaned narrations.
    """

    def __init__(
        self,
        json_path: str | os.PathLike,
        video_root: str | os.PathLike,
        num_frames: int,
        transform: Callable[..., torch.Tensor] | None = None,
        chunk_seconds: float = 0.0,
        sample: str = "uniform",
        reverse_frames: bool = False,
        bad_input: str = "raise",
        text_cleaner: Callable[[str], str] | None = clean_narration,
    ) -> None:
        self.policy = BadInputPolicy(bad_input)
        self.questions = load_egomcq(json_path)
        self.json_path, self.video_root = str(json_path), str(video_root)
        self.num_frames, self.transform = int(num_frames), transform
        self.chunk_seconds = resolve_chunk_seconds(video_root, chunk_seconds)
        self.sample, self.reverse_frames, self.bad_input = sample, bool(reverse_frames), bad_input
        self.text_cleaner = text_cleaner

    def __len__(self) -> int:
        return len(self.questions)

    def _clean(self, text: str) -> str:
        return self.text_cleaner(text) if self.text_cleaner is not None else text

    def _option(self, q: MCQuestion, uid: str, start: float, end: float, rng) -> torch.Tensor:
        try:
            clip = read_clip(self.video_root, uid, start, end, self.num_frames, self.sample, self.chunk_seconds, rng)
        except VideoReadError as e:
            raise VideoReadError(f"{e} [{self.json_path}: question {q.index}]") from None
        video = self.transform(clip) if self.transform is not None else torch.from_numpy(clip)
        return video.flip(0) if self.reverse_frames else video

    @property
    def num_skipped(self) -> int:
        """Questions skipped as unreadable in this process (``bad_input="skip"``)."""
        return self.policy.num_skipped

    def __getitem__(self, i: int) -> dict[str, Any] | None:
        q = self.questions[i]
        rng = worker_rng() if self.sample == "rand" else None
        video = self.policy.load(
            lambda: torch.stack([self._option(q, uid, s, e, rng) for uid, s, e, _ in q.options]),
            f"EgoMCQ question {q.index}",
        )
        if video is None:
            return None
        return {
            "text": self._clean(q.text),
            "video": video,
            "answer": q.answer,
            "type": q.type,
            "index": q.index,
            "option_text": [self._clean(t) for *_, t in q.options],
        }
