"""The EgoClip metadata table (``egoclip.csv``), stored compactly: numpy columns and one text blob.

``egoclip.csv`` is TAB-separated with a header; the columns used are
``clip_idx, video_uid, video_dur, narration_source, narration_ind, narration_time, clip_start, clip_end, clip_text,
tag_verb, tag_noun`` (any order; extra columns, e.g. a leading unnamed index, are ignored). ``tag_verb`` and
``tag_noun`` are Python-list literals of taxonomy ids.

3.85 M rows load in about 20 s and under 1 GB: rows are parsed in blocks into typed numpy arrays, narration texts
into one UTF-8 blob with offsets and tag lists into flat arrays with offsets (no per-row Python objects, so DataLoader
workers forked from the loading process share the memory). A malformed row raises :class:`DataError` naming the
file, line and column, or is skipped and counted with ``bad_rows="skip"``. A UTF-8 byte-order mark before the header
is accepted.

Suspect rows, whose times parse but make no sense as a clip (``clip_end < clip_start`` or a negative ``clip_start``),
are kept under either policy: they are counted in ``num_suspect_rows`` and logged once (count and the first few
``file:line``), and ``clip_end`` is set to ``clip_start`` when it is earlier (a still clip). A negative start is kept
as written (the released EgoClip has some near the start of videos); frame sampling starts at 0.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from egovlp.data.tags import parse_tag_column, parse_tag_list
from egovlp.errors import DataError

log = logging.getLogger(__name__)

__all__ = ["EGOCLIP_COLUMNS", "EgoClipTable", "load_egoclip", "write_egoclip_csv"]

EGOCLIP_COLUMNS = (
    "clip_idx",
    "video_uid",
    "video_dur",
    "narration_source",
    "narration_ind",
    "narration_time",
    "clip_start",
    "clip_end",
    "clip_text",
    "tag_verb",
    "tag_noun",
)
_FLOATS = ("video_dur", "narration_time", "clip_start", "clip_end")
_INTS = ("clip_idx", "narration_ind")
_TAGS = ("tag_verb", "tag_noun")
_SUSPECT_SHOWN = 5  # suspect rows named in the warning


@dataclass
class EgoClipTable:
    """Columns of ``egoclip.csv``; row ``i`` of every array is the file's ``i``-th kept row (at line ``line[i]``)."""

    path: str
    line: np.ndarray  # (N,) int64, 1-based line number in the file
    clip_idx: np.ndarray  # (N,) int64
    video: np.ndarray  # (N,) int32 index into video_uids
    video_uids: list[str]
    video_dur: np.ndarray  # (N,) float64 seconds
    source: np.ndarray  # (N,) int16 index into sources
    sources: list[str]  # narration_source values, e.g. "narration_pass_1"
    narration_ind: np.ndarray  # (N,) int64
    narration_time: np.ndarray  # (N,) float64 seconds
    clip_start: np.ndarray  # (N,) float64 seconds
    clip_end: np.ndarray  # (N,) float64 seconds
    text_blob: bytes  # UTF-8 narration texts back to back
    text_offsets: np.ndarray  # (N + 1,) int64
    verb_ids: np.ndarray  # (total,) int32
    verb_offsets: np.ndarray  # (N + 1,) int64
    noun_ids: np.ndarray  # (total,) int32
    noun_offsets: np.ndarray  # (N + 1,) int64
    num_bad_rows: int = 0  # malformed rows skipped under bad_rows="skip"
    num_suspect_rows: int = 0  # kept rows with clip_end < clip_start (end set to start) or clip_start < 0
    _video_rows: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.line)

    def text(self, i: int) -> str:
        """The raw ``clip_text`` of row ``i``."""
        return self.text_blob[self.text_offsets[i] : self.text_offsets[i + 1]].decode("utf-8")

    def verbs(self, i: int) -> np.ndarray:
        """Verb ids of row ``i``."""
        return self.verb_ids[self.verb_offsets[i] : self.verb_offsets[i + 1]]

    def nouns(self, i: int) -> np.ndarray:
        """Noun ids of row ``i``."""
        return self.noun_ids[self.noun_offsets[i] : self.noun_offsets[i + 1]]

    def video_uid(self, i: int) -> str:
        return self.video_uids[self.video[i]]

    def row(self, i: int) -> dict:
        """Row ``i`` as a dict of the CSV's column names (tags as lists of ints)."""
        return {
            "clip_idx": int(self.clip_idx[i]),
            "video_uid": self.video_uid(i),
            "video_dur": float(self.video_dur[i]),
            "narration_source": self.sources[self.source[i]],
            "narration_ind": int(self.narration_ind[i]),
            "narration_time": float(self.narration_time[i]),
            "clip_start": float(self.clip_start[i]),
            "clip_end": float(self.clip_end[i]),
            "clip_text": self.text(i),
            "tag_verb": self.verbs(i).tolist(),
            "tag_noun": self.nouns(i).tolist(),
        }

    def where(self, i: int) -> str:
        """``path:line`` of row ``i``, for messages."""
        return f"{self.path}:{self.line[i]}"

    def check_tag_range(self, num_verbs: int, num_nouns: int) -> None:
        """Raise :class:`DataError` naming the first row whose tag id is outside the taxonomy."""
        for name, ids, offsets, size in (
            ("tag_verb", self.verb_ids, self.verb_offsets, num_verbs),
            ("tag_noun", self.noun_ids, self.noun_offsets, num_nouns),
        ):
            bad = np.flatnonzero(ids >= size)
            if bad.size:
                i = int(np.searchsorted(offsets, bad[0], side="right") - 1)
                raise DataError(
                    f"{self.where(i)}: column '{name}': id {ids[bad[0]]} is outside the taxonomy of {size} classes"
                )


