"""Query-focused video summarisation (QFVS) annotations in the UT-Egocentric layout.

Under a root folder (each looked up directly under the root or under ``Query-Focused_Summaries/``)::

    Oracle_Summaries/P0X/<c1>_<c2>_oracle.txt   one selected shot per line, 1-based (returned 0-based)
    Dense_per_shot_tags/P0X/P0X.txt             one line per shot: comma-separated concept names (may be empty)
    Tags.mat (or Dense_per_shot_tags/Tags.mat)  MATLAB cell Tags{1, v}{s, 1} = 1 x C (C = 48) 0/1 vector of shot s
                                                of video v (v = the number in the video's name, P01 -> 1)

A missing or malformed file raises :class:`~egovlp.errors.DataError` naming the file (and the line or cell).
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field

import numpy as np

from egovlp.errors import DataError

log = logging.getLogger(__name__)

__all__ = [
    "QFVSVideo",
    "find_qfvs_file",
    "list_oracle_summaries",
    "load_oracle_summary",
    "load_qfvs",
    "load_shot_tags",
    "load_tags_mat",
    "tags_mat_index",
]

NUM_CONCEPTS = 48
_ORACLE = re.compile(r"^(.+?)_(.+)_oracle\.txt$")


@dataclass(frozen=True)
class QFVSVideo:
    """The annotations of one video.

    ``shot_tags[s]``: concept names of shot ``s`` from ``P0X.txt``; ``concepts``: ``(num_shots, C)`` uint8 0/1
    concept vectors from ``Tags.mat`` (None when no ``Tags.mat`` was read); ``oracle[(c1, c2)]``: sorted 0-based
    shot ids of the oracle summary of the query ``(c1, c2)``.
    """

    name: str
    shot_tags: tuple[tuple[str, ...], ...]
    concepts: np.ndarray | None
    oracle: dict[tuple[str, str], tuple[int, ...]] = field(default_factory=dict)

    @property
    def num_shots(self) -> int:
        return len(self.shot_tags)


def _read_text(path: str, what: str) -> list[str]:
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such QFVS {what} file")
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().splitlines()
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not a UTF-8 text file ({e.reason})") from None


def load_oracle_summary(path: str | os.PathLike, num_shots: int | None = None) -> tuple[int, ...]:
    """Sorted 0-based shot ids of an oracle summary file (1-based ids, one a line; blank lines skipped).

    An id that is not an integer, is < 1, is > ``num_shots`` (when given) or repeats is an error naming the line.
    """
    p = str(path)
    seen: dict[int, int] = {}
    for lineno, line in enumerate(_read_text(p, "oracle summary"), 1):
        text = line.strip()
        if not text:
            continue
        try:
            shot = int(float(text)) if re.fullmatch(r"\d+(\.0*)?", text) else int(text)
        except ValueError:
            raise DataError(f"{p}:{lineno}: shot id must be an integer, got {text!r}") from None
        if shot < 1 or (num_shots is not None and shot > num_shots):
            bound = f"[1, {num_shots}]" if num_shots is not None else ">= 1"
            raise DataError(f"{p}:{lineno}: shot id must be {bound} (1-based), got {shot}")
        if shot in seen:
            raise DataError(f"{p}:{lineno}: shot id {shot} repeats line {seen[shot]}")
        seen[shot] = lineno
    if not seen:
        raise DataError(f"{p}: empty oracle summary")
    return tuple(sorted(s - 1 for s in seen))


def load_shot_tags(path: str | os.PathLike, vocabulary: tuple[str, ...] | None = None) -> tuple[tuple[str, ...], ...]:
    """Per-shot concept names of ``P0X.txt``: one line per shot, comma-separated, an empty line = no concept.

    The file's last newline ends the last shot (it does not start an extra one); an empty file is an error.

    With ``vocabulary``, a name outside it is an error naming the line.
    """
    p = str(path)
    lines = _read_text(p, "per-shot tags")  # a final empty line (after the last newline) is a shot without concepts
    if not lines:
        raise DataError(f"{p}: no shots")
    known = set(vocabulary) if vocabulary is not None else None
    shots = []
    for lineno, line in enumerate(lines, 1):
        names = tuple(n.strip() for n in line.split(",") if n.strip())
        if known is not None:
            bad = [n for n in names if n not in known]
            if bad:
                raise DataError(f"{p}:{lineno}: unknown concept {bad[0]!r}")
        shots.append(names)
    return tuple(shots)


def load_tags_mat(path: str | os.PathLike, num_concepts: int = NUM_CONCEPTS) -> list[np.ndarray]:
    """``Tags.mat`` as one ``(num_shots, num_concepts)`` uint8 0/1 array per video (cell column order)."""
    import scipy.io

    p = str(path)
    if not os.path.isfile(p):
        raise DataError(f"{p}: no such QFVS Tags.mat file")
    try:
        mat = scipy.io.loadmat(p)
    except Exception as e:  # scipy raises ValueError / MatReadError / TypeError for non-MAT content
        raise DataError(f"{p}: not a readable MATLAB file ({type(e).__name__}: {e})") from None
    if "Tags" not in mat:
        raise DataError(f"{p}: no variable 'Tags' (found {sorted(k for k in mat if not k.startswith('__'))})")
    cell = mat["Tags"]
    if cell.dtype != object or cell.ndim != 2 or cell.shape[0] != 1:
        raise DataError(f"{p}: 'Tags' must be a 1 x V cell array, got {cell.dtype} {cell.shape}")
    videos = []
    for v in range(cell.shape[1]):
        shots = cell[0, v]
        where = f"{p}: Tags{{1,{v + 1}}}"
        if not isinstance(shots, np.ndarray) or shots.dtype != object or shots.ndim != 2 or shots.shape[1] != 1:
            raise DataError(f"{where} must be an S x 1 cell array")
        rows = []
        for s in range(shots.shape[0]):
            vec = np.asarray(shots[s, 0])
            if vec.dtype == object or vec.size != num_concepts:
                raise DataError(f"{where}{{{s + 1},1}} must be a 1 x {num_concepts} vector, got shape {vec.shape}")
            vec = vec.reshape(-1).astype(np.float64)
            if not np.isin(vec, (0.0, 1.0)).all():
                raise DataError(f"{where}{{{s + 1},1}} must hold only 0 and 1")
            rows.append(vec.astype(np.uint8))
        videos.append(np.stack(rows) if rows else np.zeros((0, num_concepts), np.uint8))
    return videos


def tags_mat_index(video: str) -> int:
    """0-based column of ``video`` in ``Tags.mat``: the number in its name minus one (``P03`` -> 2)."""
    digits = re.search(r"(\d+)$", video)
    if digits is None or int(digits.group(1)) < 1:
        raise DataError(f"QFVS video name {video!r} must end with its 1-based number (P01, P02, ...)")
    return int(digits.group(1)) - 1


def find_qfvs_file(root: str | os.PathLike, *relative: str) -> str | None:
    """The first of ``root/<rel>`` and ``root/Query-Focused_Summaries/<rel>`` that exists, for each ``rel``."""
    for rel in relative:
        for base in (str(root), os.path.join(str(root), "Query-Focused_Summaries")):
            candidate = os.path.join(base, rel)
            if os.path.exists(candidate):
                return candidate
    return None


def list_oracle_summaries(folder: str | os.PathLike) -> dict[tuple[str, str], str]:
    """``(c1, c2) -> path`` of the ``<c1>_<c2>_oracle.txt`` files of one video's folder."""
    d = str(folder)
    if not os.path.isdir(d):
        raise DataError(f"{d}: no such QFVS oracle-summary folder")
    found = {}
    for name in sorted(os.listdir(d)):
        m = _ORACLE.match(name)
        if m is not None:
            found[(m.group(1), m.group(2))] = os.path.join(d, name)
    if not found:
        raise DataError(f"{d}: no <c1>_<c2>_oracle.txt files")
    return found


