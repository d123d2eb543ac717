"""What to extract: items (a video, a clip of one, or a set of texts) collected from a folder, the chunked Ego4D
layout or an annotation file, and how to read their frames.

* a folder of video files (recursively; extensions configurable): one item per file, the whole file, id = the path
  relative to the folder without its extension;
* the chunked layout ``<root>/<video_uid>/<k>.mp4`` (chunk ``k`` holds ``[k * chunk_seconds, (k + 1) *
  chunk_seconds)``): one item per video uid (from a list file, or every sub-folder), the whole video;
* an Ego4D NLQ / MQ annotation file (``videos[].clips[]`` with ``clip_uid``, ``video_start_sec``, ``video_end_sec``
  and, for NLQ, ``annotations[].language_queries[].query``): one item per clip, id = ``clip_uid``, the clip's span of
  its video (``<video_root>/<video_uid>.mp4``, or chunked), with the clip's queries;
* for text features only, also Ego4D's ``narration.json`` (one item per video, its narrations) and a ``.txt`` file
  (one item, one text per line).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from egovlp.data.video_io import chunk_path, probe, read_frames_at
from egovlp.errors import ConfigError, DataError, VideoReadError

log = logging.getLogger(__name__)

__all__ = ["Item", "Query", "SourceConfig", "VideoRef", "collect_items", "probe_video", "read_frames"]


@dataclass(frozen=True)
class SourceConfig:
    """Where the videos / texts come from: set exactly one of ``videos``, ``chunked_root``, ``annotations``."""

    videos: str = ""  # a folder of video files, searched recursively
    extensions: tuple[str, ...] = ("mp4", "mkv", "webm", "avi", "mov")  # of files in `videos` (case-insensitive)
    chunked_root: str = ""  # <root>/<video_uid>/<k>.mp4
    uids: str = ""  # file listing the video uids of `chunked_root`, one a line (empty: every sub-folder)
    chunk_seconds: float = 600.0  # chunk length of the chunked layout
    annotations: str = ""  # NLQ / MQ JSON (videos[].clips[]); for mode=text also narration.json or a .txt
    video_root: str = ""  # the videos of `annotations`
    layout: str = "files"  # of `video_root`: "files" (<root>/<video_uid>.mp4, the release's) or "chunked"

    def validate(self, needs_video: bool) -> None:
        given = [name for name in ("videos", "chunked_root", "annotations") if getattr(self, name)]
        if len(given) != 1:
            what = "none" if not given else " and ".join(f"source.{g}" for g in given)
            raise ConfigError(
                f"give exactly one input: source.videos (--videos), source.chunked_root (--chunked-root) or "
                f"source.annotations (--annotations); got {what}"
            )
        if self.layout not in ("files", "chunked"):
            raise ConfigError(f"source.layout must be 'files' or 'chunked', got {self.layout!r}")
        if self.chunk_seconds <= 0:
            raise ConfigError(f"source.chunk_seconds must be > 0, got {self.chunk_seconds}")
        if needs_video and self.annotations and not self.video_root:
            raise ConfigError("source.annotations needs source.video_root (--video-root) for video features")


@dataclass(frozen=True)
class VideoRef:
    """A video: a plain file (``kind="file"``, ``path``) or a chunked one (``kind="chunked"``, ``path`` = root)."""

    kind: str
    path: str
    uid: str = ""
    chunk_seconds: float = 600.0

    def describe(self) -> str:
        return self.path if self.kind == "file" else str(Path(self.path) / self.uid)


@dataclass(frozen=True)
class Query:
    """A text of an item: ``key`` names it in its annotation (``annotation_uid/query_index``, ``pass/index``...)."""

    key: str
    text: str
    time: float | None = None  # narration time in the video (seconds), when the annotation has one


@dataclass(frozen=True)
class Item:
    """One output file: a whole video, a span of one (``span`` in video seconds) and/or texts."""

    id: str
    video: VideoRef | None = None
    span: tuple[float, float] | None = None
    queries: tuple[Query, ...] = field(default_factory=tuple)


# ------------------------------------------------------------------------------------------------------ collection
def _video_files(folder: Path, extensions: Iterable[str]) -> list[Item]:
    if not folder.is_dir():
        raise DataError(f"{folder}: no such video folder")
    exts = {e.lower().lstrip(".") for e in extensions}
    items: dict[str, Item] = {}
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path.name.startswith(".") or path.suffix.lower().lstrip(".") not in exts:
            continue
        item_id = path.relative_to(folder).with_suffix("").as_posix()
        if item_id in items:
            raise DataError(f"{folder}: {items[item_id].video.path} and {path} give the same output name {item_id!r}")
        items[item_id] = Item(item_id, VideoRef("file", str(path)))
    if not items:
        raise DataError(f"{folder}: no video files with extensions {sorted(exts)}")
    return list(items.values())


def _read_uids(path: Path) -> list[str]:
    if not path.is_file():
        raise DataError(f"{path}: no such video-uid list")
    uids = [line.strip() for line in path.read_text().splitlines()]
    uids = [u for u in uids if u and not u.startswith("#")]
    if len(set(uids)) != len(uids):
        raise DataError(f"{path}: a video uid is listed twice")
    return uids


def _chunked_videos(root: Path, uids_file: str, chunk_seconds: float) -> list[Item]:
    if not root.is_dir():
        raise DataError(f"{root}: no such chunked video folder")
    if uids_file:
        uids = _read_uids(Path(uids_file))
    else:
        uids = sorted(p.name for p in root.iterdir() if p.is_dir() and (p / "0.mp4").is_file())
    if not uids:
        raise DataError(f"{root}: no <video_uid>/0.mp4 folders")
    return [Item(uid, VideoRef("chunked", str(root), uid, chunk_seconds)) for uid in uids]


def _load_json(path: Path) -> object:
    if not path.is_file():
        raise DataError(f"{path}: no such annotation file")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON: {e}") from None


def _clip_queries(clip: dict) -> tuple[Query, ...]:
    queries = []
    for a, ann in enumerate(clip.get("annotations") or []):
        ann_uid = str(ann.get("annotation_uid", a))
        for q, lq in enumerate(ann.get("language_queries") or []):
            text = lq.get("query")
            if isinstance(text, str) and text.strip():  # a few NLQ queries have no text
                queries.append(Query(f"{ann_uid}/{q}", text))
    return tuple(queries)


def _video_ref(video_uid: str, cfg: SourceConfig) -> VideoRef | None:
    if not cfg.video_root:
        return None
    if cfg.layout == "chunked":
        return VideoRef("chunked", cfg.video_root, video_uid, cfg.chunk_seconds)
    return VideoRef("file", str(Path(cfg.video_root) / f"{video_uid}.mp4"))


def _clip_items(data: dict, path: Path, cfg: SourceConfig) -> list[Item]:
    """Items of an Ego4D episodic-memory JSON (NLQ / MQ): ``videos[].clips[]``."""
    items: dict[str, Item] = {}
    for v, video in enumerate(data.get("videos") or []):
        video_uid = video.get("video_uid")
        for c, clip in enumerate(video.get("clips") or []):
            where = f"{path}: videos[{v}].clips[{c}]"
            try:
                clip_uid = str(clip["clip_uid"])
                span = (float(clip["video_start_sec"]), float(clip["video_end_sec"]))
            except (KeyError, TypeError, ValueError) as e:
                raise DataError(f"{where}: needs clip_uid, video_start_sec and video_end_sec ({e!r})") from None
            if not video_uid:
                raise DataError(f"{path}: videos[{v}] has no video_uid")
            if span[1] <= span[0]:
                raise DataError(f"{where}: clip {clip_uid} ends ({span[1]}) before it starts ({span[0]})")
            item = Item(clip_uid, _video_ref(str(video_uid), cfg), span, _clip_queries(clip))
            if clip_uid in items and items[clip_uid].span != span:
                raise DataError(f"{where}: clip {clip_uid} appears twice with different times")
            if clip_uid in items:  # the same clip under two entries: keep every query once
                seen = {q.key for q in items[clip_uid].queries}
                extra = tuple(q for q in item.queries if q.key not in seen)
                item = Item(clip_uid, item.video, span, items[clip_uid].queries + extra)
            items[clip_uid] = item
    if not items:
        raise DataError(f"{path}: no clips under videos[].clips[]")
    return list(items.values())


def _narration_items(path: Path) -> list[Item]:
    from egovlp.data.narrations import load_narrations

    items = []
    for uid, passes in sorted(load_narrations(path).items()):
        queries = tuple(Query(f"{name}/{i}", text, t) for name, rows in passes.items() for i, t, text in rows)
        items.append(Item(uid, None, None, queries))
    if not items:
        raise DataError(f"{path}: no narrations")
    return items


def _annotation_items(cfg: SourceConfig, mode: str) -> list[Item]:
    path = Path(cfg.annotations)
    if path.suffix.lower() == ".txt":
        if mode != "text":
            raise ConfigError(f"{path}: a text list gives text features only (mode=text), not mode={mode}")
        if not path.is_file():
            raise DataError(f"{path}: no such text file")
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        queries = tuple(Query(str(i), t) for i, t in enumerate(lines) if t)
        return [Item(path.stem, None, None, queries)]
    data = _load_json(path)
    if isinstance(data, dict) and isinstance(data.get("videos"), list):
        return _clip_items(data, path, cfg)
    if isinstance(data, dict) and mode == "text":
        return _narration_items(path)
    raise DataError(f"{path}: expected an Ego4D NLQ/MQ file (a 'videos' list of clips) or, for mode=text, narrations")


def collect_items(cfg: SourceConfig, mode: str) -> list[Item]:
    """Every item named by ``cfg``, in a fixed order (the same on every rank)."""
    cfg.validate(needs_video=mode != "text")
    if cfg.videos:
        items = _video_files(Path(cfg.videos), cfg.extensions)
    elif cfg.chunked_root:
        items = _chunked_videos(Path(cfg.chunked_root), cfg.uids, cfg.chunk_seconds)
    else:
        items = _annotation_items(cfg, mode)
    if mode != "video" and cfg.annotations == "":
        raise ConfigError(f"mode={mode} needs texts: give an annotation file (--annotations)")
    if mode != "video":
        items = [it for it in items if it.queries]
        if not items:
            raise DataError(f"{cfg.annotations}: no texts (queries or narrations) for mode={mode}")
    if mode != "text" and any(it.video is None for it in items):
        raise ConfigError("video features need videos: set source.video_root (--video-root)")
    return items


# ---------------------------------------------------------------------------------------------------- reading
def _chunk_count(ref: VideoRef) -> int:
    folder = Path(ref.path) / ref.uid
    if not (folder / "0.mp4").is_file():
        raise VideoReadError(f"{folder / '0.mp4'}: no such video file (first chunk of {ref.uid})")
    k = 1
    while chunk_path(ref.path, ref.uid, k).is_file():
        k += 1
    return k


def _duration(info) -> float:
    if info.duration > 0:
        return info.duration
    if info.num_frames > 0 and info.fps > 0:
        return info.num_frames / info.fps
    raise VideoReadError(f"{info.path}: the header gives no duration")


def probe_video(ref: VideoRef) -> tuple[float, float]:
    """``(fps, duration)`` of a video from its header(s); a chunked video's duration sums its chunks."""
    if ref.kind == "file":
        info = probe(ref.path)
        return info.fps, _duration(info)
    num_chunks = _chunk_count(ref)
    first = probe(chunk_path(ref.path, ref.uid, 0))
    last = first if num_chunks == 1 else probe(chunk_path(ref.path, ref.uid, num_chunks - 1))
    return first.fps, (num_chunks - 1) * ref.chunk_seconds + _duration(last)


def read_frames(ref: VideoRef, times: np.ndarray, end_tolerance: float = 0.5) -> np.ndarray:
    """The frames of ``ref`` shown at ``times`` (seconds, any order): uint8 ``(N, H, W, 3)``, one seek per file."""
    times = np.asarray(times, dtype=np.float64)
    if ref.kind == "file":
        return read_frames_at(ref.path, times, end_tolerance=end_tolerance)
    order = np.argsort(times, kind="stable")
    ordered = times[order]
    chunks = np.floor(ordered / ref.chunk_seconds).astype(np.int64)
    parts = []
    for k in np.unique(chunks):
        local = ordered[chunks == k] - k * ref.chunk_seconds
        path = chunk_path(ref.path, ref.uid, int(k))
        if not path.is_file() and k > 0 and local.max() <= end_tolerance:
            # times a hair past the last chunk boundary show the previous chunk's last frame
            path, local = chunk_path(ref.path, ref.uid, int(k) - 1), local + ref.chunk_seconds
        parts.append(read_frames_at(path, local, end_tolerance=end_tolerance, context=f"video {ref.uid}"))
    frames = np.concatenate(parts)  # in ascending time order
    out = np.empty_like(frames)
    out[order] = frames
    return out
