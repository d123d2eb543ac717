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
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from egovlp.data.video_io import VideoInfo, chunk_path, probe, read_frames_at
from egovlp.errors import ConfigError, DataError, VideoReadError
from egovlp.features.ids import check_id

log = logging.getLogger(__name__)

__all__ = [
    "Collection",
    "Item",
    "Query",
    "SourceConfig",
    "VideoRef",
    "collect_inputs",
    "collect_items",
    "probe_video",
    "read_frames",
]


@dataclass(frozen=True)
class SourceConfig:
    """Where the videos / texts come from: set exactly one of ``videos``, ``chunked_root``, ``annotations``."""

    videos: str = ""  # a folder of video files, searched recursively
    extensions: tuple[str, ...] = ("mp4", "mkv", "webm", "avi", "mov")  # of files in `videos` (case-insensitive)
    chunked_root: str = ""  # <root>/<video_uid>/<k>.mp4
    uids: str = ""  # file listing the video uids of `chunked_root`, one a line (empty: every sub-folder)
    chunk_seconds: float = 0.0  # chunk length of the chunked layout; <= 0: <root>/chunks.json, else 600
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
        if needs_video and self.annotations and not self.video_root:
            raise ConfigError("source.annotations needs source.video_root (--video-root) for video features")


@dataclass(frozen=True)
class VideoRef:
    """A video: a plain file (``kind="file"``, ``path``) or a chunked one (``kind="chunked"``, ``path`` = root)."""

    kind: str
    path: str
    uid: str = ""
    chunk_seconds: float = 600.0

    def __post_init__(self) -> None:
        if self.kind == "chunked":  # the uid names a folder under the root: it must stay inside it
            check_id(self.uid, f"{self.path}: video uid {self.uid!r}")

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
    queries_without_text: tuple[str, ...] = ()  # keys (``annotation_uid/query_index``) of queries left out


@dataclass(frozen=True)
class Collection:
    """What :func:`collect_inputs` found: the items to extract and the texts it had to leave out.

    ``items_without_text`` are the items of modes ``text`` / ``fused`` none of whose queries has text (they are not
    in ``items``); ``queries_without_text`` maps every item id (kept or not) to the keys of its queries without text.
    In mode ``video`` queries do not matter and both are empty.
    """

    items: list[Item]
    queries_without_text: dict[str, list[str]] = field(default_factory=dict)
    items_without_text: list[str] = field(default_factory=list)

    @property
    def num_queries_without_text(self) -> int:
        return sum(len(keys) for keys in self.queries_without_text.values())

    def log_left_out(self, source: str) -> None:
        """One warning per query without text (file, clip, annotation, query index) and per item left out."""
        for item_id, keys in self.queries_without_text.items():
            for key in keys:
                annotation, _, index = key.rpartition("/")
                log.warning(
                    "%s: clip %s, annotation %s, query %s has no query text; left out",
                    source,
                    item_id,
                    annotation,
                    index,
                )
        for item_id in self.items_without_text:
            log.warning("%s: clip %s has no query with text; left out (no feature file)", source, item_id)


# ------------------------------------------------------------------------------------------------------ collection
def _video_files(folder: Path, extensions: Iterable[str]) -> list[Item]:
    if not folder.is_dir():
        raise DataError(f"{folder}: no such video folder")
    exts = {e.lower().lstrip(".") for e in extensions}
    items: dict[str, Item] = {}
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path.name.startswith(".") or path.suffix.lower().lstrip(".") not in exts:
            continue
        item_id = check_id(path.relative_to(folder).with_suffix("").as_posix(), f"{path}: output name")
        if item_id in items:
            first = items[item_id].video
            where = first.path if first is not None else "?"
            raise DataError(f"{folder}: {where} and {path} give the same output name {item_id!r}")
        items[item_id] = Item(item_id, VideoRef("file", str(path)))
    if not items:
        raise DataError(f"{folder}: no video files with extensions {sorted(exts)}")
    return list(items.values())


def _read_uids(path: Path) -> list[str]:
    if not path.is_file():
        raise DataError(f"{path}: no such video-uid list")
    uids: dict[str, int] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        uid = line.strip()
        if not uid or uid.startswith("#"):
            continue
        check_id(uid, f"{path}:{n}: video uid {uid!r}")
        if uid in uids:
            raise DataError(f"{path}:{n}: video uid {uid!r} is listed twice (first on line {uids[uid]})")
        uids[uid] = n
    return list(uids)


