"""Ego4D moment queries (MQ): annotation reader and challenge submission files (downstream §3).

``moments_{train,val}.json``::

    {"videos": [{"video_uid", "duration_sec", "split", "clips": [{"clip_uid", "video_start_sec", "video_end_sec",
      "annotations": [{"labels": [{"start_time", "end_time", "label", "primary", ...}]}]}]}]}

``start_time`` / ``end_time`` are seconds from the clip start; only ``primary`` labels are used by default (the
non-primary ones are counted in :attr:`MQAnnotations.num_non_primary`). Every annotator's labels of a clip are kept
(the official evaluation uses them all). The class vocabulary is the sorted set of names in the file, or a given
list (a name outside it is an error); a clip's segments carry class ids into that vocabulary.

Segment policy (as for NLQ windows): ``end < start`` is an error; a segment that leaves ``[0, clip duration]`` by at
most ``segment_tolerance`` seconds is clamped and counted (:attr:`MQAnnotations.num_clamped`), further out is an
error. Every error is a :class:`~egovlp.errors.DataError` naming the file, the clip_uid, the label and the field.

Submission (Ego4D MQ challenge)::

    {"version": "1.0", "challenge": "ego4d_moment_queries",
     "detect_results": {clip_uid: [{"label": name, "score": float, "segment": [start, end]}, ...]}}

each clip's detections ranked by descending score (:func:`write_mq_submission`, :func:`read_mq_submission`).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from egovlp.data.json_records import SUBMISSION_VERSION, array, clamp_window, field, number, read_json, text, write_json
from egovlp.errors import DataError

__all__ = [
    "MQ_CHALLENGE",
    "MQAnnotations",
    "MQClip",
    "MQDetection",
    "load_moments",
    "read_mq_submission",
    "write_mq_submission",
]

logger = logging.getLogger(__name__)

MQ_CHALLENGE = "ego4d_moment_queries"


@dataclass(frozen=True)
class MQClip:
    """An MQ clip: its span in the video and its labelled segments.

    ``segments[i] = (start, end)`` seconds from the clip start, class id ``labels[i]`` (name ``label_names[i]``);
    ``duration = video_end_sec - video_start_sec``.
    """

    video_uid: str
    clip_uid: str
    video_start_sec: float
    video_end_sec: float
    segments: tuple[tuple[float, float], ...]
    labels: tuple[int, ...]
    label_names: tuple[str, ...]

    @property
    def duration(self) -> float:
        return self.video_end_sec - self.video_start_sec


@dataclass(frozen=True)
class MQAnnotations:
    """A parsed MQ file: the class vocabulary (``classes[id] = name``) and the clips in file order."""

    path: str
    classes: tuple[str, ...]
    clips: tuple[MQClip, ...]
    num_non_primary: int
    num_clamped: int

    @cached_property
    def class_to_id(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.classes)}

    @property
    def num_segments(self) -> int:
        return sum(len(c.segments) for c in self.clips)

    def __len__(self) -> int:
        return len(self.clips)


@dataclass(frozen=True)
class MQDetection:
    """One detected moment: class name, confidence and ``(start, end)`` seconds from the clip start."""

    label: str
    score: float
    segment: tuple[float, float]


# ----------------------------------------------------------------------------------------------- annotations


@dataclass(frozen=True)
class _RawClip:
    video_uid: str
    clip_uid: str
    video_start_sec: float
    video_end_sec: float
    segments: tuple[tuple[float, float, str], ...]


def _parse_labels(c: Any, duration: float, where: str, primary_only: bool, tolerance: float) -> tuple[list, int, int]:
    """A clip's labels -> ([(start, end, name)], non-primary count, clamped count)."""
    out: list[tuple[float, float, str]] = []
    non_primary = clamped = 0
    for ai, a in enumerate(array(c, "annotations", where)):
        for li, lab in enumerate(array(a, "labels", f"{where} annotations[{ai}]")):
            lwhere = f"{where} annotations[{ai}] labels[{li}]"
            name = text(lab, "label", lwhere)
            lwhere = f"{lwhere} ({name!r})"
            primary = lab.get("primary") if primary_only else True
            if primary_only and not isinstance(primary, bool):
                raise DataError(f"{lwhere}: field 'primary' must be true or false, got {json.dumps(primary)}")
            if not primary:
                non_primary += 1
                continue
            start, end = number(lab, "start_time", lwhere), number(lab, "end_time", lwhere)
            lo, hi, was_clamped = clamp_window(start, end, duration, tolerance, lwhere)
            clamped += was_clamped
            out.append((lo, hi, name))
    return out, non_primary, clamped


