"""EPIC-Kitchens-100 multi-instance retrieval (MIR) annotations: reading, relevancy, writing (REFERENCE §3).

Files (official ``retrieval_annotations`` layout):

- ``EPIC_100_retrieval_{train,test}.csv``: one row per clip, columns :data:`CLIP_COLUMNS`; timestamps
  ``hh:mm:ss.ff``; ``all_nouns`` / ``all_noun_classes`` Python-list literals (parsed strictly, never ``eval``).
- ``EPIC_100_retrieval_{train,test}_sentence.csv``: the sentence gallery, ``narration_id, narration`` (extra columns
  are ignored). Sentence ``j`` takes its classes AND its text from the clip row its ``narration_id`` names (the text
  column of the last rows of the official test file does not match that row; we encode the row's narration).
- ``relevancy/caption_relevancy_EPIC_100_retrieval_{split}.pkl``: ``(clips, sentences)`` float matrix, loaded with
  the restricted unpickler; or built from the CSVs by :func:`build_relevancy`:
  ``relevancy[i, j] = ((verb_i == verb_j) + IoU(nouns_i, nouns_j)) / 2`` (IoU of two empty noun sets taken as 1).

Videos: ``<root>/<participant_id>/<video_id>.MP4`` (:func:`epic_video_path`).

Fine-tuning (official EgoVLPv2 EK-100 trainer): each training clip is paired with a sentence drawn uniformly from
those with relevancy > 0.1 to it (its own narration, weight 1, when there is none); the adaptive max-margin loss
scales the margin of pair ``i`` by that relevancy (:func:`sample_positive_sentence`, :func:`batch_relevancy`).
"""

from __future__ import annotations

import ast
import csv
import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np

from egovlp.errors import DataError
from egovlp.utils.safe_pickle import load_pickle_restricted

__all__ = [
    "CLIP_COLUMNS",
    "SENTENCE_COLUMNS",
    "EpicClip",
    "EpicMIRAnnotations",
    "EpicSentence",
    "batch_relevancy",
    "build_relevancy",
    "default_sentences",
    "epic_video_path",
    "format_timestamp",
    "load_epic_mir",
    "load_relevancy_pickle",
    "parse_timestamp",
    "read_csv_records",
    "read_epic_mir_clips",
    "read_epic_mir_sentences",
    "sample_positive_sentence",
    "write_epic_mir_csvs",
]

logger = logging.getLogger(__name__)

CLIP_COLUMNS = (
    "narration_id", "participant_id", "video_id", "narration_timestamp", "start_timestamp", "stop_timestamp",
    "start_frame", "stop_frame", "narration", "verb", "verb_class", "noun", "noun_class", "all_nouns",
    "all_noun_classes",
)  # fmt: skip
SENTENCE_COLUMNS = ("narration_id", "narration")
POSITIVE_THRESHOLD = 0.1  # official: a training sentence is a positive of a clip when relevancy > 0.1

_TIMESTAMP = re.compile(r"(\d+):([0-5]\d):([0-5]\d(?:\.\d+)?)")
_INT_LIST = re.compile(r"\[\s*(?:\d+\s*(?:,\s*\d+\s*)*)?\]")


@dataclass(frozen=True)
class EpicClip:
    """One row of ``EPIC_100_retrieval_{split}.csv``; times in seconds."""

    narration_id: str
    participant_id: str
    video_id: str
    narration_timestamp: str
    start_sec: float
    stop_sec: float
    start_frame: int
    stop_frame: int
    narration: str
    verb: str
    verb_class: int
    noun: str
    noun_class: int
    all_nouns: tuple[str, ...]
    all_noun_classes: tuple[int, ...]


@dataclass(frozen=True)
class EpicSentence:
    """One sentence of the gallery: ``text`` is the narration of clip ``clip_index`` (what to encode);
    ``csv_text`` is the text column as written in the sentence CSV (may differ, see the module docstring)."""

    narration_id: str
    clip_index: int
    text: str
    csv_text: str


