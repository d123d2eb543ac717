"""The videos named on ``egovlp index``'s command line: files, folders of files, and chunked Ego4D videos.

* a video file (any container PyAV reads): one video;
* a folder holding ``0.mp4`` (and ``1.mp4``, ...): one chunked Ego4D video ``<root>/<uid>/<k>.mp4`` (uid = the
  folder's name);
* any other folder: searched recursively; every chunked folder inside is one video, every other file with one of
  the extensions is one video.

Each video gets an id that becomes its file names in the index (``embeddings/<id>.npz``, ``thumbs/<id>/``): the file
or folder name plus 8 hex digits of the hash of its absolute path, so the same name in two folders gives two ids and
the same video named twice (or again in a later run) gives the same id.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from egovlp.errors import ConfigError, DataError, VideoReadError
from egovlp.features.ids import check_id
from egovlp.features.sources import VideoRef

__all__ = ["collect_videos", "video_id"]

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def video_id(ref: VideoRef) -> str:
    """``<name>-<8 hex>`` for a video: its name (unsafe characters as ``_``, at most 80) and its path's hash."""
    path = Path(ref.describe()).resolve()
    name = path.name if ref.kind == "chunked" else path.stem
    name = _SAFE.sub("_", name).strip("._")[:80] or "video"
    digest = hashlib.sha1(str(path).encode("utf-8")).hexdigest()[:8]
    return check_id(f"{name}-{digest}", f"{path}: index id")


def _is_chunked(folder: Path) -> bool:
    return (folder / "0.mp4").is_file()


def _chunk_seconds(root: Path, configured: float) -> float:
    from egovlp.data.video_io import resolve_chunk_seconds

    try:
        return resolve_chunk_seconds(root, configured)
    except VideoReadError as e:
        raise ConfigError(f"chunk_seconds: {e}") from None


def _chunked(folder: Path, chunk_seconds: float) -> VideoRef:
    root = folder.resolve().parent
    return VideoRef("chunked", str(root), folder.resolve().name, _chunk_seconds(root, chunk_seconds))


def _in_folder(folder: Path, exts: set[str], chunk_seconds: float) -> list[VideoRef]:
    refs: list[VideoRef] = []
    chunked: list[Path] = []
    for path in sorted(folder.rglob("*")):
        if any(path.is_relative_to(c) for c in chunked) or path.name.startswith("."):
            continue
        if path.is_dir() and _is_chunked(path):
            chunked.append(path)
            refs.append(_chunked(path, chunk_seconds))
        elif path.is_file() and path.suffix.lower().lstrip(".") in exts:
            refs.append(VideoRef("file", str(path.resolve())))
    return refs


def collect_videos(
    paths: Sequence[str], extensions: Iterable[str], chunk_seconds: float = 0.0
) -> list[tuple[str, VideoRef]]:
    """``(id, video)`` of every video ``paths`` name, in a fixed order, each once.

    Raises :class:`DataError` for a path that does not exist or a folder with no video.
    """
    if not paths:
        raise ConfigError("no videos: name video files or folders (egovlp index VIDEOS... --out DIR)")
    exts = {e.lower().lstrip(".") for e in extensions}
    found: dict[str, VideoRef] = {}
    for spec in paths:
        path = Path(spec).expanduser()
        if path.is_file():
            refs = [VideoRef("file", str(path.resolve()))]
        elif path.is_dir() and _is_chunked(path):
            refs = [_chunked(path, chunk_seconds)]
        elif path.is_dir():
            refs = _in_folder(path, exts, chunk_seconds)
            if not refs:
                raise DataError(f"{path}: no video files (extensions {sorted(exts)}) and no <uid>/0.mp4 folders")
        else:
            raise DataError(f"{path}: no such video file or folder")
        for ref in refs:
            found.setdefault(video_id(ref), ref)
    return list(found.items())