def _codes(values: Sequence[str], index: dict[str, int], dtype) -> np.ndarray:
    """Integer codes of ``values``, adding unseen values to ``index`` (value -> code) in order of appearance."""
    for v in dict.fromkeys(values):
        index.setdefault(v, len(index))
    return np.fromiter(map(index.__getitem__, values), dtype, len(values))


class _Parser:
    """Column-wise conversion of blocks of CSV rows; see :func:`load_egoclip`."""

    def __init__(self, path: str, header: list[str], bad_rows: str) -> None:
        missing = [c for c in EGOCLIP_COLUMNS if c not in header]
        if missing:
            raise DataError(f"{path}:1: missing column(s) {missing}; the header is {header}")
        self.path, self.bad_rows, self.ncol = path, bad_rows, len(header)
        self.col = {c: header.index(c) for c in EGOCLIP_COLUMNS}
        self.uids: dict[str, int] = {}
        self.sources: dict[str, int] = {}
        keys = ("line", *_FLOATS, *_INTS, "video", "source", "text", "text_len")
        self.parts: dict[str, list] = {k: [] for k in keys}
        self.parts.update({f"{t}_ids": [] for t in _TAGS} | {f"{t}_counts": [] for t in _TAGS})
        self.num_bad = 0
        self.suspect: list[tuple[int, str]] = []  # (line, what is wrong) of the first few suspect rows
        self.num_suspect = 0

    def bad(self, line: int, message: str) -> None:
        """A malformed row: raise, or log it and count it."""
        full = f"{self.path}:{line}: {message}"
        if self.bad_rows == "raise":
            raise DataError(full)
        self.num_bad += 1
        if self.num_bad <= 20:
            log.warning("skipping malformed row: %s", full)

    def _field_error(self, row: Sequence[str], line: int) -> str | None:
        """Why ``row`` is malformed (column name and number), or None."""
        for name in EGOCLIP_COLUMNS:
            j = self.col[name]
            value = row[j]
            where = f"column '{name}' (column {j + 1})"
            try:
                if name in _FLOATS:
                    if not np.isfinite(float(value)):
                        return f"{where}: {value!r} is not a finite number"
                elif name in _INTS:
                    int(value)
                elif name in _TAGS:
                    parse_tag_list(value)
                elif name == "video_uid" and not value.strip():
                    return f"{where}: empty video_uid"
            except ValueError:
                kind = "a number" if name in _FLOATS else "an integer" if name in _INTS else "a tag list like [3, 17]"
                return f"{where}: cannot parse {value!r} as {kind}"
        return None

    def _convert(self, cols: list[Sequence[str]]) -> dict | None:
        """Typed arrays of a block of columns, or None if any value is malformed."""
        out: dict = {}
        try:
            for name in _FLOATS:
                out[name] = np.array(cols[self.col[name]], dtype=np.float64)
                if not np.all(np.isfinite(out[name])):
                    return None
            for name in _INTS:
                out[name] = np.array(cols[self.col[name]], dtype=np.int64)
        except ValueError:
            return None
        for name in _TAGS:
            parsed = parse_tag_column(cols[self.col[name]])
            if parsed is None:
                return None
            out[f"{name}_ids"], offsets = parsed
            out[f"{name}_counts"] = np.diff(offsets)
        uids = cols[self.col["video_uid"]]
        if not all(uids):
            return None
        out["video"] = _codes(uids, self.uids, np.int32)
        out["source"] = _codes(cols[self.col["narration_source"]], self.sources, np.int16)
        texts = cols[self.col["clip_text"]]
        out["text"] = "".join(texts).encode("utf-8")
        lengths = map(len, texts) if len(out["text"]) == sum(map(len, texts)) else (len(t.encode()) for t in texts)
        out["text_len"] = np.fromiter(lengths, np.int64, len(texts))  # byte lengths (== characters when ASCII)
        return out

    def add_block(self, cols: list[Sequence[str]], lines: Sequence[int] | np.ndarray) -> None:
        """Convert and store a block given as columns (all of the header's columns, ``len(lines)`` rows each)."""
        if not len(lines):
            return
        out = self._convert(cols)
        if out is None:  # find the bad rows one by one, then convert the good ones
            keep = []
            for row, line in zip(zip(*cols), lines):
                error = self._field_error(row, line)
                if error is None:
                    keep.append((row, line))
                else:
                    self.bad(line, error)
            if not keep:
                return
            lines = [ln for _, ln in keep]
            out = self._convert(list(zip(*[r for r, _ in keep])))
            assert out is not None
        out["line"] = np.asarray(lines, dtype=np.int64)
        self._check_times(out)
        for key, value in out.items():
            self.parts[key].append(value)

    def _check_times(self, out: dict) -> None:
        """Count and note rows with ``clip_end < clip_start`` (setting end to start) or a negative ``clip_start``."""
        start, end = out["clip_start"], out["clip_end"]
        reversed_, negative = end < start, start < 0
        suspect = np.flatnonzero(reversed_ | negative)
        if not suspect.size:
            return
        self.num_suspect += int(suspect.size)
        for i in suspect[: max(0, _SUSPECT_SHOWN - len(self.suspect))]:
            what = f"clip_end {end[i]:g} < clip_start {start[i]:g}" if reversed_[i] else f"clip_start {start[i]:g} < 0"
            self.suspect.append((int(out["line"][i]), what))
        np.copyto(end, start, where=reversed_)

    def report_suspect(self) -> None:
        """One warning for all suspect rows: their count and the first few ``file:line``."""
        if self.num_suspect:
            first = "; ".join(f"{self.path}:{line}: {what}" for line, what in self.suspect)
            log.warning("%s: %d rows with clip_end < clip_start (end set to start) or a negative clip_start (kept): "
                        "%s%s", self.path, self.num_suspect, first, "; ..." if self.num_suspect > len(self.suspect)
                        else "")  # fmt: skip

    def table(self) -> EgoClipTable:
        p = self.parts

        def cat(key: str, dtype) -> np.ndarray:
            return np.concatenate(p[key]).astype(dtype, copy=False) if p[key] else np.zeros(0, dtype)

        n = sum(len(block) for block in p["line"])
        text_offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(cat("text_len", np.int64), out=text_offsets[1:])
        tag = {}
        for name in _TAGS:
            offsets = np.zeros(n + 1, dtype=np.int64)
            np.cumsum(cat(f"{name}_counts", np.int64), out=offsets[1:])
            tag[name] = (cat(f"{name}_ids", np.int32), offsets)
        return EgoClipTable(
            path=self.path,
            line=cat("line", np.int64),
            clip_idx=cat("clip_idx", np.int64),
            video=cat("video", np.int32),
            video_uids=list(self.uids),
            video_dur=cat("video_dur", np.float64),
            source=cat("source", np.int16),
            sources=list(self.sources),
            narration_ind=cat("narration_ind", np.int64),
            narration_time=cat("narration_time", np.float64),
            clip_start=cat("clip_start", np.float64),
            clip_end=cat("clip_end", np.float64),
            text_blob=b"".join(p["text"]),
            text_offsets=text_offsets,
            verb_ids=tag["tag_verb"][0],
            verb_offsets=tag["tag_verb"][1],
            noun_ids=tag["tag_noun"][0],
            noun_offsets=tag["tag_noun"][1],
            num_bad_rows=self.num_bad,
            num_suspect_rows=self.num_suspect,
        )


