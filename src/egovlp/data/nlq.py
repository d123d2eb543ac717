"""Ego4D natural-language queries (NLQ v1): annotation reader and challenge submission files (downstream §2).

``nlq_{train,val,test_unannotated}.json``::

    {"videos": [{"video_uid", "clips": [{"clip_uid", "video_start_sec", "video_end_sec", "clip_start_sec",
      "clip_end_sec", "annotations": [{"annotation_uid", "language_queries": [{"clip_start_sec", "clip_end_sec",
      "query", "template", "slot_x", "verb_x", ...}]}]}]}]}

One :class:`NLQQuery` per language query. A query's answer window (``clip_start_sec``, ``clip_end_sec`` of the query)
is relative to its clip; the test file has no windows (``window`` is None). Queries without a ``query`` text (missing,
null or blank; a few in the official files) are skipped, logged and counted (:attr:`NLQAnnotations.without_query`).

Window policy: ``end < start`` is an error; a window that leaves ``[0, clip duration]`` by at most
``window_tolerance`` seconds (default 1 s: the official files have windows a few frames past the clip end) is clamped
into the clip and counted (:attr:`NLQAnnotations.clamped`); further out is an error. Every error is a
:class:`~egovlp.errors.DataError` naming the file, the clip_uid, the annotation_uid, the query index and the field.

Submission (Ego4D NLQ challenge)::

    {"version": "1.0", "challenge": "ego4d_nlq_challenge",
     "results": [{"clip_uid", "annotation_uid", "query_idx", "predicted_times": [[start, end], ...]}]}

with ``query_idx`` the index of the query in its annotation's ``language_queries`` and the top-5 windows per query,
best first (:func:`write_nlq_submission`, :func:`read_nlq_submission`).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from egovlp.data.json_records import (
    SUBMISSION_VERSION,
    array,
    clamp_window,
    field,
    number,
    read_json,
    text,
    write_json,
)
from egovlp.errors import DataError

__all__ = [
    "NLQ_CHALLENGE",
    "SUBMISSION_VERSION",
    "NLQAnnotations",
    "NLQClip",
    "NLQPrediction",
    "NLQQuery",
    "load_nlq",
    "read_nlq_submission",
    "write_nlq_submission",
]

logger = logging.getLogger(__name__)

NLQ_CHALLENGE = "ego4d_nlq_challenge"
QueryKey = tuple[str, str, int]  # (clip_uid, annotation_uid, query_idx)


@dataclass(frozen=True)
class NLQClip:
    """An NLQ clip: its video, its span in the video (seconds) and its duration ``clip_end_sec - clip_start_sec``."""

    video_uid: str
    clip_uid: str
    video_start_sec: float
    video_end_sec: float
    duration: float


@dataclass(frozen=True)
class NLQQuery:
    """One language query.

    ``window`` is the answer ``(start, end)`` in seconds from the clip start (clamped into ``[0, clip_duration]``),
    None in the test file. ``query_idx`` is the index in the annotation's ``language_queries`` (counting skipped
    queries, as the submission file does).
    """

    video_uid: str
    clip_uid: str
    annotation_uid: str
    query_idx: int
    query: str
    window: tuple[float, float] | None
    clip_duration: float
    template: str | None = None

    @property
    def key(self) -> QueryKey:
        """``(clip_uid, annotation_uid, query_idx)``: how the submission file names the query."""
        return (self.clip_uid, self.annotation_uid, self.query_idx)


@dataclass(frozen=True)
class NLQAnnotations:
    """A parsed NLQ file: queries in file order, clips by uid, and what was skipped or clamped (as query keys)."""

    path: str
    queries: tuple[NLQQuery, ...]
    clips: Mapping[str, NLQClip]
    without_query: tuple[QueryKey, ...]
    clamped: tuple[QueryKey, ...]

    @property
    def num_without_query(self) -> int:
        """Language queries skipped because they have no ``query`` text."""
        return len(self.without_query)

    @property
    def num_clamped(self) -> int:
        """Windows clamped into their clip (they left it by at most the tolerance)."""
        return len(self.clamped)

    @property
    def has_windows(self) -> bool:
        """True when every query has an answer window (train/val), False for the test file."""
        return all(q.window is not None for q in self.queries)

    def __len__(self) -> int:
        return len(self.queries)


@dataclass(frozen=True)
class NLQPrediction:
    """Ranked ``(start, end)`` windows (seconds from the clip start, best first) for one query."""

    clip_uid: str
    annotation_uid: str
    query_idx: int
    predicted_times: tuple[tuple[float, float], ...]

    @property
    def key(self) -> QueryKey:
        return (self.clip_uid, self.annotation_uid, self.query_idx)


# ----------------------------------------------------------------------------------------------- annotations


def _parse_query(
    lq: Any, clip: NLQClip, annotation_uid: str, idx: int, where: str, tolerance: float
) -> tuple[NLQQuery | None, bool]:
    """One language query -> (query or None when it has no text, whether its window was clamped)."""
    if not isinstance(lq, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(lq).__name__}")
    sentence = lq.get("query")
    if sentence is None or (isinstance(sentence, str) and not sentence.strip()):
        return None, False
    if not isinstance(sentence, str):
        raise DataError(f"{where}: field 'query' must be a string, got {json.dumps(sentence)}")
    template = lq.get("template")
    if template is not None and not isinstance(template, str):
        raise DataError(f"{where}: field 'template' must be a string or null, got {json.dumps(template)}")
    has_start, has_end = "clip_start_sec" in lq, "clip_end_sec" in lq
    window, clamped = None, False
    if has_start or has_end:  # a window needs both ends; neither = the unannotated test file
        start, end = number(lq, "clip_start_sec", where), number(lq, "clip_end_sec", where)
        lo, hi, clamped = clamp_window(start, end, clip.duration, tolerance, where)
        window = (lo, hi)
    query = NLQQuery(
        clip.video_uid, clip.clip_uid, annotation_uid, idx, sentence.strip(), window, clip.duration, template
    )
    return query, clamped


def _parse_clip(c: Any, video_uid: str, name: str, where: str) -> NLQClip:
    clip_uid = text(c, "clip_uid", where)
    where = f"{name}: clip {clip_uid}"
    v0, v1 = number(c, "video_start_sec", where), number(c, "video_end_sec", where)
    c0, c1 = number(c, "clip_start_sec", where), number(c, "clip_end_sec", where)
    if v1 < v0:
        raise DataError(f"{where}: 'video_end_sec' {v1:g} is before 'video_start_sec' {v0:g}")
    if c1 <= c0:
        raise DataError(f"{where}: 'clip_end_sec' {c1:g} must be after 'clip_start_sec' {c0:g}")
    return NLQClip(video_uid, clip_uid, v0, v1, c1 - c0)


def load_nlq(path: str | os.PathLike, window_tolerance: float = 1.0) -> NLQAnnotations:
    """Parse an Ego4D NLQ v1 file (train, val or test_unannotated) into one :class:`NLQQuery` per language query.

    Args:
        path: ``nlq_{train,val,test_unannotated}.json``.
        window_tolerance: seconds a window may leave its clip and still be clamped into it (see the module doc).

    Raises:
        DataError: naming the file, the clip_uid, the annotation_uid, the query index and the field for a malformed
            record; a duplicate clip_uid; a file without any query.
    """
    name = str(path)
    data = read_json(name, "NLQ annotation")
    videos = array(data, "videos", name)
    queries: list[NLQQuery] = []
    clips: dict[str, NLQClip] = {}
    without: list[QueryKey] = []
    clamped: list[QueryKey] = []
    for vi, v in enumerate(videos):
        vwhere = f"{name}: videos[{vi}]"
        video_uid = text(v, "video_uid", vwhere)
        vwhere = f"{name}: video {video_uid}"
        for ci, c in enumerate(array(v, "clips", vwhere)):
            clip = _parse_clip(c, video_uid, name, f"{vwhere} clips[{ci}]")
            cwhere = f"{name}: clip {clip.clip_uid}"
            if clip.clip_uid in clips:
                raise DataError(f"{cwhere}: duplicate clip_uid (also in video {clips[clip.clip_uid].video_uid})")
            clips[clip.clip_uid] = clip
            for ai, a in enumerate(array(c, "annotations", cwhere)):
                auid = text(a, "annotation_uid", f"{cwhere} annotations[{ai}]")
                awhere = f"{cwhere} annotation {auid}"
                for qi, lq in enumerate(array(a, "language_queries", awhere)):
                    query, was_clamped = _parse_query(lq, clip, auid, qi, f"{awhere} query {qi}", window_tolerance)
                    key = (clip.clip_uid, auid, qi)
                    if query is None:
                        without.append(key)
                        continue
                    if was_clamped:
                        clamped.append(key)
                    queries.append(query)
    if not queries:
        raise DataError(f"{name}: no language queries with a 'query' text")
    if without:
        logger.warning("%s: skipped %d language queries without a 'query' text", name, len(without))
    if clamped:
        logger.info("%s: clamped %d windows into their clip", name, len(clamped))
    return NLQAnnotations(name, tuple(queries), clips, tuple(without), tuple(clamped))


# ----------------------------------------------------------------------------------------------- submission


def write_nlq_submission(path: str | os.PathLike, predictions: Iterable[NLQPrediction], top_k: int = 5) -> Path:
    """Write the Ego4D NLQ challenge JSON: the first ``top_k`` windows of each prediction, in the given order.

    Raises ``ValueError`` for a duplicate query key, a prediction without windows, or a window that is not finite
    or ends before it starts (a program error, not a user-input one).
    """
    results: list[dict[str, Any]] = []
    seen: set[QueryKey] = set()
    for p in predictions:
        if p.key in seen:
            raise ValueError(f"duplicate NLQ prediction for query {p.key}")
        seen.add(p.key)
        times = [[float(s), float(e)] for s, e in p.predicted_times[:top_k]]
        if not times:
            raise ValueError(f"NLQ prediction for query {p.key} has no windows")
        if any(not (math.isfinite(s) and math.isfinite(e)) or e < s for s, e in times):
            raise ValueError(f"NLQ prediction for query {p.key} has a non-finite or reversed window: {times}")
        results.append(
            {
                "clip_uid": p.clip_uid,
                "annotation_uid": p.annotation_uid,
                "query_idx": int(p.query_idx),
                "predicted_times": times,
            }
        )
    return write_json(path, {"version": SUBMISSION_VERSION, "challenge": NLQ_CHALLENGE, "results": results})


def _parse_prediction(r: Any, where: str) -> NLQPrediction:
    clip_uid, auid = text(r, "clip_uid", where), text(r, "annotation_uid", where)
    idx = field(r, "query_idx", where)
    if isinstance(idx, bool) or not isinstance(idx, int) or idx < 0:
        raise DataError(f"{where}: field 'query_idx' must be an int >= 0, got {json.dumps(idx)}")
    where = f"{where} (clip {clip_uid} annotation {auid} query {idx})"
    raw = array(r, "predicted_times", where)
    if not raw:
        raise DataError(f"{where}: 'predicted_times' is empty")
    times = []
    for k, w in enumerate(raw):
        if (
            not isinstance(w, list)
            or len(w) != 2
            or any(isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x) for x in w)
        ):
            raise DataError(f"{where}: predicted_times[{k}] must be [start, end] numbers, got {json.dumps(w)}")
        if w[1] < w[0]:
            raise DataError(f"{where}: predicted_times[{k}] ends before it starts: {json.dumps(w)}")
        times.append((float(w[0]), float(w[1])))
    return NLQPrediction(clip_uid, auid, idx, tuple(times))


def read_nlq_submission(path: str | os.PathLike) -> list[NLQPrediction]:
    """Read and check an Ego4D NLQ challenge JSON (version, challenge name, every result); in file order.

    Raises :class:`DataError` naming the file, the result index and the field; a duplicate query is an error.
    """
    name = str(path)
    data = read_json(name, "NLQ submission")
    version, challenge = field(data, "version", name), field(data, "challenge", name)
    if version != SUBMISSION_VERSION:
        raise DataError(f"{name}: field 'version' must be {SUBMISSION_VERSION!r}, got {json.dumps(version)}")
    if challenge != NLQ_CHALLENGE:
        raise DataError(f"{name}: field 'challenge' must be {NLQ_CHALLENGE!r}, got {json.dumps(challenge)}")
    out: list[NLQPrediction] = []
    seen: set[QueryKey] = set()
    for i, r in enumerate(array(data, "results", name)):
        p = _parse_prediction(r, f"{name}: results[{i}]")
        if p.key in seen:
            raise DataError(f"{name}: results[{i}]: duplicate prediction for query {p.key}")
        seen.add(p.key)
        out.append(p)
    return out