def load_qfvs(
    root: str | os.PathLike, videos: tuple[str, ...] | list[str] | None = None, num_concepts: int = NUM_CONCEPTS
) -> list[QFVSVideo]:
    """Annotations of ``videos`` (default: every folder of ``Dense_per_shot_tags``), sorted by name.

    ``Tags.mat`` is optional; when present its shot count for each video must equal the lines of ``P0X.txt``.
    Oracle shot ids are checked against the video's shot count.
    """
    tags_dir = find_qfvs_file(root, "Dense_per_shot_tags")
    oracle_dir = find_qfvs_file(root, "Oracle_Summaries")
    if tags_dir is None or not os.path.isdir(tags_dir):
        raise DataError(f"{root}: no Dense_per_shot_tags folder")
    if oracle_dir is None or not os.path.isdir(oracle_dir):
        raise DataError(f"{root}: no Oracle_Summaries folder")
    if videos is None:
        videos = sorted(d for d in os.listdir(tags_dir) if os.path.isdir(os.path.join(tags_dir, d)))
        if not videos:
            raise DataError(f"{tags_dir}: no video folders")
    mat_path = find_qfvs_file(root, "Tags.mat", os.path.join("Dense_per_shot_tags", "Tags.mat"))
    mat = load_tags_mat(mat_path, num_concepts) if mat_path is not None else None
    out = []
    for name in sorted(videos):
        tags_path = os.path.join(tags_dir, name, f"{name}.txt")
        shot_tags = load_shot_tags(tags_path)
        concepts = None
        if mat is not None:
            col = tags_mat_index(name)
            if col >= len(mat):
                raise DataError(f"{mat_path}: no cell Tags{{1,{col + 1}}} for video {name} ({len(mat)} videos)")
            concepts = mat[col]
            if len(concepts) != len(shot_tags):
                raise DataError(
                    f"{mat_path}: Tags{{1,{col + 1}}} has {len(concepts)} shots but {tags_path} has {len(shot_tags)}"
                )
        oracle = {
            q: load_oracle_summary(p, len(shot_tags))
            for q, p in list_oracle_summaries(os.path.join(oracle_dir, name)).items()
        }
        out.append(QFVSVideo(name, shot_tags, concepts, oracle))
        log.info("QFVS %s: %d shots, %d queries", name, len(shot_tags), len(oracle))
    return out