def load_moments(
    path: str | os.PathLike,
    primary_only: bool = True,
    classes: Sequence[str] | None = None,
    segment_tolerance: float = 1.0,
) -> MQAnnotations:
    """Parse an Ego4D ``moments_{train,val}.json`` file.

    Args:
        path: the annotation file.
        primary_only: keep only labels with ``"primary": true`` (the official setting).
        classes: the class vocabulary (``classes[id] = name``); None = the sorted names of the kept labels.
        segment_tolerance: seconds a segment may leave its clip and still be clamped into it.

    Raises:
        DataError: naming the file, the clip_uid, the label and the field for a malformed record, a label outside
            ``classes``, a duplicate clip_uid or class name, or a file without clips.
    """
    name = str(path)
    data = read_json(name, "MQ annotation")
    raw: list[_RawClip] = []
    seen: dict[str, str] = {}
    non_primary = clamped = 0
    for vi, v in enumerate(array(data, "videos", name)):
        video_uid = text(v, "video_uid", f"{name}: videos[{vi}]")
        vwhere = f"{name}: video {video_uid}"
        for ci, c in enumerate(array(v, "clips", vwhere)):
            clip_uid = text(c, "clip_uid", f"{vwhere} clips[{ci}]")
            cwhere = f"{name}: clip {clip_uid}"
            if clip_uid in seen:
                raise DataError(f"{cwhere}: duplicate clip_uid (also in video {seen[clip_uid]})")
            seen[clip_uid] = video_uid
            v0, v1 = number(c, "video_start_sec", cwhere), number(c, "video_end_sec", cwhere)
            if v1 <= v0:
                raise DataError(f"{cwhere}: 'video_end_sec' {v1:g} must be after 'video_start_sec' {v0:g}")
            segs, n_np, n_cl = _parse_labels(c, v1 - v0, cwhere, primary_only, segment_tolerance)
            non_primary, clamped = non_primary + n_np, clamped + n_cl
            raw.append(_RawClip(video_uid, clip_uid, v0, v1, tuple(segs)))
    if not raw:
        raise DataError(f"{name}: no clips")
    if classes is None:
        vocab = tuple(sorted({s[2] for c in raw for s in c.segments}))
    else:
        vocab = tuple(classes)
        if len(set(vocab)) != len(vocab):
            dup = sorted({n for n in vocab if vocab.count(n) > 1})
            raise DataError(f"{name}: the class list names {dup} more than once")
    ids = {n: i for i, n in enumerate(vocab)}
    clips = []
    for c in raw:
        for s in c.segments:
            if s[2] not in ids:
                raise DataError(f"{name}: clip {c.clip_uid}: label {s[2]!r} is not one of the {len(vocab)} classes")
        clips.append(
            MQClip(
                c.video_uid,
                c.clip_uid,
                c.video_start_sec,
                c.video_end_sec,
                tuple((s[0], s[1]) for s in c.segments),
                tuple(ids[s[2]] for s in c.segments),
                tuple(s[2] for s in c.segments),
            )
        )
    if clamped:
        logger.info("%s: clamped %d segments into their clip", name, clamped)
    return MQAnnotations(name, vocab, tuple(clips), non_primary, clamped)


# ----------------------------------------------------------------------------------------------- submission


def write_mq_submission(path: str | os.PathLike, detections: Mapping[str, Iterable[MQDetection]]) -> Path:
    """Write the Ego4D MQ challenge JSON; each clip's detections sorted by descending score (stable for ties).

    Raises ``ValueError`` for a non-finite score or a non-finite or reversed segment (a program error).
    """
    results: dict[str, list[dict[str, Any]]] = {}
    for clip_uid, dets in detections.items():
        ranked = sorted(dets, key=lambda d: -d.score)
        rows = []
        for d in ranked:
            s, e = float(d.segment[0]), float(d.segment[1])
            if not (math.isfinite(d.score) and math.isfinite(s) and math.isfinite(e)) or e < s:
                raise ValueError(f"MQ detection for clip {clip_uid} is not finite or reversed: {d}")
            rows.append({"label": d.label, "score": float(d.score), "segment": [s, e]})
        results[str(clip_uid)] = rows
    return write_json(path, {"version": SUBMISSION_VERSION, "challenge": MQ_CHALLENGE, "detect_results": results})


def _parse_detection(r: Any, where: str, classes: set[str] | None) -> MQDetection:
    label = text(r, "label", where)
    if classes is not None and label not in classes:
        raise DataError(f"{where}: label {label!r} is not one of the {len(classes)} classes")
    score = number(r, "score", where)
    seg = field(r, "segment", where)
    if (
        not isinstance(seg, list)
        or len(seg) != 2
        or any(isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x) for x in seg)
    ):
        raise DataError(f"{where}: field 'segment' must be [start, end] numbers, got {json.dumps(seg)}")
    if seg[1] < seg[0]:
        raise DataError(f"{where}: 'segment' ends before it starts: {json.dumps(seg)}")
    return MQDetection(label, score, (float(seg[0]), float(seg[1])))


def read_mq_submission(path: str | os.PathLike, classes: Iterable[str] | None = None) -> dict[str, list[MQDetection]]:
    """Read and check an Ego4D MQ challenge JSON: ``{clip_uid: [MQDetection, ...]}`` in file order.

    ``classes``, when given, is the vocabulary every label must belong to. Raises :class:`DataError` naming the
    file, the clip_uid, the detection index and the field.
    """
    name = str(path)
    data = read_json(name, "MQ submission")
    version, challenge = field(data, "version", name), field(data, "challenge", name)
    if version != SUBMISSION_VERSION:
        raise DataError(f"{name}: field 'version' must be {SUBMISSION_VERSION!r}, got {json.dumps(version)}")
    if challenge != MQ_CHALLENGE:
        raise DataError(f"{name}: field 'challenge' must be {MQ_CHALLENGE!r}, got {json.dumps(challenge)}")
    results = field(data, "detect_results", name)
    if not isinstance(results, dict):
        raise DataError(f"{name}: field 'detect_results' must be an object keyed by clip_uid")
    vocab = set(classes) if classes is not None else None
    out: dict[str, list[MQDetection]] = {}
    for clip_uid, rows in results.items():
        where = f"{name}: clip {clip_uid}"
        if not isinstance(rows, list):
            raise DataError(f"{where}: detections must be a list, got {type(rows).__name__}")
        out[clip_uid] = [_parse_detection(r, f"{where} detection {i}", vocab) for i, r in enumerate(rows)]
    return out