def _chunked_videos(root: Path, uids_file: str, chunk_seconds: float) -> list[Item]:
    if not root.is_dir():
        raise DataError(f"{root}: no such chunked video folder")
    if uids_file:
        uids = _read_uids(Path(uids_file))
    else:  # every video folder, also one lacking 0.mp4: reading it reports the missing chunk instead of a silent drop
        uids = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not uids:
        raise DataError(f"{root}: no <video_uid>/<k>.mp4 folders")
    return [Item(uid, VideoRef("chunked", str(root), uid, chunk_seconds)) for uid in uids]


def _load_json(path: Path) -> object:
    if not path.is_file():
        raise DataError(f"{path}: no such annotation file")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON: {e}") from None


def _clip_queries(clip: dict) -> tuple[tuple[Query, ...], tuple[str, ...]]:
    """The queries of a clip with text, and the keys of those without (a few NLQ queries have none)."""
    queries, without = [], []
    for a, ann in enumerate(clip.get("annotations") or []):
        ann_uid = str(ann.get("annotation_uid", a))
        for q, lq in enumerate(ann.get("language_queries") or []):
            text = lq.get("query")
            if isinstance(text, str) and text.strip():
                queries.append(Query(f"{ann_uid}/{q}", text))
            else:
                without.append(f"{ann_uid}/{q}")
    return tuple(queries), tuple(without)


def _chunk_seconds(root: str, configured: float) -> float:
    """The chunk length of ``root`` (``source.chunk_seconds``; <= 0 reads ``chunks.json``), as a config error."""
    from egovlp.data.video_io import resolve_chunk_seconds
    from egovlp.errors import VideoReadError

    try:
        return resolve_chunk_seconds(root, configured)
    except VideoReadError as e:
        raise ConfigError(f"source.chunk_seconds: {e}") from None


def _video_ref(video_uid: str, cfg: SourceConfig) -> VideoRef | None:
    if not cfg.video_root:
        return None
    if cfg.layout == "chunked":
        return VideoRef("chunked", cfg.video_root, video_uid, _chunk_seconds(cfg.video_root, cfg.chunk_seconds))
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
            check_id(clip_uid, f"{where}: clip_uid {clip_uid!r}")
            check_id(str(video_uid), f"{path}: videos[{v}]: video_uid {str(video_uid)!r}")
            if span[1] <= span[0]:
                raise DataError(f"{where}: clip {clip_uid} ends ({span[1]}) before it starts ({span[0]})")
            item = Item(clip_uid, _video_ref(str(video_uid), cfg), span, *_clip_queries(clip))
            if clip_uid in items and items[clip_uid].span != span:
                raise DataError(f"{where}: clip {clip_uid} appears twice with different times")
            if clip_uid in items:  # the same clip under two entries: keep every query once
                old = items[clip_uid]
                seen = {q.key for q in old.queries}
                extra = tuple(q for q in item.queries if q.key not in seen)
                missing = old.queries_without_text + tuple(k for k in item.queries_without_text if k not in seen)
                item = Item(clip_uid, item.video, span, old.queries + extra, tuple(dict.fromkeys(missing)))
            items[clip_uid] = item
    if not items:
        raise DataError(f"{path}: no clips under videos[].clips[]")
    return list(items.values())


def _narration_items(path: Path) -> list[Item]:
    from egovlp.data.narrations import load_narrations

    items = []
    for uid, passes in sorted(load_narrations(path).items()):
        check_id(uid, f"{path}: video uid {uid!r}")
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
        return [Item(check_id(path.stem, f"{path}: output name"), None, None, queries)]
    data = _load_json(path)
    if isinstance(data, dict) and isinstance(data.get("videos"), list):
        return _clip_items(data, path, cfg)
    if isinstance(data, dict) and mode == "text":
        return _narration_items(path)
    raise DataError(f"{path}: expected an Ego4D NLQ/MQ file (a 'videos' list of clips) or, for mode=text, narrations")