@dataclass(frozen=True, eq=False)  # eq=False: compared by identity (an array field has no truth value)
class EpicMIRAnnotations:
    """Clips (rows of the relevancy matrix, CSV order), sentences (columns, sentence-CSV order), relevancy."""

    clips: tuple[EpicClip, ...]
    sentences: tuple[EpicSentence, ...]
    relevancy: np.ndarray | None = None  # (len(clips), len(sentences)) float, or None when not loaded

    def __len__(self) -> int:
        return len(self.clips)

    @property
    def texts(self) -> list[str]:
        """The text to encode for each sentence, in column order."""
        return [s.text for s in self.sentences]

    @cached_property
    def sentence_clip_index(self) -> np.ndarray:
        """``(num_sentences,)`` int64: the clip row each sentence's ``narration_id`` names."""
        return np.array([s.clip_index for s in self.sentences], dtype=np.int64)

    @cached_property
    def class_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """``verbs (N,)`` int64 and ``nouns (N, C)`` bool multi-hot of every clip (for relevancy rows on the fly)."""
        return _class_arrays(self.clips)

    @cached_property
    def _sentence_classes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``verbs (S,)``, ``nouns (S, C)`` bool and noun counts ``(S,)`` of every sentence (its clip row's classes)."""
        verbs, nouns = self.class_arrays
        cols = self.sentence_clip_index
        return verbs[cols], nouns[cols], nouns[cols].sum(axis=1)

    def relevancy_row(self, index: int) -> np.ndarray:
        """``(num_sentences,)`` float64 relevancy of clip ``index`` to every sentence.

        The loaded matrix's row when there is one; else computed from the classes (equal to
        :func:`build_relevancy`'s row) without building the whole matrix, which the training split is too big for.
        """
        if self.relevancy is not None:
            return np.asarray(self.relevancy[index], dtype=np.float64)
        verbs, nouns = self.class_arrays
        s_verbs, s_nouns, s_counts = self._sentence_classes
        own = np.flatnonzero(nouns[index])
        inter = s_nouns[:, own].sum(axis=1, dtype=np.float64)  # (S,) |nouns_i & nouns_j|
        union = len(own) + s_counts - inter
        iou = np.divide(inter, union, out=np.ones_like(inter), where=union > 0)  # IoU(empty, empty) = 1
        return ((s_verbs == verbs[index]) + iou) * 0.5

    def video_path(self, root: str | Path, index: int) -> Path:
        """Video file of clip ``index``: ``<root>/<participant_id>/<video_id>.MP4``."""
        return epic_video_path(root, self.clips[index])


def epic_video_path(root: str | Path, clip: EpicClip) -> Path:
    """``<root>/<participant_id>/<video_id>.MP4`` (the official layout of the EK-100 videos)."""
    return Path(root) / clip.participant_id / f"{clip.video_id}.MP4"


# ---------------------------------------------------------------- parsing helpers
def parse_timestamp(text: str) -> float:
    """``"hh:mm:ss.ff"`` -> seconds. Raises ValueError for anything else."""
    match = _TIMESTAMP.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"expected a timestamp hh:mm:ss.ff, got {text!r}")
    # Decimal arithmetic, then one rounding: "00:01:35.04" -> 95.04 exactly as the float literal would be
    return float(int(match.group(1)) * 3600 + int(match.group(2)) * 60 + Decimal(match.group(3)))


def format_timestamp(seconds: float) -> str:
    """Seconds -> ``"hh:mm:ss.ff"`` (hundredths, as in the official files)."""
    if not seconds >= 0:
        raise ValueError(f"timestamps must be non-negative, got {seconds}")
    hundredths = round(seconds * 100)
    hours, rest = divmod(hundredths, 360_000)
    minutes, rest = divmod(rest, 6_000)
    return f"{hours:02d}:{minutes:02d}:{rest // 100:02d}.{rest % 100:02d}"


def _parse_list(text: str, kind: type) -> tuple[Any, ...]:
    """A Python list literal of ``kind`` (int or str) -> tuple; ``ast.literal_eval`` only, never ``eval``."""
    text = text.strip()
    if kind is int and _INT_LIST.fullmatch(text):  # fast path for "[3, 12]"
        inner = text[1:-1].strip()
        return tuple(int(v) for v in inner.split(",")) if inner else ()
    if len(text) > 10_000 or not text.startswith("["):
        raise ValueError(f"expected a list literal, got {text[:80]!r}")
    value = ast.literal_eval(text)
    if not isinstance(value, list) or not all(type(v) is kind for v in value):
        raise ValueError(f"expected a list of {kind.__name__}, got {text[:80]!r}")
    if kind is int and any(v < 0 for v in value):
        raise ValueError(f"expected non-negative class ids, got {text[:80]!r}")
    return tuple(value)


