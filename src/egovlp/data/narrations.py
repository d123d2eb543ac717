"""Build ``egoclip.csv`` from Ego4D's ``narration.json`` with EgoVLP's clip windows.

``narration.json`` (Ego4D): ``{video_uid: {"narration_pass_1": {"narrations": [{"timestamp_sec", "timestamp_frame",
"narration_text", "annotation_uid"}, ...], "summaries": [...]}, "narration_pass_2": {...}, "status": ...}}``.

Clip window (EgoVLP's contextual variable-length pairing): a narration at time ``t`` gets
``[t - beta / (2 alpha), t + beta / (2 alpha)]`` where ``beta`` is the average gap between consecutive narrations of
the same video and pass, and ``alpha`` a scale factor (4.9, the paper's value, by default). A video and pass with a
single narration uses the mean ``beta`` of all others. Windows are clamped to ``[0, video_dur]``.

``video_dur`` comes from Ego4D's metadata (``ego4d.json``: ``videos[].video_uid`` / ``duration_sec``) when given,
else it is estimated as the last narration's window end (logged). Verb/noun tags come from taxonomy files
(:mod:`egovlp.data.taxonomy`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from egovlp.data.egoclip_table import write_egoclip_csv
from egovlp.data.taxonomy import Taxonomy
from egovlp.errors import DataError

log = logging.getLogger(__name__)

__all__ = ["PASSES", "build_egoclip_rows", "load_durations", "load_narrations", "narration_windows"]

PASSES = ("narration_pass_1", "narration_pass_2")


def _read_json(path: str | os.PathLike, what: str) -> dict:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such {what} file")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}:{e.colno}: invalid JSON: {e.msg}") from None


def load_narrations(path: str | os.PathLike) -> dict[str, dict[str, list[tuple[int, float, str]]]]:
    """``{video_uid: {pass: [(narration_ind, timestamp_sec, text), ...]}}``; entries without time or text are
    dropped (counted in the log)."""
    data = _read_json(path, "narration")
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object keyed by video_uid")
    out: dict[str, dict[str, list[tuple[int, float, str]]]] = {}
    dropped = 0
    for uid, video in data.items():
        if not isinstance(video, dict):
            raise DataError(f"{path}: video {uid!r}: expected an object with narration passes")
        for name in PASSES:
            narrations = (video.get(name) or {}).get("narrations") or []
            kept = []
            for i, n in enumerate(narrations):
                t, text = n.get("timestamp_sec"), n.get("narration_text")
                if isinstance(t, (int, float)) and isinstance(text, str) and text.strip():
                    kept.append((i, float(t), text.strip()))
                else:
                    dropped += 1
            if kept:
                out.setdefault(uid, {})[name] = kept
    if dropped:
        log.warning("%s: dropped %d narrations without a timestamp or text", path, dropped)
    return out


def load_durations(path: str | os.PathLike) -> dict[str, float]:
    """Video durations from Ego4D's ``ego4d.json`` (``videos[].video_uid``, ``duration_sec``)."""
    data = _read_json(path, "Ego4D metadata")
    videos = data.get("videos") if isinstance(data, dict) else None
    if not isinstance(videos, list):
        raise DataError(f"{path}: expected {{'videos': [{{'video_uid', 'duration_sec'}}, ...]}}")
    return {v["video_uid"]: float(v["duration_sec"]) for v in videos if "video_uid" in v and "duration_sec" in v}


def _mean_gap(times: Iterable[float]) -> float | None:
    t = np.sort(np.fromiter(times, dtype=np.float64))
    return float(np.diff(t).mean()) if len(t) >= 2 else None


def narration_windows(narrations: dict, alpha: float = 4.9) -> dict[tuple[str, str], float]:
    """Half window width ``beta / (2 alpha)`` per (video_uid, pass)."""
    betas = {
        (uid, p): _mean_gap(t for _, t, _ in items) for uid, passes in narrations.items() for p, items in passes.items()
    }
    known = [b for b in betas.values() if b is not None]
    fallback = float(np.mean(known)) if known else 2 * alpha  # no gaps anywhere: a 2 s window
    return {key: (b if b is not None else fallback) / (2 * alpha) for key, b in betas.items()}


def build_egoclip_rows(
    narrations: dict,
    verb_taxonomy: Taxonomy,
    noun_taxonomy: Taxonomy,
    durations: dict[str, float] | None = None,
    alpha: float = 4.9,
) -> list[dict]:
    """EgoClip rows (dicts of the official columns) for every narration, in (video, pass, time) order."""
    half = narration_windows(narrations, alpha)
    rows: list[dict] = []
    estimated = 0
    for uid in sorted(narrations):
        passes = narrations[uid]
        duration = (durations or {}).get(uid)
        if duration is None:
            estimated += 1
            duration = max(t + half[(uid, p)] for p, items in passes.items() for _, t, _ in items)
        for name in sorted(passes):
            h = half[(uid, name)]
            for ind, t, text in sorted(passes[name], key=lambda x: (x[1], x[0])):
                rows.append(
                    {
                        "clip_idx": len(rows),
                        "video_uid": uid,
                        "video_dur": f"{duration:.6f}",
                        "narration_source": name,
                        "narration_ind": ind,
                        "narration_time": f"{t:.4f}",
                        "clip_start": f"{max(t - h, 0.0):.6f}",
                        "clip_end": f"{min(t + h, duration):.6f}",
                        "clip_text": text,
                        "tag_verb": str(verb_taxonomy.tag(text)),
                        "tag_noun": str(noun_taxonomy.tag(text)),
                    }
                )
    if estimated:
        log.warning("no duration for %d videos: video_dur estimated from their last narration", estimated)
    return rows


def build_egoclip(
    narration_json: str | os.PathLike,
    verb_taxonomy: Taxonomy,
    noun_taxonomy: Taxonomy,
    out_csv: str | os.PathLike,
    ego4d_json: str | os.PathLike | None = None,
    alpha: float = 4.9,
) -> int:
    """Read ``narration.json``, write ``egoclip.csv``; returns the number of rows."""
    durations = load_durations(ego4d_json) if ego4d_json is not None else None
    rows = build_egoclip_rows(load_narrations(narration_json), verb_taxonomy, noun_taxonomy, durations, alpha)
    write_egoclip_csv(out_csv, rows)
    untagged = sum(r["tag_verb"] == "[]" or r["tag_noun"] == "[]" for r in rows)
    log.info("wrote %d EgoClip rows to %s (%d without a verb or noun tag)", len(rows), out_csv, untagged)
    return len(rows)