def _split(line: str) -> list[str]:
    """The fields of one TAB-separated line; quoted fields (as pandas writes them) go through :mod:`csv`."""
    line = line.rstrip("\r\n")
    if '"' in line:
        return next(csv.reader([line], delimiter="\t"))
    return line.split("\t")


def _split_block(block: list[str], first_line: int, parser: _Parser) -> tuple[list[Sequence[str]], np.ndarray]:
    """Columns of a block of lines and the rows' line numbers; blank lines are dropped, ill-sized rows reported."""
    n, ncol = len(block), parser.ncol
    text = "".join(block)
    tabs = ncol - 1
    if '"' not in text and "\r" not in text and text.count("\n") == n and all(ln.count("\t") == tabs for ln in block):
        # Fast path: no quoting and every line has ncol fields, so one split gives all fields row-major. (Counting the
        # tabs of the whole block is not enough: a row with an extra field and one with a missing field would shift
        # the fields of the rows between them.)
        fields = text.replace("\n", "\t").split("\t")[:-1]
        if len(fields) == n * ncol and "" not in fields[::ncol]:  # (an empty first field may be a blank line)
            return [fields[j::ncol] for j in range(ncol)], np.arange(first_line, first_line + n)
    rows, lines = [], []
    for i, line in enumerate(block):
        row = _split(line)
        if len(row) == ncol:
            rows.append(row)
            lines.append(first_line + i)
        elif line.strip():
            parser.bad(first_line + i, f"expected {ncol} tab-separated columns, found {len(row)}")
    return [list(c) for c in zip(*rows)] if rows else [[] for _ in range(ncol)], np.array(lines, dtype=np.int64)