def read_csv_records(path: str | Path, required: Sequence[str]) -> Iterator[tuple[int, dict[str, str]]]:
    """Rows of a comma-separated file with a header, as ``(line number, {column: text})``.

    Raises:
        DataError: a missing file or column, or a row whose field count differs from the header's.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: annotation file not found")
    with open(path, newline="", encoding="utf-8-sig") as fh:  # -sig: tolerate a byte-order mark
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            raise DataError(f"{path}: empty file, expected a header with columns {list(required)}")
        missing = [c for c in required if c not in header]
        if missing:
            raise DataError(f"{path}, line 1: missing column(s) {missing}; header is {header}")
        for row in reader:
            if not row:
                continue
            if len(row) != len(header):
                raise DataError(f"{path}, line {reader.line_num}: expected {len(header)} fields, got {len(row)}")
            yield reader.line_num, dict(zip(header, row))


def _field(path: Path, line: int, column: str, text: str, parse: Any) -> Any:
    try:
        return parse(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as exc:
        raise DataError(f"{path}, line {line}, column '{column}': {exc}") from None


def _int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(f"expected a non-negative int, got {text!r}")
    return value


def _clip_from_record(path: Path, line: int, rec: dict[str, str]) -> EpicClip:
    def get(column: str, parse: Any) -> Any:
        return _field(path, line, column, rec[column], parse)

    clip = EpicClip(
        narration_id=rec["narration_id"],
        participant_id=rec["participant_id"],
        video_id=rec["video_id"],
        narration_timestamp=rec["narration_timestamp"],
        start_sec=get("start_timestamp", parse_timestamp),
        stop_sec=get("stop_timestamp", parse_timestamp),
        start_frame=get("start_frame", _int),
        stop_frame=get("stop_frame", _int),
        narration=rec["narration"],
        verb=rec["verb"],
        verb_class=get("verb_class", _int),
        noun=rec["noun"],
        noun_class=get("noun_class", _int),
        all_nouns=get("all_nouns", lambda t: _parse_list(t, str)),
        all_noun_classes=get("all_noun_classes", lambda t: _parse_list(t, int)),
    )
    if not clip.narration_id or not clip.participant_id or not clip.video_id:
        raise DataError(f"{path}, line {line}: empty narration_id, participant_id or video_id")
    if clip.stop_sec < clip.start_sec:
        raise DataError(f"{path}, line {line}, column 'stop_timestamp': clip ends before it starts")
    return clip


def read_epic_mir_clips(path: str | Path) -> tuple[EpicClip, ...]:
    """Read ``EPIC_100_retrieval_{split}.csv`` (rows in file order). Raises DataError naming file, line, column."""
    path = Path(path)
    clips: list[EpicClip] = []
    seen: dict[str, int] = {}  # narration_id -> line
    for line, rec in read_csv_records(path, CLIP_COLUMNS):
        clip = _clip_from_record(path, line, rec)
        if clip.narration_id in seen:
            raise DataError(
                f"{path}, line {line}: narration_id {clip.narration_id!r} repeats line {seen[clip.narration_id]}"
            )
        seen[clip.narration_id] = line
        clips.append(clip)
    return tuple(clips)


def read_epic_mir_sentences(path: str | Path, clips: Sequence[EpicClip]) -> tuple[EpicSentence, ...]:
    """Read ``EPIC_100_retrieval_{split}_sentence.csv``; each sentence is tied to the clip row its id names."""
    path = Path(path)
    index = {c.narration_id: i for i, c in enumerate(clips)}
    sentences, mismatched = [], 0
    for line, rec in read_csv_records(path, SENTENCE_COLUMNS):
        nid = rec["narration_id"]
        if nid not in index:
            raise DataError(f"{path}, line {line}, column 'narration_id': {nid!r} is not a clip of the clip CSV")
        clip = clips[index[nid]]
        mismatched += rec["narration"].strip() != clip.narration.strip()
        sentences.append(EpicSentence(nid, index[nid], clip.narration, rec["narration"]))
    if mismatched:
        logger.info(
            "%s: %d sentence(s) differ from the narration of their clip row; using the clip's", path, mismatched
        )
    return tuple(sentences)


# ---------------------------------------------------------------- relevancy
def _class_arrays(clips: Sequence[EpicClip]) -> tuple[np.ndarray, np.ndarray]:
    """``verbs (N,)`` int64 and ``nouns (N, C)`` bool multi-hot of the ``all_noun_classes`` sets."""
    verbs = np.array([c.verb_class for c in clips], dtype=np.int64)
    lengths = np.array([len(c.all_noun_classes) for c in clips], dtype=np.int64)
    flat = np.fromiter((n for c in clips for n in c.all_noun_classes), dtype=np.int64, count=int(lengths.sum()))
    nouns = np.zeros((len(clips), int(flat.max()) + 1 if flat.size else 1), dtype=bool)
    nouns[np.repeat(np.arange(len(clips)), lengths), flat] = True
    return verbs, nouns


def _relevancy(verbs_a: np.ndarray, nouns_a: np.ndarray, verbs_b: np.ndarray, nouns_b: np.ndarray) -> np.ndarray:
    """``((verb_a == verb_b) + IoU(nouns_a, nouns_b)) / 2`` for all pairs: ``(A,)``, ``(A, C)`` x ``(B,)``, ``(B, C)``.

    The intersections come from one float32 matrix product (exact for counts this small); IoU(empty, empty) = 1.
    """
    width = max(nouns_a.shape[1], nouns_b.shape[1])
    a = np.zeros((len(nouns_a), width), dtype=np.float32)
    b = np.zeros((len(nouns_b), width), dtype=np.float32)
    a[:, : nouns_a.shape[1]], b[:, : nouns_b.shape[1]] = nouns_a, nouns_b
    inter = (a @ b.T).astype(np.float64)  # (A, B) |nouns_a & nouns_b|
    union = a.sum(axis=1, dtype=np.float64)[:, None] + b.sum(axis=1, dtype=np.float64)[None, :] - inter
    iou = np.divide(inter, union, out=np.ones_like(inter), where=union > 0)
    iou += verbs_a[:, None] == verbs_b[None, :]
    iou *= 0.5
    return iou


def build_relevancy(
    clips: Sequence[EpicClip],
    sentences: Sequence[EpicSentence],
    clip_indices: Sequence[int] | np.ndarray | None = None,
    chunk_rows: int = 2048,
) -> np.ndarray:
    """Relevancy of clips (rows) to sentences (columns) from the annotation classes (REFERENCE §3).

    Args:
        clips: the clip rows; ``sentences``: the gallery (each sentence uses its clip row's classes).
        clip_indices: only these rows (default: all clips), e.g. a training batch.
        chunk_rows: rows computed at a time (bounds the temporary memory).

    Returns:
        ``(len(clip_indices), len(sentences))`` float64 in [0, 1].
    """
    verbs, nouns = _class_arrays(clips)
    rows = np.arange(len(clips)) if clip_indices is None else np.asarray(clip_indices, dtype=np.int64)
    cols = np.array([s.clip_index for s in sentences], dtype=np.int64)
    out = np.empty((len(rows), len(cols)), dtype=np.float64)
    for start in range(0, len(rows), chunk_rows):
        part = rows[start : start + chunk_rows]
        out[start : start + len(part)] = _relevancy(verbs[part], nouns[part], verbs[cols], nouns[cols])
    return out


def load_relevancy_pickle(path: str | Path, shape: tuple[int, int] | None = None) -> np.ndarray:
    """The official relevancy pickle (a float array ``(clips, sentences)``), read without running pickle code."""
    value = load_pickle_restricted(path)
    if not isinstance(value, np.ndarray) or value.ndim != 2 or value.dtype.kind != "f":
        raise DataError(f"{path}: expected a 2-D float array, got {type(value).__name__} {getattr(value, 'shape', '')}")
    if shape is not None and value.shape != tuple(shape):
        raise DataError(f"{path}: relevancy has shape {value.shape}, the annotation CSVs give {tuple(shape)}")
    return value


def sample_positive_sentence(
    relevancy_row: np.ndarray, rng: np.random.Generator, threshold: float = POSITIVE_THRESHOLD
) -> tuple[int, float]:
    """Draw the training sentence of a clip as the official EK-100 fine-tuning does.

    Args:
        relevancy_row: ``(num_sentences,)`` relevancy of the clip to every sentence.
        rng: the random generator.
        threshold: positives are the sentences with relevancy strictly above it (official 0.1).

    Returns:
        ``(sentence index, margin weight)``: a positive drawn uniformly and its relevancy; ``(-1, 1.0)`` when the
        clip has no positive (then train on the clip's own narration with weight 1).
    """
    candidates = np.flatnonzero(np.asarray(relevancy_row) > threshold)
    if candidates.size == 0:
        return -1, 1.0
    j = int(rng.choice(candidates))
    return j, float(relevancy_row[j])


def batch_relevancy(
    annotations: EpicMIRAnnotations, clip_indices: Sequence[int], sentence_indices: Sequence[int]
) -> np.ndarray:
    """``(B, B)`` relevancy of clip ``clip_indices[i]`` to the text paired with clip ``j`` of a training batch.

    ``sentence_indices[j]`` is the sentence drawn for clip ``j`` (-1: its own narration). The diagonal holds the
    per-pair margin weights of the official adaptive max-margin loss (which uses ``w[i]`` for every term of row
    ``i``); the off-diagonal entries say how relevant the other texts of the batch are to each clip.
    """
    clips = np.asarray(clip_indices, dtype=np.int64)
    sent = np.asarray(sentence_indices, dtype=np.int64)
    if clips.shape != sent.shape or clips.ndim != 1:
        raise ValueError(f"clip_indices {clips.shape} and sentence_indices {sent.shape} must be equal 1-D shapes")
    source = np.where(sent >= 0, annotations.sentence_clip_index[np.maximum(sent, 0)], clips)  # text classes
    verbs, nouns = annotations.class_arrays
    return _relevancy(verbs[clips], nouns[clips], verbs[source], nouns[source])


def default_sentences(clips: Sequence[EpicClip]) -> tuple[EpicSentence, ...]:
    """One sentence per distinct narration (its first clip), in clip order: how the official galleries are made."""
    first: dict[str, int] = {}
    for i, clip in enumerate(clips):
        first.setdefault(clip.narration, i)
    return tuple(EpicSentence(clips[i].narration_id, i, text, text) for text, i in first.items())


def load_epic_mir(
    annotation_dir: str | Path,
    split: Literal["train", "test"] = "test",
    relevancy: Literal["auto", "build", "pickle", "none"] = "auto",
    relevancy_path: str | Path | None = None,
) -> EpicMIRAnnotations:
    """Read the official MIR annotations of a split from ``annotation_dir`` (the ``retrieval_annotations`` folder).

    Args:
        relevancy: ``"build"`` from the CSVs, ``"pickle"`` the official file (``relevancy_path``, default
            ``relevancy/caption_relevancy_EPIC_100_retrieval_{split}.pkl``), ``"none"``, or ``"auto"``: build for
            the test split, none for train (too big to hold; use :func:`build_relevancy` on batches of rows).
    """
    root = Path(annotation_dir)
    clips = read_epic_mir_clips(root / f"EPIC_100_retrieval_{split}.csv")
    sentences = read_epic_mir_sentences(root / f"EPIC_100_retrieval_{split}_sentence.csv", clips)
    mode = ("build" if split == "test" else "none") if relevancy == "auto" else relevancy
    matrix = None
    if mode == "build":
        matrix = build_relevancy(clips, sentences)
    elif mode == "pickle":
        default = root / "relevancy" / f"caption_relevancy_EPIC_100_retrieval_{split}.pkl"
        matrix = load_relevancy_pickle(relevancy_path or default, (len(clips), len(sentences)))
    elif mode != "none":
        raise ValueError(f"unknown relevancy mode {relevancy!r}")
    logger.info("EK-100 MIR %s: %d clips, %d sentences, relevancy %s", split, len(clips), len(sentences), mode)
    return EpicMIRAnnotations(clips, sentences, matrix)


# ---------------------------------------------------------------- writing
def write_epic_mir_csvs(
    clips_csv: str | Path,
    sentences_csv: str | Path,
    clips: Sequence[EpicClip],
    sentences: Sequence[EpicSentence] | None = None,
) -> None:
    """Write clips and sentences in the official CSV formats (timestamps with hundredths, list literals).

    ``sentences`` defaults to :func:`default_sentences`; their ``csv_text`` goes to the text column.
    """
    with open(clips_csv, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(CLIP_COLUMNS)
        for c in clips:
            writer.writerow(
                [
                    c.narration_id, c.participant_id, c.video_id, c.narration_timestamp,
                    format_timestamp(c.start_sec), format_timestamp(c.stop_sec), c.start_frame, c.stop_frame,
                    c.narration, c.verb, c.verb_class, c.noun, c.noun_class,
                    str(list(c.all_nouns)), str(list(c.all_noun_classes)),
                ]
            )  # fmt: skip
    with open(sentences_csv, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(SENTENCE_COLUMNS)
        for s in default_sentences(clips) if sentences is None else sentences:
            writer.writerow([s.narration_id, s.csv_text])