def collect_inputs(cfg: SourceConfig, mode: str) -> Collection:
    """Every item named by ``cfg``, in a fixed order (the same on every rank), with the texts left out.

    Every id is checked (:func:`~egovlp.features.ids.check_id`) before it becomes a path.
    """
    cfg.validate(needs_video=mode != "text")
    if cfg.videos:
        items = _video_files(Path(cfg.videos), cfg.extensions)
    elif cfg.chunked_root:
        chunk = _chunk_seconds(cfg.chunked_root, cfg.chunk_seconds)
        items = _chunked_videos(Path(cfg.chunked_root), cfg.uids, chunk)
    else:
        items = _annotation_items(cfg, mode)
    if mode != "video" and cfg.annotations == "":
        raise ConfigError(f"mode={mode} needs texts: give an annotation file (--annotations)")
    if mode == "video":
        collection = Collection(items)
    else:
        without = {it.id: list(it.queries_without_text) for it in items if it.queries_without_text}
        collection = Collection([it for it in items if it.queries], without, [it.id for it in items if not it.queries])
        if not collection.items:
            raise DataError(f"{cfg.annotations}: no texts (queries or narrations) for mode={mode}")
    if mode != "text" and any(it.video is None for it in collection.items):
        raise ConfigError("video features need videos: set source.video_root (--video-root)")
    return collection


def collect_items(cfg: SourceConfig, mode: str) -> list[Item]:
    """Every item named by ``cfg`` (:func:`collect_inputs` without what was left out)."""
    return collect_inputs(cfg, mode).items


# ---------------------------------------------------------------------------------------------------- reading
_CHUNK_NAME = re.compile(r"(0|[1-9][0-9]*)\.mp4")


def _ranges(ks: list[int]) -> str:
    """``[0, 1, 2, 5, 7, 8]`` -> ``"0-2, 5, 7-8"``."""
    spans: list[list[int]] = []
    for k in ks:
        if spans and k == spans[-1][1] + 1:
            spans[-1][1] = k
        else:
            spans.append([k, k])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)


def _chunk_count(ref: VideoRef) -> int:
    """The number of chunks of a chunked video: ``0.mp4 .. <n-1>.mp4``, all present (a gap is an error)."""
    folder = Path(ref.path) / ref.uid
    if not (folder / "0.mp4").is_file():
        raise VideoReadError(f"{folder / '0.mp4'}: no such video file (first chunk of {ref.uid})")
    ks = sorted(int(m.group(1)) for p in folder.iterdir() if (m := _CHUNK_NAME.fullmatch(p.name)) and p.is_file())
    present = set(ks)
    missing = next((k for k in range(ks[-1] + 1) if k not in present), None)
    if missing is not None:
        raise VideoReadError(
            f"{chunk_path(ref.path, ref.uid, missing)}: missing chunk {missing} of {ref.uid} (the folder has chunks "
            f"{_ranges(ks)}); its {missing * ref.chunk_seconds:g}-{(missing + 1) * ref.chunk_seconds:g} s would be lost"
        )
    return len(ks)


def _duration(info: VideoInfo) -> float:
    if info.duration > 0:
        return info.duration
    if info.num_frames > 0 and info.fps > 0:
        return info.num_frames / info.fps
    raise VideoReadError(f"{info.path}: the header gives no duration")


def probe_video(ref: VideoRef, end_tolerance: float = 0.5) -> tuple[float, float]:
    """``(fps, duration)`` of a video from its header(s); a chunked video's duration sums its chunks.

    Every chunk of a chunked video must be there and every one but the last must last ``chunk_seconds`` (up to
    ``end_tolerance``, the slack of :func:`read_frames`): a missing or short chunk would shift or cut the video,
    so it raises :class:`VideoReadError` naming the chunk.
    """
    if ref.kind == "file":
        info = probe(ref.path)
        return info.fps, _duration(info)
    num_chunks = _chunk_count(ref)
    infos = [probe(chunk_path(ref.path, ref.uid, k)) for k in range(num_chunks)]
    for k, info in enumerate(infos[:-1]):
        seconds = _duration(info)
        if seconds + end_tolerance < ref.chunk_seconds:
            raise VideoReadError(
                f"{info.path}: chunk {k} lasts {seconds:.2f} s, less than chunk_seconds={ref.chunk_seconds:g} "
                f"(only the last chunk may be shorter): a truncated chunk, or a wrong chunk_seconds?"
            )
    return infos[0].fps, (num_chunks - 1) * ref.chunk_seconds + _duration(infos[-1])


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