def load_egoclip(
    path: str | os.PathLike, bad_rows: str = "raise", max_rows: int | None = None, block_bytes: int = 16 << 20
) -> EgoClipTable:
    """Read ``egoclip.csv`` (TAB-separated, with a header) into an :class:`EgoClipTable`.

    Args:
        bad_rows: ``"raise"`` (a :class:`DataError` with file, line and column) or ``"skip"`` (log, count in
            ``table.num_bad_rows``) for malformed rows. Suspect rows (end before start, negative start) are kept
            and counted in ``table.num_suspect_rows`` under either policy (see the module docstring).
        max_rows: read at most this many data rows (for quick experiments).
    """
    if bad_rows not in ("raise", "skip"):
        raise ValueError(f"bad_rows must be 'raise' or 'skip', got {bad_rows!r}")
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such EgoClip metadata file")
    with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: a byte-order mark before the header is dropped
        header_line = f.readline()
        if not header_line.strip():
            raise DataError(f"{path}:1: empty file, expected a header with {list(EGOCLIP_COLUMNS)}")
        parser = _Parser(str(path), [h.strip() for h in _split(header_line)], bad_rows)
        line_no, count = 1, 0
        while max_rows is None or count < max_rows:
            block = f.readlines(block_bytes)
            if not block:
                break
            cols, lines = _split_block(block, line_no + 1, parser)
            line_no += len(block)
            if max_rows is not None and count + len(lines) > max_rows:
                cols, lines = [c[: max_rows - count] for c in cols], lines[: max_rows - count]
            parser.add_block(cols, lines)
            count += len(lines)
    table = parser.table()
    log.info("loaded %d EgoClip rows of %d videos from %s", len(table), len(table.video_uids), path)
    if parser.num_bad:
        log.warning("%s: skipped %d malformed rows", path, parser.num_bad)
    parser.report_suspect()
    return table


def write_egoclip_csv(path: str | os.PathLike, rows: Iterable[dict]) -> None:
    """Write ``egoclip.csv``: TAB-separated, the official columns in order, fields quoted only when needed."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=EGOCLIP_COLUMNS, delimiter="\t", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
